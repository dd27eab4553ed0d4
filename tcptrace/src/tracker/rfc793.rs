//! Which transitions the TCP state machine allows, as Linux implements it
//! (RFC 793 §3.2 figure 6, plus Linux's RST/abort paths to CLOSE and its hand-over to a
//! timewait socket, which shows as FIN_WAIT2/CLOSING → CLOSE: `net/ipv4/tcp_minisocks.c`).

use crate::state::TcpState::{self, *};

pub(super) fn allowed(old: TcpState, new: TcpState) -> bool {
    // A reset, an abort or a timeout can take any open socket to CLOSE.
    if new == Close {
        return old != Close;
    }
    matches!(
        (old, new),
        (Close, SynSent | Listen)
            | (Listen, SynRecv)
            // Simultaneous open.
            | (SynSent, Established | SynRecv)
            | (SynRecv, Established | FinWait1)
            | (Established, FinWait1 | CloseWait)
            | (FinWait1, FinWait2 | Closing | TimeWait)
            | (FinWait2, TimeWait)
            | (Closing, TimeWait)
            | (CloseWait, LastAck)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_textbook_lives_are_allowed() {
        let lives: [&[TcpState]; 4] = [
            &[Close, SynSent, Established, FinWait1, FinWait2, Close],
            &[Listen, SynRecv, Established, CloseWait, LastAck, Close],
            &[Close, SynSent, Established, FinWait1, Closing, Close],
            &[Close, Listen, Close],
        ];
        for life in lives {
            for pair in life.windows(2) {
                assert!(allowed(pair[0], pair[1]), "{pair:?}");
            }
        }
    }

    #[test]
    fn shortcuts_are_not() {
        for (old, new) in [
            (Close, Established),
            (Listen, Established),
            (Established, SynSent),
            (CloseWait, FinWait1),
            (FinWait2, FinWait1),
            (LastAck, CloseWait),
            (Close, Close),
        ] {
            assert!(!allowed(old, new), "{old}→{new}");
        }
    }
}
