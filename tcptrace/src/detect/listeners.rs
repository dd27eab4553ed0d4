//! Listener health: how full each listening socket's accept queue is, how many
//! half-open handshakes it holds, how many SYN-ACKs it sent again, and per network
//! namespace how many connection attempts its listeners dropped.
//!
//! Levels come from the sock_diag dump of each namespace: for a LISTEN socket the kernel
//! reports the accept queue's length and its limit in the queue fields
//! (`tcp_diag_get_info()`, net/ipv4/tcp_diag.c: `idiag_rqueue = sk_ack_backlog`,
//! `idiag_wqueue = sk_max_ack_backlog`; `ss -lnt` shows them as Recv-Q and Send-Q), and
//! lists request sockets (`TCP_NEW_SYN_RECV`) with the SYN_RECV flag. The queue is full
//! when it holds one more than its limit (`sk_acceptq_is_full()`: `ack_backlog >
//! max_ack_backlog`), so a full queue of a `listen(fd, 4)` socket shows 5/4. Drops are
//! counted by the kernel per namespace only (`ListenOverflows`, `ListenDrops`, the SYN
//! cookie counters: [`ListenCounters`]); tcptrace reports what they gained between two
//! reconciles. SYN-ACK retransmits come from the `tcp_retransmit_synack` events, counted
//! by the address the client connected to and matched to its listener here.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;

use super::close_wait::{owner_of, workload_of, LeakOwner};
use crate::{
    clock::{rfc3339, WallClock},
    diag::{
        cgroup::{Resolve, Workload},
        netns::NamespaceDump,
        netstat::ListenCounters,
        owners::OwnerCache,
        DiagSocket,
    },
    event::{EventKind, TcpEvent},
    state::TcpState,
    tracker::Owner,
};

/// The most listening sockets a report keeps (fullest first); the rest are counted in
/// `total` and summed in the metrics' `other`.
pub const MAX_REPORTED_LISTENERS: usize = 16_384;
/// The most (namespace, address) pairs whose SYN-ACK retransmits are counted apart;
/// retransmits toward further addresses are not counted.
pub const MAX_SYNACK_ADDRESSES: usize = 4096;

/// How well a listener bound to `listening` serves a connection to `local` (same port):
/// `Some(0)` bound to that very address, `Some(1)` the wildcard of its family, `Some(2)`
/// the IPv6 wildcard for an IPv4 connection (a dual-stack listener); `None`: it does
/// not. IPv4-mapped IPv6 addresses count as IPv4.
fn serves(listening: IpAddr, local: IpAddr) -> Option<u8> {
    match (listening.to_canonical(), local.to_canonical()) {
        (a, b) if a == b => Some(0),
        (IpAddr::V4(a), IpAddr::V4(_)) if a.is_unspecified() => Some(1),
        (IpAddr::V6(a), IpAddr::V6(_)) if a.is_unspecified() => Some(1),
        (IpAddr::V6(a), IpAddr::V4(_)) if a.is_unspecified() => Some(2),
        _ => None,
    }
}

/// One namespace's listening addresses by port, to find which one a connection to a
/// local address belongs to.
struct ListenIndex {
    by_port: HashMap<u16, Vec<SocketAddr>>,
}

impl ListenIndex {
    fn new(addresses: impl IntoIterator<Item = SocketAddr>) -> Self {
        let mut by_port: HashMap<u16, Vec<SocketAddr>> = HashMap::new();
        for addr in addresses {
            let same_port = by_port.entry(addr.port()).or_default();
            if !same_port.contains(&addr) {
                same_port.push(addr);
            }
        }
        Self { by_port }
    }

    /// The listening address that takes connections to `local`: the most specific.
    fn find(&self, local: SocketAddr) -> Option<SocketAddr> {
        self.by_port
            .get(&local.port())?
            .iter()
            .filter_map(|l| Some((serves(l.ip(), local.ip())?, *l)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, l)| l)
    }
}

