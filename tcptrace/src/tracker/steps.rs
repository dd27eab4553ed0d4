//! A connection's steps as the table stores them: up to six inline in 37 bytes, exact
//! to the nanosecond, instead of a `Vec` of 16-byte steps on the heap.
//!
//! The first and the last step's times are kept whole; the steps between them as the
//! time since the step before, in 32 bits (up to 4.29 s). That fits what most of the
//! table is, and a whole life of the common shape (CLOSE→SYN_SENT→ESTABLISHED→FIN_WAIT1
//! →FIN_WAIT2→CLOSE): the last state may be entered any time later (the CLOSE_WAIT of a
//! leak days after the handshake). A step that does not fit (a seventh, or a middle
//! step that lasted longer than 4.29 s, or time going backwards) is refused: the
//! connection then keeps all its steps in a `Vec` (connection.rs), whole.

use std::ops::Deref;

use serde::{Serialize, Serializer};

use super::connection::{Step, MAX_STEPS};
use crate::state::TcpState;

/// Steps held inline: six, a whole life (CLOSE→SYN_SENT→ESTABLISHED→FIN_WAIT1→
/// FIN_WAIT2→CLOSE, or LISTEN→…→LAST_ACK→CLOSE), so a finished connection of the
/// common shape allocates nothing (measured: 4 inline made every finished connection
/// spill, a malloc and free each in the per-event path).
pub(super) const INLINE_STEPS: usize = 6;

/// Packed to 4-byte alignment so that it adds no padding where it sits among the
/// connection's 4-byte fields (37 bytes + 3, not 40 + 8).
#[derive(Clone, Copy)]
#[repr(C, packed(4))]
pub(super) struct InlineSteps {
    first_ns: u64,
    last_ns: u64,
    /// Entry time minus the previous step's entry time, of steps 1..len-1.
    gaps: [u32; INLINE_STEPS - 2],
    /// 4 bits a state (`as_kernel`, 1..=12), step `i` in bits `4i..4i+4`.
    states: u32,
    len: u8,
}

impl InlineSteps {
    pub(super) fn new(state: TcpState, at_ns: u64) -> Self {
        Self {
            first_ns: at_ns,
            last_ns: at_ns,
            gaps: [0; INLINE_STEPS - 2],
            states: u32::from(state.as_kernel()),
            len: 1,
        }
    }

