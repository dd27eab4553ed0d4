//! `cargo xtask bench --soak`: `tcptrace serve` for a long run (10 minutes unless told)
//! at the churn's peak, with a CLOSE_WAIT leak of known size and the churn's TIME_WAIT
//! buildup alongside, and its table held over a small `--max-connections` by a crowd
//! of idle connections; sampled every 10 s. Passes with no event lost, the leak
//! counted right at the end, RSS flat after warm-up and the table within its cap.

mod load;
pub(crate) mod report;
mod sample;
pub(crate) mod verdict;

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use self::load::{Crowd, Leaker};
pub(crate) use self::sample::SoakSample;
use super::{netns, tracer, PORT};
use crate::{
    churn::{self, ChurnArgs, ChurnReport, LoadArgs},
    cmd,
};

/// The leaker's and the crowd's ports; the churn uses the overhead rows' [`PORT`].
const LEAK_PORT: u16 = 31997;
const CROWD_PORT: u16 = 31996;
/// `--max-connections`: the crowd alone needs twice as many entries.
const CAP: u64 = 2048;
const CROWD: usize = 2048;
/// Connections leaked in CLOSE_WAIT.
const LEAKS: usize = 64;
/// `--close-wait-threshold` and `--reconcile-interval` (the default): a leak is counted
/// at most 15 s after it is made.
const CLOSE_WAIT_THRESHOLD: Duration = Duration::from_secs(10);
const RECONCILE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the daemon is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The crowd leaves this long before the end, so that the run shows the table both
/// over its cap (the leak count must be right then too: eviction spares CLOSE_WAIT)
/// and after.
const RECOVERY: Duration = Duration::from_secs(30);
/// The shortest soak with a sample over the cap after the leaks can count
/// (threshold + two reconciles) and a recovery of [`RECOVERY`].
pub(crate) const MIN_DURATION: Duration = Duration::from_secs(90);

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SoakResults {
    /// The flags of the run, for the report.
    pub flags: Vec<String>,
    /// When it ran (RFC 3339 from `date`), for the report.
    pub date: String,
    /// The planned duration of the load.
    pub duration_s: f64,
    /// `--max-connections`.
    pub cap: u64,
    pub crowd: u64,
    /// When the crowd left, seconds into the run.
    pub crowd_left_s: f64,
    pub leaks_made: u64,
    pub close_wait_threshold_s: f64,
    pub reconcile_interval_s: f64,
    /// Every 10 s, then once after a detector pass over the final state.
    pub samples: Vec<SoakSample>,
    pub churn: ChurnReport,
    /// What `ss -tn state close-wait` counts in the namespace at the end.
    pub ss_close_wait: u64,
}

fn serve_args() -> Vec<String> {
    let mut args = tracer::port_flags(&[PORT, LEAK_PORT, CROWD_PORT]);
    args.extend([
        format!("--max-connections={CAP}"),
        format!(
            "--close-wait-threshold={}",
            humantime::format_duration(CLOSE_WAIT_THRESHOLD)
        ),
        format!(
            "--reconcile-interval={}",
            humantime::format_duration(RECONCILE_INTERVAL)
        ),
    ]);
    args
}

/// Inside the benchmark's process: runs the soak in a fresh namespace and writes its
/// results to `results`.
pub(super) fn inside(duration: Duration, flags: Vec<String>, results: &Path) -> anyhow::Result<()> {
    if duration < MIN_DURATION {
        bail!("a soak lasts at least {MIN_DURATION:?}");
    }
    // Both ends of the crowd and the leaks, and room for the churn's.
    load::allow_open_files(2 * CROWD as u64 + LEAKS as u64 + 1024)?;
    netns::enter_fresh()?;
    let (mut child, _stderr, api) = tracer::serve(&super::tcptrace_binary(), &serve_args())?;
    let soaked = soak(api, child.id(), duration);
    let stopped = tracer::interrupt(&mut child).context("stopping tcptrace");
    let mut soaked = soaked?;
    let status = stopped?;
    if !status.success() {
        bail!("tcptrace exited with {status}");
    }
    soaked.flags = flags;
    soaked.date = cmd::output("date", &["--iso-8601=minutes"])
        .unwrap_or_default()
        .trim()
        .to_owned();
    std::fs::write(results, serde_json::to_string_pretty(&soaked)?)?;
    Ok(())
}

