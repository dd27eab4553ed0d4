//! The tracker's running counts, kept where they happen and read by the metrics
//! collector at each scrape: one number, one place, never copied on a timer.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// The counts as of one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrackerStats {
    /// Live connections dropped to stay under the cap.
    pub evictions: u64,
    /// Transitions the state machine does not allow.
    pub illegal_transitions: u64,
    /// Transitions whose old state was not the state we had: an event was lost.
    pub gaps: u64,
    pub opened: u64,
    pub finished: u64,
    /// Sockets found by the startup sock_diag dump.
    pub seeded: u64,
    /// Connections a reconcile found gone (their →CLOSE event was lost).
    pub reconcile_closed: u64,
    /// Sockets a reconcile found that no event had shown (their opening was lost).
    pub reconcile_added: u64,
    /// Connections a reconcile found in another state than tracked (a transition was
    /// lost): moved to the kernel's state.
    pub reconcile_state_fixed: u64,
    /// Connections in the table now, and listeners.
    pub live: u64,
    pub listeners: u64,
}

/// The same counts, shared: the tracker (one writer, the event loop) adds, the
/// scrape reads.
#[derive(Debug, Default)]
pub struct SharedStats {
    pub(super) evictions: AtomicU64,
    pub(super) illegal_transitions: AtomicU64,
    pub(super) gaps: AtomicU64,
    pub(super) opened: AtomicU64,
    pub(super) finished: AtomicU64,
    pub(super) seeded: AtomicU64,
    pub(super) reconcile_closed: AtomicU64,
    pub(super) reconcile_added: AtomicU64,
    pub(super) reconcile_state_fixed: AtomicU64,
    pub(super) live: AtomicU64,
    pub(super) listeners: AtomicU64,
}

/// Adds `n` to a count. The tracker is the only writer, so a load and a store do
/// (readers see one value or the next), without the locked read-modify-write of a
/// `fetch_add` on the per-event path.
pub(super) fn add(count: &AtomicU64, n: u64) {
    count.store(count.load(Relaxed).wrapping_add(n), Relaxed);
}

impl SharedStats {
    pub fn snapshot(&self) -> TrackerStats {
        TrackerStats {
            evictions: self.evictions.load(Relaxed),
            illegal_transitions: self.illegal_transitions.load(Relaxed),
            gaps: self.gaps.load(Relaxed),
            opened: self.opened.load(Relaxed),
            finished: self.finished.load(Relaxed),
            seeded: self.seeded.load(Relaxed),
            reconcile_closed: self.reconcile_closed.load(Relaxed),
            reconcile_added: self.reconcile_added.load(Relaxed),
            reconcile_state_fixed: self.reconcile_state_fixed.load(Relaxed),
            live: self.live.load(Relaxed),
            listeners: self.listeners.load(Relaxed),
        }
    }
}
