//! One look at the running daemon: its memory and CPU from `/proc`, its table and
//! losses from `/metrics`, the leak and TIME_WAIT counts from `/api/leaks`.

use std::net::SocketAddr;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::bench::{http, tracer};

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SoakSample {
    /// Seconds since the load started.
    pub at_s: f64,
    /// The daemon's resident memory (`VmRSS`).
    pub rss_kib: u64,
    /// Its user + system time so far.
    pub cpu_s: f64,
    /// `tcptrace_tracked_connections`.
    pub tracked: u64,
    /// `tcptrace_evictions_total`.
    pub evictions: u64,
    /// `tcptrace_events_total{kind="state_change"}`.
    pub events: u64,
    /// `tcptrace_events_lost_total`: the ring buffer was full.
    pub lost: u64,
    /// `tcptrace_events_missed_total`: another BPF program held the CPU.
    pub missed: u64,
    /// `/api/leaks`: stuck CLOSE_WAIT connections at the last detector pass.
    pub leaks: u64,
    /// `/api/leaks`: TIME_WAIT sockets at the last pass.
    pub time_wait: u64,
}

/// `VmRSS` of `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// When the detectors last ran, as `/api/leaks` says (`None` before the first pass).
pub(super) fn leaks_checked_at(api: SocketAddr) -> anyhow::Result<Option<String>> {
    let leaks: serde_json::Value = serde_json::from_str(&http::get(api, "/api/leaks?limit=1")?)?;
    Ok(leaks["checked_at"].as_str().map(str::to_owned))
}

pub(super) fn take(api: SocketAddr, pid: u32, at_s: f64) -> anyhow::Result<SoakSample> {
    let metrics = http::get(api, "/metrics")?;
    let metric = |name: &str| http::metric(&metrics, name);
    let leaks: serde_json::Value = serde_json::from_str(&http::get(api, "/api/leaks?limit=1")?)
        .context("/api/leaks's JSON")?;
    Ok(SoakSample {
        at_s,
        rss_kib: rss_kib(pid)?,
        cpu_s: tracer::cpu_seconds(pid)?,
        tracked: metric("tcptrace_tracked_connections"),
        evictions: metric("tcptrace_evictions_total"),
        events: metric("tcptrace_events_total{kind=\"state_change\"}"),
        lost: metric("tcptrace_events_lost_total"),
        missed: metric("tcptrace_events_missed_total"),
        leaks: leaks["close_wait"]["stuck"].as_u64().unwrap_or(0),
        time_wait: leaks["time_wait"]["total"].as_u64().unwrap_or(0),
    })
}
