//! TIME_WAIT buildup and ephemeral-port pressure, from sock_diag's exact counts.
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

use crate::{diag::DiagSocket, state::TcpState, tracker::TimeWaitLevel};

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

/// TIME_WAIT sockets toward one remote endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RemoteTimeWait {
    pub remote: SocketAddr,
    pub sockets: u64,
}

/// Ephemeral ports in use from one local address toward one remote endpoint.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortPressure {
    pub local_address: IpAddr,
    pub remote: SocketAddr,
    pub time_wait: u64,
    /// Sockets in any other state (established, closing, ...).
    pub live: u64,
    /// (time_wait + live) / the port range's size.
    pub ratio: f64,
    /// At or above the threshold.
    pub flagged: bool,
}

/// What the TIME_WAIT detector found in one dump.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TimeWaitReport {
    /// Every TIME_WAIT socket (the filtered ones, with -P/-4/-6).
    pub total: u64,
    /// The remote endpoints with the most TIME_WAIT sockets, most first.
    pub top_remotes: Vec<RemoteTimeWait>,
    /// TIME_WAIT sockets toward every other remote endpoint.
    pub other: u64,
    pub port_range: Option<PortRange>,
    /// The (local address, remote endpoint) pairs using the most ephemeral ports,
    /// most first.
    pub port_pressure: Vec<PortPressure>,
    pub threshold: f64,
}

impl TimeWaitReport {
    /// `top` remotes and pressure pairs are kept; pairs at or above `threshold` are
    /// flagged.
    pub fn new(
        level: &TimeWaitLevel,
        sockets: &[DiagSocket],
        range: PortRange,
        top: usize,
        threshold: f64,
    ) -> Self {
        let mut remotes: Vec<RemoteTimeWait> = level
            .by_remote
            .iter()
            .map(|(&remote, &sockets)| RemoteTimeWait { remote, sockets })
            .collect();
        remotes.sort_by(|a, b| {
            b.sockets
                .cmp(&a.sockets)
                .then_with(|| a.remote.cmp(&b.remote))
        });
        remotes.truncate(top);
        let shown: u64 = remotes.iter().map(|r| r.sockets).sum();

        let mut pairs: HashMap<(IpAddr, SocketAddr), (u64, u64)> = HashMap::new();
        let outgoing = sockets
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
        let mut port_pressure: Vec<PortPressure> = pairs
            .into_iter()
            .map(|((local_address, remote), (time_wait, live))| {
                let ratio = (time_wait + live) as f64 / size;
                PortPressure {
                    local_address,
                    remote,
                    time_wait,
                    live,
                    ratio,
                    flagged: ratio >= threshold,
                }
            })
            .collect();
        port_pressure.sort_by(|a, b| {
            (b.time_wait + b.live)
                .cmp(&(a.time_wait + a.live))
                .then_with(|| (a.local_address, a.remote).cmp(&(b.local_address, b.remote)))
        });
        port_pressure.truncate(top);
        TimeWaitReport {
            total: level.total,
            top_remotes: remotes,
            other: level.total - shown,
            port_range: Some(range),
            port_pressure,
            threshold,
        }
    }

    /// The highest ratio of any pair (0 when no socket uses the range).
    pub fn max_ratio(&self) -> f64 {
        self.port_pressure.first().map_or(0.0, |p| p.ratio)
    }
}
