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
    timeline::{self, SequenceDiagram},
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
/// The furthest a page of `/api/connections` may start: past any table's size
/// (`--max-connections` is 65536 by default), small enough that a page costs little.
pub const MAX_OFFSET: usize = 1 << 20;

/// Which live connections to list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionQuery {
    pub state: Option<TcpState>,
    /// Either end's port.
    pub port: Option<u16>,
    /// The network namespace's inode number.
    pub netns: Option<u32>,
    /// The start of a container id (the 12 digits `docker ps` shows, or more), or of a
    /// pod's UID: the connections of that container or pod. Ids are lowercase hex:
    /// asked in capitals, they still match.
    pub container: Option<String>,
    /// How many of the matching connections (newest first) to skip: the page's start.
    pub offset: usize,
    pub limit: usize,
}

impl ConnectionQuery {
    fn matches(&self, conn: &Connection, resolve: Resolve<'_>) -> bool {
        at(conn, self.port, self.netns)
            && self.state.is_none_or(|s| conn.state() == s)
            && self
                .container
                .as_deref()
                .is_none_or(|wanted| in_container(conn.cgroup_id, wanted, resolve))
    }
}

/// The connection of cgroup `cgroup_id` belongs to a container whose id starts with
/// `wanted` (already lowercase: [`connections`] makes it so once per query), or to a
/// pod whose UID does.
fn in_container(cgroup_id: u64, wanted: &str, resolve: Resolve<'_>) -> bool {
    let Some(workload) = resolve(cgroup_id) else {
        return false;
    };
    let container = workload.container.as_ref().map(|c| c.id.as_str());
    let pod = workload.pod_uid.as_deref();
    container.is_some_and(|id| id.starts_with(wanted))
        || pod.is_some_and(|id| id.starts_with(wanted))
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
    /// The sequence diagram of a connection and its other end, when both are on this
    /// host (`None`: no such connection, or its other end is elsewhere).
    Diagram {
        id: u64,
        reply: oneshot::Sender<Option<SequenceDiagram>>,
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
    /// More match after this page (most recently changed first).
    pub truncated: bool,
    /// How many matching connections come before this page.
    pub offset: usize,
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
    let lowercase = ConnectionQuery {
        container: query.container.as_deref().map(str::to_ascii_lowercase),
        ..query.clone()
    };
    let mut matching: Vec<&Connection> = tracker
        .live()
        .filter(|c| lowercase.matches(c, resolve))
        .collect();
    let total = matching.len();
    let limit = query.limit.min(MAX_LIMIT);
    // `http` refuses a larger offset; this bounds callers that do not go through it.
    let offset = query.offset.min(MAX_OFFSET);
    // Newest first, and the same order every time (the generation breaks ties), so that
    // pages neither overlap nor skip while nothing changes.
    let newest_first = |c: &&Connection| (std::cmp::Reverse(c.state_since_ns()), c.id.generation);
    let end = offset.saturating_add(limit);
    if total > end {
        // Only the connections up to the page's end are sorted.
        matching.select_nth_unstable_by_key(end, newest_first);
        matching.truncate(end);
    }
    matching.sort_by_key(newest_first);
    let page: Vec<ConnectionSummary> = matching
        .into_iter()
        .skip(offset)
        .map(|c| summary(c, kernel, resolve, clock, now_ns))
        .collect();
    ConnectionList {
        matching: total,
        truncated: total > offset + page.len(),
        offset,
        kernel_checked_at: kernel.dumped_ns.map(|ns| rfc3339(clock.to_system_time(ns))),
        connections: page,
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

/// The sequence diagram of connection `id` and its other end on this host; the end that
/// connected is the client.
pub fn diagram(tracker: &Tracker, id: u64) -> Option<SequenceDiagram> {
    let conn = tracker.by_id(id)?;
    let partner = tracker.partner(conn)?;
    let (client, server) = if partner.direction == Direction::Active {
        (partner, conn)
    } else {
        (conn, partner)
    };
    Some(SequenceDiagram::of(client, server))
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
        Query::Diagram { id, reply } => {
            let _ = reply.send(diagram(tracker, id));
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
            limit: 10,
            ..Default::default()
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

    /// Connections 1..=n (ports 40001..), connection i entering ESTABLISHED at i ms,
    /// its socket in cgroup `1000 + i % 3`.
    fn established(n: u64) -> Tracker {
        let mut tracker = Tracker::new(64, 8);
        for i in 1..=n {
            let local = format!("127.0.0.1:{}", 40000 + i);
            for (old, new, ms) in [(Close, SynSent, 0), (SynSent, Established, i)] {
                let mut e = client(i, ms, old, new);
                e.local = local.parse().unwrap();
                e.sock_cgroup_id = 1000 + i % 3;
                tracker.apply(&e);
            }
        }
        tracker
    }

    fn ports(list: &ConnectionList) -> Vec<u16> {
        list.connections.iter().map(|c| c.local.port()).collect()
    }

    #[test]
    fn pages_follow_each_other_newest_first() {
        let tracker = established(7);
        let clock = WallClock::new();
        let page = |offset, limit| {
            let query = ConnectionQuery {
                offset,
                limit,
                ..Default::default()
            };
            connections(&tracker, &none(), &query, &mut |_| None, clock, 0)
        };
        let first = page(0, 3);
        assert_eq!(ports(&first), [40007, 40006, 40005]);
        assert_eq!(
            (first.matching, first.offset, first.truncated),
            (7, 0, true)
        );
        let second = page(3, 3);
        assert_eq!(ports(&second), [40004, 40003, 40002]);
        assert_eq!(
            (second.matching, second.offset, second.truncated),
            (7, 3, true)
        );
        let last = page(6, 3);
        assert_eq!(ports(&last), [40001]);
        assert_eq!((last.matching, last.offset, last.truncated), (7, 6, false));
        let past = page(10, 3);
        assert_eq!(ports(&past), [] as [u16; 0]);
        assert_eq!((past.matching, past.offset, past.truncated), (7, 10, false));
        // Offsets beyond the cap are cut to it.
        assert_eq!(page(usize::MAX, 3).offset, MAX_OFFSET);
    }

    #[test]
    fn filters_by_container_or_pod_id_prefix() {
        use crate::diag::cgroup::parse_cgroup_path;
        let tracker = established(6);
        let docker = std::sync::Arc::new(parse_cgroup_path(
            "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
        ));
        let pod = std::sync::Arc::new(parse_cgroup_path(
            "/kubepods.slice/kubepods-besteffort.slice/\
             kubepods-besteffort-pod1b2c3d4e_0000_4000_8000_000000000001.slice/\
             cri-containerd-fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210.scope",
        ));
        // cgroup 1000: the docker container; 1001: the pod's container; 1002: the host.
        let mut resolve = |id: u64| match id {
            1000 => Some(std::sync::Arc::clone(&docker)),
            1001 => Some(std::sync::Arc::clone(&pod)),
            _ => None,
        };
        let clock = WallClock::new();
        let mut by = |container: &str, state| {
            let query = ConnectionQuery {
                container: Some(container.into()),
                state,
                limit: 10,
                ..Default::default()
            };
            ports(&connections(
                &tracker,
                &none(),
                &query,
                &mut resolve,
                clock,
                0,
            ))
        };
        assert_eq!(by("0123456789ab", None), [40006, 40003]);
        assert_eq!(by("0123456789AB", Some(Established)), [40006, 40003]);
        assert_eq!(by("fedcba", None), [40004, 40001]);
        assert_eq!(by("1b2c3d4e-0000", None), [40004, 40001]);
        assert_eq!(by("0123456789ab", Some(SynSent)), [] as [u16; 0]);
        assert_eq!(by("99", None), [] as [u16; 0]);
        // The workload is in every row, flattened as in /api/leaks.
        let query = ConnectionQuery {
            limit: 1,
            ..Default::default()
        };
        let list = connections(&tracker, &none(), &query, &mut resolve, clock, 0);
        let row = serde_json::to_value(&list.connections[0]).unwrap();
        assert_eq!(
            row["container"]["id"],
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn a_diagram_needs_both_ends_and_puts_the_connecting_one_left() {
        let mut tracker = Tracker::new(64, 8);
        tracker.apply(&client(1, 0, Close, SynSent));
        tracker.apply(&server(2, 1, Listen, SynRecv));
        tracker.apply(&client(1, 2, SynSent, Established));
        tracker.apply(&server(2, 3, SynRecv, Established));
        let ids: Vec<u64> = tracker.live().map(|c| c.id.generation).collect();
        assert_eq!(ids.len(), 2);
        for id in &ids {
            let diagram = diagram(&tracker, *id).expect("both ends are here");
            assert_eq!(
                (diagram.client.port(), diagram.server.port()),
                (40000, 8080)
            );
            assert_eq!(
                diagram
                    .steps
                    .iter()
                    .map(|s| (s.end, s.state))
                    .collect::<Vec<_>>(),
                [
                    (timeline::End::Client, SynSent),
                    (timeline::End::Server, SynRecv),
                    (timeline::End::Client, Established),
                    (timeline::End::Server, Established),
                ]
            );
        }
        let mut alone = Tracker::new(64, 8);
        alone.apply(&client(1, 0, Close, SynSent));
        let id = alone.live().next().unwrap().id.generation;
        assert_eq!(diagram(&alone, id), None);
        assert_eq!(diagram(&alone, id + 100), None);
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
