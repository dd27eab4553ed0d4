//! How a connection opened and how it ended, read off its timeline.
//!
//! What the events can and cannot tell: the state changes and the RSTs are exact, but
//! TIME_WAIT is a separate socket (the full socket goes FIN_WAIT2/CLOSING → CLOSE), and
//! the active end cannot tell a three-way from a four-way close (the peer's FIN with or
//! after its ACK both give FIN_WAIT1 → FIN_WAIT2 → CLOSE). When both ends are on this
//! host, [`close_shape`] compares the two timelines and can.

use serde::Serialize;

use super::{
    connection::{Connection, Direction, MarkKind, Step},
    CloseStats,
};
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
    /// The peer reset the connection: after the handshake, or an accepted one during it.
    ResetReceived,
    /// connect() answered by a RST: nothing listened.
    Refused,
    /// The handshake ran out of SYN (or SYN-ACK) retries: nothing answered.
    SynTimeout,
    /// Data went unacknowledged through every retransmission (`tcp_retries2`).
    TimedOut,
    /// The keepalive timer's probes went unanswered: the peer is gone.
    KeepaliveTimeout,
    /// An ICMP error ended it (host or network unreachable, or administratively
    /// prohibited: a firewall's reject), during the handshake or as the cause behind a
    /// retransmission timeout.
    Unreachable,
    /// Ended before ESTABLISHED without a RST or an error: the application gave up
    /// (closed a connecting socket), or the kernel did not say why.
    NeverEstablished,
    /// Its →CLOSE was never seen; sock_diag found it gone.
    Vanished,
    /// Seen too partially to say.
    Unknown,
}

impl CloseKind {
    pub const ALL: [CloseKind; 13] = [
        Self::ActiveClose,
        Self::PassiveClose,
        Self::SimultaneousClose,
        Self::ResetSent,
        Self::ResetReceived,
        Self::Refused,
        Self::SynTimeout,
        Self::TimedOut,
        Self::KeepaliveTimeout,
        Self::Unreachable,
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
            Self::SynTimeout => "syn_timeout",
            Self::TimedOut => "timed_out",
            Self::KeepaliveTimeout => "keepalive_timeout",
            Self::Unreachable => "unreachable",
            Self::NeverEstablished => "never_established",
            Self::Vanished => "vanished",
            Self::Unknown => "unknown",
        }
    }
}

/// A close kind's name that is none of [`CloseKind::ALL`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown close kind {0:?}; one of {known}", known = CloseKind::ALL.map(CloseKind::label).join(", "))]
pub struct UnknownCloseKind(String);

impl std::str::FromStr for CloseKind {
    type Err = UnknownCloseKind;

    /// The names of JSON and metric labels (`keepalive_timeout`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        CloseKind::ALL
            .into_iter()
            .find(|k| k.label() == name)
            .ok_or_else(|| UnknownCloseKind(name.to_owned()))
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
    /// It got through its handshake: entered ESTABLISHED, was first seen mid-life, or
    /// (an active opener) had its SYN acknowledged though the event that says so was
    /// lost. Kept for [`ConnectFailure::of`], not part of the JSON view.
    #[serde(skip)]
    pub established: bool,
}

fn handshake_ns(steps: &[Step]) -> Option<u64> {
    steps.windows(2).find_map(|pair| {
        (matches!(pair[0].state, SynSent | SynRecv) && pair[1].state == Established)
            .then(|| pair[1].entered_ns.saturating_sub(pair[0].entered_ns))
    })
}

fn entered(steps: &[Step], state: TcpState) -> bool {
    steps.iter().any(|s| s.state == state)
}

/// The state the connection left to go to CLOSE.
fn state_before_close(steps: &[Step]) -> Option<TcpState> {
    match *steps {
        [.., before, last] if last.state == Close => Some(before.state),
        _ => None,
    }
}

/// The errors an ICMP message leaves (`icmp_err_convert[]`, net/ipv4/icmp.c; `icmpv6_err_convert()`):
/// host or network unreachable or down, administratively prohibited (EACCES: a
/// firewall's reject), host isolated, protocol unreachable, parameter problem. In the
/// handshake any of them ends the socket (`tcp_v4_err()`); later they are soft, and a
/// retransmission timeout reports the one it saw (`tcp_write_err()`).
fn icmp_error(errno: i32) -> bool {
    matches!(
        errno,
        libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN
            | libc::EACCES
            | libc::ENONET
            | libc::ENOPROTOOPT
            | libc::EPROTO
    )
}

