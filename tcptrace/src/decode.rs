//! Turns ring-buffer records into [`TcpEvent`]s, checking everything the kernel wrote.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tcptrace_common::{
    close_flags, kind, CloseDetails, Event, AF_INET, AF_INET6, EVENT_HEAD_SIZE, EVENT_SIZE,
};

use crate::{
    event::{Comm, EventKind, SocketAtClose, Task, TcpEvent},
    state::TcpState,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "record of {0} bytes, expected {EVENT_HEAD_SIZE} or {EVENT_SIZE}: kernel object and \
         daemon disagree"
    )]
    Size(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u8),
    #[error("unknown address family {0}")]
    UnknownFamily(u16),
    #[error("unknown TCP state {0}")]
    UnknownState(u8),
}

/// Decodes one record. A record of the wrong size or with values this build does not
/// know is an error for the caller to count and skip: it never panics.
/// Records come in two sizes: the whole [`Event`] for a →CLOSE, and everything before
/// its close details ([`EVENT_HEAD_SIZE`]) for the rest, whose details are zero.
pub fn decode(bytes: &[u8]) -> Result<TcpEvent, DecodeError> {
    let mut raw = Event::ZERO;
    match bytes.len() {
        EVENT_SIZE | EVENT_HEAD_SIZE => {
            // SAFETY: `Event` is plain data for which every bit pattern is valid, and at
            // least `bytes.len()` bytes long (both sizes are checked just above).
            let into =
                unsafe { std::slice::from_raw_parts_mut((&raw mut raw).cast::<u8>(), bytes.len()) };
            into.copy_from_slice(bytes);
        }
        other => return Err(DecodeError::Size(other)),
    }
    decode_event(&raw)
}

