//! `cargo xtask bench`: tcptrace against no tracer and against bpftrace on the same
//! connection churn, interleaved in one run, plus tcptrace's userspace capacity; the
//! results become BENCHMARKS.md.

mod http;
mod kernel;
mod latency;
mod netns;
mod report;
mod soak;
mod tracer;
mod userspace;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::Duration,
};

use anyhow::{bail, Context as _};
use clap::Parser as _;
use serde::{Deserialize, Serialize};

use self::{
    latency::{LatencyResults, PROBE_PORT},
    soak::SoakResults,
    tracer::{Tracer, TracerReport},
};
use crate::{
    churn::{
        self, ChurnArgs, ChurnReport, LoadArgs, TRANSITIONS_PER_CONNECTION, TRANSITIONS_PER_RUN,
    },
    cmd,
};

#[derive(Clone, Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// Repetitions of the interleaved cycle (baseline, tcptrace ×3, bpftrace ×2).
    #[arg(long, default_value_t = 5)]
    pub reps: u32,
    #[command(flatten)]
    pub load: LoadArgs,
    /// Where the report goes.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// A quick end-to-end check instead of a measurement: one repetition of a few
    /// hundred connections, failing unless every tracer's counts are exact. Writes
    /// nothing.
    #[arg(long)]
    pub smoke: bool,
    /// Only the tracer comparison; skip the userspace capacity measurements (quicker,
    /// for iterating; the report's capacity table is left empty).
    #[arg(long)]
    pub no_capacity: bool,
    /// Write the report again from the last run's results (target/bench/*.json),
    /// without measuring: after editing the notes.
    #[arg(long)]
    pub report_only: bool,
    /// Probes of the event-to-visible latency (a state change until `/api/connections`
    /// lists it), on a quiet namespace and again under the peak churn; 0 skips it.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    /// Instead of the comparison: `tcptrace serve` for `--soak-duration` at peak churn
    /// with a CLOSE_WAIT leak, TIME_WAIT buildup and its table over a small cap, sampled
    /// every 10 s; fails unless nothing is lost, the leak is counted right (at the end,
    /// and while the table is over its cap), RSS stays flat and the table within its
    /// cap. Rewrites only the report's Soak
    /// section (the other runs keep it).
    #[arg(long, conflicts_with_all = ["smoke", "report_only"])]
    pub soak: bool,
    /// How long the soak's load runs, e.g. 10m, 90s (at least 90s).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub soak_duration: Duration,
    /// Internal: this process already runs inside the benchmark's namespace and writes
    /// its samples to this file.
    #[arg(long, hide = true)]
    pub inside: Option<PathBuf>,
}

impl BenchArgs {
    /// What `cargo xtask bench --smoke` runs.
    pub(crate) fn smoke() -> BenchArgs {
        BenchArgs {
            reps: 1,
            load: LoadArgs {
                duration: Duration::from_secs(20),
                clients: 2,
                servers: 2,
                rate: 0,
            },
            out: PathBuf::new(),
            smoke: true,
            no_capacity: true,
            report_only: false,
            latency_samples: SMOKE_LATENCY_SAMPLES,
            soak: false,
            soak_duration: Duration::ZERO,
            inside: None,
        }
    }
}

/// Parses a stored run's flags back.
#[derive(clap::Parser)]
struct Stored {
    #[command(flatten)]
    args: BenchArgs,
}

/// The churn's server port inside the namespace.
const PORT: u16 = 31998;
/// Connections in a smoke run.
const SMOKE_CONNECTIONS: u64 = 400;
/// Latency probes in a smoke run, each of which must become visible.
const SMOKE_LATENCY_SAMPLES: usize = 20;
/// How long the smoke run's latency probes have peak churn alongside.
const SMOKE_LATENCY_LOAD: Duration = Duration::from_secs(2);

/// One tracer's run in one repetition.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Sample {
    pub rep: u32,
    pub tracer: Tracer,
    pub churn: ChurnReport,
    pub report: Option<TracerReport>,
}

