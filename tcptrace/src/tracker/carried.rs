//! What a finished connection carried, in the application's bytes.
//!
//! The kernel counts sequence space: `bytes_acked` includes the SYN of an active opener
//! (its ACK advances `snd_una` like data's does: `tcp_snd_una_update()`) and this end's
//! FIN once acknowledged; `bytes_received` includes the peer's FIN once `tcp_fin()` ran
//! (the FIN's sequence number goes through `tcp_rcv_nxt_update()` with the data), but
//! never the peer's SYN (`tcp_rcv_synsent_state_process()` sets `rcv_nxt` directly). A
//! passive child starts counting after the handshake, so its SYN-ACK is in neither.
//! Measured on 6.18: 1,000 bytes each way over loopback, closed in order, read as
//! `bytes_acked` 1,002 on the client and 1,001 on the server.

use serde::Serialize;

use super::connection::{Connection, Direction};
use crate::{event::SocketAtClose, state::TcpState};

/// What the connection carried and the state it ended in, from the kernel's counters
/// at →CLOSE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CloseStats {
    /// Bytes written that the peer acknowledged: the payload delivered.
    pub bytes_sent: u64,
    /// Bytes received in order: the payload that arrived.
    pub bytes_received: u64,
    /// Bytes written that were never acknowledged (a dead peer, a reset): lost.
    pub unacked_bytes: u32,
    pub segments_sent: u32,
    pub segments_received: u32,
    /// Segments retransmitted over the connection's life (`total_retrans`).
    pub total_retransmits: u32,
    /// Smoothed RTT at close, µs (`srtt_us >> 3`); 0 when no RTT was ever measured.
    pub srtt_us: u32,
    /// Windowed minimum RTT, µs; 0 when none was measured.
    pub min_rtt_us: u32,
    /// The error the close left for the application (`sk_err`), by name.
    #[serde(serialize_with = "crate::event::serialize_errno")]
    pub error: i32,
    /// An ICMP error it saw without dying of it (`sk_err_soft`), by name: the cause
    /// when the application gave up on a connect the network had refused.
    #[serde(serialize_with = "crate::event::serialize_errno")]
    pub soft_error: i32,
    /// Retransmission timeouts in a row, unanswered (`icsk_retransmits`).
    pub timeouts: u8,
    /// Keepalive or zero-window probes unanswered (`icsk_probes_out`).
    pub probes: u8,
    /// This end was the active opener and the peer acknowledged its SYN.
    #[serde(skip)]
    pub syn_acked: bool,
    /// This end's FIN was sent and not acknowledged.
    #[serde(skip)]
    pub fin_pending: bool,
}

impl CloseStats {
    /// The errno's symbolic name (`ETIMEDOUT`); `None` for no error.
    pub fn error_name(&self) -> Option<&'static str> {
        crate::event::errno_name(self.error)
    }

    /// Takes the SYN and FIN out of the kernel's counts, given the connection's story.
    /// A connection first seen mid-life (direction unknown) keeps its SYN in
    /// `bytes_sent` if it was the active opener: nothing says whether it was.
    pub fn of(conn: &Connection, kernel: &SocketAtClose) -> CloseStats {
        // The active opener's SYN is the first sequence number acknowledged.
        let syn_sent = conn.direction == Direction::Active;
        let syn_acked = syn_sent && kernel.bytes_acked > 0;
        // FIN_WAIT2 too: a connection first seen there (or moved there by a reconcile
        // after a lost FIN_WAIT1) sent its FIN.
        let fin_sent = conn.steps().iter().any(|s| {
            matches!(
                s.state,
                TcpState::FinWait1 | TcpState::FinWait2 | TcpState::LastAck | TcpState::Closing
            )
        });
        // The FIN is the last sequence number written: acknowledged iff all was.
        let fin_acked = fin_sent && kernel.unacked == 0;
        let unacked_control = u32::from(syn_sent && !syn_acked) + u32::from(fin_sent && !fin_acked);
        CloseStats {
            bytes_sent: kernel
                .bytes_acked
                .saturating_sub(u64::from(syn_acked) + u64::from(fin_acked)),
            bytes_received: kernel
                .bytes_received
                .saturating_sub(u64::from(kernel.peer_fin)),
            unacked_bytes: kernel.unacked.saturating_sub(unacked_control),
            segments_sent: kernel.segments_sent,
            segments_received: kernel.segments_received,
            total_retransmits: kernel.total_retransmits,
            srtt_us: kernel.srtt_us,
            min_rtt_us: kernel.min_rtt_us,
            error: kernel.error,
            soft_error: kernel.soft_error,
            timeouts: kernel.timeouts,
            probes: kernel.probes,
            syn_acked,
            fin_pending: fin_sent && !fin_acked,
        }
    }
}