/// SYN-ACK retransmits since tcptrace started, by (namespace, the address the client
/// connected to). The events name the listener by kernel address only; sock_diag names
/// it by its local address, which is what these are matched on.
#[derive(Debug, Default)]
pub struct SynackCounts {
    /// netns → connected-to address → (retransmits, when the last one was seen).
    by_netns: HashMap<u32, HashMap<SocketAddr, (u64, u64)>>,
    addresses: usize,
}

impl SynackCounts {
    /// Counts the event if it is a SYN-ACK retransmit.
    pub fn record(&mut self, event: &TcpEvent) {
        if event.kind != EventKind::RetransmitSynack {
            return;
        }
        let full = self.addresses >= MAX_SYNACK_ADDRESSES;
        let addresses = self.by_netns.entry(event.netns).or_default();
        match addresses.get_mut(&event.local) {
            Some((count, last)) => {
                *count += 1;
                *last = event.ts_ns;
            }
            None if full => {}
            None => {
                addresses.insert(event.local, (1, event.ts_ns));
                self.addresses += 1;
            }
        }
    }

    /// Retransmits per listening address of one namespace.
    fn by_listener(&self, netns: u32, index: &ListenIndex) -> HashMap<SocketAddr, u64> {
        let mut counts = HashMap::new();
        for (local, (count, _)) in self.by_netns.get(&netns).into_iter().flatten() {
            if let Some(listener) = index.find(*local) {
                *counts.entry(listener).or_default() += count;
            }
        }
        counts
    }

    /// After a pass: forgets the namespaces that are `gone`, and in each namespace
    /// dumped the addresses no listener serves any more (unless a retransmit came
    /// after the pass began: its listener may be newer than the dump).
    /// A namespace this pass did not dump at all (one that came and went between
    /// passes, or whose counters could not be read) is forgotten too once nothing in it
    /// is newer than the pass: else the bounded table would fill with the dead.
    pub fn forget(&mut self, dumps: &[NamespaceDump], started_ns: u64, gone: &[u32]) {
        for netns in gone {
            self.by_netns.remove(netns);
        }
        let dumped: HashSet<u32> = dumps.iter().map(|d| d.netns).collect();
        self.by_netns.retain(|netns, addresses| {
            dumped.contains(netns) || addresses.values().any(|(_, last)| *last >= started_ns)
        });
        for dump in dumps {
            let Some(addresses) = self.by_netns.get_mut(&dump.netns) else {
                continue;
            };
            let index = ListenIndex::new(listening(dump).map(|s| s.local));
            addresses
                .retain(|local, (_, last)| *last >= started_ns || index.find(*local).is_some());
            if addresses.is_empty() {
                self.by_netns.remove(&dump.netns);
            }
        }
        self.addresses = self.by_netns.values().map(HashMap::len).sum();
    }
}

fn listening(dump: &NamespaceDump) -> impl Iterator<Item = &DiagSocket> {
    dump.sockets
        .iter()
        .filter(|s| s.state == TcpState::Listen && s.is_full())
}

/// One listening socket as the last dump showed it.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerLevel {
    pub netns: u32,
    pub local: SocketAddr,
    pub inode: u32,
    pub cgroup_id: Option<u64>,
    /// Connections that finished their handshake and wait for accept().
    pub accept_queue: u32,
    /// The listen() backlog, capped by net.core.somaxconn.
    pub accept_queue_limit: u32,
    /// Half-open handshakes (request sockets) toward this listener's address.
    pub syn_recv: u64,
    /// SYN-ACKs sent again toward this listener's address since tcptrace started.
    pub synack_retransmits: u64,
}

/// `queue / (limit + 1)`: 1 when the queue is full (it holds one more than its limit),
/// and the next connection attempt is dropped.
pub fn fill_ratio(accept_queue: u64, limit: u64) -> f64 {
    accept_queue as f64 / (limit as f64 + 1.0)
}

impl ListenerLevel {
    pub fn fill_ratio(&self) -> f64 {
        fill_ratio(self.accept_queue.into(), self.accept_queue_limit.into())
    }
}

