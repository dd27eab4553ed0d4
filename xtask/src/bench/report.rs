//! BENCHMARKS.md, written from a run's results: nothing in it is typed by hand except
//! the notes in `notes.md`, which explain what the profiles showed.

use std::fmt::Write as _;

use super::{
    latency::{Latencies, LatencyResults},
    soak::{self, SoakResults},
    tracer::Tracer,
    userspace::{Capacity, REPLAY_EVENTS},
    BenchArgs, Sample, SystemResults,
};
use crate::cmd;

const NOTES: &str = include_str!("notes.md");

/// The issue's target for event-to-visible latency, p99.
const LATENCY_TARGET_MS: f64 = 50.0;

/// Median, minimum and maximum.
fn spread(mut values: Vec<f64>) -> Option<(f64, f64, f64)> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    Some((median, values[0], values[n - 1]))
}

fn show(spread: Option<(f64, f64, f64)>, digits: usize) -> String {
    spread.map_or("–".into(), |(m, lo, hi)| {
        format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
    })
}

fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib as f64 / 1048576.0)
        });
    let kernel = cmd::output("uname", &["-r"]).unwrap_or_default();
    let bpftrace =
        cmd::output("bpftrace", &["--version"]).unwrap_or_else(|| "not installed".into());
    format!(
        "- CPU: {cpus} × {model}; memory {memory}\n- kernel {}; {}\n",
        kernel.trim(),
        bpftrace.trim()
    )
}

/// Each sample's value against the baseline of the same repetition.
fn ratios(system: &SystemResults, tracer: Tracer) -> Vec<f64> {
    let baseline = |rep| {
        system
            .samples
            .iter()
            .find(|s| s.rep == rep && s.tracer == Tracer::None)
            .map(|s| s.churn.per_second)
    };
    system
        .samples
        .iter()
        .filter(|s| s.tracer == tracer)
        .filter_map(|s| Some(s.churn.per_second / baseline(s.rep)?))
        .collect()
}

fn of(system: &SystemResults, tracer: Tracer, f: impl Fn(&Sample) -> Option<f64>) -> Vec<f64> {
    system
        .samples
        .iter()
        .filter(|s| s.tracer == tracer)
        .filter_map(f)
        .collect()
}

