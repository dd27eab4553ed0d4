//! TCP states with the kernel's numbering (`include/net/tcp_states.h`) and the names
//! operators know from `ss` and the tracepoint's own output.

use std::{fmt, str::FromStr};

use serde::{Serialize, Serializer};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum TcpState {
    Established = 1,
    SynSent = 2,
    SynRecv = 3,
    FinWait1 = 4,
    FinWait2 = 5,
    TimeWait = 6,
    Close = 7,
    CloseWait = 8,
    LastAck = 9,
    Listen = 10,
    Closing = 11,
    /// A request socket (`TCP_NEW_SYN_RECV`): the half-open connection a listener
    /// holds before the child socket exists.
    NewSynRecv = 12,
}

impl TcpState {
    pub const ALL: [TcpState; 12] = [
        Self::Established,
        Self::SynSent,
        Self::SynRecv,
        Self::FinWait1,
        Self::FinWait2,
        Self::TimeWait,
        Self::Close,
        Self::CloseWait,
        Self::LastAck,
        Self::Listen,
        Self::Closing,
        Self::NewSynRecv,
    ];

    /// The state for a kernel state number, `None` for one this build does not know.
    pub fn from_kernel(value: u8) -> Option<Self> {
        Self::ALL.get(usize::from(value).checked_sub(1)?).copied()
    }

    pub fn as_kernel(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Established => "ESTABLISHED",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::FinWait1 => "FIN_WAIT1",
            Self::FinWait2 => "FIN_WAIT2",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::Listen => "LISTEN",
            Self::Closing => "CLOSING",
            Self::NewSynRecv => "NEW_SYN_RECV",
        }
    }
}

impl TcpState {
    /// The name as a Prometheus label value: lower snake case (`close_wait`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Established => "established",
            Self::SynSent => "syn_sent",
            Self::SynRecv => "syn_recv",
            Self::FinWait1 => "fin_wait1",
            Self::FinWait2 => "fin_wait2",
            Self::TimeWait => "time_wait",
            Self::Close => "close",
            Self::CloseWait => "close_wait",
            Self::LastAck => "last_ack",
            Self::Listen => "listen",
            Self::Closing => "closing",
            Self::NewSynRecv => "new_syn_recv",
        }
    }
}

impl fmt::Display for TcpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl Serialize for TcpState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown TCP state {0:?}: expected one of {names}", names = state_names())]
pub struct UnknownState(pub String);

fn state_names() -> String {
    TcpState::ALL.map(TcpState::name).join(", ")
}

impl FromStr for TcpState {
    type Err = UnknownState;

    /// Accepts the names above in any case, with `-` for `_`, and `CLOSED` for `CLOSE`
    /// (RFC 793's name), as people type them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_uppercase().replace('-', "_");
        let wanted = if wanted == "CLOSED" { "CLOSE" } else { &wanted };
        TcpState::ALL
            .into_iter()
            .find(|state| state.name() == wanted)
            .ok_or_else(|| UnknownState(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_numbers_round_trip_and_match_tcp_states_h() {
        for state in TcpState::ALL {
            assert_eq!(TcpState::from_kernel(state.as_kernel()), Some(state));
        }
        assert_eq!(TcpState::from_kernel(1), Some(TcpState::Established));
        assert_eq!(TcpState::from_kernel(6), Some(TcpState::TimeWait));
        assert_eq!(TcpState::from_kernel(7), Some(TcpState::Close));
        assert_eq!(TcpState::from_kernel(10), Some(TcpState::Listen));
        assert_eq!(TcpState::from_kernel(0), None);
        assert_eq!(TcpState::from_kernel(13), None);
        assert_eq!(TcpState::from_kernel(255), None);
        // The numbers the kernel programs and the shared rules use are the same.
        use tcptrace_common::tcp_state as k;
        let shared = [
            k::ESTABLISHED,
            k::SYN_SENT,
            k::SYN_RECV,
            k::FIN_WAIT1,
            k::FIN_WAIT2,
            k::TIME_WAIT,
            k::CLOSE,
            k::CLOSE_WAIT,
            k::LAST_ACK,
            k::LISTEN,
            k::CLOSING,
            k::NEW_SYN_RECV,
        ];
        assert_eq!(TcpState::ALL.map(TcpState::as_kernel), shared);
    }

    #[test]
    fn names_are_the_ones_operators_know() {
        let names: Vec<_> = TcpState::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            [
                "ESTABLISHED",
                "SYN_SENT",
                "SYN_RECV",
                "FIN_WAIT1",
                "FIN_WAIT2",
                "TIME_WAIT",
                "CLOSE",
                "CLOSE_WAIT",
                "LAST_ACK",
                "LISTEN",
                "CLOSING",
                "NEW_SYN_RECV"
            ]
        );
        assert_eq!(format!("{:<12}|", TcpState::Listen), "LISTEN      |");
    }

    #[test]
    fn parses_names_leniently_and_rejects_others() {
        assert_eq!("close-wait".parse(), Ok(TcpState::CloseWait));
        assert_eq!("TIME_WAIT".parse(), Ok(TcpState::TimeWait));
        assert_eq!("closed".parse(), Ok(TcpState::Close));
        let err = "ESTABLISH".parse::<TcpState>().unwrap_err();
        assert!(err.to_string().contains("ESTABLISHED, SYN_SENT"), "{err}");
    }
}
