//! Seeding from and reconciling with sock_diag: the kernel's list of sockets is the
//! truth for what exists; the event stream only for what happened.
//!
//! A dump lists one network namespace (DESIGN.md §7), so the daemon dumps each one and
//! hands over a [`Snapshot`] of all of them: a connection is judged only against its own
//! namespace's list, never against another's.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::{
    connection::{Connection, Direction, SocketKey},
    stats, Map, Set, Tracker,
};
use crate::state::TcpState;

/// A full socket the kernel lists (listeners included, timewait mini-sockets not), as
/// the tracker needs it: the daemon converts each sock_diag dump into these once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelSocket {
    pub key: SocketKey,
    pub state: TcpState,
    /// The socket's cgroup v2 id when the dump gave it, else 0.
    pub cgroup_id: u64,
}

/// The kernel's sockets in every namespace tcptrace could dump, as of one pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub sockets: Vec<KernelSocket>,
    /// Namespaces whose sockets are all in `sockets`: the truth for what exists there.
    pub dumped: Set<u32>,
    /// Namespaces that exist but could not be dumped: nothing in them is judged.
    pub unreachable: Set<u32>,
    /// When the pass began (CLOCK_MONOTONIC): events after it are newer than it.
    pub started_ns: u64,
}

impl Snapshot {
    /// Whether the snapshot tells what exists in `netns`.
    fn judges(&self, netns: u32) -> bool {
        self.dumped.contains(&netns)
    }

