//! What `ss -o` and `ss -i` show of a live socket: the timer its reply header names
//! (`timer:(on,200ms,3)`), and the fields of `struct tcp_info` (`INET_DIAG_INFO`) that
//! say whether the peer still answers.
//!
//! netlink-packet-sock-diag 0.5 hands `INET_DIAG_INFO` over as raw bytes (its decoded
//! form, behind the `rich_nlas` feature, insists on the whole of a recent kernel's
//! struct and fails the reply on an older, shorter one), so it is read here, at the
//! offsets of include/uapi/linux/tcp.h, after a length check. Every field used has been
//! in the struct since Linux 2.6.

use std::time::Duration;

use netlink_packet_sock_diag::inet::Timer;
use serde::Serialize;

/// The kernel timer armed on a socket, as the sock_diag reply header reports it
/// (`idiag_timer`, `idiag_expires`; net/ipv4/inet_diag.c: `inet_sk_diag_fill()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ArmedTimer {
    pub kind: TimerKind,
    /// Until it fires (0 once overdue), in milliseconds.
    pub expires_ms: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// Retransmission (also the tail-loss probe and RACK reordering timers): data is
    /// out and unacknowledged. `ss -o`: `on`.
    Retransmit,
    /// Keepalive (also the FIN_WAIT2 and SYN-ACK timers, which share it).
    Keepalive,
    /// The zero-window probe ("persist") timer: the peer's window is shut.
    /// `ss -o`: `persist`.
    Persist,
    /// A TIME_WAIT (or orphaned FIN_WAIT2) mini-socket's timer.
    TimeWait,
}

/// The header's 32-bit millisecond count, back from the `Duration` the parser made.
fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

impl ArmedTimer {
    /// The header's timer; `None` when none is armed.
    pub fn from_header(timer: Option<&Timer>) -> Option<ArmedTimer> {
        let (kind, expires) = match timer? {
            Timer::Retransmit(expires, _) => (TimerKind::Retransmit, *expires),
            Timer::KeepAlive(expires) => (TimerKind::Keepalive, *expires),
            Timer::Probe(expires) => (TimerKind::Persist, *expires),
            Timer::TimeWait => (TimerKind::TimeWait, Duration::ZERO),
        };
        Some(ArmedTimer {
            kind,
            expires_ms: millis(expires),
        })
    }
}

/// The `struct tcp_info` fields tcptrace uses (net/ipv4/tcp.c: `tcp_get_info()`).
/// Only full sockets carry one: not TIME_WAIT or request (SYN_RECV) mini-sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TcpInfo {
    /// `tcpi_retransmits` (`icsk_retransmits`): retransmission timeouts since the
    /// peer last acknowledged new data; 0 again once it does.
    pub retransmits: u8,
    /// `tcpi_probes` (`icsk_probes_out`): zero-window or keepalive probes sent since
    /// the peer last answered; 0 again at any acceptable ACK.
    pub probes: u8,
    /// `tcpi_backoff` (`icsk_backoff`): how many times the timeout has doubled.
    pub backoff: u8,
    /// `tcpi_rto`: the current retransmission timeout, backoff included (µs; JSON
    /// `rto_ms`, as `ss -i` shows it).
    #[serde(rename = "rto_ms", serialize_with = "micros_as_millis")]
    pub rto_us: u32,
    /// `tcpi_unacked` (`packets_out`): segments sent and not acknowledged.
    pub unacked: u32,
    /// `tcpi_last_data_sent`: since data last went out, retransmissions included (ms).
    pub last_data_sent_ms: u32,
    /// `tcpi_last_data_recv`: since data last came in (ms).
    pub last_data_recv_ms: u32,
    /// `tcpi_last_ack_recv` (`rcv_tstamp`): since the peer's last acceptable ACK,
    /// a probe answer included (ms): how long the peer has been silent.
    pub last_ack_recv_ms: u32,
    /// `tcpi_total_retrans`: segments retransmitted over the connection's life.
    pub total_retrans: u32,
}

fn micros_as_millis<S: serde::Serializer>(us: &u32, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(f64::from(*us) / 1000.0)
}

/// What `ss -o` and `ss -i` show of one socket at the last dump, as the API serves it:
/// the timer and the `tcp_info` fields, side by side in JSON.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelView {
    pub timer: Option<ArmedTimer>,
    #[serde(flatten)]
    pub tcp_info: Option<TcpInfo>,
}

/// The shortest `struct tcp_info` holding every field read: up to and including
/// `tcpi_total_retrans`, at offset 100.
pub const MIN_TCP_INFO_LEN: usize = 104;

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[offset..offset + 4]);
    // The kernel writes the struct in its own byte order, which is ours.
    u32::from_ne_bytes(word)
}

