//! Typed events, as the rest of the daemon sees them after decoding.

use std::net::SocketAddr;

use serde::Serialize;
use tcptrace_common::COMM_LEN;

use crate::{state::TcpState, tracker::SocketKey};

/// One thing the kernel told us about one socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpEvent {
    /// CLOCK_MONOTONIC nanoseconds, as `bpf_ktime_get_ns()` returned them.
    pub ts_ns: u64,
    /// Kernel address of the socket; reused after the socket is freed.
    pub skaddr: u64,
    /// The socket's network namespace (inode number); 0 when unknown.
    pub netns: u32,
    /// The socket's own cgroup v2 id (its creator's cgroup, whatever task is on the
    /// CPU); 0 when unknown.
    pub sock_cgroup_id: u64,
    /// The task that was on the CPU, not necessarily the socket's owner.
    pub task: Task,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub kind: EventKind,
    /// What the socket carried and why it ended: only on a state change to CLOSE, and
    /// only when the kernel side could read it.
    pub close: Option<SocketAtClose>,
}

/// A socket's counters and error state as it went →CLOSE (`struct tcp_sock`), as the
/// kernel keeps them: in sequence space, where the SYN and FIN count one each. The
/// tracker turns them into what the connection carried ([`crate::tracker::CloseStats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketAtClose {
    /// `bytes_acked`: sequence space the peer acknowledged.
    pub bytes_acked: u64,
    /// `bytes_received`: sequence space received in order (a FIN included, not a SYN).
    pub bytes_received: u64,
    /// `write_seq - snd_una`: written (data, a FIN) but not acknowledged.
    pub unacked: u32,
    /// The peer's FIN arrived (`SOCK_DONE`).
    pub peer_fin: bool,
    pub segments_sent: u32,
    pub segments_received: u32,
    /// Segments retransmitted over the connection's life (`total_retrans`).
    pub total_retransmits: u32,
    /// Smoothed RTT, µs (`srtt_us >> 3`); 0 when no RTT was ever measured.
    pub srtt_us: u32,
    /// Windowed minimum RTT, µs (`tcp_min_rtt()`); 0 when none was measured.
    pub min_rtt_us: u32,
    /// The error the close left for the application (`sk_err`, a positive errno).
    pub error: i32,
    /// An ICMP error the socket saw but did not die of (`sk_err_soft`); 0 once an
    /// application read it with `SO_ERROR`, or once the connection made progress.
    pub soft_error: i32,
    /// Retransmission timeouts in a row, unanswered (`icsk_retransmits`).
    pub timeouts: u8,
    /// Keepalive or zero-window probes unanswered (`icsk_probes_out`).
    pub probes: u8,
}

/// Serializes an errno as its name (`"ETIMEDOUT"`), null for none.
pub fn serialize_errno<S: serde::Serializer>(
    errno: &i32,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match errno_name(*errno) {
        Some("other") => serializer.serialize_str(&format!("errno {errno}")),
        Some(name) => serializer.serialize_str(name),
        None => serializer.serialize_none(),
    }
}

/// The names of the errors a TCP close can leave (include/uapi/asm-generic/errno.h).
pub fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        0 => return None,
        libc::EPIPE => "EPIPE",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EPROTO => "EPROTO",
        libc::EACCES => "EACCES",
        libc::ENONET => "ENONET",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EMSGSIZE => "EMSGSIZE",
        _ => "other",
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    pub tid: u32,
    pub cgroup_id: u64,
    pub comm: Comm,
}

/// A task's `comm`, kept as the kernel's fixed 16 bytes: no allocation per event.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Comm(pub [u8; COMM_LEN]);

impl Comm {
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.0[..end])
    }
}

impl std::fmt::Debug for Comm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    StateChange {
        old: TcpState,
        new: TcpState,
    },
    /// One retransmitted skb; `err != 0` means the retransmit failed to go out.
    Retransmit {
        state: TcpState,
        err: i32,
    },
    /// A listener sent a SYN-ACK again for a half-open connection.
    RetransmitSynack,
    /// This host sent a RST; `state` is `None` when no socket matched the segment.
    SendReset {
        state: Option<TcpState>,
    },
    /// A RST arrived for a socket in `state`.
    ReceiveReset {
        state: Option<TcpState>,
    },
}

impl EventKind {
    /// A short stable name, used in JSON and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::StateChange { .. } => "state_change",
            Self::Retransmit { .. } => "retransmit",
            Self::RetransmitSynack => "retransmit_synack",
            Self::SendReset { .. } => "send_reset",
            Self::ReceiveReset { .. } => "receive_reset",
        }
    }
}

impl TcpEvent {
    /// The socket's namespace and 4-tuple.
    pub fn key(&self) -> SocketKey {
        SocketKey {
            netns: self.netns,
            local: self.local,
            remote: self.remote,
        }
    }

    /// Whether `task` is the socket's owner. The tracepoints fire on whatever task is on
    /// the CPU, and many transitions run in softirq; only these are made by the owning
    /// process's own system calls (connect, close/shutdown, listen): DESIGN.md §2.
    pub fn task_is_owner(&self) -> bool {
        match self.kind {
            EventKind::StateChange { old, new } => tcptrace_common::task_is_owner(
                tcptrace_common::kind::STATE_CHANGE,
                old.as_kernel(),
                new.as_kernel(),
            ),
            _ => false,
        }
    }

    /// The states this event concerns, for `--state` filtering.
    pub fn states(&self) -> [Option<TcpState>; 2] {
        match self.kind {
            EventKind::StateChange { old, new } => [Some(old), Some(new)],
            EventKind::Retransmit { state, .. } => [Some(state), None],
            EventKind::RetransmitSynack => [Some(TcpState::NewSynRecv), None],
            EventKind::SendReset { state } | EventKind::ReceiveReset { state } => [state, None],
        }
    }
}
