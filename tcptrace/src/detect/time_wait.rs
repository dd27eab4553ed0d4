//! TIME_WAIT buildup and ephemeral-port pressure, from sock_diag's exact counts, per
//! network namespace: a pod's ports and its port range are its own.
//!
//! A connect() without bind() takes a local port from `net.ipv4.ip_local_port_range`
//! (IPv6 too) that no socket uses toward the same remote endpoint from the same local
//! address (net/ipv4/inet_hashtables.c: `__inet_hash_connect()`). TIME_WAIT sockets
//! keep their port for 60 s, so a client that churns connections toward one server runs
//! out of ports for that server long before the host runs out of sockets.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::Path,
};

use serde::Serialize;

use crate::{diag::netns::NamespaceDump, state::TcpState};

/// The most (namespace, remote endpoint) pairs whose TIME_WAIT counts are kept apart
/// while counting; the rest are summed in `other`.
pub const MAX_TIME_WAIT_REMOTES: usize = 4096;
/// The most namespaces listed in a report, most TIME_WAIT first.
pub const MAX_REPORTED_NAMESPACES: usize = 1024;

/// `net.ipv4.ip_local_port_range`, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PortRange {
    pub low: u16,
    pub high: u16,
}

/// Linux's default, used when the sysctl cannot be read.
pub const DEFAULT_PORT_RANGE: PortRange = PortRange {
    low: 32768,
    high: 60999,
};

impl PortRange {
    /// Parses the sysctl's text: two numbers separated by whitespace.
    pub fn parse(text: &str) -> Option<PortRange> {
        let mut numbers = text.split_whitespace().map(str::parse::<u16>);
        let (low, high) = (numbers.next()?.ok()?, numbers.next()?.ok()?);
        (numbers.next().is_none() && low <= high).then_some(PortRange { low, high })
    }

    pub fn read(path: &Path) -> Option<PortRange> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    pub fn size(self) -> u32 {
        u32::from(self.high - self.low) + 1
    }

    pub fn contains(self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

/// TIME_WAIT sockets toward one remote endpoint from one namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RemoteTimeWait {
    pub netns: u32,
    pub remote: SocketAddr,
    pub sockets: u64,
}

/// One namespace's TIME_WAIT level and port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NamespaceTimeWait {
    pub netns: u32,
    pub time_wait: u64,
    /// Its own `net.ipv4.ip_local_port_range` (the sysctl is per namespace).
    pub port_range: PortRange,
}

/// Ephemeral ports in use from one local address toward one remote endpoint, in one
/// namespace.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortPressure {
    pub netns: u32,
    pub local_address: IpAddr,
    pub remote: SocketAddr,
    pub time_wait: u64,
    /// Sockets in any other state (established, closing, ...).
    pub live: u64,
    /// (time_wait + live) / the size of the namespace's port range.
    pub ratio: f64,
    /// At or above the threshold.
    pub flagged: bool,
}

/// What the TIME_WAIT detector found in one pass over every namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TimeWaitReport {
    /// Every TIME_WAIT socket in every namespace (the filtered ones, with -P/-4/-6).
    pub total: u64,
    /// Each namespace dumped, most TIME_WAIT first (at most `MAX_REPORTED_NAMESPACES`).
    pub namespaces: Vec<NamespaceTimeWait>,
    /// tcptrace's own namespace's port range, when that namespace was dumped.
    pub port_range: Option<PortRange>,
    /// The (namespace, remote endpoint) pairs with the most TIME_WAIT sockets, most
    /// first.
    pub top_remotes: Vec<RemoteTimeWait>,
    /// TIME_WAIT sockets toward every other remote endpoint.
    pub other: u64,
    /// The (namespace, local address, remote endpoint) triples using the most ephemeral
    /// ports, most first.
    pub port_pressure: Vec<PortPressure>,
    pub threshold: f64,
}

