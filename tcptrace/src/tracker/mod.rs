//! The connection table: pure code fed by events, no kernel dependency.
//!
//! Identity is the socket's kernel address plus a generation (DESIGN.md §3): an skaddr
//! is reused once its socket is freed, so a connection starts at CLOSE→SYN_SENT (active
//! open) or at a child's LISTEN→SYN_RECV (passive open) and ends at →CLOSE. Listeners
//! are kept apart. The table is bounded; see [`Tracker::new`].

mod carried;
#[cfg(test)]
mod cause_tests;
mod connection;
mod finished;
mod lifecycle;
mod live;
mod owners;
mod packed;
mod reconcile;
mod rfc793;
mod slab;
mod stats;
mod steps;
#[cfg(test)]
mod storage_tests;
mod table;
#[cfg(test)]
mod tests;

/// The tracker's maps: foldhash, seeded per process (fast on the per-event path, and
/// no fixed collisions for a remote peer to aim at), instead of std's SipHash.
pub(crate) type Map<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

pub use carried::CloseStats;
pub use connection::{ConnId, Connection, Direction, Mark, MarkKind, Owner, SocketKey, Step};
pub use lifecycle::{classify, close_shape, CloseKind, CloseShape, ConnectFailure, Lifecycle};
pub use reconcile::{KernelSocket, ReconcileReport, Snapshot};
pub use stats::{SharedStats, TrackerStats};
pub use steps::Steps;
pub use table::{Applied, Listener, Tracker};
