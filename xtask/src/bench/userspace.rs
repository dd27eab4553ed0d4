//! tcptrace's userspace capacity: the criterion replay (`benches/pipeline.rs`) and the
//! size and one-off measurements (`benches/capacity.rs`, run as root in a namespace of
//! its own because it makes 100k real TIME_WAIT sockets).

use std::process::Command;

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use super::netns;
use crate::cmd;

/// Real TIME_WAIT sockets for the reconcile measurement.
pub(super) const TIME_WAIT_SOCKETS: u64 = 100_000;
/// Records in one replay (benches/pipeline.rs: 100k connections × 10).
pub(super) const REPLAY_EVENTS: u64 = 1_000_000;
/// Network namespaces for the every-namespace dump measurement (1,000 TIME_WAIT
/// sockets each: benches/namespaces/mod.rs).
pub(super) const NAMESPACES: u64 = 100;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct Capacity {
    /// Events per second through decode → tracker → metrics on one core.
    pub replay_events_per_second: f64,
    /// (connections, allocated bytes per connection, resident bytes per connection).
    pub memory: Vec<(u64, f64, f64)>,
    pub metrics_render_ms: f64,
    pub time_wait_sockets: u64,
    pub dump_ms: f64,
    pub reconcile_ms: f64,
    /// Finding and dumping every network namespace, once with the namespaces sharing
    /// the host's TCP hash and once with hashes of their own.
    #[serde(default)]
    pub namespaces: Vec<NamespaceDumpTime>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(super) struct NamespaceDumpTime {
    /// `net.ipv4.tcp_child_ehash_entries` they were created with (0: the shared hash).
    pub child_ehash_entries: u64,
    /// Namespaces found (the benchmark's, the host's own, and any others on the host).
    pub namespaces: u64,
    pub sockets: u64,
    pub find_ms: f64,
    pub dump_ms: f64,
}

#[derive(Deserialize)]
struct Estimates {
    mean: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

/// The executable cargo built for the bench target `name`.
fn bench_executable(name: &str) -> anyhow::Result<String> {
    let out = Command::new(cmd::cargo_program())
        .args([
            "bench",
            "--package",
            "tcptrace",
            "--bench",
            name,
            "--no-run",
        ])
        .args(["--message-format", "json", "--quiet"])
        .current_dir(cmd::workspace_root())
        .output()
        .context("building the benchmarks")?;
    if !out.status.success() {
        bail!(
            "cargo bench --no-run failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|m| m["target"]["name"] == name && m["executable"].is_string())
        .and_then(|m| m["executable"].as_str().map(str::to_owned))
        .with_context(|| format!("cargo built no executable for bench {name}"))
}

pub(super) fn run() -> anyhow::Result<Capacity> {
    let mut capacity = Capacity::default();

    eprintln!("bench: replaying {REPLAY_EVENTS} events (criterion)");
    cmd::cargo(&[
        "bench",
        "--quiet",
        "--package",
        "tcptrace",
        "--bench",
        "pipeline",
    ])?;
    let estimates =
        cmd::workspace_root().join("target/criterion/pipeline/replay/new/estimates.json");
    let estimates: Estimates = serde_json::from_str(&std::fs::read_to_string(&estimates)?)?;
    capacity.replay_events_per_second =
        REPLAY_EVENTS as f64 / (estimates.mean.point_estimate * 1e-9);

    eprintln!("bench: memory, /metrics render, and {TIME_WAIT_SOCKETS} TIME_WAIT sockets");
    let executable = bench_executable("capacity")?;
    let netns = netns::create("capacity")?;
    let out = Command::new("ip")
        .args(["netns", "exec", netns.name(), &executable])
        .args(["--bench", "--time-wait", &TIME_WAIT_SOCKETS.to_string()])
        .output()
        .context("running the capacity benchmark")?;
    netns
        .delete()
        .context("removing the capacity benchmark's network namespace")?;
    if !out.status.success() {
        bail!(
            "the capacity benchmark failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprintln!("bench: finding and dumping {NAMESPACES} network namespaces");
    // In the host's namespace: it makes (and removes) namespaces of its own.
    let namespaces = Command::new(&executable)
        .args(["--namespaces", &NAMESPACES.to_string()])
        .output()
        .context("running the namespace benchmark")?;
    if !namespaces.status.success() {
        bail!(
            "the namespace benchmark failed:\n{}",
            String::from_utf8_lossy(&namespaces.stderr)
        );
    }
    let stdout = [out.stdout, namespaces.stdout].concat();
    for line in String::from_utf8_lossy(&stdout).lines() {
        let Ok(m) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let f = |key: &str| m[key].as_f64().unwrap_or(f64::NAN);
        match m["measure"].as_str() {
            Some("memory") => capacity.memory.push((
                f("connections") as u64,
                f("allocated_bytes_per_connection"),
                f("resident_bytes_per_connection"),
            )),
            Some("metrics_render") => capacity.metrics_render_ms = f("milliseconds"),
            Some("reconcile") => {
                capacity.time_wait_sockets = f("time_wait_sockets") as u64;
                capacity.dump_ms = f("dump_milliseconds");
                capacity.reconcile_ms = f("reconcile_milliseconds");
            }
            Some("namespaces") => capacity.namespaces.push(NamespaceDumpTime {
                child_ehash_entries: f("child_ehash_entries") as u64,
                namespaces: f("namespaces_found") as u64,
                sockets: f("sockets_dumped") as u64,
                find_ms: f("find_milliseconds"),
                dump_ms: f("dump_milliseconds"),
            }),
            _ => {}
        }
    }
    Ok(capacity)
}
