//! The loop behind `watch` and `serve`: kernel → ring buffer → decoder → tracker →
//! detectors, metrics and a [`Sink`] (the terminal for `watch`, nothing for `serve`).
//!
//! One task owns the table. Dumps and `/proc` scans run on blocking threads and report
//! back; the HTTP handlers ask questions over a channel. Nothing on the event path
//! takes a lock.

mod background;
mod engine;

use std::{
    io,
    net::SocketAddr,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use anyhow::Context as _;
use background::dump;
pub use background::snapshot_of;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

use self::engine::Engine;
use crate::{
    config::{HttpConfig, TraceConfig},
    detect::ListenOverflow,
    diag::cgroup::CgroupResolver,
    event::TcpEvent,
    http,
    metrics::{Metrics, Sources},
    probe::{spawn_reader, PipelineStats, Probe, PROGRAMS},
    tracker::{Applied, Connection, Tracker},
    web::{self, ClientAuth},
};

/// Where `watch` prints. Every method has a do-nothing default: `serve` prints nothing.
pub trait Sink {
    /// Once, before the first event.
    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn event(
        &mut self,
        _tracker: &Tracker,
        _event: &TcpEvent,
        _applied: &Applied,
    ) -> io::Result<()> {
        Ok(())
    }
    /// A connection that ended, once its whole batch is in (a RST reported just after
    /// its →CLOSE belongs to it).
    fn finished(&mut self, _tracker: &Tracker, _conn: &Connection) -> io::Result<()> {
        Ok(())
    }
    /// SIGUSR1: the live table.
    fn live(&mut self, _tracker: &Tracker) -> io::Result<()> {
        Ok(())
    }
    /// At a reconcile (CLOCK_MONOTONIC `at_ns`): a namespace whose listeners dropped
    /// connection attempts on a full accept queue since the previous one.
    fn listen_overflow(&mut self, _at_ns: u64, _overflow: &ListenOverflow) -> io::Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Prints nothing.
pub struct Quiet;
impl Sink for Quiet {}

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

/// How long a finished dump waits for the events made while it ran: a few of the
/// reader's drain intervals.
const DUMP_SETTLE: Duration = crate::probe::DRAIN_EVERY.saturating_mul(5);

/// How often levels (connections by state, kernel counters) are refreshed.
const TICK: Duration = Duration::from_secs(1);

/// The HTTP listener's accept queue (the kernel caps it at `net.core.somaxconn`). Deep
/// enough that a burst of connections (a flood the server is evicting) does not overflow
/// it: a SYN dropped on a full queue is retried only after a second.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds the HTTP listener before anything is loaded, so that a taken port fails
/// fast and leaves nothing behind.
fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let fail = || format!("cannot listen on {addr} (--listen); pick a free address and port");
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .with_context(fail)?;
    // As std's bind does: a restart is not refused for the old connections' TIME_WAIT.
    socket.set_reuseaddr(true).with_context(fail)?;
    socket.bind(addr).with_context(fail)?;
    socket.listen(LISTEN_BACKLOG).with_context(fail)
}

/// Waits for the HTTP server to stop on its own (it should not), or forever.
async fn server_stopped(server: &mut Option<JoinHandle<io::Result<()>>>) -> anyhow::Error {
    let Some(handle) = server.as_mut() else {
        return std::future::pending().await;
    };
    let result = handle.await;
    // A finished JoinHandle must not be awaited again.
    *server = None;
    match result {
        Ok(Ok(())) => anyhow::anyhow!("the HTTP server stopped"),
        Ok(Err(err)) => anyhow::Error::from(err).context("the HTTP server failed"),
        Err(err) => anyhow::Error::from(err).context("the HTTP server panicked"),
    }
}

/// Runs until SIGINT/SIGTERM, the end of the sink's output, or an error. `http` (with
/// its web config file already read) is served when given.
pub async fn run(
    config: &TraceConfig,
    http: Option<HttpConfig>,
    sink: &mut dyn Sink,
) -> anyhow::Result<Summary> {
    let listener = http.as_ref().map(|http| bind(http.listen)).transpose()?;
    if config.cgroup_prefix.is_some() && CgroupResolver::from_host(0).is_none() {
        anyhow::bail!(
            "--cgroup needs the cgroup v2 hierarchy mounted (no cgroup2 mount in \
             /proc/self/mountinfo): mount it, e.g. `mount -t cgroup2 none /sys/fs/cgroup/unified`"
        );
    }
    let metrics = Arc::new(Metrics::new()?);
    let (probe, ring) = Probe::load(&config.probe).context("starting the kernel probe")?;
    log::info!("attached: {}", probe.attached().join(", "));
    for spec in PROGRAMS {
        let attached = probe.attached().contains(&spec.program);
        metrics
            .programs_attached
            .with_label_values(&[spec.program])
            .set(i64::from(attached));
    }
    let stats = Arc::new(PipelineStats::default());
    let (tx, mut rx) = mpsc::channel(64);
    let reader = spawn_reader(ring, tx, Arc::clone(&stats));

    let mut sigterm = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let mut sigusr1 =
        signal(SignalKind::user_defined1()).context("installing a SIGUSR1 handler")?;

    let (leaks_tx, leaks_rx) = watch::channel(Arc::default());
    let (listeners_tx, listeners_rx) = watch::channel(Arc::default());
    let mut engine = Engine::new(config, Arc::clone(&metrics), leaks_tx, listeners_tx);
    let kernel = probe.counter_reader();
    metrics.read_at_scrape(Sources {
        kernel: Box::new(move || kernel.read().ok()),
        pipeline: Arc::clone(&stats),
        tracker: engine.tracker().shared_stats(),
        table_limit: config.max_connections as u64,
    })?;
    // After attaching, so that nothing falls between the dump and the first event.
    // Dumps and owner scans report back here.
    let (done_tx, mut done) = mpsc::channel(4);
    let scope = background::DumpScope {
        filter: config.probe.filter.clone(),
        netns: config.netns.clone(),
    };
    let seed_scope = scope.clone();
    let seed = tokio::task::spawn_blocking(move || dump(&seed_scope)).await?;
    engine.seeded(seed, &done_tx);

    let (queries_tx, mut queries) = mpsc::channel(16);
    let (stop_server, server_stop) = oneshot::channel::<()>();
    let mut server = listener.zip(http).map(|(listener, http)| {
        if let Ok(addr) = listener.local_addr() {
            let scheme = if http.web.tls.is_some() {
                "https"
            } else {
                "http"
            };
            log::info!("serving {scheme}://{addr}/ (the web view), /metrics, /healthz and /api/*");
        }
        if let Some(path) = &http.web.path {
            log::info!(
                "web config {}: TLS {}, basic auth {}",
                path.display(),
                match (&http.web.tls, http.web.client_auth) {
                    (None, _) => "off",
                    (Some(_), ClientAuth::None) => "on",
                    (Some(_), ClientAuth::IfGiven) => "on, client certificates checked if given",
                    (Some(_), ClientAuth::Required) => "on, client certificates required",
                },
                match &http.web.auth {
                    Some(auth) => format!("for {} user(s)", auth.users().len()),
                    None => "off".to_owned(),
                }
            );
        }
        let app = http::router(http::ApiState {
            metrics: Arc::clone(&metrics),
            queries: queries_tx.clone(),
            leaks: leaks_rx,
            listeners: listeners_rx,
        });
        tokio::spawn(web::serve(
            listener,
            app,
            http.web,
            http.limits,
            Arc::clone(&metrics),
            server_stop,
        ))
    });
    drop(queries_tx);

    sink.start()?;
    let mut reconcile = tokio::time::interval(config.reconcile_interval);
    reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reconcile.tick().await;
    let mut dump_running = false;
    // A finished dump waits until the events made while it ran have reached the table
    // (the reader drains every DRAIN_EVERY): judged earlier, a socket that closed during
    // the dump would look gone while its →CLOSE is still in the ring buffer.
    let mut settled_dump: Option<background::Dump> = None;
    let settle = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(settle);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break Ok(()) };
                match engine.apply_batch(&batch, sink).and_then(|()| sink.flush()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break Ok(()),
                    Err(e) => break Err(e.into()),
                }
            }
            _ = reconcile.tick(), if !dump_running => {
                dump_running = true;
                background::spawn_dump(scope.clone(), done_tx.clone());
            }
            Some(finished) = done.recv() => match finished {
                background::Done::Dump(result) => {
                    settled_dump = Some(result);
                    settle.as_mut().reset(tokio::time::Instant::now() + DUMP_SETTLE);
                }
                background::Done::Owners { looked_up, found } => {
                    engine.owners_found(&looked_up, found);
                }
            },
            () = &mut settle, if settled_dump.is_some() => {
                dump_running = false;
                if let Some(dump) = settled_dump.take() {
                    match engine.reconciled(dump, &done_tx, sink).and_then(|()| sink.flush()) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break Ok(()),
                        Err(e) => break Err(e.into()),
                    }
                }
            }
            _ = tick.tick() => match probe.kernel_counters() {
                Ok(kernel) => engine.tick(kernel),
                Err(err) => log::warn!("reading the kernel's counters: {err}"),
            },
            Some(query) = queries.recv() => engine.answer(query),
            _ = sigusr1.recv() => if let Err(e) = sink.live(engine.tracker()).and_then(|()| sink.flush()) {
                break Err(e.into());
            },
            err = server_stopped(&mut server) => break Err(err),
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
        }
    };

    let _ = stop_server.send(());
    if let Some(server) = server {
        // Open keep-alive connections would hold a graceful stop forever.
        if tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .is_err()
        {
            log::debug!("HTTP connections still open at exit; closing them");
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
    outcome?;
    Ok(Summary {
        events: stats.events(),
        lost: kernel.lost,
        undecodable: stats.decode_errors.load(Relaxed),
        read_errors: kernel.read_errors,
    })
}
