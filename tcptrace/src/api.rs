//! The JSON API's questions and answers. Questions travel from the HTTP handlers to the
//! loop that owns the table (which stays single-owner, with no lock on the event path);
//! the answers are built here, from the table, as plain data.

use std::{collections::HashMap, net::SocketAddr};

use serde::Serialize;
use tokio::sync::oneshot;

use crate::{
    clock::{rfc3339, WallClock},
    diag::{
        cgroup::{Resolve, Workload},
        tcp_info::KernelView,
    },
    state::TcpState,
    timeline,
    tracker::{classify, CloseKind, CloseStats, Connection, Direction, Owner, Tracker},
};

/// What the last sock_diag dump said of each live connection's socket (`ss -o`,
/// `ss -i`), by connection id (`id.generation`).
#[derive(Clone, Copy, Debug)]
pub struct Kernel<'a> {
    pub views: &'a HashMap<u64, KernelView>,
    /// When that dump began (CLOCK_MONOTONIC); `None` before the first.
    pub dumped_ns: Option<u64>,
}

/// The most connections one `/api/connections` answer holds.
pub const MAX_LIMIT: usize = 10_000;
/// How many it holds unless asked.
pub const DEFAULT_LIMIT: usize = 1_000;

/// Which live connections to list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionQuery {
    pub state: Option<TcpState>,
    /// Either end's port.
    pub port: Option<u16>,
    /// The network namespace's inode number.
    pub netns: Option<u32>,
    pub limit: usize,
}

impl ConnectionQuery {
    fn matches(&self, conn: &Connection) -> bool {
        at(conn, self.port, self.netns) && self.state.is_none_or(|s| conn.state() == s)
    }
}

