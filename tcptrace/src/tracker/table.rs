//! The bounded table of live connections and listeners, and the ring of finished ones.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{atomic::Ordering::Relaxed, Arc},
};

use serde::Serialize;

use super::{
    connection::{ConnId, Connection, Direction, Mark, MarkKind, Owner, SocketKey},
    finished::FinishedRing,
    live::LiveTable,
    owners::Owners,
    rfc793,
    stats::{self, SharedStats, TrackerStats},
    CloseStats, Map, Set,
};
use crate::{
    event::{EventKind, TcpEvent},
    state::TcpState,
};

/// How long after its →CLOSE a RST still belongs to a finished connection.
const LATE_MARK_WINDOW_NS: u64 = 100_000_000;

/// Addresses remembered as owned by a namespace, for pairing ends across namespaces.
const MAX_ADDRESS_OWNERS: usize = 65_536;

/// An address that names one host, not "this namespace's own" (loopback) or "any".
fn routable(ip: IpAddr) -> bool {
    !(ip.is_loopback() || ip.is_unspecified())
}

/// A listening socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub netns: u32,
    pub local: SocketAddr,
    pub owner: Option<Owner>,
    pub since_ns: u64,
}

/// What applying one event did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub conn: Option<ConnId>,
    /// How long the socket had been in the state it just left, when we saw it enter it.
    pub time_in_old_state_ns: Option<u64>,
    /// The connection ended with this event and moved to the finished ring.
    pub finished: bool,
    /// The connection's owner as known after this event.
    pub owner: Option<Owner>,
    /// This event opened a new connection, in this direction.
    pub opened: Option<Direction>,
}

pub struct Tracker {
    /// Live connections: by kernel address once an event named it (bound), else by
    /// namespace and 4-tuple (seen by sock_diag only: unbound); by opaque id either way.
    /// Change it only through `insert_live`, `remove_live`, `insert_unbound`,
    /// `remove_unbound` and `learn_port`, which keep its indexes in step.
    pub(super) table: LiveTable,
    /// Owners shared by the connections they own.
    pub(super) owners: Owners,
    listeners: Map<u64, Listener>,
    /// The namespace each routable local address was last seen in, from opening events:
    /// where to look for the other end of a connection between two namespaces.
    address_owners: Map<IpAddr, u32>,
    /// Namespaces of tracked sockets that the last reconcile did not find.
    pub(super) missed_namespaces: Set<u32>,
    pub(super) finished: FinishedRing,
    pub(super) max_connections: usize,
    next_generation: u64,
    pub(super) stats: Arc<SharedStats>,
}

