//! Stuck CLOSE_WAIT: the peer sent its FIN, the kernel acknowledged it, and the
//! application never called close(). Each one holds a socket, a descriptor and its
//! unread data until the process exits: a leak.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
};

use serde::Serialize;

use crate::{
    diag::{
        cgroup::{parse_cgroup_path, Resolve, Workload},
        netns::NamespaceDump,
        owners::OwnerCache,
        DiagSocket,
    },
    state::TcpState,
    tracker::{Connection, Owner, SocketKey},
};

/// A connection in CLOSE_WAIT for longer than the threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StuckCloseWait {
    /// The connection's id in `/api/connections/{id}`.
    pub id: u64,
    /// The socket's network namespace (inode number).
    pub netns: u32,
    /// The socket's cgroup v2 id (0: unknown).
    pub cgroup_id: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// When it entered CLOSE_WAIT, or when tcptrace first saw it there (CLOCK_MONOTONIC).
    pub since_ns: u64,
    pub age_ns: u64,
    /// It was already in CLOSE_WAIT when tcptrace first saw it (at start, or after
    /// lost events): the real age is at least `age_ns`.
    pub age_is_lower_bound: bool,
    /// Data received and not read, the FIN excluded.
    pub unread_bytes: u32,
    /// The application read the end of stream (its recv returned 0) and still did not
    /// close: a plain bug rather than a slow reader.
    pub eof_read: bool,
    /// 0 when no process holds a descriptor for it (not yet accepted).
    pub inode: u32,
    /// What the events said: the task that called connect(), or the listener's owner.
    pub event_owner: Option<Owner>,
}

/// Connections in CLOSE_WAIT for at least `threshold_ns` that their namespace's
/// kernel still lists in CLOSE_WAIT, oldest first. `dumps` are the namespaces' dumps the
/// tracker was just reconciled with: they give each socket's inode and unread bytes.
pub fn find_stuck<'a>(
    connections: impl Iterator<Item = &'a Connection>,
    dumps: &[NamespaceDump],
    now_ns: u64,
    threshold_ns: u64,
) -> Vec<StuckCloseWait> {
    let in_kernel: HashMap<SocketKey, &DiagSocket> = dumps
        .iter()
        .flat_map(|d| d.sockets.iter().map(move |s| (d.netns, s)))
        .filter(|(_, s)| s.state == TcpState::CloseWait && !s.timewait)
        .map(|(netns, s)| (s.key(netns), s))
        .collect();
    let mut stuck: Vec<StuckCloseWait> = connections
        .filter(|c| c.state() == TcpState::CloseWait)
        .filter_map(|conn| {
            let age_ns = now_ns.saturating_sub(conn.state_since_ns());
            if age_ns < threshold_ns {
                return None;
            }
            let socket = in_kernel.get(&conn.key())?;
            Some(StuckCloseWait {
                id: conn.id.generation,
                netns: conn.netns,
                cgroup_id: conn.cgroup_id,
                local: conn.local(),
                remote: conn.remote(),
                since_ns: conn.state_since_ns(),
                age_ns,
                age_is_lower_bound: conn.seen_since_start && conn.steps().len() == 1,
                // sock_diag's queue is rcv_nxt - copied_seq, and the FIN takes a sequence
                // number that reading the end of stream consumes (net/ipv4/tcp.c:
                // tcp_recvmsg_locked(), found_fin_ok).
                unread_bytes: socket.recv_queue.saturating_sub(1),
                eof_read: socket.recv_queue == 0,
                inode: socket.inode,
                event_owner: conn.owner(),
            })
        })
        .collect();
    stuck.sort_by_key(|s| (std::cmp::Reverse(s.age_ns), s.id));
    stuck
}

/// The inodes whose owners a report on `stuck` needs.
pub fn inodes(stuck: &[StuckCloseWait]) -> HashSet<u32> {
    stuck.iter().map(|s| s.inode).filter(|&i| i != 0).collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerSource {
    /// A descriptor in `/proc/<pid>/fd` links to the socket: the process holds it now.
    Proc,
    /// No process holds a descriptor (e.g. never accepted); the events name the
    /// listener's owner or the task that connected.
    Events,
}

/// Who holds a leaked socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LeakOwner {
    pub pid: u32,
    pub comm: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    pub source: OwnerSource,
}