    /// Whether this pass did not find `netns`: neither dumped nor known to exist.
    /// Namespace 0 (the kernel side could not read it) is never missing.
    fn misses(&self, netns: u32) -> bool {
        netns != 0 && !self.dumped.contains(&netns) && !self.unreachable.contains(&netns)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Tracked connections the kernel no longer has (their namespace's gone ones
    /// included).
    pub closed: u64,
    /// Of `closed`, those whose whole namespace is gone.
    pub closed_with_namespace: u64,
    /// Kernel sockets no event had shown.
    pub added: u64,
    /// Connections whose tracked state was not the kernel's.
    pub state_fixed: u64,
}

/// A socket's key without its local port: (namespace, local address, remote).
type Portless = (u32, IpAddr, SocketAddr);

fn portless(key: &SocketKey) -> Portless {
    (key.netns, key.local.ip(), key.remote)
}

/// A full socket that belongs in the connection table (not a listener; a TIME_WAIT
/// socket is a separate mini-socket, never a tracked connection: DESIGN.md §1).
fn is_connection(socket: &KernelSocket) -> bool {
    !matches!(
        socket.state,
        TcpState::Listen | TcpState::Close | TcpState::TimeWait
    )
}

impl Tracker {
    /// At startup: every existing socket enters the table, marked "seen since start"
    /// (its age is unknown).
    pub fn seed(&mut self, snapshot: &Snapshot, now_ns: u64) -> ReconcileReport {
        let report = self.compare(snapshot, now_ns);
        stats::add(&self.stats.seeded, report.added);
        stats::add(&self.stats.reconcile_closed, report.closed);
        stats::add(&self.stats.reconcile_state_fixed, report.state_fixed);
        report
    }

    /// Corrects drift: connections their namespace's dump no longer lists are closed
    /// (their →CLOSE was lost), as are those of a namespace that is gone; sockets we did
    /// not know are added (their opening was lost). Anything with an event since the
    /// pass started is left alone: the event is newer than the dump.
    pub fn reconcile(&mut self, snapshot: &Snapshot, now_ns: u64) -> ReconcileReport {
        let report = self.compare(snapshot, now_ns);
        stats::add(&self.stats.reconcile_added, report.added);
        stats::add(&self.stats.reconcile_closed, report.closed);
        stats::add(&self.stats.reconcile_state_fixed, report.state_fixed);
        report
    }

    fn compare(&mut self, snapshot: &Snapshot, now_ns: u64) -> ReconcileReport {
        let started_ns = snapshot.started_ns;
        // A namespace is gone once two passes in a row missed it: one pass can miss a
        // namespace that is there (its only process exiting as another enters it).
        let missed: Set<u32> = self
            .live()
            .map(|c| c.netns)
            .chain(self.listeners().map(|l| l.netns))
            .filter(|&netns| snapshot.misses(netns))
            .collect();
        let missed_before = std::mem::replace(&mut self.missed_namespaces, missed);
        let gone = |netns: u32| snapshot.misses(netns) && missed_before.contains(&netns);
        // connect() fires CLOSE→SYN_SENT before the source port is chosen: a
        // connection still without it, unchanged since before the dump, is the dump's
        // one connecting socket with the rest of its key that no other tracked
        // connection is, when it is the only such connection. (A port guessed wrong
        // is corrected by the socket's next event, which carries it.)
        let mut connecting: Map<Portless, Vec<SocketAddr>> = Map::default();
        for s in snapshot
            .sockets
            .iter()
            .filter(|s| s.state == TcpState::SynSent)
        {
            let candidates = connecting.entry(portless(&s.key)).or_default();
            // Known through the table's own key indexes (live and finished), not a set
            // of every key rebuilt each pass.
            if self.end_at(s.key).is_none() {
                candidates.push(s.key.local);
            }
        }
        let mut portless_tracked: Map<Portless, Vec<u64>> = Map::default();
        for c in self.bound().filter(|c| c.local_port() == 0) {
            if c.last_activity_ns < started_ns {
                portless_tracked
                    .entry(portless(&c.key()))
                    .or_default()
                    .push(c.id.skaddr);
            }
        }
        let learnable: Vec<(u64, SocketAddr)> = portless_tracked
            .iter()
            .filter_map(|(key, tracked)| {
                match (tracked.as_slice(), connecting.get(key)?.as_slice()) {
                    ([skaddr], [local]) => Some((*skaddr, *local)),
                    _ => None,
                }
            })
            .collect();
        for (skaddr, local) in learnable {
            self.learn_port(skaddr, local, false);
        }
        let present: Map<SocketKey, TcpState> = snapshot
            .sockets
            .iter()
            .filter(|s| is_connection(s))
            .map(|s| (s.key, s.state))
            .collect();
        let stale = |c: &Connection| {
            c.last_activity_ns < started_ns
                && if snapshot.judges(c.netns) {
                    if c.local_port() == 0 {
                        !connecting.contains_key(&portless(&c.key()))
                    } else {
                        !present.contains_key(&c.key())
                    }
                } else {
                    gone(c.netns)
                }
        };
        let gone_bound: Vec<u64> = self
            .bound()
            .filter(|c| stale(c))
            .map(|c| c.id.skaddr)
            .collect();
        let gone_unbound: Vec<SocketKey> = self
            .table
            .unbound()
            .filter(|c| stale(c))
            .map(Connection::key)
            .collect();
        let mut vanished: Vec<Connection> = gone_bound
            .into_iter()
            .filter_map(|sk| self.remove_live(sk))
            .collect();
        vanished.extend(gone_unbound.iter().filter_map(|k| self.remove_unbound(k)));
        let mut report = ReconcileReport {
            closed: vanished.len() as u64,
            closed_with_namespace: vanished.iter().filter(|c| gone(c.netns)).count() as u64,
            ..ReconcileReport::default()
        };
        // A listener whose LISTEN→CLOSE was lost would stay forever.
        let listening: Set<(u32, SocketAddr)> = snapshot
            .sockets
            .iter()
            .filter(|s| s.state == TcpState::Listen)
            .map(|s| (s.key.netns, s.key.local))
            .collect();
        self.forget_listeners(|l| {
            l.since_ns < started_ns
                && if snapshot.judges(l.netns) {
                    !listening.contains(&(l.netns, l.local))
                } else {
                    gone(l.netns)
                }
        });
        // A lost transition leaves a connection in a state the kernel left: take the
        // kernel's (a missed →CLOSE_WAIT would otherwise hide a leak for good).
        for conn in self.live_mut() {
            let kernel_state = present.get(&conn.key()).copied();
            if let Some(state) =
                kernel_state.filter(|s| *s != conn.state() && conn.last_activity_ns < started_ns)
            {
                conn.push_step(state, now_ns);
                report.state_fixed += 1;
            }
        }
        for mut conn in vanished {
            conn.vanished = true;
            conn.push_step(TcpState::Close, now_ns);
            self.retire(conn);
        }

        let known: Set<SocketKey> = self
            .live()
            .map(Connection::key)
            .chain(
                self.finished
                    .iter()
                    .filter(|c| c.last_activity_ns >= started_ns)
                    .map(Connection::key),
            )
            .collect();
        // Sockets that may be a connection whose port is not known yet are not new.
        let still_portless: Set<Portless> = self
            .bound()
            .filter(|c| c.local_port() == 0)
            .map(|c| portless(&c.key()))
            .collect();
        for socket in snapshot.sockets.iter().filter(|s| is_connection(s)) {
            if known.contains(&socket.key) || still_portless.contains(&portless(&socket.key)) {
                continue;
            }
            self.make_room();
            let mut conn =
                self.new_connection(0, socket.key, Direction::Unknown, socket.state, now_ns);
            conn.seen_since_start = true;
            conn.cgroup_id = socket.cgroup_id;
            self.insert_unbound(conn);
            report.added += 1;
        }
        self.sizes_changed();
        report
    }
}
