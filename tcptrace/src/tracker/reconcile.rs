//! Seeding from and reconciling with sock_diag: the kernel's list of sockets is the
//! truth for what exists; the event stream only for what happened.

use std::{collections::BTreeMap, net::SocketAddr};

use serde::Serialize;

use super::{
    connection::{Connection, Direction},
    Tracker,
};
use crate::{diag::DiagSocket, state::TcpState};

/// The most remote endpoints whose TIME_WAIT counts are kept apart; the rest are
/// summed in `other`.
pub const MAX_TIME_WAIT_REMOTES: usize = 4096;

/// TIME_WAIT sockets as sock_diag counted them (never inferred from a timer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TimeWaitLevel {
    pub total: u64,
    pub by_remote: BTreeMap<SocketAddr, u64>,
    /// TIME_WAIT sockets toward remotes beyond the first `MAX_TIME_WAIT_REMOTES`.
    pub other: u64,
}

impl TimeWaitLevel {
    pub fn from_sockets<'a>(sockets: impl IntoIterator<Item = &'a DiagSocket>) -> Self {
        let mut level = Self::default();
        for socket in sockets {
            if socket.state != TcpState::TimeWait {
                continue;
            }
            level.total += 1;
            let full = level.by_remote.len() >= MAX_TIME_WAIT_REMOTES;
            match level.by_remote.get_mut(&socket.remote) {
                Some(count) => *count += 1,
                None if full => level.other += 1,
                None => {
                    level.by_remote.insert(socket.remote, 1);
                }
            }
        }
        level
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    /// Tracked connections the kernel no longer has.
    pub closed: u64,
    /// Kernel sockets no event had shown.
    pub added: u64,
    /// Connections whose tracked state was not the kernel's.
    pub state_fixed: u64,
    pub time_wait: u64,
}

/// A full socket that belongs in the connection table (not a listener, not a timewait
/// mini-socket).
fn is_connection(socket: &DiagSocket) -> bool {
    !socket.timewait && !matches!(socket.state, TcpState::Listen | TcpState::Close)
}

impl Tracker {
    /// At startup: every existing socket enters the table, marked "seen since start"
    /// (its age is unknown).
    pub fn seed(&mut self, sockets: &[DiagSocket], now_ns: u64) -> ReconcileReport {
        let report = self.compare(sockets, now_ns, now_ns);
        self.stats.seeded += report.added;
        self.stats.reconcile_closed += report.closed;
        self.stats.reconcile_state_fixed += report.state_fixed;
        report
    }

    /// Corrects drift against a dump that started at `dump_started_ns`: connections
    /// the kernel no longer has are closed (their →CLOSE was lost), sockets we did not
    /// know are added (their opening was lost). Anything with an event since the dump
    /// started is left alone: the event is newer than the dump.
    pub fn reconcile(
        &mut self,
        sockets: &[DiagSocket],
        dump_started_ns: u64,
        now_ns: u64,
    ) -> ReconcileReport {
        let report = self.compare(sockets, dump_started_ns, now_ns);
        self.stats.reconcile_added += report.added;
        self.stats.reconcile_closed += report.closed;
        self.stats.reconcile_state_fixed += report.state_fixed;
        report
    }

    fn compare(
        &mut self,
        sockets: &[DiagSocket],
        dump_started_ns: u64,
        now_ns: u64,
    ) -> ReconcileReport {
        self.time_wait = TimeWaitLevel::from_sockets(sockets);
        let present: super::Map<(SocketAddr, SocketAddr), TcpState> = sockets
            .iter()
            .filter(|s| is_connection(s))
            .map(|s| (s.tuple(), s.state))
            .collect();
        let stale = |c: &Connection| {
            c.last_activity_ns < dump_started_ns && !present.contains_key(&c.tuple())
        };
        let gone_bound: Vec<u64> = self
            .bound()
            .filter(|c| stale(c))
            .map(|c| c.id.skaddr)
            .collect();
        let gone_unbound: Vec<_> = self
            .unbound
            .values()
            .filter(|c| stale(c))
            .map(Connection::tuple)
            .collect();
        let mut vanished: Vec<Connection> = gone_bound
            .into_iter()
            .filter_map(|sk| self.remove_live(sk))
            .collect();
        vanished.extend(gone_unbound.iter().filter_map(|t| self.unbound.remove(t)));
        let mut report = ReconcileReport {
            time_wait: self.time_wait.total,
            closed: vanished.len() as u64,
            ..ReconcileReport::default()
        };
        // A listener whose LISTEN→CLOSE was lost would stay forever.
        let listening: super::Set<SocketAddr> = sockets
            .iter()
            .filter(|s| s.state == TcpState::Listen)
            .map(|s| s.local)
            .collect();
        self.forget_listeners(|l| l.since_ns < dump_started_ns && !listening.contains(&l.local));
        // A lost transition leaves a connection in a state the kernel left: take the
        // kernel's (a missed →CLOSE_WAIT would otherwise hide a leak for good).
        for conn in self.live_mut() {
            let kernel_state = present.get(&conn.tuple()).copied();
            if let Some(state) = kernel_state
                .filter(|s| *s != conn.state() && conn.last_activity_ns < dump_started_ns)
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

        let known: super::Set<(SocketAddr, SocketAddr)> = self
            .live()
            .map(Connection::tuple)
            .chain(
                self.finished
                    .iter()
                    .filter(|c| c.last_activity_ns >= dump_started_ns)
                    .map(Connection::tuple),
            )
            .collect();
        for socket in sockets.iter().filter(|s| is_connection(s)) {
            if known.contains(&socket.tuple()) {
                continue;
            }
            self.make_room();
            let mut conn =
                self.new_connection(0, socket.tuple(), Direction::Unknown, socket.state, now_ns);
            conn.seen_since_start = true;
            self.unbound.insert(socket.tuple(), conn);
            report.added += 1;
        }
        report
    }
}
