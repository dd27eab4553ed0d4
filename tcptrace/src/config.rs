//! What `watch` and `serve` are told to do, as plain data: `cli` builds it from the
//! command line, and the daemon, the engine and the detectors take it (no clap types
//! below the command line).

use std::{net::SocketAddr, time::Duration};

use crate::{
    detect::DetectConfig,
    diag::netns::Namespace,
    probe::ProbeConfig,
    web::{Limits, WebConfig},
};

#[derive(Clone, Debug, PartialEq)]
pub struct TraceConfig {
    /// The kernel side: filters (ports, family, namespace) and ring-buffer size.
    pub probe: ProbeConfig,
    /// Most connections tracked at once.
    pub max_connections: u32,
    /// How often every namespace is dumped and the table reconciled.
    pub reconcile_interval: Duration,
    pub detect: DetectConfig,
    /// `--netns`: only this namespace is dumped (its inode is in `probe.filter.netns`).
    pub netns: Option<Namespace>,
    /// `--cgroup`: only sockets whose cgroup v2 path starts with this.
    pub cgroup_prefix: Option<String>,
}

/// How the HTTP side is served (`--listen` and `--web.*`).
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// `--web.config.file`, already read and checked.
    pub web: WebConfig,
    pub limits: Limits,
}