pub enum Query {
    Connections {
        query: ConnectionQuery,
        reply: oneshot::Sender<ConnectionList>,
    },
    /// One connection's timeline, by id, live or recently finished.
    Connection {
        id: u64,
        reply: oneshot::Sender<Option<serde_json::Value>>,
    },
    /// Recently finished connections: how each ended and what it carried.
    Closed {
        query: ClosedQuery,
        reply: oneshot::Sender<ClosedList>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OwnerView {
    pub pid: u32,
    pub comm: String,
}

impl From<Owner> for OwnerView {
    fn from(owner: Owner) -> Self {
        OwnerView {
            pid: owner.pid,
            comm: owner.comm.as_str().into_owned(),
        }
    }
}

/// Either end's port is `port`, and the connection is in `netns`, when asked.
fn at(conn: &Connection, port: Option<u16>, netns: Option<u32>) -> bool {
    netns.is_none_or(|n| conn.netns == n)
        && port.is_none_or(|p| conn.local().port() == p || conn.remote().port() == p)
}

/// The container and pod a cgroup id belongs to, for JSON.
fn workload(cgroup_id: u64, resolve: Resolve<'_>) -> Option<Workload> {
    resolve(cgroup_id).as_deref().cloned()
}

/// One row of `/api/connections`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConnectionSummary {
    /// For `/api/connections/{id}`.
    pub id: u64,
    /// The socket's network namespace (inode number).
    pub netns: u32,
    /// Its cgroup and the container and pod it names (`cgroup`, `container`,
    /// `pod_uid`, `qos`), when known.
    #[serde(flatten)]
    pub workload: Option<Workload>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: TcpState,
    /// When it entered its state (RFC 3339).
    pub since: String,
    pub in_state_seconds: f64,
    pub direction: Direction,
    pub owner: Option<OwnerView>,
    pub retransmits: u32,
    /// First seen mid-life: its first state's start time is when tcptrace saw it.
    pub seen_since_start: bool,
    /// At the last dump (`kernel_checked_at`): the armed timer and `tcp_info`
    /// (retransmits, probes, backoff, unacked, ...); `null` when that dump did not
    /// list the socket (opened since).
    pub kernel: Option<KernelView>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConnectionList {
    /// Live connections matching the query, returned or not.
    pub matching: usize,
    /// The answer holds only the first `limit` (most recently changed first).
    pub truncated: bool,
    /// When the dump the rows' `kernel` fields come from began (RFC 3339).
    pub kernel_checked_at: Option<String>,
    pub connections: Vec<ConnectionSummary>,
}

fn summary(
    conn: &Connection,
    kernel: &Kernel<'_>,
    resolve: Resolve<'_>,
    clock: WallClock,
    now_ns: u64,
) -> ConnectionSummary {
    ConnectionSummary {
        id: conn.id.generation,
        netns: conn.netns,
        workload: workload(conn.cgroup_id, resolve),
        local: conn.local(),
        remote: conn.remote(),
        state: conn.state(),
        since: rfc3339(clock.to_system_time(conn.state_since_ns())),
        in_state_seconds: now_ns.saturating_sub(conn.state_since_ns()) as f64 / 1e9,
        direction: conn.direction,
        owner: conn.owner().map(OwnerView::from),
        retransmits: conn.retransmits(),
        seen_since_start: conn.seen_since_start,
        kernel: kernel.views.get(&conn.id.generation).copied(),
    }
}

pub fn connections(
    tracker: &Tracker,
    kernel: &Kernel<'_>,
    query: &ConnectionQuery,
    resolve: Resolve<'_>,
    clock: WallClock,
    now_ns: u64,
) -> ConnectionList {
    let mut matching: Vec<&Connection> = tracker.live().filter(|c| query.matches(c)).collect();
    let total = matching.len();
    let limit = query.limit.min(MAX_LIMIT);
    if total > limit {
        matching.select_nth_unstable_by_key(limit, |c| std::cmp::Reverse(c.state_since_ns()));
        matching.truncate(limit);
    }
    matching.sort_by_key(|c| (std::cmp::Reverse(c.state_since_ns()), c.id.generation));
    ConnectionList {
        matching: total,
        truncated: total > limit,
        kernel_checked_at: kernel.dumped_ns.map(|ns| rfc3339(clock.to_system_time(ns))),
        connections: matching
            .into_iter()
            .map(|c| summary(c, kernel, resolve, clock, now_ns))
            .collect(),
    }
}

/// A live or recently finished connection's timeline, with its lifecycle and, when its
/// other end is on this host too, the close's shape; with its cgroup, container and pod,
/// and, while it lives, what the last dump said of it (`kernel`).
pub fn connection(
    tracker: &Tracker,
    kernel: &Kernel<'_>,
    id: u64,
    resolve: Resolve<'_>,
) -> Option<serde_json::Value> {
    let conn = tracker.by_id(id)?;
    let live = !conn.is_finished();
    let mut value = timeline::json_value(conn, tracker.partner(conn));
    let workload = serde_json::to_value(workload(conn.cgroup_id, resolve));
    if let Some(object) = value.as_object_mut() {
        if let Ok(serde_json::Value::Object(workload)) = workload {
            object.extend(workload);
        }
        if live {
            let view = kernel.views.get(&conn.id.generation);
            object.insert(
                "kernel".into(),
                serde_json::to_value(view).unwrap_or_default(),
            );
        }
    }
    Some(value)
}

/// Which recently finished connections to list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClosedQuery {
    pub kind: Option<CloseKind>,
    /// Either end's port.
    pub port: Option<u16>,
    pub netns: Option<u32>,
    pub limit: usize,
}

/// One row of `/api/closed`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClosedSummary {
    /// For `/api/connections/{id}`, while it is in the finished ring.
    pub id: u64,
    pub netns: u32,
    #[serde(flatten)]
    pub workload: Option<Workload>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub direction: Direction,
    pub owner: Option<OwnerView>,
    pub close: Option<CloseKind>,
    /// When it closed (RFC 3339).
    pub closed_at: String,
    /// From its open to its close; `None` for one first seen mid-life.
    pub duration_seconds: Option<f64>,
    /// What it carried and the error it ended with, when the kernel said.
    pub carried: Option<CloseStats>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClosedList {
    /// Finished connections still remembered that match, returned or not.
    pub matching: usize,
    pub truncated: bool,
    /// Newest first.
    pub connections: Vec<ClosedSummary>,
}

/// The finished ring's connections matching `query`, newest first.
pub fn closed(
    tracker: &Tracker,
    query: &ClosedQuery,
    resolve: Resolve<'_>,
    clock: WallClock,
) -> ClosedList {
    let matching: Vec<&Connection> = tracker
        .finished()
        .rev()
        .filter(|c| {
            at(c, query.port, query.netns)
                && query.kind.is_none_or(|k| classify(c).close == Some(k))
        })
        .collect();
    let limit = query.limit.min(MAX_LIMIT);
    ClosedList {
        matching: matching.len(),
        truncated: matching.len() > limit,
        connections: matching
            .into_iter()
            .take(limit)
            .map(|c| ClosedSummary {
                id: c.id.generation,
                netns: c.netns,
                workload: workload(c.cgroup_id, resolve),
                local: c.local(),
                remote: c.remote(),
                direction: c.direction,
                owner: c.owner().map(OwnerView::from),
                close: classify(c).close,
                closed_at: rfc3339(clock.to_system_time(c.state_since_ns())),
                duration_seconds: c.lifetime_ns().map(|ns| ns as f64 / 1e9),
                carried: c.closed_with().copied(),
            })
            .collect(),
    }
}

pub fn answer(
    query: Query,
    tracker: &Tracker,
    kernel: &Kernel<'_>,
    resolve: Resolve<'_>,
    clock: WallClock,
    now_ns: u64,
) {
    // A requester that gave up (timed out) no longer listens; nothing to do then.
    match query {
        Query::Connections { query, reply } => {
            let _ = reply.send(connections(tracker, kernel, &query, resolve, clock, now_ns));
        }
        Query::Connection { id, reply } => {
            let _ = reply.send(connection(tracker, kernel, id, resolve));
        }
        Query::Closed { query, reply } => {
            let _ = reply.send(closed(tracker, &query, resolve, clock));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        diag::tcp_info::{ArmedTimer, TcpInfo, TimerKind},
        state::TcpState::*,
        testing::*,
    };

    static NO_VIEWS: std::sync::LazyLock<HashMap<u64, KernelView>> =
        std::sync::LazyLock::new(HashMap::new);

    /// No dump yet.
    fn none() -> Kernel<'static> {
        Kernel {
            views: &NO_VIEWS,
            dumped_ns: None,
        }
    }

    #[test]
    fn lists_filter_and_truncate_newest_first() {
        let mut tracker = Tracker::new(64, 8);
        for i in 0..5u64 {
            let mut e = client(i + 1, i * 10, Close, SynSent);
            e.local = format!("127.0.0.1:{}", 40000 + i).parse().unwrap();
            tracker.apply(&e);
            let mut e = client(i + 1, i * 10 + 1, SynSent, Established);
            e.local = format!("127.0.0.1:{}", 40000 + i).parse().unwrap();
            tracker.apply(&e);
        }
        tracker.apply(&server(100, 60, Listen, SynRecv));
        let clock = WallClock::new();
        let all = |limit| ConnectionQuery {
            limit,
            ..Default::default()
        };
        let list = connections(&tracker, &none(), &all(3), &mut |_| None, clock, 100 * MS);
        assert_eq!((list.matching, list.truncated), (6, true));
        assert_eq!(
            list.connections.iter().map(|c| c.state).collect::<Vec<_>>(),
            [SynRecv, Established, Established]
        );
        assert_eq!(list.connections[1].local.port(), 40004);
        assert_eq!(list.connections[1].in_state_seconds, 0.059);
        let established = ConnectionQuery {
            state: Some(Established),
            port: Some(40002),
            netns: None,
            limit: 10,
        };
        let list = connections(
            &tracker,
            &none(),
            &established,
            &mut |_| None,
            clock,
            100 * MS,
        );
        assert_eq!((list.matching, list.truncated), (1, false));
        assert_eq!(list.connections[0].owner.as_ref().unwrap().pid, 100);
        // Limits above the cap are cut to it.
        assert_eq!(
            connections(&tracker, &none(), &all(usize::MAX), &mut |_| None, clock, 0).matching,
            6
        );
    }

    #[test]
    fn closed_connections_newest_first_by_kind() {
        let mut tracker = Tracker::new(64, 8);
        for sk in 1..=3u64 {
            tracker.apply(&client(sk, sk * 10, Close, SynSent));
            tracker.apply(&client(sk, sk * 10 + 1, SynSent, Established));
            tracker.apply(&client(sk, sk * 10 + 2, Established, FinWait1));
            tracker.apply(&client(sk, sk * 10 + 3, FinWait1, FinWait2));
            tracker.apply(&client(sk, sk * 10 + 4, FinWait2, Close));
        }
        tracker.apply(&client(9, 50, Close, SynSent));
        tracker.apply(&client(9, 51, SynSent, Close));
        let clock = WallClock::new();
        let query = |kind, limit| ClosedQuery {
            kind,
            limit,
            ..ClosedQuery::default()
        };
        let all = closed(&tracker, &query(None, 2), &mut |_| None, clock);
        assert_eq!((all.matching, all.truncated), (4, true));
        assert_eq!(all.connections[0].close, Some(CloseKind::NeverEstablished));
        assert_eq!(all.connections[1].duration_seconds, Some(0.004));
        let active = closed(
            &tracker,
            &query(Some(CloseKind::ActiveClose), 10),
            &mut |_| None,
            clock,
        );
        assert_eq!(active.matching, 3);
        assert_eq!(active.connections[0].owner.as_ref().unwrap().pid, 100);
    }

    #[test]
    fn one_connection_by_id_live_or_finished() {
        let mut tracker = Tracker::new(64, 8);
        tracker.apply(&client(1, 0, Close, SynSent));
        let id = tracker.live().next().unwrap().id.generation;
        let value = connection(&tracker, &none(), id, &mut |_| None).unwrap();
        assert_eq!(value["steps"][0]["state"], "CLOSE");
        assert_eq!(value["steps"][1]["state"], "SYN_SENT");
        tracker.apply(&client(1, 5, SynSent, Close));
        let value = connection(&tracker, &none(), id, &mut |_| None).unwrap();
        assert_eq!(value["lifecycle"]["close"], "never_established");
        assert_eq!(connection(&tracker, &none(), id + 1, &mut |_| None), None);
    }

    #[test]
    fn rows_carry_what_the_last_dump_said_of_their_socket() {
        let mut tracker = Tracker::new(64, 8);
        tracker.apply(&client(1, 0, Close, SynSent));
        tracker.apply(&client(1, 1, SynSent, Established));
        let conn = tracker.live().next().unwrap();
        let id = conn.id.generation;
        let view = KernelView {
            timer: Some(ArmedTimer {
                kind: TimerKind::Retransmit,
                expires_ms: 812,
            }),
            tcp_info: Some(TcpInfo {
                retransmits: 2,
                backoff: 2,
                rto_us: 816_000,
                unacked: 1,
                last_ack_recv_ms: 1_400,
                total_retrans: 2,
                ..TcpInfo::default()
            }),
        };
        let views = HashMap::from([(id, view)]);
        let kernel = Kernel {
            views: &views,
            dumped_ns: Some(5 * MS),
        };
        let all = ConnectionQuery {
            limit: 10,
            ..Default::default()
        };
        let list = connections(&tracker, &kernel, &all, &mut |_| None, WallClock::new(), 0);
        assert!(list.kernel_checked_at.is_some());
        let row = serde_json::to_value(&list.connections[0]).unwrap();
        assert_eq!(
            row["kernel"],
            serde_json::json!({
                "timer": {"kind": "retransmit", "expires_ms": 812},
                "retransmits": 2,
                "probes": 0,
                "backoff": 2,
                "rto_ms": 816.0,
                "unacked": 1,
                "last_data_sent_ms": 0,
                "last_data_recv_ms": 0,
                "last_ack_recv_ms": 1400,
                "total_retrans": 2,
            })
        );
        let one = connection(&tracker, &kernel, id, &mut |_| None).unwrap();
        assert_eq!(one["kernel"], row["kernel"]);
        // Not in the last dump (opened since): null, and so before any dump.
        let list = connections(&tracker, &none(), &all, &mut |_| None, WallClock::new(), 0);
        assert_eq!(list.kernel_checked_at, None);
        assert_eq!(list.connections[0].kernel, None);
        let one = connection(&tracker, &none(), id, &mut |_| None).unwrap();
        assert!(one["kernel"].is_null());
    }
}
