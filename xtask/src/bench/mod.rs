//! `cargo xtask bench`: tcptrace against no tracer and against bpftrace on the same
//! connection churn, interleaved in one run, plus tcptrace's userspace capacity; the
//! results become BENCHMARKS.md.

mod kernel;
mod netns;
mod report;
mod tracer;
mod userspace;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context as _};
use clap::Parser as _;
use serde::{Deserialize, Serialize};

use self::tracer::{Tracer, TracerReport};
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
}

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if let Some(results) = &args.inside {
        return inside(args, results);
    }
    let dir = cmd::workspace_root().join("target/bench");
    // A smoke run must not replace the measured results the report is written from.
    let results_path = dir.join(if args.smoke {
        "smoke.json"
    } else {
        "system.json"
    });
    let capacity_path = dir.join("capacity.json");
    if args.report_only {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("{}: run the benchmark first", path.display()))
        };
        let system: SystemResults = serde_json::from_str(&read(&results_path)?)?;
        let capacity: userspace::Capacity = serde_json::from_str(&read(&capacity_path)?)?;
        // The report describes the run as it was made, whatever flags come now.
        let mut measured = Stored::try_parse_from(
            std::iter::once("bench".to_owned()).chain(system.flags.iter().cloned()),
        )
        .context("the stored run's flags")?
        .args;
        measured.out = args.out.clone();
        return write_report(&measured, &system, &capacity);
    }
    if !cmd::is_root() {
        bail!("the benchmark loads eBPF programs and makes a network namespace: run it as root");
    }
    // The full run prices kernel reads with a test-only flag (a cargo feature); the
    // smoke run checks the binary as it ships.
    let mut build = vec!["build", "--release", "--quiet", "--package", "tcptrace"];
    if !args.smoke {
        build.extend(["--features", "bench-hooks"]);
    }
    cmd::cargo(&build)?;
    std::fs::create_dir_all(&dir)?;
    // A process of its own: it moves from namespace to namespace, this one stays.
    let mut inner = vec![
        "bench".to_owned(),
        "--inside".to_owned(),
        results_path.display().to_string(),
    ];
    inner.extend(forwarded(args));
    let me = std::env::current_exe()?;
    cmd::run(&me.display().to_string(), &inner).context("the benchmark's tracer runs")?;
    let system: SystemResults = serde_json::from_str(&std::fs::read_to_string(&results_path)?)?;
    if args.smoke {
        return check_smoke(&system);
    }
    let capacity = if args.no_capacity {
        userspace::Capacity::default()
    } else {
        userspace::run()?
    };
    std::fs::write(&capacity_path, serde_json::to_string_pretty(&capacity)?)?;
    write_report(args, &system, &capacity)
}

fn write_report(
    args: &BenchArgs,
    system: &SystemResults,
    capacity: &userspace::Capacity,
) -> anyhow::Result<()> {
    let markdown = report::markdown(args, system, capacity);
    std::fs::write(cmd::workspace_root().join(&args.out), markdown)?;
    eprintln!("bench: wrote {}", args.out.display());
    Ok(())
}

/// The arguments the inner run needs, as flags.
fn forwarded(args: &BenchArgs) -> Vec<String> {
    let mut flags = vec![
        format!("--reps={}", args.reps),
        format!(
            "--duration={}",
            humantime::format_duration(args.load.duration)
        ),
        format!("--clients={}", args.load.clients),
        format!("--servers={}", args.load.servers),
        format!("--rate={}", args.load.rate),
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
            let running = tracer::start(tracer, &tcptrace_binary(), PORT, &before)?;
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
    std::fs::write(results, serde_json::to_string_pretty(&system)?)?;
    Ok(())
}

/// A smoke run passes when the load made what it reports and tcptrace and the bpftrace
/// counter saw exactly the state changes the load made.
fn check_smoke(system: &SystemResults) -> anyhow::Result<()> {
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
    eprintln!(
        "bench: smoke run exact for {} tracer runs",
        system.samples.len()
    );
    Ok(())
}