impl TcpInfo {
    /// Reads an `INET_DIAG_INFO` attribute's value; `None` when it is too short to
    /// hold the fields (longer ones, from newer kernels, are fine).
    pub fn parse(bytes: &[u8]) -> Option<TcpInfo> {
        if bytes.len() < MIN_TCP_INFO_LEN {
            return None;
        }
        Some(TcpInfo {
            retransmits: bytes[2],
            probes: bytes[3],
            backoff: bytes[4],
            rto_us: u32_at(bytes, 8),
            unacked: u32_at(bytes, 24),
            last_data_sent_ms: u32_at(bytes, 44),
            last_data_recv_ms: u32_at(bytes, 52),
            last_ack_recv_ms: u32_at(bytes, 56),
            total_retrans: u32_at(bytes, 100),
        })
    }

    /// The same fields written back at their offsets, in a struct of `len` bytes (for
    /// tests: what the kernel would send).
    pub fn to_bytes(&self, len: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; len.max(MIN_TCP_INFO_LEN)];
        bytes[0] = 1; // TCP_ESTABLISHED
        bytes[2] = self.retransmits;
        bytes[3] = self.probes;
        bytes[4] = self.backoff;
        for (offset, value) in [
            (8, self.rto_us),
            (24, self.unacked),
            (44, self.last_data_sent_ms),
            (52, self.last_data_recv_ms),
            (56, self.last_ack_recv_ms),
            (100, self.total_retrans),
        ] {
            bytes[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
        }
        bytes.truncate(len);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TcpInfo {
        TcpInfo {
            retransmits: 3,
            probes: 0,
            backoff: 3,
            rto_us: 1_632_000,
            unacked: 2,
            last_data_sent_ms: 410,
            last_data_recv_ms: 5_210,
            last_ack_recv_ms: 3_020,
            total_retrans: 7,
        }
    }

    #[test]
    fn reads_the_kernel_layout_at_any_length_from_the_minimum() {
        // 232 bytes: Linux 5.x-6.x; 104: the oldest struct holding total_retrans.
        for len in [MIN_TCP_INFO_LEN, 232, 248, 512] {
            assert_eq!(
                TcpInfo::parse(&sample().to_bytes(len)),
                Some(sample()),
                "{len}"
            );
        }
    }

    #[test]
    fn refuses_a_struct_too_short_for_the_fields() {
        for len in [0, 1, 8, 60, MIN_TCP_INFO_LEN - 1] {
            assert_eq!(TcpInfo::parse(&vec![0xff; len]), None, "{len}");
        }
    }

    #[test]
    fn reads_byte_for_byte_what_a_hand_written_struct_holds() {
        // tcpi_state, ca_state, retransmits 5, probes 2, backoff 6, options, wscale,
        // app_limited; rto 0x01020304; ... every other byte distinct.
        let mut bytes: Vec<u8> = (0..MIN_TCP_INFO_LEN as u32).map(|i| i as u8).collect();
        bytes[2..5].copy_from_slice(&[5, 2, 6]);
        let info = TcpInfo::parse(&bytes).unwrap();
        assert_eq!((info.retransmits, info.probes, info.backoff), (5, 2, 6));
        let word = |o: u8| u32::from_ne_bytes([o, o + 1, o + 2, o + 3]);
        assert_eq!(info.rto_us, word(8));
        assert_eq!(info.unacked, word(24));
        assert_eq!(info.last_data_sent_ms, word(44));
        assert_eq!(info.last_data_recv_ms, word(52));
        assert_eq!(info.last_ack_recv_ms, word(56));
        assert_eq!(info.total_retrans, word(100));
    }

    #[test]
    fn a_connections_kernel_view_stays_small() {
        // What the daemon keeps per tracked connection, with its id (daemon/engine.rs).
        assert_eq!(size_of::<(u64, KernelView)>(), 48);
    }

    #[test]
    fn timers_from_the_header() {
        let ms = Duration::from_millis;
        let cases = [
            (Timer::Retransmit(ms(1630), 3), TimerKind::Retransmit, 1630),
            (
                Timer::KeepAlive(ms(7_000_000)),
                TimerKind::Keepalive,
                7_000_000,
            ),
            (Timer::Probe(ms(0)), TimerKind::Persist, 0),
            (Timer::TimeWait, TimerKind::TimeWait, 0),
        ];
        for (timer, kind, expires_ms) in cases {
            assert_eq!(
                ArmedTimer::from_header(Some(&timer)),
                Some(ArmedTimer { kind, expires_ms })
            );
        }
        assert_eq!(ArmedTimer::from_header(None), None);
    }
}