fn system_table(system: &SystemResults) -> String {
    let mut table = String::from(
        "| tracer | connections/s | ratio to baseline | tracer CPU, % of one core | \
         events delivered, % of made | events lost | kernel ns per program run |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let tracers: Vec<Tracer> = Tracer::ALL
        .into_iter()
        .filter(|t| system.samples.iter().any(|s| s.tracer == *t))
        .collect();
    for tracer in tracers {
        let per_second = show(spread(of(system, tracer, |s| Some(s.churn.per_second))), 0);
        let ratio = show(spread(ratios(system, tracer)), 3);
        let report = |f: fn(&Sample) -> Option<f64>| show(spread(of(system, tracer, f)), 1);
        let cpu = report(|s| Some(100.0 * s.report?.cpu_seconds / s.churn.seconds));
        let delivered =
            report(|s| Some(100.0 * s.report?.events as f64 / s.expected_events() as f64));
        let lost = show(
            spread(of(system, tracer, |s| Some(s.report?.lost as f64))),
            0,
        );
        let kernel = report(|s| {
            let r = s.report?;
            (r.kernel_runs > 0).then(|| r.kernel_run_ns as f64 / r.kernel_runs as f64)
        });
        let _ = writeln!(
            table,
            "| {} | {per_second} | {ratio} | {cpu} | {delivered} | {lost} | {kernel} |",
            tracer.label()
        );
    }
    table
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

fn capacity_table(capacity: &Capacity) -> String {
    let mut table = String::from("| measure | result | target | |\n|---|---|---|---|\n");
    let rate = capacity.replay_events_per_second;
    let _ = writeln!(
        table,
        "| replay of {REPLAY_EVENTS} events: decode → tracker → metrics, one core | \
         {:.2} M events/s | ≥ 2 M events/s | {} |",
        rate / 1e6,
        verdict(rate >= 2e6)
    );
    for &(n, allocated, resident) in &capacity.memory {
        let _ = writeln!(
            table,
            "| memory per tracked connection, {n} connections | {allocated:.0} B allocated, \
             {resident:.0} B resident | ≤ 200 B | {} |",
            verdict(allocated <= 200.0)
        );
    }
    let _ = writeln!(
        table,
        "| `/metrics` render with 100000 tracked connections | {:.2} ms | ≤ 10 ms | {} |",
        capacity.metrics_render_ms,
        verdict(capacity.metrics_render_ms <= 10.0)
    );
    let total = capacity.dump_ms + capacity.reconcile_ms;
    let _ = writeln!(
        table,
        "| sock_diag dump + reconcile, {} TIME_WAIT sockets | {:.1} ms ({:.1} dump + {:.1} \
         reconcile) | ≤ 100 ms | {} |",
        capacity.time_wait_sockets,
        total,
        capacity.dump_ms,
        capacity.reconcile_ms,
        verdict(total <= 100.0)
    );
    for figure in &capacity.namespaces {
        let total = figure.find_ms + figure.dump_ms;
        let hash = match figure.child_ehash_entries {
            0 => "sharing the host's TCP hash".to_owned(),
            n => format!("each with a TCP hash of its own ({n} buckets)"),
        };
        let _ = writeln!(
            table,
            "| find + dump every network namespace: {} namespaces, {} sockets, {hash} | \
             {total:.1} ms ({:.1} find + {:.1} dump) | ≤ 200 ms | {} |",
            figure.namespaces,
            figure.sockets,
            figure.find_ms,
            figure.dump_ms,
            verdict(total <= 200.0)
        );
    }
    table
}

fn latency_row(phase: &str, probes: &Latencies) -> String {
    let ms = |q: f64| {
        probes
            .quantile(q)
            .map_or("–".to_owned(), |v| format!("{v:.1} ms"))
    };
    format!(
        "| {phase} | {} | {} | {} | {} | {} | ≤ {LATENCY_TARGET_MS:.0} ms | {} |\n",
        probes.visible_ms.len(),
        ms(0.5),
        ms(0.99),
        ms(1.0),
        probes.not_visible,
        verdict(probes.meets(LATENCY_TARGET_MS))
    )
}

fn latency_section(latency: &LatencyResults) -> String {
    format!(
        "## Event-to-visible latency\n\n\
         From a state change until `/api/connections` lists it. In a `tcptrace serve` run \
         of its own (`-P` on the load's port and the prober's), a prober connects to its \
         own server; when connect() returns, the kernel has moved the socket to \
         ESTABLISHED. From then it asks `/api/connections?port=EPHEMERAL&state=ESTABLISHED` \
         every 1 ms over one kept-alive HTTP connection (one request took {quiet_poll:.2} ms \
         quiet, {loaded_poll:.2} ms under load, on average) until the answer lists that \
         socket. One probe at a time, each after a random 0–10 ms pause, so that they fall \
         at every phase of the reader's 10 ms timer. Quiet: no other \
         traffic in the namespace (the host itself is shared). Under load: alongside the \
         overhead rows' churn, {per_second:.0} connections/s here.\n\n\
         | | probes | p50 | p99 | max | not listed within 2 s | target (p99) | |\n\
         |---|---|---|---|---|---|---|---|\n{quiet}{loaded}\n",
        quiet_poll = latency.quiet.poll_ms,
        loaded_poll = latency.loaded.poll_ms,
        per_second = latency.churn.per_second,
        quiet = latency_row("quiet", &latency.quiet),
        loaded = latency_row("under peak churn", &latency.loaded),
    )
}

pub(super) fn markdown(
    args: &BenchArgs,
    system: Option<&SystemResults>,
    capacity: &Capacity,
    soak: Option<&SoakResults>,
) -> String {
    let mut doc = format!(
        "# Benchmarks\n\n\
         Written by `sudo cargo xtask bench {flags}`; regenerate it rather than edit it \
         (`cargo xtask bench --report-only` after editing the notes). The Soak section \
         comes from the last `cargo xtask bench --soak`.\n\n\
         ## Machine\n\n{machine}\n",
        flags = system.map(|s| s.flags.join(" ")).unwrap_or_default(),
        machine = machine(),
    );
    match system {
        Some(system) => {
            doc.push_str(&overhead_section(args, system));
            if let Some(latency) = &system.latency {
                doc.push_str(&latency_section(latency));
            }
        }
        None => doc.push_str(
            "## Overhead on connection churn\n\nNot measured yet: run `sudo cargo xtask \
             bench`.\n\n",
        ),
    }
    if capacity.replay_events_per_second > 0.0 {
        let _ = write!(
            doc,
            "## tcptrace's userspace capacity\n\n{}\n",
            capacity_table(capacity)
        );
    }
    if let Some(soak) = soak {
        doc.push_str(&soak::report::markdown(soak));
    }
    doc.push_str(NOTES);
    doc
}

fn overhead_section(args: &BenchArgs, system: &SystemResults) -> String {
    let shape = &args.load;
    let load = if shape.rate == 0 {
        "as fast as it goes (peak)".to_owned()
    } else {
        format!("paced at {} connections/s", shape.rate)
    };
    let mut doc = format!(
        "## Overhead on connection churn\n\n\
         Load: {clients} client and {servers} server threads making short loopback \
         connections {load} for {duration} per run, in a network namespace the benchmark \
         creates. Each connection makes 10 state changes. The tracers run one at a time, \
         interleaved (baseline, tcptrace, tcptrace without the socket's namespace, cgroup \
         and close details (the reads of before issue 10), tcptrace reading the task on \
         every event as before issue 12 — `--kernel-reads none|task-always`, a flag only a \
         `bench-hooks` build has, which prices each read per event —, bpftrace counting, \
         bpftrace printing, then again), \
         {reps} repetitions; each cell is the median (min–max) over them. Every tracer \
         filters on the load's port in the kernel. The ratio compares a run with the \
         baseline of the same repetition. CPU is the tracer process's user + system time \
         over the run's duration; the kernel programs' time is charged to the tasks that \
         trigger them and shows in the ratio and the last column \
         (`kernel.bpf_stats_enabled`, on for the run and restored after).\n\n{table}\n",
        reps = args.reps,
        duration = humantime::format_duration(shape.duration),
        clients = shape.clients,
        servers = shape.servers,
        table = system_table(system),
    );
    for skipped in &system.skipped {
        let _ = writeln!(doc, "Skipped: {skipped}\n");
    }
    doc
}