/// Every listening socket of `dumps`, fullest first, with the half-open handshakes
/// and SYN-ACK retransmits of its address. With SO_REUSEPORT several sockets share an
/// address; each has its own queue, and they share the address's counts.
pub fn find_listeners(dumps: &[NamespaceDump], synacks: &SynackCounts) -> Vec<ListenerLevel> {
    let mut levels = Vec::new();
    for dump in dumps {
        let index = ListenIndex::new(listening(dump).map(|s| s.local));
        if index.by_port.is_empty() {
            continue;
        }
        let mut syn_recv: HashMap<SocketAddr, u64> = HashMap::new();
        for request in dump.sockets.iter().filter(|s| s.request) {
            if let Some(listener) = index.find(request.local) {
                *syn_recv.entry(listener).or_default() += 1;
            }
        }
        let synack = synacks.by_listener(dump.netns, &index);
        levels.extend(listening(dump).map(|s| ListenerLevel {
            netns: dump.netns,
            local: s.local,
            inode: s.inode,
            cgroup_id: s.cgroup_id,
            accept_queue: s.recv_queue,
            accept_queue_limit: s.send_queue,
            syn_recv: syn_recv.get(&s.local).copied().unwrap_or(0),
            synack_retransmits: synack.get(&s.local).copied().unwrap_or(0),
        }));
    }
    levels.sort_by(|a, b| {
        b.fill_ratio()
            .total_cmp(&a.fill_ratio())
            .then(b.accept_queue.cmp(&a.accept_queue))
            .then(b.syn_recv.cmp(&a.syn_recv))
            .then_with(|| (a.netns, a.local, a.inode).cmp(&(b.netns, b.local, b.inode)))
    });
    levels
}

/// The inodes whose owners a report on `levels` needs.
pub fn inodes(levels: &[ListenerLevel]) -> HashSet<u32> {
    levels
        .iter()
        .take(MAX_REPORTED_LISTENERS)
        .map(|l| l.inode)
        .filter(|&i| i != 0)
        .collect()
}

/// One namespace's listen counters at a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NamespaceListens {
    pub netns: u32,
    /// Its listening sockets (those the filters keep).
    pub listeners: usize,
    /// The kernel's counters now, since the namespace was made (`nstat -a`).
    pub total: ListenCounters,
    /// What they gained since the previous reconcile; `None` at the first sample.
    pub increase: Option<ListenCounters>,
}

/// Each namespace's previous counters, to report increases.
#[derive(Debug, Default)]
pub struct ListenCounterHistory {
    last: HashMap<u32, ListenCounters>,
    /// Namespaces the previous pass did not find: gone if this one does not either
    /// (one pass can miss a namespace that is there, as the tracker knows).
    missed: HashSet<u32>,
}

impl ListenCounterHistory {
    /// The counters of each namespace of this pass and what they gained since the
    /// previous one: the first sample of a namespace is its baseline. A namespace that
    /// two passes in a row neither dumped nor found `unreadable` (exists, could not be
    /// dumped) is gone: its baseline is forgotten, and it is in the second list.
    pub fn update(
        &mut self,
        dumps: &[NamespaceDump],
        unreadable: &[u32],
    ) -> (Vec<NamespaceListens>, Vec<u32>) {
        let mut namespaces = Vec::new();
        for dump in dumps {
            let Some(total) = dump.listen_counters else {
                continue;
            };
            let increase = self
                .last
                .insert(dump.netns, total)
                .and_then(|before| total.since(&before));
            namespaces.push(NamespaceListens {
                netns: dump.netns,
                listeners: listening(dump).count(),
                total,
                increase,
            });
        }
        let present: HashSet<u32> = dumps
            .iter()
            .map(|d| d.netns)
            .chain(unreadable.iter().copied())
            .collect();
        let missing: HashSet<u32> = self
            .last
            .keys()
            .copied()
            .filter(|netns| !present.contains(netns))
            .collect();
        let missed_before = std::mem::replace(&mut self.missed, missing);
        let mut gone: Vec<u32> = self
            .missed
            .iter()
            .copied()
            .filter(|netns| missed_before.contains(netns))
            .collect();
        gone.sort_unstable();
        self.last.retain(|netns, _| !gone.contains(netns));
        self.missed.retain(|netns| !gone.contains(netns));
        (namespaces, gone)
    }
}