impl TimeWaitReport {
    /// `top` remotes and pressure pairs are kept; pairs at or above `threshold` are
    /// flagged. A namespace whose range could not be read gets Linux's default.
    /// `own_netns` is tcptrace's own namespace, whose range `port_range` reports.
    pub fn new(
        dumps: &[NamespaceDump],
        own_netns: Option<u32>,
        top: usize,
        threshold: f64,
    ) -> Self {
        let mut report = TimeWaitReport {
            threshold,
            ..TimeWaitReport::default()
        };
        let mut by_remote: HashMap<(u32, SocketAddr), u64> = HashMap::new();
        for dump in dumps {
            let range = dump.port_range.unwrap_or(DEFAULT_PORT_RANGE);
            let mut time_wait = 0;
            for socket in dump
                .sockets
                .iter()
                .filter(|s| s.state == TcpState::TimeWait)
            {
                time_wait += 1;
                let full = by_remote.len() >= MAX_TIME_WAIT_REMOTES;
                match by_remote.get_mut(&(dump.netns, socket.remote)) {
                    Some(count) => *count += 1,
                    None if full => report.other += 1,
                    None => {
                        by_remote.insert((dump.netns, socket.remote), 1);
                    }
                }
            }
            report.total += time_wait;
            if Some(dump.netns) == own_netns {
                report.port_range = Some(range);
            }
            report.namespaces.push(NamespaceTimeWait {
                netns: dump.netns,
                time_wait,
                port_range: range,
            });
            report
                .port_pressure
                .extend(port_pressure(dump, range, threshold));
        }
        report
            .namespaces
            .sort_by(|a, b| b.time_wait.cmp(&a.time_wait).then(a.netns.cmp(&b.netns)));
        report.namespaces.truncate(MAX_REPORTED_NAMESPACES);

        let mut remotes: Vec<RemoteTimeWait> = by_remote
            .into_iter()
            .map(|((netns, remote), sockets)| RemoteTimeWait {
                netns,
                remote,
                sockets,
            })
            .collect();
        remotes.sort_by(|a, b| {
            b.sockets
                .cmp(&a.sockets)
                .then_with(|| (a.netns, a.remote).cmp(&(b.netns, b.remote)))
        });
        report.other += remotes.iter().skip(top).map(|r| r.sockets).sum::<u64>();
        remotes.truncate(top);
        report.top_remotes = remotes;

        report.port_pressure.sort_by(|a, b| {
            (b.time_wait + b.live)
                .cmp(&(a.time_wait + a.live))
                .then_with(|| {
                    (a.netns, a.local_address, a.remote).cmp(&(b.netns, b.local_address, b.remote))
                })
        });
        report.port_pressure.truncate(top);
        report
    }

    /// The highest ratio of any pair (0 when no socket uses the range).
    pub fn max_ratio(&self) -> f64 {
        self.port_pressure
            .iter()
            .map(|p| p.ratio)
            .fold(0.0, f64::max)
    }

    /// The TIME_WAIT level of one namespace, if it was dumped.
    pub fn in_namespace(&self, netns: u32) -> Option<u64> {
        self.namespaces
            .iter()
            .find(|n| n.netns == netns)
            .map(|n| n.time_wait)
    }
}

/// Ports of `range` in use per (local address, remote endpoint) in one namespace:
/// TIME_WAIT plus every other socket whose local port is in the range (listeners and
/// server-side ports outside it do not count).
fn port_pressure(
    dump: &NamespaceDump,
    range: PortRange,
    threshold: f64,
) -> impl Iterator<Item = PortPressure> + '_ {
    let mut pairs: HashMap<(IpAddr, SocketAddr), (u64, u64)> = HashMap::new();
    let outgoing = dump
        .sockets
        .iter()
        .filter(|s| s.state != TcpState::Listen && range.contains(s.local.port()));
    for socket in outgoing {
        let counts = pairs.entry((socket.local.ip(), socket.remote)).or_default();
        if socket.state == TcpState::TimeWait {
            counts.0 += 1;
        } else {
            counts.1 += 1;
        }
    }
    let size = f64::from(range.size());
    pairs
        .into_iter()
        .map(move |((local_address, remote), (time_wait, live))| {
            let ratio = (time_wait + live) as f64 / size;
            PortPressure {
                netns: dump.netns,
                local_address,
                remote,
                time_wait,
                live,
                ratio,
                flagged: ratio >= threshold,
            }
        })
}
