//! How a connection opened and how it ended, read off its timeline.
//!
//! What the events can and cannot tell: the state changes and the RSTs are exact, but
//! TIME_WAIT is a separate socket (the full socket goes FIN_WAIT2/CLOSING → CLOSE), and
//! the active end cannot tell a three-way from a four-way close (the peer's FIN with or
//! after its ACK both give FIN_WAIT1 → FIN_WAIT2 → CLOSE). When both ends are on this
//! host, [`close_shape`] compares the two timelines and can.

use serde::Serialize;

use super::connection::{Connection, Direction, MarkKind};
use crate::state::TcpState::{self, *};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseKind {
    /// This end sent the first FIN (ESTABLISHED → FIN_WAIT1).
    ActiveClose,
    /// The peer sent the first FIN (ESTABLISHED → CLOSE_WAIT).
    PassiveClose,
    /// Both sent FIN before seeing the other's (FIN_WAIT1 → CLOSING).
    SimultaneousClose,
    /// This end aborted with a RST (SO_LINGER 0, close with unread data).
    ResetSent,
    /// The peer reset the connection after the handshake.
    ResetReceived,
    /// connect() answered by a RST: nothing listened.
    Refused,
    /// Ended before ESTABLISHED without a RST: the handshake timed out.
    NeverEstablished,
    /// Its →CLOSE was never seen; sock_diag found it gone.
    Vanished,
    /// Seen too partially to say.
    Unknown,
}

impl CloseKind {
    pub const ALL: [CloseKind; 9] = [
        Self::ActiveClose,
        Self::PassiveClose,
        Self::SimultaneousClose,
        Self::ResetSent,
        Self::ResetReceived,
        Self::Refused,
        Self::NeverEstablished,
        Self::Vanished,
        Self::Unknown,
    ];

    /// The name in JSON and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::ActiveClose => "active_close",
            Self::PassiveClose => "passive_close",
            Self::SimultaneousClose => "simultaneous_close",
            Self::ResetSent => "reset_sent",
            Self::ResetReceived => "reset_received",
            Self::Refused => "refused",
            Self::NeverEstablished => "never_established",
            Self::Vanished => "vanished",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Lifecycle {
    pub direction: Direction,
    /// SYN_SENT → ESTABLISHED (active) or SYN_RECV → ESTABLISHED (passive).
    pub handshake_ns: Option<u64>,
    /// `None` while the connection lives.
    pub close: Option<CloseKind>,
    /// This end went on into TIME_WAIT: handed to a timewait socket for 2MSL.
    pub time_wait: bool,
}

fn handshake_ns(conn: &Connection) -> Option<u64> {
    conn.steps.windows(2).find_map(|pair| {
        (matches!(pair[0].state, SynSent | SynRecv) && pair[1].state == Established)
            .then(|| pair[1].entered_ns.saturating_sub(pair[0].entered_ns))
    })
}

fn entered(conn: &Connection, state: TcpState) -> bool {
    conn.steps.iter().any(|s| s.state == state)
}

/// The state the connection left to go to CLOSE.
fn state_before_close(conn: &Connection) -> Option<TcpState> {
    let n = conn.steps.len();
    (n >= 2 && conn.steps[n - 1].state == Close).then(|| conn.steps[n - 2].state)
}

pub fn classify(conn: &Connection) -> Lifecycle {
    let has = |kind| conn.marks.iter().any(|m| m.kind == kind);
    let established = entered(conn, Established) || conn.seen_since_start;
    let before_close = state_before_close(conn);
    // A FIN_WAIT2/CLOSING → CLOSE without a RST is the hand-over to a timewait socket
    // (net/ipv4/tcp_minisocks.c: tcp_time_wait()).
    let time_wait = matches!(before_close, Some(FinWait2 | Closing))
        && !has(MarkKind::ResetSent)
        && !has(MarkKind::ResetReceived);
    let close = if !conn.is_finished() {
        None
    } else if conn.vanished {
        Some(CloseKind::Vanished)
    } else if has(MarkKind::ResetReceived) {
        Some(if established {
            CloseKind::ResetReceived
        } else {
            CloseKind::Refused
        })
    } else if has(MarkKind::ResetSent) && !time_wait && before_close != Some(LastAck) {
        Some(CloseKind::ResetSent)
    } else if entered(conn, Closing) {
        Some(CloseKind::SimultaneousClose)
    } else if entered(conn, FinWait1) {
        Some(CloseKind::ActiveClose)
    } else if entered(conn, CloseWait) {
        Some(CloseKind::PassiveClose)
    } else if !established {
        Some(CloseKind::NeverEstablished)
    } else {
        Some(CloseKind::Unknown)
    };
    Lifecycle {
        direction: conn.direction,
        handshake_ns: handshake_ns(conn),
        close,
        time_wait,
    }
}

/// The close as a sequence of segments, for two ends both seen on this host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseShape {
    /// FIN, ACK, FIN, ACK: the passive end acknowledged the FIN before closing.
    FourWay,
    /// FIN, FIN+ACK, ACK: the passive end's FIN carried the ACK of the first FIN.
    ThreeWay,
    /// Both FINs crossed: both ends went through CLOSING.
    Simultaneous,
    /// One end reset the connection.
    Reset,
}

/// Compares the ends' timelines. `active` sent the first FIN. The passive end's FIN
/// carried the ACK exactly when it was sent (CLOSE_WAIT → LAST_ACK) no later than the
/// active end saw its FIN acknowledged (FIN_WAIT1 → FIN_WAIT2 or → CLOSE).
pub fn close_shape(active: &Connection, passive: &Connection) -> Option<CloseShape> {
    let (a, p) = (classify(active), classify(passive));
    if [a.close, p.close].iter().any(|c| {
        matches!(
            c,
            Some(CloseKind::ResetSent | CloseKind::ResetReceived | CloseKind::Refused)
        )
    }) {
        return Some(CloseShape::Reset);
    }
    if a.close == Some(CloseKind::SimultaneousClose) {
        return Some(CloseShape::Simultaneous);
    }
    let at = |conn: &Connection, state| {
        conn.steps
            .iter()
            .find(|s| s.state == state)
            .map(|s| s.entered_ns)
    };
    let fin_acked = at(active, FinWait2).or_else(|| at(active, Close))?;
    let passive_fin = at(passive, LastAck)?;
    Some(if passive_fin <= fin_acked {
        CloseShape::ThreeWay
    } else {
        CloseShape::FourWay
    })
}