/// One leaked socket, as `/api/leaks` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CloseWaitLeak {
    pub id: u64,
    /// The socket's network namespace (inode number, as `/proc/PID/ns/net` shows it).
    pub netns: u32,
    /// The socket's cgroup v2 path and the container and pod it names, when known
    /// (`cgroup`, `container`, `pod_uid`, `qos` in JSON).
    #[serde(flatten)]
    pub workload: Option<Workload>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// RFC 3339.
    pub since: String,
    pub age_seconds: f64,
    /// "at least since start": tcptrace found it already in CLOSE_WAIT.
    pub age_is_lower_bound: bool,
    pub unread_bytes: u32,
    /// The application saw the end of stream and still did not close.
    pub eof_read: bool,
    pub owner: Option<LeakOwner>,
}

pub fn with_owner(stuck: &StuckCloseWait, owners: &OwnerCache) -> Option<LeakOwner> {
    owner_of(stuck.inode, stuck.event_owner, owners)
}

/// Who holds the socket `inode`: the process `/proc` names (from `owners`), else the
/// one the events named.
pub fn owner_of(inode: u32, event_owner: Option<Owner>, owners: &OwnerCache) -> Option<LeakOwner> {
    if let Some(p) = owners.get(inode) {
        return Some(LeakOwner {
            pid: p.pid,
            comm: p.comm.clone(),
            cgroup: p.cgroup.clone(),
            source: OwnerSource::Proc,
        });
    }
    event_owner.map(|o| LeakOwner {
        pid: o.pid,
        comm: o.comm.as_str().into_owned(),
        cgroup: None,
        source: OwnerSource::Events,
    })
}

/// Where a leaked socket belongs: its own cgroup when the kernel named it (right even
/// for a socket no process holds any more), else the cgroup of the process holding it.
pub fn workload(
    stuck: &StuckCloseWait,
    owner: Option<&LeakOwner>,
    resolve: Resolve<'_>,
) -> Option<Arc<Workload>> {
    workload_of(stuck.cgroup_id, owner, resolve)
}

/// Where the socket of cgroup `cgroup_id` (0: unknown) belongs, falling back to the
/// cgroup of the process holding it.
pub fn workload_of(
    cgroup_id: u64,
    owner: Option<&LeakOwner>,
    resolve: Resolve<'_>,
) -> Option<Arc<Workload>> {
    resolve(cgroup_id).or_else(|| {
        let path = owner?.cgroup.as_deref()?;
        Some(Arc::new(parse_cgroup_path(path)))
    })
}

/// A leaking process as its metric series names it: pid, comm and the container's
/// short id ("" outside containers).
pub type ProcessKey = (u32, String, String);

/// Leaks per process, most first; at most `cap` processes, the rest summed under
/// `None` so that the number of series stays bounded.
pub fn by_process(leaks: &[CloseWaitLeak], cap: usize) -> Vec<(Option<ProcessKey>, u64)> {
    let mut counts: HashMap<Option<ProcessKey>, u64> = HashMap::new();
    for leak in leaks {
        let container = leak
            .workload
            .as_ref()
            .and_then(|w| w.container.as_ref())
            .map_or(String::new(), |c| c.short_id().to_owned());
        let key = leak
            .owner
            .as_ref()
            .map(|o| (o.pid, o.comm.clone(), container));
        *counts.entry(key).or_default() += 1;
    }
    // Leaks without a known owner go to the "other" bucket too.
    let unknown = counts.remove(&None).unwrap_or(0);
    let mut ranked: Vec<_> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let rest: u64 = ranked.iter().skip(cap).map(|(_, n)| n).sum::<u64>() + unknown;
    ranked.truncate(cap);
    if rest > 0 {
        ranked.push((None, rest));
    }
    ranked
}