/// One listening socket, as `/api/listeners` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListenerHealth {
    pub netns: u32,
    /// The socket's cgroup v2 path and the container and pod it names, when known
    /// (`cgroup`, `container`, `pod_uid`, `qos` in JSON).
    #[serde(flatten)]
    pub workload: Option<Workload>,
    pub local: SocketAddr,
    pub inode: u32,
    /// Connections waiting for accept() (`ss -lnt` Recv-Q).
    pub accept_queue: u32,
    /// The listen() backlog (`ss -lnt` Send-Q).
    pub accept_queue_limit: u32,
    /// `accept_queue / (accept_queue_limit + 1)`: 1 is full.
    pub fill_ratio: f64,
    /// Half-open handshakes toward its address.
    pub syn_recv: u64,
    /// SYN-ACKs sent again toward its address since tcptrace started.
    pub synack_retransmits: u64,
    pub owner: Option<LeakOwner>,
}

/// What `/api/listeners` serves.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ListenerReport {
    /// When the last reconcile ran (RFC 3339); `None` until the first.
    pub checked_at: Option<String>,
    /// Listening sockets found (those the filters keep), listed or not.
    pub total: usize,
    /// The list holds only some of them.
    pub truncated: bool,
    /// Fullest accept queue first.
    pub listeners: Vec<ListenerHealth>,
    /// Each namespace dumped, most overflows first.
    pub namespaces: Vec<NamespaceListens>,
}

impl ListenerReport {
    /// `listened` gives the owner the events saw call listen() on (namespace,
    /// address); `resolve` maps a cgroup id to its container and pod.
    pub fn new(
        levels: &[ListenerLevel],
        namespaces: &[NamespaceListens],
        owners: &OwnerCache,
        listened: &HashMap<(u32, SocketAddr), Owner>,
        resolve: Resolve<'_>,
        clock: WallClock,
        now_ns: u64,
    ) -> Self {
        let listeners = levels
            .iter()
            .take(MAX_REPORTED_LISTENERS)
            .map(|level| {
                let owner = owner_of(
                    level.inode,
                    listened.get(&(level.netns, level.local)).copied(),
                    owners,
                );
                let workload =
                    workload_of(level.cgroup_id.unwrap_or(0), owner.as_ref(), &mut *resolve);
                ListenerHealth {
                    netns: level.netns,
                    workload: workload.as_deref().cloned(),
                    local: level.local,
                    inode: level.inode,
                    accept_queue: level.accept_queue,
                    accept_queue_limit: level.accept_queue_limit,
                    fill_ratio: level.fill_ratio(),
                    syn_recv: level.syn_recv,
                    synack_retransmits: level.synack_retransmits,
                    owner,
                }
            })
            .collect();
        let mut namespaces = namespaces.to_vec();
        let overflows = |n: &NamespaceListens| {
            (
                n.increase.map_or(0, |i| i.listen_overflows),
                n.total.listen_overflows,
            )
        };
        namespaces.sort_by(|a, b| overflows(b).cmp(&overflows(a)).then(a.netns.cmp(&b.netns)));
        ListenerReport {
            checked_at: Some(rfc3339(clock.to_system_time(now_ns))),
            total: levels.len(),
            truncated: levels.len() > MAX_REPORTED_LISTENERS,
            listeners,
            namespaces,
        }
    }