/// Why the kernel ended the connection, from the error it left in the socket, when
/// that error is a timeout, an ICMP error or a RST. Timeouts and ICMP errors come from
/// `tcp_write_err()` (net/ipv4/tcp_timer.c: `sk_err_soft` — an ICMP error seen while
/// retransmitting — or else ETIMEDOUT) or, in the handshake, straight from the ICMP
/// handler. The keepalive timer probes only with nothing unacknowledged
/// (`tcp_keepalive_timer()`: no `packets_out`, an empty write queue), so it gives up with
/// its probes out and no data or FIN outstanding; the zero-window probe timer gives up
/// with probes out too but data queued, and the retransmission timer with
/// `icsk_retransmits` > 0: both are data that could not be delivered, `timed_out`.
///
/// A non-blocking connect() can meet its ICMP error while it still holds the socket
/// lock: then the error is only soft (`sk_err_soft`), the kernel does not end the
/// socket, and the application closes it; unless it read the error with `SO_ERROR`
/// (which clears it), the soft error still names the cause.
fn kernel_cause(stats: &CloseStats, established: bool) -> Option<CloseKind> {
    if stats.error == 0 && !established && icmp_error(stats.soft_error) {
        return Some(CloseKind::Unreachable);
    }
    match stats.error {
        errno if icmp_error(errno) => Some(CloseKind::Unreachable),
        libc::ETIMEDOUT if !established => Some(CloseKind::SynTimeout),
        libc::ETIMEDOUT
            if stats.timeouts == 0
                && stats.probes > 0
                && stats.unacked_bytes == 0
                && !stats.fin_pending =>
        {
            Some(CloseKind::KeepaliveTimeout)
        }
        libc::ETIMEDOUT => Some(CloseKind::TimedOut),
        // What tcp_reset() leaves: the RST's own event may have been lost.
        libc::ECONNREFUSED if !established => Some(CloseKind::Refused),
        libc::ECONNRESET | libc::EPIPE => Some(CloseKind::ResetReceived),
        _ => None,
    }
}

pub fn classify(conn: &Connection) -> Lifecycle {
    // Copied out of the table once (connection.rs): every question below reads it.
    let steps = conn.steps();
    let has = |kind| conn.marks().iter().any(|m| m.kind == kind);
    // An active opener whose SYN was acknowledged got through its handshake even if
    // the event that says so was lost.
    let established = entered(&steps, Established)
        || conn.seen_since_start
        || conn.closed_with().is_some_and(|c| c.syn_acked);
    let before_close = state_before_close(&steps);
    // A FIN_WAIT2/CLOSING → CLOSE without a RST is the hand-over to a timewait socket
    // (net/ipv4/tcp_minisocks.c: tcp_time_wait()).
    let time_wait = matches!(before_close, Some(FinWait2 | Closing))
        && !has(MarkKind::ResetSent)
        && !has(MarkKind::ResetReceived);
    let cause = conn
        .closed_with()
        .and_then(|stats| kernel_cause(stats, established));
    let close = if !conn.is_finished() {
        None
    } else if conn.vanished {
        Some(CloseKind::Vanished)
    } else if let Some(cause) = cause {
        // Before the RST checks: a keepalive timeout sends a RST as it gives up.
        Some(cause)
    } else if has(MarkKind::ResetReceived) {
        // Only a connecting socket is refused; a server's half-open child that gets a
        // RST was reset by its client.
        Some(if established || conn.direction == Direction::Passive {
            CloseKind::ResetReceived
        } else {
            CloseKind::Refused
        })
    } else if has(MarkKind::ResetSent) && !time_wait && before_close != Some(LastAck) {
        Some(CloseKind::ResetSent)
    } else if entered(&steps, Closing) {
        Some(CloseKind::SimultaneousClose)
    } else if entered(&steps, FinWait1) {
        Some(CloseKind::ActiveClose)
    } else if entered(&steps, CloseWait) {
        Some(CloseKind::PassiveClose)
    } else if !established {
        Some(CloseKind::NeverEstablished)
    } else {
        Some(CloseKind::Unknown)
    };
    Lifecycle {
        direction: conn.direction,
        handshake_ns: handshake_ns(&steps),
        close,
        time_wait,
        established,
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
            Some(
                CloseKind::ResetSent
                    | CloseKind::ResetReceived
                    | CloseKind::Refused
                    | CloseKind::KeepaliveTimeout
            )
        )
    }) {
        return Some(CloseShape::Reset);
    }
    if a.close == Some(CloseKind::SimultaneousClose) {
        return Some(CloseShape::Simultaneous);
    }
    let at = |conn: &Connection, state| {
        conn.steps()
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

/// Why a connection that never reached ESTABLISHED failed, for the connect-failure
/// counter; `None` for one that was established (or not finished).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectFailure {
    /// A RST answered the SYN: nothing listened.
    Refused,
    /// No answer through every SYN retry.
    SynTimeout,
    /// An ICMP unreachable answered.
    Unreachable,
    /// A RST during the handshake of an accepted connection (SYN_RECV).
    Reset,
    /// The application closed it while it was connecting.
    Abandoned,
}

impl ConnectFailure {
    pub const ALL: [ConnectFailure; 5] = [
        Self::Refused,
        Self::SynTimeout,
        Self::Unreachable,
        Self::Reset,
        Self::Abandoned,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::SynTimeout => "syn_timeout",
            Self::Unreachable => "unreachable",
            Self::Reset => "reset",
            Self::Abandoned => "abandoned",
        }
    }

    /// The failure a finished connection's classification names, if it never got
    /// through its handshake. Connections first seen mid-life got through it.
    pub fn of(lifecycle: &Lifecycle) -> Option<ConnectFailure> {
        if lifecycle.established {
            return None;
        }
        Some(match lifecycle.close? {
            CloseKind::Refused => Self::Refused,
            CloseKind::SynTimeout => Self::SynTimeout,
            CloseKind::Unreachable => Self::Unreachable,
            CloseKind::ResetReceived | CloseKind::ResetSent => Self::Reset,
            CloseKind::NeverEstablished => Self::Abandoned,
            _ => return None,
        })
    }
}
