//! `tcptrace watch`: every event, live, until Ctrl-C or SIGTERM.

use std::{
    io::{self, Write},
    sync::{atomic::Ordering::Relaxed, Arc},
};

use anyhow::Context as _;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};

use crate::{
    cli::WatchArgs,
    clock::WallClock,
    filter::EventFilter,
    output,
    probe::{spawn_reader, PipelineStats, Probe},
    tracker::Tracker,
};

/// What a run saw, printed on exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub lost: u64,
    pub undecodable: u64,
    pub read_errors: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events seen, {} lost (kernel ring buffer full), {} undecodable, \
             {} unreadable in the kernel",
            self.events, self.lost, self.undecodable, self.read_errors
        )
    }
}

/// Runs until a signal, the end of `out` (e.g. a closed pipe) or an error.
pub async fn run(args: &WatchArgs, out: &mut dyn Write) -> anyhow::Result<Summary> {
    let (probe, ring) = Probe::load(&args.probe_config()).context("starting the kernel probe")?;
    log::info!("attached: {}", probe.attached().join(", "));
    let stats = Arc::new(PipelineStats::default());
    let (tx, mut rx) = mpsc::channel(64);
    let reader = spawn_reader(ring, tx, Arc::clone(&stats));

    let mut sigterm = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let clock = WallClock::new();
    let mut tracker = Tracker::new(args.max_connections as usize, 0);
    let filter = EventFilter::new(args.pid, args.states.clone());
    if !args.json {
        writeln!(out, "{}\n{}", output::HEADER, output::LEGEND)?;
        out.flush()?;
    }

    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                for event in &batch {
                    let applied = tracker.apply(event);
                    if !filter.matches(event, applied.owner) {
                        continue;
                    }
                    let line = if args.json {
                        output::json_line(clock, event, applied.owner, applied.time_in_old_state_ns)
                    } else {
                        output::human_line(clock, event, applied.owner, applied.time_in_old_state_ns)
                    };
                    writeln!(out, "{line}")?;
                }
                match out.flush() {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
                    other => other?,
                }
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }

    let kernel = probe.kernel_counters()?;
    reader.abort();
    if let Ok(Ok(Err(err))) = tokio::time::timeout(std::time::Duration::from_secs(1), reader)
        .await
        .map(|joined| joined.map_err(|_| ()))
    {
        return Err(err).context("reading events from the kernel");
    }
    // Detaches every program and frees every map.
    drop(probe);
    Ok(Summary {
        events: stats.events(),
        lost: kernel.lost,
        undecodable: stats.decode_errors.load(Relaxed),
        read_errors: kernel.read_errors,
    })
}