    /// A copy with at most `limit` listeners and namespaces, only those of `netns` if
    /// given. Copies only what it keeps.
    pub fn limited(&self, limit: usize, netns: Option<u32>) -> ListenerReport {
        let wanted = |n: u32| netns.is_none_or(|w| w == n);
        let matching = self.listeners.iter().filter(|l| wanted(l.netns));
        let (total, truncated) = match netns {
            None => (self.total, self.truncated || self.listeners.len() > limit),
            Some(_) => {
                let count = matching.clone().count();
                (count, count > limit)
            }
        };
        ListenerReport {
            checked_at: self.checked_at.clone(),
            total,
            truncated,
            listeners: matching.take(limit).cloned().collect(),
            namespaces: self
                .namespaces
                .iter()
                .filter(|n| wanted(n.netns))
                .take(limit)
                .copied()
                .collect(),
        }
    }

    /// The namespaces whose listeners dropped connections since the previous pass
    /// (`ListenOverflows` rose), each with its fullest listener when its queue holds
    /// anything. Namespaces without a listener the filters keep are left out.
    pub fn overflows(&self) -> Vec<ListenOverflow> {
        self.namespaces
            .iter()
            .filter(|n| n.listeners > 0)
            .filter_map(|n| {
                let increase = n.increase.filter(|i| i.listen_overflows > 0)?;
                Some(ListenOverflow {
                    netns: n.netns,
                    increase,
                    fullest: self
                        .listeners
                        .iter()
                        .find(|l| l.netns == n.netns && l.accept_queue > 0)
                        .cloned(),
                })
            })
            .collect()
    }
}

/// A namespace whose listeners overflowed between two reconciles (what `watch`
/// prints).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ListenOverflow {
    pub netns: u32,
    pub increase: ListenCounters,
    /// Its fullest listener at the reconcile.
    pub fullest: Option<ListenerHealth>,
}

/// One series of the per-listener metrics: a listening address, or everything beyond
/// the top K (`None`).
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerSeries {
    pub listen: Option<(u32, SocketAddr)>,
    /// Summed over the sockets sharing the address (SO_REUSEPORT), or over the rest.
    pub accept_queue: u64,
    pub accept_queue_limit: u64,
    /// The fullest socket's.
    pub fill_ratio: f64,
    pub syn_recv: u64,
}

/// The `top` fullest listening addresses, and the rest summed into one `other` series
/// (when there is a rest).
pub fn series(levels: &[ListenerLevel], top: usize) -> Vec<ListenerSeries> {
    let mut by_address: Vec<ListenerSeries> = Vec::new();
    let mut index: HashMap<(u32, SocketAddr), usize> = HashMap::new();
    for level in levels {
        let key = (level.netns, level.local);
        let i = *index.entry(key).or_insert_with(|| {
            by_address.push(ListenerSeries {
                listen: Some(key),
                accept_queue: 0,
                accept_queue_limit: 0,
                fill_ratio: 0.0,
                // The address's count, shared by its sockets: taken once.
                syn_recv: level.syn_recv,
            });
            by_address.len() - 1
        });
        let series = &mut by_address[i];
        series.accept_queue += u64::from(level.accept_queue);
        series.accept_queue_limit += u64::from(level.accept_queue_limit);
        series.fill_ratio = series.fill_ratio.max(level.fill_ratio());
    }
    by_address.sort_by(|a, b| {
        b.fill_ratio
            .total_cmp(&a.fill_ratio)
            .then(b.accept_queue.cmp(&a.accept_queue))
            .then(b.syn_recv.cmp(&a.syn_recv))
            .then(a.listen.cmp(&b.listen))
    });
    if by_address.len() > top {
        let rest = by_address.split_off(top);
        by_address.push(ListenerSeries {
            listen: None,
            accept_queue: rest.iter().map(|s| s.accept_queue).sum(),
            accept_queue_limit: rest.iter().map(|s| s.accept_queue_limit).sum(),
            fill_ratio: rest.iter().map(|s| s.fill_ratio).fold(0.0, f64::max),
            syn_recv: rest.iter().map(|s| s.syn_recv).sum(),
        });
    }
    by_address
}