/// The load, the samples, and the final look.
fn soak(api: SocketAddr, pid: u32, duration: Duration) -> anyhow::Result<SoakResults> {
    let mut results = SoakResults {
        duration_s: duration.as_secs_f64(),
        cap: CAP,
        close_wait_threshold_s: CLOSE_WAIT_THRESHOLD.as_secs_f64(),
        reconcile_interval_s: RECONCILE_INTERVAL.as_secs_f64(),
        ..SoakResults::default()
    };
    let churn_args = ChurnArgs {
        addr: ([127, 0, 0, 1], PORT).into(),
        connections: u64::MAX,
        load: LoadArgs {
            duration,
            clients: 2,
            servers: 2,
            rate: 0,
        },
    };
    let leaker = Leaker::make(LEAK_PORT, LEAKS)?;
    results.leaks_made = leaker.count() as u64;
    let mut crowd = Some(Crowd::open(CROWD_PORT, CROWD)?);
    results.crowd = CROWD as u64;
    eprintln!(
        "bench: soak: {LEAKS} leaks, {CROWD} idle connections, cap {CAP}, churn at peak for {}",
        humantime::format_duration(duration)
    );
    let started = Instant::now();
    let crowd_leaves = duration - RECOVERY;
    let churn = std::thread::scope(|scope| -> anyhow::Result<ChurnReport> {
        let churn = scope.spawn(|| churn::run(&churn_args));
        let mut next_sample = Duration::ZERO;
        while !churn.is_finished() {
            let now = started.elapsed();
            if now >= next_sample {
                let sample = sample::take(api, pid, now.as_secs_f64())?;
                eprintln!("bench: soak: {}", report::one_line(&sample));
                results.samples.push(sample);
                next_sample += SAMPLE_EVERY;
            }
            if now >= crowd_leaves {
                if let Some(crowd) = crowd.take() {
                    eprintln!("bench: soak: the {} idle connections close", crowd.len());
                    results.crowd_left_s = now.as_secs_f64();
                }
            }
            // Wakes for the next sample, the crowd's leaving, or the churn's end.
            std::thread::sleep(Duration::from_millis(100));
        }
        churn
            .join()
            .map_err(|_| anyhow::anyhow!("the churn panicked"))?
    })?;
    results.churn = churn;
    drop(crowd);
    // The final figures come from a detector pass over the state after the load.
    wait_for_detector_passes(api, 2)?;
    results
        .samples
        .push(sample::take(api, pid, started.elapsed().as_secs_f64())?);
    let close_wait = cmd::output_within(
        "ss",
        &["-Htn", "state", "close-wait"],
        Duration::from_secs(10),
    )?;
    results.ss_close_wait = close_wait.lines().count() as u64;
    drop(leaker);
    Ok(results)
}

/// Waits until the detectors have run `passes` more times (each reconcile runs them).
fn wait_for_detector_passes(api: SocketAddr, passes: u32) -> anyhow::Result<()> {
    let limit = RECONCILE_INTERVAL * (passes + 2);
    let deadline = Instant::now() + limit;
    let mut last = sample::leaks_checked_at(api)?;
    let mut seen = 0;
    while seen < passes {
        if Instant::now() >= deadline {
            bail!("the detectors did not run {passes} times within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
        let now = sample::leaks_checked_at(api)?;
        if now != last {
            seen += 1;
            last = now;
        }
    }
    Ok(())
}

/// Fails, naming each criterion missed, unless the soak met them all.
pub(super) fn check(results: &SoakResults) -> anyhow::Result<()> {
    let missed: Vec<String> = verdict::verdicts(results)
        .into_iter()
        .filter(|v| !v.met)
        .map(|v| format!("{}: {}", v.criterion, v.measured))
        .collect();
    if !missed.is_empty() {
        bail!("the soak missed:\n  {}", missed.join("\n  "));
    }
    eprintln!("bench: soak: every criterion met");
    Ok(())
}
