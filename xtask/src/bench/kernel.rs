//! The kernel's own accounting of BPF programs: with `kernel.bpf_stats_enabled` on, each
//! program's info carries its total run time and run count (`bpftool prog show`).

use std::collections::HashMap;

use anyhow::Context as _;
use serde::Deserialize;

use crate::cmd;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns BPF run-time statistics on, and back to what they were on drop.
pub(super) struct BpfStats {
    previous: String,
}

impl BpfStats {
    pub(super) fn enable() -> anyhow::Result<BpfStats> {
        let previous = std::fs::read_to_string(STATS_SYSCTL)
            .context("reading kernel.bpf_stats_enabled")?
            .trim()
            .to_owned();
        std::fs::write(STATS_SYSCTL, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(BpfStats { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(err) = std::fs::write(STATS_SYSCTL, &self.previous) {
            eprintln!("bench: restoring kernel.bpf_stats_enabled: {err}");
        }
    }
}

#[derive(Deserialize)]
struct ProgramInfo {
    id: u32,
    #[serde(default)]
    run_time_ns: u64,
    #[serde(default)]
    run_cnt: u64,
}

fn programs() -> anyhow::Result<Vec<ProgramInfo>> {
    let json = cmd::output("bpftool", &["prog", "show", "--json"])
        .context("bpftool prog show (Debian package `bpftool`)")?;
    serde_json::from_str(&json).context("parsing bpftool's JSON")
}

/// Every loaded program's id.
pub(super) fn program_ids() -> anyhow::Result<Vec<u32>> {
    Ok(programs()?.into_iter().map(|p| p.id).collect())
}

/// Total run time (ns) and runs of the programs with these ids.
pub(super) fn program_stats(ids: &[u32]) -> anyhow::Result<(u64, u64)> {
    let by_id: HashMap<u32, ProgramInfo> = programs()?.into_iter().map(|p| (p.id, p)).collect();
    Ok(ids
        .iter()
        .filter_map(|id| by_id.get(id))
        .fold((0, 0), |(ns, runs), p| {
            (ns + p.run_time_ns, runs + p.run_cnt)
        }))
}