    /// Holds no step: its connection keeps them elsewhere.
    pub(super) fn empty() -> Self {
        Self {
            first_ns: 0,
            last_ns: 0,
            gaps: [0; INLINE_STEPS - 2],
            states: 0,
            len: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// The last step's state: what the per-event path asks, without its time.
    pub(super) fn last_state(&self) -> Option<TcpState> {
        self.len().checked_sub(1).map(|i| self.state(i))
    }

    fn state(&self, i: usize) -> TcpState {
        let number = (self.states >> (4 * i)) & 0xf;
        TcpState::from_kernel(number as u8).expect("only kernel state numbers are stored")
    }

    fn entered_ns(&self, i: usize) -> u64 {
        let len = self.len();
        if i == 0 {
            self.first_ns
        } else if i + 1 == len {
            self.last_ns
        } else {
            let gaps = self.gaps;
            gaps[..i]
                .iter()
                .fold(self.first_ns, |at, &gap| at + u64::from(gap))
        }
    }

    /// Step `i`; `i` < `len()`.
    pub(super) fn get(&self, i: usize) -> Step {
        Step {
            state: self.state(i),
            entered_ns: self.entered_ns(i),
        }
    }

    pub(super) fn last(&self) -> Option<Step> {
        self.len().checked_sub(1).map(|i| self.get(i))
    }

    /// Appends a step when it fits; `false` (and unchanged) when it does not.
    #[must_use]
    pub(super) fn push(&mut self, state: TcpState, at_ns: u64) -> bool {
        let len = self.len();
        if len == 0 || len == INLINE_STEPS {
            return false;
        }
        if len >= 2 {
            // The last step becomes a middle one: its entry time as a gap.
            let Some(gap) = self
                .last_ns
                .checked_sub(self.entered_ns(len - 2))
                .and_then(|gap| u32::try_from(gap).ok())
            else {
                return false;
            };
            let mut gaps = self.gaps;
            gaps[len - 2] = gap;
            self.gaps = gaps;
        }
        self.states |= u32::from(state.as_kernel()) << (4 * len);
        self.last_ns = at_ns;
        self.len += 1;
        true
    }
}

/// A connection's steps, copied out of the table: a slice of at most [`MAX_STEPS`].
#[derive(Clone, Copy)]
pub struct Steps {
    len: usize,
    steps: [Step; MAX_STEPS],
}

impl Steps {
    pub(super) fn from_fn(len: usize, step: impl Fn(usize) -> Step) -> Self {
        let mut steps = [Step {
            state: TcpState::Close,
            entered_ns: 0,
        }; MAX_STEPS];
        let len = len.min(MAX_STEPS);
        for (i, slot) in steps[..len].iter_mut().enumerate() {
            *slot = step(i);
        }
        Self { len, steps }
    }
}

impl Deref for Steps {
    type Target = [Step];

    fn deref(&self) -> &[Step] {
        &self.steps[..self.len]
    }
}

impl std::fmt::Debug for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Steps {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Steps {}

impl Serialize for Steps {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::TcpState::*;

    const DAY_NS: u64 = 86_400_000_000_000;

    fn all(steps: &InlineSteps) -> Vec<(TcpState, u64)> {
        (0..steps.len())
            .map(|i| steps.get(i))
            .map(|s| (s.state, s.entered_ns))
            .collect()
    }

    #[test]
    fn six_steps_fit_inline_exactly_even_days_apart_at_either_end() {
        // Six: a whole life, CLOSE or LISTEN to its →CLOSE, the common shape of a
        // finished connection, stays inline.
        let t0 = 1_234_567_890_123;
        let mut steps = InlineSteps::new(Close, t0);
        assert!(steps.push(SynSent, t0));
        assert!(steps.push(Established, t0 + 4_294_967_295));
        assert!(steps.push(FinWait1, t0 + 4_294_967_296));
        assert!(steps.push(FinWait2, t0 + 4_294_967_297));
        // The last step is kept whole, however late.
        assert!(steps.push(Close, t0 + 3 * DAY_NS + 7));
        assert_eq!(
            all(&steps),
            [
                (Close, t0),
                (SynSent, t0),
                (Established, t0 + 4_294_967_295),
                (FinWait1, t0 + 4_294_967_296),
                (FinWait2, t0 + 4_294_967_297),
                (Close, t0 + 3 * DAY_NS + 7)
            ]
        );
        assert_eq!(steps.last().unwrap().state, Close);
        assert!(
            !steps.push(SynSent, t0 + 4 * DAY_NS),
            "a seventh does not fit"
        );
        assert_eq!(steps.len(), 6, "unchanged");
        assert_eq!(std::mem::size_of::<InlineSteps>(), 40);
    }

    #[test]
    fn a_middle_step_longer_than_32_bits_of_nanoseconds_is_refused() {
        let mut steps = InlineSteps::new(SynSent, 10);
        // One step: the second's time is whole.
        assert!(steps.push(Established, 10 + 4_294_967_296));
        let before = all(&steps);
        // ESTABLISHED would become a middle step 2^32 ns after SYN_SENT: no.
        assert!(!steps.push(FinWait1, 10 + 2 * DAY_NS));
        assert_eq!(all(&steps), before);
    }

    #[test]
    fn time_going_backwards_is_refused_not_wrapped() {
        let mut steps = InlineSteps::new(Listen, 1_000);
        assert!(steps.push(SynRecv, 999));
        assert_eq!(all(&steps), [(Listen, 1_000), (SynRecv, 999)]);
        assert!(!steps.push(Established, 2_000), "SYN_RECV before LISTEN");
    }

    #[test]
    fn every_state_number_round_trips() {
        for state in TcpState::ALL {
            let mut steps = InlineSteps::new(state, 0);
            for _ in 1..INLINE_STEPS {
                assert!(steps.push(state, 0));
            }
            assert!((0..INLINE_STEPS).all(|i| steps.get(i).state == state));
        }
    }
}