impl Tracker {
    /// A table holding at most `max_connections` live connections (plus as many
    /// listeners) and the last `max_finished` finished timelines.
    pub fn new(max_connections: usize, max_finished: usize) -> Self {
        Self {
            table: LiveTable::default(),
            owners: Owners::default(),
            listeners: Map::default(),
            address_owners: Map::default(),
            missed_namespaces: Set::default(),
            finished: FinishedRing::new(max_finished),
            max_connections: max_connections.max(1),
            next_generation: 1,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> TrackerStats {
        self.stats.snapshot()
    }

    /// The counts as they change, for the metrics to read at scrape.
    pub fn shared_stats(&self) -> Arc<SharedStats> {
        Arc::clone(&self.stats)
    }

    /// Keeps the table's sizes in the shared counts: after every change of `live`,
    /// `unbound` or `listeners`.
    pub(super) fn sizes_changed(&self) {
        let live = self.table.len() as u64;
        self.stats.live.store(live, Relaxed);
        self.stats
            .listeners
            .store(self.listeners.len() as u64, Relaxed);
    }

    /// Live connections, those known only from sock_diag included.
    pub fn live(&self) -> impl Iterator<Item = &Connection> {
        self.table.iter()
    }

    pub fn live_count(&self) -> usize {
        self.table.len()
    }

    /// The other end of `conn` when both ends are on this host: the connection whose
    /// local and remote addresses are `conn`'s remote and local, in the same namespace,
    /// or, for a routable remote address (two pods over veth), in the namespace that
    /// address was last seen in. A loopback peer is always in the same namespace: two
    /// namespaces' 127.0.0.1 are different hosts. Live ends first, then the latest
    /// finished one. O(1): indexed by namespace and 4-tuple.
    pub fn partner(&self, conn: &Connection) -> Option<&Connection> {
        let key = conn.key();
        self.end_at(key.reversed_in(conn.netns))
            .or_else(|| {
                let ip = conn.remote().ip();
                if !routable(ip) {
                    return None;
                }
                let netns = *self.address_owners.get(&ip)?;
                (netns != conn.netns)
                    .then(|| self.end_at(key.reversed_in(netns)))
                    .flatten()
            })
            .filter(|other| other.id != conn.id)
    }

    /// The live, else latest finished, connection with `key`.
    /// The live connection with this namespace and 4-tuple, through the table's key
    /// indexes (bound connections once their port is known, and unbound ones).
    pub fn live_by_key(&self, key: &SocketKey) -> Option<&Connection> {
        self.table
            .bound_by_key(key)
            .or_else(|| self.table.unbound_by_key(key))
    }

    pub(super) fn end_at(&self, key: SocketKey) -> Option<&Connection> {
        self.table
            .bound_by_key(&key)
            .or_else(|| self.table.unbound_by_key(&key))
            .or_else(|| self.finished.by_key(key))
    }

    /// Remembers that `local`'s address is `netns`'s, when routable.
    fn learn_address(&mut self, netns: u32, local: SocketAddr) {
        let ip = local.ip();
        if !routable(ip) {
            return;
        }
        if self.address_owners.len() >= MAX_ADDRESS_OWNERS && !self.address_owners.contains_key(&ip)
        {
            // Bounded: start over rather than grow (only pairing across namespaces
            // depends on it, and it relearns from the next openings).
            self.address_owners.clear();
        }
        self.address_owners.insert(ip, netns);
    }

    /// A finished connection still in the ring.
    pub fn finished_by_id(&self, id: ConnId) -> Option<&Connection> {
        self.finished.by_id(id)
    }

    /// A live or recently finished connection by its opaque id (its generation),
    /// through the indexes: never a scan.
    pub fn by_id(&self, generation: u64) -> Option<&Connection> {
        self.table
            .by_generation(generation)
            .or_else(|| self.finished.by_generation(generation))
    }

    pub(super) fn insert_live(&mut self, conn: Connection) -> &mut Connection {
        self.table.insert_bound(conn)
    }

    pub(super) fn insert_unbound(&mut self, conn: Connection) {
        self.table.insert_unbound(conn);
    }

    pub(super) fn remove_unbound(&mut self, key: &SocketKey) -> Option<Connection> {
        self.table.remove_unbound(key)
    }

    /// connect() fires CLOSE→SYN_SENT before the source port is chosen: the first
    /// event that carries it (a SYN retransmit, SYN_SENT→ESTABLISHED), or the dump,
    /// completes the key. Indexed then by that key, which `remove_live` looks up; a
    /// seeded entry with it was this socket seen by sock_diag. An event's own socket
    /// address is the truth (a socket's port never changes once chosen): it also
    /// corrects a port the dump gave (`from_event`).
    pub(super) fn learn_port(&mut self, skaddr: u64, local: SocketAddr, from_event: bool) {
        let Some(conn) = self.table.get(skaddr) else {
            return;
        };
        if !port_to_learn(conn.local(), local, from_event) {
            return;
        }
        let key = SocketKey {
            local,
            ..conn.key()
        };
        self.remove_unbound(&key);
        self.table.set_local(skaddr, local);
    }

    /// `learn_port` when the connection at `skaddr` needs it: the per-event path checks
    /// the connection it already holds and pays for nothing more in the usual case.
    fn learn_port_if(&mut self, skaddr: u64, local: SocketAddr, from_event: bool) {
        if self
            .table
            .get(skaddr)
            .is_some_and(|c| port_to_learn(c.local(), local, from_event))
        {
            self.learn_port(skaddr, local, from_event);
        }
    }

    pub(super) fn remove_live(&mut self, skaddr: u64) -> Option<Connection> {
        self.table.remove_bound(skaddr)
    }

    /// Bound live connections, for reconcile's scan.
    pub(super) fn bound(&self) -> impl Iterator<Item = &Connection> {
        self.table.bound()
    }

    /// Every live connection, for reconcile's corrections (which change no key).
    pub(super) fn live_mut(&mut self) -> impl Iterator<Item = &mut Connection> {
        self.table.iter_mut()
    }

    pub fn listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners.values()
    }

    /// Drops the listeners `gone` picks; how many.
    pub(super) fn forget_listeners(&mut self, gone: impl Fn(&Listener) -> bool) -> u64 {
        let before = self.listeners.len();
        self.listeners.retain(|_, l| !gone(l));
        (before - self.listeners.len()) as u64
    }

    /// Entries in the id indexes: exactly the live connections.
    #[cfg(test)]
    pub(super) fn id_index_len(&self) -> usize {
        self.table.id_index_len()
    }

    /// Entries in the key index: never more than live connections.
    #[cfg(test)]
    pub(super) fn key_index_len(&self) -> usize {
        self.table.key_index_len()
    }

    pub fn finished(&self) -> impl DoubleEndedIterator<Item = &Connection> {
        self.finished.iter()
    }

    pub fn apply(&mut self, event: &TcpEvent) -> Applied {
        let applied = self.apply_kind(event);
        self.sizes_changed();
        applied
    }

    fn apply_kind(&mut self, event: &TcpEvent) -> Applied {
        match event.kind {
            EventKind::StateChange { old, new } => self.apply_transition(event, old, new),
            EventKind::Retransmit { state, err } => {
                let kind = if err == 0 {
                    MarkKind::Retransmit
                } else {
                    MarkKind::RetransmitFailed
                };
                self.mark(event, kind, Some(state))
            }
            // The skaddr is the listener's; the child socket does not exist yet.
            EventKind::RetransmitSynack => Applied::default(),
            EventKind::SendReset { state } => self.mark(event, MarkKind::ResetSent, state),
            EventKind::ReceiveReset { state } => self.mark(event, MarkKind::ResetReceived, state),
        }
    }

    fn mark(&mut self, event: &TcpEvent, kind: MarkKind, state: Option<TcpState>) -> Applied {
        // A RST's addresses may be the segment's, not the socket's: only fill a gap.
        let own_addresses = matches!(kind, MarkKind::Retransmit | MarkKind::RetransmitFailed);
        self.learn_port_if(event.skaddr, event.local, own_addresses);
        // An abort reports its RST right after →CLOSE (tcp_disconnect() sets CLOSE
        // first): such a mark belongs to the connection that just finished.
        let just_finished = |c: &&mut Connection| {
            c.id.skaddr == event.skaddr
                && event.ts_ns.saturating_sub(c.last_activity_ns) < LATE_MARK_WINDOW_NS
        };
        let conn = match self.table.get_mut(event.skaddr) {
            Some(conn) => conn,
            None if event.skaddr == 0 => return Applied::default(),
            None => match self.finished.recent_mut().take(8).find(just_finished) {
                Some(conn) => conn,
                None => return Applied::default(),
            },
        };
        conn.push_mark(Mark {
            kind,
            at_ns: event.ts_ns,
            state,
        });
        Applied {
            conn: Some(conn.id),
            owner: conn.owner(),
            ..Applied::default()
        }
    }

    fn apply_transition(&mut self, event: &TcpEvent, old: TcpState, new: TcpState) -> Applied {
        use TcpState::*;
        if new == Listen || (old == Listen && new == Close) {
            return self.apply_listener(event, old, new);
        }
        let opening = match (old, new) {
            (Close, SynSent) => Some(Direction::Active),
            (Listen, SynRecv) => Some(Direction::Passive),
            _ => None,
        };
        let ts = event.ts_ns;
        let key = event.key();
        let mut unknown_opened = false;
        if let Some(direction) = opening {
            // Any entry still at this address belongs to a freed socket whose →CLOSE
            // we missed.
            if let Some(stale) = self.remove_live(event.skaddr) {
                stats::add(&self.stats.gaps, 1);
                self.retire(stale);
            }
            // An accepted socket belongs to whoever listens on its port.
            let inherited = (direction == Direction::Passive)
                .then(|| self.listener_owner(event.netns, event.local))
                .flatten();
            // A seeded socket with this key was this one seen a moment early.
            self.remove_unbound(&key);
            self.learn_address(event.netns, event.local);
            let inherited = inherited.map(|owner| self.owners.intern(owner));
            self.open(event, direction, old).share_owner(inherited);
        } else if !self.table.contains(event.skaddr) {
            if let Some(mut seeded) = self.remove_unbound(&key) {
                // A socket sock_diag showed us: now we know its kernel address.
                seeded.id.skaddr = event.skaddr;
                self.insert_live(seeded);
            } else {
                self.open(event, Direction::Unknown, old).seen_since_start = true;
                unknown_opened = true;
            }
        }
        let mut conn = self.table.get_mut(event.skaddr).expect("inserted above");
        if port_to_learn(conn.local(), event.local, true) {
            self.learn_port(event.skaddr, event.local, true);
            conn = self.table.get_mut(event.skaddr).expect("still live");
        }
        let mut applied = Applied {
            opened: opening.or(unknown_opened.then_some(Direction::Unknown)),
            ..Applied::default()
        };
        // A connection first seen mid-life entered its first state at an unknown time.
        let entry_time_known =
            opening.is_none() && !(conn.seen_since_start && conn.steps().len() == 1);
        if conn.state() == old {
            if entry_time_known {
                applied.time_in_old_state_ns = Some(ts.saturating_sub(conn.state_since_ns()));
            }
        } else {
            stats::add(&self.stats.gaps, 1);
        }
        if !rfc793::allowed(old, new) {
            stats::add(&self.stats.illegal_transitions, 1);
            conn.push_illegal(old, new);
        }
        if conn.owner().is_none() && event.task_is_owner() {
            conn.share_owner(Some(self.owners.intern(Owner::from(event.task))));
        }
        if conn.cgroup_id == 0 {
            conn.cgroup_id = event.sock_cgroup_id;
        }
        conn.push_step(new, ts);
        applied.conn = Some(conn.id);
        applied.owner = conn.owner();
        if new == Close {
            let mut conn = self.remove_live(event.skaddr).expect("present");
            if let Some(kernel) = &event.close {
                let stats = CloseStats::of(&conn, kernel);
                conn.set_closed_with(stats);
            }
            self.retire(conn);
            applied.finished = true;
        }
        applied
    }

    fn apply_listener(&mut self, event: &TcpEvent, old: TcpState, new: TcpState) -> Applied {
        if new == TcpState::Listen {
            self.listeners.insert(
                event.skaddr,
                Listener {
                    netns: event.netns,
                    local: event.local,
                    owner: event.task_is_owner().then(|| Owner::from(event.task)),
                    since_ns: event.ts_ns,
                },
            );
            if old != TcpState::Close {
                stats::add(&self.stats.illegal_transitions, 1);
            }
            return Applied {
                owner: self.listeners[&event.skaddr].owner,
                ..Applied::default()
            };
        }
        let listener = self.listeners.remove(&event.skaddr);
        Applied {
            time_in_old_state_ns: listener
                .as_ref()
                .map(|l| event.ts_ns.saturating_sub(l.since_ns)),
            owner: listener.and_then(|l| l.owner),
            ..Applied::default()
        }
    }

    /// The owner of the listener that would accept a connection to `local`: same
    /// namespace, same port, and the same address or a wildcard one.
    fn listener_owner(&self, netns: u32, local: SocketAddr) -> Option<Owner> {
        self.listeners
            .values()
            .filter(|l| l.netns == netns && l.local.port() == local.port())
            .find(|l| l.local.ip() == local.ip() || l.local.ip().is_unspecified())
            .and_then(|l| l.owner)
    }

    /// Inserts a new connection first seen in `first_state`, evicting if full.
    fn open(&mut self, event: &TcpEvent, direction: Direction, first: TcpState) -> &mut Connection {
        self.make_room();
        stats::add(&self.stats.opened, 1);
        let mut conn =
            self.new_connection(event.skaddr, event.key(), direction, first, event.ts_ns);
        conn.cgroup_id = event.sock_cgroup_id;
        self.insert_live(conn)
    }

    pub(super) fn make_room(&mut self) {
        if self.live_count() >= self.max_connections {
            self.evict();
        }
    }

    pub(super) fn new_connection(
        &mut self,
        skaddr: u64,
        key: SocketKey,
        direction: Direction,
        first: TcpState,
        at_ns: u64,
    ) -> Connection {
        let id = ConnId {
            skaddr,
            generation: self.next_generation,
        };
        self.next_generation += 1;
        Connection::new(id, key, direction, first, at_ns)
    }

    /// Drops the least recently active sixteenth of the table at once, so that a flood
    /// costs one O(n) pass per n/16 insertions rather than one per insertion; CLOSE_WAIT
    /// connections only when nothing else is left (`LiveTable::eviction_order`).
    fn evict(&mut self) {
        let batch = (self.max_connections / 16).max(1);
        let mut order = self.table.eviction_order();
        let batch = batch.min(order.len());
        if batch == 0 {
            return;
        }
        order.select_nth_unstable(batch - 1);
        for &(_, slot) in &order[..batch] {
            self.table.remove_tagged(slot);
        }
        stats::add(&self.stats.evictions, batch as u64);
    }

    pub(super) fn retire(&mut self, conn: Connection) {
        stats::add(&self.stats.finished, 1);
        self.finished.push(conn);
    }
}

/// Whether `event_local` completes or corrects a connection's local address: its port
/// was not chosen yet, or (from the socket's own event) a dump's guess was wrong.
fn port_to_learn(tracked: SocketAddr, event_local: SocketAddr, from_event: bool) -> bool {
    let wrong = from_event && tracked != event_local && tracked.ip() == event_local.ip();
    event_local.port() != 0 && (tracked.port() == 0 || wrong)
}
