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
    clock::{monotonic_now_ns, WallClock},
    diag::{dump_tcp, DiagSocket},
    filter::EventFilter,
    output,
    probe::{spawn_reader, PipelineStats, Probe},
    state::TcpState,
    timeline,
    tracker::{ConnId, Tracker},
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

/// Finished timelines kept for pairing and late marks.
const FINISHED_RING: usize = 4096;

/// A sock_diag dump of every state, off the async threads, with the time it started.
async fn dump() -> anyhow::Result<(Vec<DiagSocket>, u64)> {
    let started = monotonic_now_ns();
    let sockets = tokio::task::spawn_blocking(|| dump_tcp(&TcpState::ALL))
        .await
        .context("the sock_diag task failed")??;
    Ok((sockets, started))
}

/// Prints a connection that just finished; when its other end on this host finished
/// already, the pair's sequence diagram too.
fn print_finished(
    tracker: &Tracker,
    id: ConnId,
    filter: &EventFilter,
    json: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    let Some(conn) = tracker.finished_by_id(id) else {
        return Ok(());
    };
    if !filter.matches_connection(conn) {
        return Ok(());
    }
    let partner = tracker.partner(conn);
    if json {
        return writeln!(out, "{}", timeline::json(conn, partner));
    }
    writeln!(out, "{}", timeline::human(conn))?;
    // Once per pair: with the end that finished last.
    let finished_last = |p: &&crate::tracker::Connection| {
        p.is_finished()
            && (
                p.state_since_ns(),
                p.direction == crate::tracker::Direction::Passive,
            ) <= (
                conn.state_since_ns(),
                conn.direction == crate::tracker::Direction::Passive,
            )
    };
    if let Some(partner) = partner.filter(finished_last) {
        let (client, server) = if conn.direction == crate::tracker::Direction::Active {
            (conn, partner)
        } else {
            (partner, conn)
        };
        writeln!(out, "{}", timeline::sequence_diagram(client, server))?;
    }
    Ok(())
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
    let mut sigusr1 =
        signal(SignalKind::user_defined1()).context("installing a SIGUSR1 handler")?;
    let clock = WallClock::new();
    let mut tracker = Tracker::new(args.max_connections as usize, FINISHED_RING);
    let filter = EventFilter::new(args.pid, args.states.clone());
    // After attaching, so nothing falls between the dump and the first event.
    match dump().await {
        Ok((sockets, _)) => {
            let report = tracker.seed(&sockets, monotonic_now_ns());
            log::info!(
                "seeded {} connections from sock_diag, {} sockets in TIME_WAIT",
                report.added,
                report.time_wait
            );
        }
        Err(err) => log::warn!("no startup seed, only new connections will be seen: {err}"),
    }
    if !args.json && !args.timelines {
        writeln!(out, "{}\n{}", output::HEADER, output::LEGEND)?;
        out.flush()?;
    }
    let mut reconcile = tokio::time::interval(args.reconcile_interval);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reconcile.tick().await;
    let mut finished = Vec::new();

    loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                for event in &batch {
                    let applied = tracker.apply(event);
                    if args.timelines {
                        if applied.finished {
                            finished.extend(applied.conn);
                        }
                        continue;
                    }
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
                // Printed after the batch, so that a RST reported just after →CLOSE is in.
                for id in finished.drain(..) {
                    print_finished(&tracker, id, &filter, args.json, out)?;
                }
                match out.flush() {
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
                    other => other?,
                }
            }
            _ = reconcile.tick() => match dump().await {
                Ok((sockets, started)) => {
                    let report = tracker.reconcile(&sockets, started, monotonic_now_ns());
                    log::debug!("reconcile: {report:?}");
                }
                Err(err) => log::warn!("reconcile skipped: {err}"),
            },
            _ = sigusr1.recv() => {
                for conn in tracker.live().filter(|c| filter.matches_connection(c)) {
                    let line = if args.json {
                        timeline::json(conn, tracker.partner(conn))
                    } else {
                        timeline::human(conn)
                    };
                    writeln!(out, "{line}")?;
                }
                out.flush()?;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }

    let kernel = probe.kernel_counters()?;
    // A reader that stopped on its own (the loop saw its channel close) had an error;
    // one still running is cancelled here.
    reader.abort();
    if let Ok(Err(err)) = reader.await {
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