pub fn decode_event(raw: &Event) -> Result<TcpEvent, DecodeError> {
    let state = |value| TcpState::from_kernel(value).ok_or(DecodeError::UnknownState(value));
    // 0 means "no socket, state unknown" for resets.
    let maybe_state = |value| match value {
        0 => Ok(None),
        v => state(v).map(Some),
    };
    let kind = match raw.kind {
        kind::STATE_CHANGE => EventKind::StateChange {
            old: state(raw.old_state)?,
            new: state(raw.new_state)?,
        },
        kind::RETRANSMIT => EventKind::Retransmit {
            state: state(raw.new_state)?,
            err: raw.err,
        },
        kind::RETRANSMIT_SYNACK => EventKind::RetransmitSynack,
        kind::SEND_RESET => EventKind::SendReset {
            state: maybe_state(raw.new_state)?,
        },
        kind::RECEIVE_RESET => EventKind::ReceiveReset {
            state: maybe_state(raw.new_state)?,
        },
        other => return Err(DecodeError::UnknownKind(other)),
    };
    let ip = |bytes: &[u8; 16]| match raw.family {
        AF_INET => Ok(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        AF_INET6 => Ok(IpAddr::V6(Ipv6Addr::from(*bytes))),
        other => Err(DecodeError::UnknownFamily(other)),
    };
    Ok(TcpEvent {
        ts_ns: raw.ts_ns,
        skaddr: raw.skaddr,
        netns: raw.netns,
        sock_cgroup_id: raw.sock_cgroup_id,
        task: Task {
            pid: raw.tgid,
            tid: raw.tid,
            cgroup_id: raw.cgroup_id,
            comm: Comm(raw.comm),
        },
        local: SocketAddr::new(ip(&raw.saddr)?, raw.sport),
        remote: SocketAddr::new(ip(&raw.daddr)?, raw.dport),
        close: close_stats(&raw.close),
        kind,
    })
}

/// The kernel's close details, typed; `None` when it did not read them.
fn close_stats(raw: &CloseDetails) -> Option<SocketAtClose> {
    (raw.flags & close_flags::VALID != 0).then_some(SocketAtClose {
        bytes_acked: raw.bytes_acked,
        bytes_received: raw.bytes_received,
        unacked: raw.unacked,
        peer_fin: raw.flags & close_flags::PEER_FIN != 0,
        segments_sent: raw.segs_out,
        segments_received: raw.segs_in,
        total_retransmits: raw.total_retrans,
        srtt_us: raw.srtt_us_x8 >> 3,
        // `tcp_min_rtt()` starts at ~0U (no sample yet).
        min_rtt_us: if raw.rtt_min_us == u32::MAX {
            0
        } else {
            raw.rtt_min_us
        },
        error: raw.sk_err,
        soft_error: raw.sk_err_soft,
        timeouts: raw.retransmits,
        probes: raw.probes_out,
    })
}

/// Builders for synthetic records, shared by the unit tests of several modules.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    pub(crate) fn raw_v4(kind: u8, old: u8, new: u8) -> Event {
        let mut raw = Event {
            ts_ns: 1_000,
            skaddr: 0xffff_8880_0000_1000,
            cgroup_id: 7,
            sock_cgroup_id: 8,
            netns: 4_026_531_993,
            tgid: 4242,
            tid: 4243,
            family: AF_INET,
            kind,
            old_state: old,
            new_state: new,
            sport: 50312,
            dport: 8080,
            ..Event::ZERO
        };
        raw.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
        raw.daddr[..4].copy_from_slice(&[127, 0, 0, 2]);
        raw.comm[..4].copy_from_slice(b"curl");
        raw
    }

    pub(crate) fn bytes(raw: &Event) -> Vec<u8> {
        // SAFETY: `Event` is plain data without implicit padding.
        unsafe { std::slice::from_raw_parts((raw as *const Event).cast::<u8>(), EVENT_SIZE) }
            .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::*, *};

    #[test]
    fn decodes_an_ipv4_state_change() {
        let event = decode(&bytes(&raw_v4(kind::STATE_CHANGE, 7, 2))).unwrap();
        assert_eq!(event.ts_ns, 1_000);
        assert_eq!(event.skaddr, 0xffff_8880_0000_1000);
        assert_eq!(event.task.pid, 4242);
        assert_eq!(event.task.tid, 4243);
        assert_eq!(event.task.cgroup_id, 7);
        assert_eq!((event.netns, event.sock_cgroup_id), (4_026_531_993, 8));
        assert_eq!(event.task.comm.as_str(), "curl");
        assert_eq!(event.local, "127.0.0.1:50312".parse().unwrap());
        assert_eq!(event.remote, "127.0.0.2:8080".parse().unwrap());
        assert_eq!(
            event.kind,
            EventKind::StateChange {
                old: TcpState::Close,
                new: TcpState::SynSent
            }
        );
        assert!(event.task_is_owner());
    }

    #[test]
    fn decodes_ipv6_addresses_from_all_16_bytes() {
        let mut raw = raw_v4(kind::RETRANSMIT, 1, 1);
        raw.family = AF_INET6;
        raw.err = -11;
        raw.saddr = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        raw.daddr = "2001:db8::ff:2".parse::<Ipv6Addr>().unwrap().octets();
        let event = decode(&bytes(&raw)).unwrap();
        assert_eq!(event.local, "[2001:db8::1]:50312".parse().unwrap());
        assert_eq!(event.remote, "[2001:db8::ff:2]:8080".parse().unwrap());
        assert_eq!(
            event.kind,
            EventKind::Retransmit {
                state: TcpState::Established,
                err: -11
            }
        );
        assert!(!event.task_is_owner());
    }

    #[test]
    fn decodes_resets_with_and_without_a_socket() {
        let event = decode(&bytes(&raw_v4(kind::SEND_RESET, 0, 0))).unwrap();
        assert_eq!(event.kind, EventKind::SendReset { state: None });
        let event = decode(&bytes(&raw_v4(kind::RECEIVE_RESET, 2, 2))).unwrap();
        assert_eq!(
            event.kind,
            EventKind::ReceiveReset {
                state: Some(TcpState::SynSent)
            }
        );
    }

    #[test]
    fn a_record_without_close_details_decodes_as_one_with_them_zero() {
        let mut raw = raw_v4(kind::STATE_CHANGE, 1, 4);
        raw.close = CloseDetails::ZERO;
        let full = bytes(&raw);
        let event = decode(&full[..EVENT_HEAD_SIZE]).unwrap();
        assert_eq!(event, decode(&full).unwrap());
        assert_eq!(event.close, None);
        assert_eq!(
            event.kind,
            EventKind::StateChange {
                old: TcpState::Established,
                new: TcpState::FinWait1
            }
        );
    }

    #[test]
    fn rejects_short_long_and_empty_records() {
        let full = bytes(&raw_v4(kind::STATE_CHANGE, 7, 2));
        assert_eq!(
            decode(&full[..EVENT_SIZE - 1]),
            Err(DecodeError::Size(EVENT_SIZE - 1))
        );
        assert_eq!(decode(&[]), Err(DecodeError::Size(0)));
        assert_eq!(
            decode(&full[..EVENT_HEAD_SIZE + 8]),
            Err(DecodeError::Size(EVENT_HEAD_SIZE + 8))
        );
        let mut long = full.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::Size(EVENT_SIZE + 1)));
    }

    #[test]
    fn rejects_unknown_kinds_families_and_states() {
        assert_eq!(
            decode(&bytes(&raw_v4(0, 7, 2))),
            Err(DecodeError::UnknownKind(0))
        );
        assert_eq!(
            decode(&bytes(&raw_v4(kind::MAX + 1, 7, 2))),
            Err(DecodeError::UnknownKind(kind::MAX + 1))
        );
        assert_eq!(
            decode(&bytes(&raw_v4(kind::STATE_CHANGE, 7, 13))),
            Err(DecodeError::UnknownState(13))
        );
        let mut raw = raw_v4(kind::STATE_CHANGE, 7, 2);
        raw.family = 1;
        assert_eq!(decode(&bytes(&raw)), Err(DecodeError::UnknownFamily(1)));
    }

    #[test]
    fn every_byte_pattern_decodes_or_errors_without_panicking() {
        // A cheap sweep; the fuzz target goes further.
        let mut raw = bytes(&raw_v4(kind::STATE_CHANGE, 1, 4));
        for position in 0..EVENT_SIZE {
            for value in [0u8, 1, 2, 7, 10, 12, 13, 0x7f, 0xff] {
                raw[position] = value;
                let _ = decode(&raw);
            }
        }
    }
}