impl Sample {
    /// The state changes the kernel made on the churn's port.
    pub(crate) fn expected_events(&self) -> u64 {
        self.churn.connections * TRANSITIONS_PER_CONNECTION + TRANSITIONS_PER_RUN
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct SystemResults {
    /// The flags of the run, for the report's header.
    #[serde(default)]
    pub flags: Vec<String>,
    pub samples: Vec<Sample>,
    /// Tracers left out, and why.
    pub skipped: Vec<String>,
    /// Event-to-visible latency, when measured.
    #[serde(default)]
    pub latency: Option<LatencyResults>,
}

fn results_dir() -> PathBuf {
    cmd::workspace_root().join("target/bench")
}

/// Where a run keeps its results: the report is written from these.
fn results_path(args: &BenchArgs) -> PathBuf {
    results_dir().join(if args.soak {
        "soak.json"
    } else if args.smoke {
        // A smoke run must not replace the measured results.
        "smoke.json"
    } else {
        "system.json"
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The stored results at `path`, or `None` when that kind of run was never made.
fn read_stored<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(results) = &args.inside {
        return inside(args, results);
    }
    if args.report_only {
        return rewrite_report(&args.out);
    }
    if !cmd::is_root() {
        bail!("the benchmark loads eBPF programs and makes a network namespace: run it as root");
    }
    // The full run prices kernel reads with a test-only flag (a cargo feature); the
    // smoke run and the soak check the binary as it ships.
    let mut build = vec!["build", "--release", "--quiet", "--package", "tcptrace"];
    if !args.smoke && !args.soak {
        build.extend(["--features", "bench-hooks"]);
    }
    cmd::cargo(&build)?;
    std::fs::create_dir_all(results_dir())?;
    let results_path = results_path(args);
    // A process of its own: it moves from namespace to namespace, this one stays.
    let mut inner = vec![
        "bench".to_owned(),
        "--inside".to_owned(),
        results_path.display().to_string(),
    ];
    inner.extend(forwarded(args));
    let me = std::env::current_exe()?;
    cmd::run_within(&me.display().to_string(), &inner, inner_limit(args))
        .context("the benchmark's tracer runs")?;
    if args.soak {
        let soak: SoakResults = read_json(&results_path)?;
        // The report says what failed, too.
        rewrite_report(&args.out)?;
        return soak::check(&soak);
    }
    let system: SystemResults = read_json(&results_path)?;
    if args.smoke {
        return check_smoke(&system);
    }
    let capacity = if args.no_capacity {
        userspace::Capacity::default()
    } else {
        userspace::run()?
    };
    std::fs::write(
        results_dir().join("capacity.json"),
        serde_json::to_string_pretty(&capacity)?,
    )?;
    write_report(args, Some(&system), &capacity)
}

/// The longest the inner process may run: every run's load, plus what starting and
/// stopping a tracer may take (30 s to serve, 15 s to exit, 10 s of churn drain), with
/// room to spare, so that a stuck child fails the run instead of hanging it.
fn inner_limit(args: &BenchArgs) -> Duration {
    const PER_RUN: Duration = Duration::from_secs(90);
    const SPARE: Duration = Duration::from_secs(300);
    if args.soak {
        return args.soak_duration + SPARE;
    }
    // The tracer rows, and the latency run.
    let runs = args.reps * Tracer::ALL.len() as u32 + 1;
    (args.load.duration + PER_RUN) * runs + SPARE
}

/// The report from the stored results of the last run of each kind.
fn rewrite_report(out: &Path) -> anyhow::Result<()> {
    let dir = results_dir();
    let system: Option<SystemResults> = read_stored(&dir.join("system.json"))?;
    let capacity: Option<userspace::Capacity> = read_stored(&dir.join("capacity.json"))?;
    if system.is_none() && !dir.join("soak.json").exists() {
        bail!("no results in {}: run the benchmark first", dir.display());
    }
    // The report describes the run as it was made, whatever flags come now.
    let flags = system.iter().flat_map(|s| s.flags.iter().cloned());
    let mut measured = Stored::try_parse_from(std::iter::once("bench".to_owned()).chain(flags))
        .context("the stored run's flags")?
        .args;
    measured.out = out.to_path_buf();
    write_report(&measured, system.as_ref(), &capacity.unwrap_or_default())
}

/// Writes the report; the last soak's section comes from its stored results.
fn write_report(
    args: &BenchArgs,
    system: Option<&SystemResults>,
    capacity: &userspace::Capacity,
) -> anyhow::Result<()> {
    let soak: Option<SoakResults> = read_stored(&results_dir().join("soak.json"))?;
    let markdown = report::markdown(args, system, capacity, soak.as_ref());
    std::fs::write(cmd::workspace_root().join(&args.out), markdown)?;
    eprintln!("bench: wrote {}", args.out.display());
    Ok(())
}

/// The arguments the inner run needs, as flags.
fn forwarded(args: &BenchArgs) -> Vec<String> {
    if args.soak {
        return vec![
            "--soak".into(),
            format!(
                "--soak-duration={}",
                humantime::format_duration(args.soak_duration)
            ),
        ];
    }
    let mut flags = vec![
        format!("--reps={}", args.reps),
        format!(
            "--duration={}",
            humantime::format_duration(args.load.duration)
        ),
        format!("--clients={}", args.load.clients),
        format!("--servers={}", args.load.servers),
        format!("--rate={}", args.load.rate),
        format!("--latency-samples={}", args.latency_samples),
    ];
    if args.smoke {
        flags.push("--smoke".into());
    }
    flags
}

fn tcptrace_binary() -> PathBuf {
    cmd::workspace_root().join("target/release/tcptrace")
}

/// Every tracer in turn, `reps` times, each run in a fresh network namespace.
fn inside(args: &BenchArgs, results: &Path) -> anyhow::Result<()> {
    if args.soak {
        return soak::inside(args.soak_duration, forwarded(args), results);
    }
    let _stats = kernel::BpfStats::enable()?;
    let mut system = SystemResults {
        flags: forwarded(args),
        ..SystemResults::default()
    };
    let mut tracers: Vec<Tracer> = Tracer::ALL.to_vec();
    if args.smoke {
        // The smoke run checks exact counts; printing every event is not exact by
        // design (bpftrace drops lines under load), so it only costs time there; the
        // rows pricing kernel reads need the bench-hooks build.
        tracers.retain(|t| *t != Tracer::BpftracePrint && !t.prices_reads());
    }
    if cmd::output("bpftrace", &["--version"]).is_none() {
        tracers.retain(|t| !t.is_bpftrace());
        let why = "bpftrace is not installed (Debian package `bpftrace`): its rows are skipped";
        eprintln!("bench: {why}");
        system.skipped.push(why.into());
    }
    let churn_args = ChurnArgs {
        addr: ([127, 0, 0, 1], PORT).into(),
        connections: if args.smoke {
            SMOKE_CONNECTIONS
        } else {
            u64::MAX
        },
        load: args.load.clone(),
    };
    let reps = if args.smoke { 1 } else { args.reps };
    for rep in 0..reps {
        for &tracer in &tracers {
            netns::enter_fresh()?;
            let before: HashSet<u32> = kernel::program_ids()?.into_iter().collect();
            let running = tracer::start(tracer, &tcptrace_binary(), &[PORT], &before)?;
            let churn = churn::run(&churn_args)?;
            let report = match running.map(tracer::finish).transpose() {
                Ok(report) => report,
                // A peer that misbehaves loses its row, not the whole run.
                Err(err) if tracer.is_bpftrace() && !args.smoke => {
                    let why = format!("rep {}: {}: {err:#}", rep + 1, tracer.label());
                    eprintln!("bench: {why}");
                    system.skipped.push(why);
                    continue;
                }
                Err(err) => return Err(err),
            };
            let sample = Sample {
                rep,
                tracer,
                churn,
                report,
            };
            eprintln!(
                "bench: rep {} {:<28} {:>8.0} conn/s{}",
                rep + 1,
                tracer.label(),
                churn.per_second,
                report.map_or(String::new(), |r| format!(
                    ", {} of {} events, {} lost, {:.1}% CPU",
                    r.events,
                    sample.expected_events(),
                    r.lost,
                    100.0 * r.cpu_seconds / churn.seconds
                ))
            );
            system.samples.push(sample);
            // Let the previous namespace's teardown finish before the next run.
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    if latency_probes(args) > 0 {
        system.latency = Some(measure_latency(args)?);
    }
    std::fs::write(results, serde_json::to_string_pretty(&system)?)?;
    Ok(())
}

/// Latency probes per phase: a smoke run makes a few, whatever was asked.
fn latency_probes(args: &BenchArgs) -> usize {
    if args.smoke {
        SMOKE_LATENCY_SAMPLES
    } else {
        args.latency_samples
    }
}

/// How long the loaded probes wait for the churn to get going.
const LATENCY_WARM_UP: Duration = Duration::from_millis(200);

/// Event-to-visible latency, in a tcptrace run of its own so that the probes and
/// their polling cost the overhead rows nothing: on the quiet namespace, then under
/// the overhead rows' churn.
fn measure_latency(args: &BenchArgs) -> anyhow::Result<LatencyResults> {
    netns::enter_fresh()?;
    let before: HashSet<u32> = kernel::program_ids()?.into_iter().collect();
    let running = tracer::start(
        Tracer::Tcptrace,
        &tcptrace_binary(),
        &[PORT, PROBE_PORT],
        &before,
    )?
    .context("tcptrace did not start")?;
    let api = running.http().context("tcptrace serves no API")?;
    let samples = latency_probes(args);
    let load = LoadArgs {
        duration: if args.smoke {
            SMOKE_LATENCY_LOAD
        } else {
            args.load.duration
        },
        ..args.load.clone()
    };
    let churn_args = ChurnArgs {
        addr: ([127, 0, 0, 1], PORT).into(),
        connections: u64::MAX,
        load,
    };
    let measured = (|| -> anyhow::Result<LatencyResults> {
        let quiet = latency::probe(api, samples, Duration::ZERO, &AtomicBool::new(false))?;
        let stop = AtomicBool::new(false);
        let (loaded, churn) = std::thread::scope(|scope| {
            let prober = scope.spawn(|| latency::probe(api, samples, LATENCY_WARM_UP, &stop));
            let churn = churn::run(&churn_args);
            stop.store(true, Relaxed);
            (prober.join(), churn)
        });
        let loaded = loaded.map_err(|_| anyhow::anyhow!("the prober panicked"))??;
        Ok(LatencyResults {
            quiet,
            loaded,
            churn: churn?,
        })
    })();
    // Stopped whatever happened.
    let finished = tracer::finish(running);
    let latency = measured?;
    finished?;
    for (phase, l) in [("quiet", &latency.quiet), ("under load", &latency.loaded)] {
        eprintln!(
            "bench: latency {phase:<10} {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, \
             {} not listed",
            l.visible_ms.len(),
            l.quantile(0.5).unwrap_or(f64::NAN),
            l.quantile(0.99).unwrap_or(f64::NAN),
            l.quantile(1.0).unwrap_or(f64::NAN),
            l.not_visible
        );
    }
    Ok(latency)
}

/// A smoke run passes when the load made what it reports and tcptrace and the bpftrace
/// counter saw exactly the state changes the load made.
fn check_smoke(system: &SystemResults) -> anyhow::Result<()> {
    // Every tracer the smoke run is for ran: a bpftrace row dropped for any reason would
    // leave its path (tracefs mounted in its own namespace) untested.
    for tracer in [Tracer::None, Tracer::Tcptrace, Tracer::BpftraceCount] {
        if !system.samples.iter().any(|s| s.tracer == tracer) {
            bail!("smoke: no run of {}", tracer.label());
        }
    }
    for sample in &system.samples {
        let churn = &sample.churn;
        if (churn.connections, churn.served, churn.errors)
            != (SMOKE_CONNECTIONS, SMOKE_CONNECTIONS, 0)
        {
            bail!("smoke: the load did not make what it should: {churn:?}");
        }
        let exact = sample.tracer.is_tcptrace() || sample.tracer == Tracer::BpftraceCount;
        if let (true, Some(report)) = (exact, &sample.report) {
            if report.events != sample.expected_events() || report.lost != 0 {
                bail!(
                    "smoke: {} saw {} events ({} lost), the load made {}",
                    sample.tracer.label(),
                    report.events,
                    report.lost,
                    sample.expected_events()
                );
            }
            if report.kernel_runs < sample.expected_events() {
                bail!(
                    "smoke: {} programs ran {} times",
                    sample.tracer.label(),
                    report.kernel_runs
                );
            }
        }
    }
    let latency = system
        .latency
        .as_ref()
        .context("smoke: no latency measured")?;
    for (phase, probes) in [("quiet", &latency.quiet), ("under load", &latency.loaded)] {
        if probes.visible_ms.len() != SMOKE_LATENCY_SAMPLES || probes.not_visible != 0 {
            bail!(
                "smoke: latency {phase}: {} of {SMOKE_LATENCY_SAMPLES} probes listed, {} not \
                 within 2 s",
                probes.visible_ms.len(),
                probes.not_visible
            );
        }
    }
    eprintln!(
        "bench: smoke run exact for {} tracer runs; {} latency probes all listed",
        system.samples.len(),
        2 * SMOKE_LATENCY_SAMPLES
    );
    Ok(())
}
