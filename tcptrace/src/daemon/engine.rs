//! The state the loop owns and what it does with each input.

use std::{
    collections::{HashMap, HashSet},
    io,
    path::Path,
    sync::Arc,
    time::Instant,
};

use tokio::sync::{mpsc, watch};

use super::{
    background::{self, Done, Dump},
    Sink,
};
use crate::{
    api::{self, Query},
    cli::TraceArgs,
    clock::{monotonic_now_ns, WallClock},
    detect::{
        close_wait::{self, StuckCloseWait},
        time_wait::{PortRange, DEFAULT_PORT_RANGE},
        DetectConfig, LeakReport, TimeWaitReport,
    },
    diag::{
        owners::{OwnerCache, ProcessOwner},
        DiagError,
    },
    event::TcpEvent,
    metrics::{EventRecorder, Metrics},
    probe::KernelCounters,
    tracker::{ConnId, Tracker},
};

/// Finished timelines kept for pairing, late marks and `/api/connections/{id}`.
const FINISHED_RING: usize = 4096;
/// A warning about lost events at most this often.
const LOSS_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

const PORT_RANGE_SYSCTL: &str = "/proc/sys/net/ipv4/ip_local_port_range";

pub struct Engine {
    tracker: Tracker,
    recorder: EventRecorder,
    detect: DetectConfig,
    clock: WallClock,
    owners: OwnerCache,
    /// The last detector pass, kept to republish when owners are found.
    stuck: Vec<StuckCloseWait>,
    time_wait: TimeWaitReport,
    leaks: watch::Sender<Arc<LeakReport>>,
    finished: Vec<ConnId>,
    lost_warned: (u64, Option<Instant>),
}

impl Engine {
    pub fn new(
        args: &TraceArgs,
        metrics: Arc<Metrics>,
        leaks: watch::Sender<Arc<LeakReport>>,
    ) -> Self {
        Self {
            tracker: Tracker::new(args.max_connections as usize, FINISHED_RING),
            recorder: EventRecorder::new(metrics),
            detect: DetectConfig {
                close_wait_threshold: args.detect.close_wait_threshold,
                port_pressure_threshold: args.detect.port_pressure_threshold,
                top_remotes: usize::from(args.detect.top_remotes),
            },
            clock: WallClock::new(),
            owners: OwnerCache::default(),
            stuck: Vec::new(),
            time_wait: TimeWaitReport::default(),
            leaks,
            finished: Vec::new(),
            lost_warned: (0, None),
        }
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    pub fn apply_batch(&mut self, batch: &[TcpEvent], sink: &mut dyn Sink) -> io::Result<()> {
        for event in batch {
            let applied = self.tracker.apply(event);
            self.recorder.record(event, &applied);
            if applied.finished {
                self.finished.extend(applied.conn);
            }
            sink.event(&self.tracker, event, &applied)?;
        }
        // After the batch, so that a RST reported just after →CLOSE is in.
        for id in std::mem::take(&mut self.finished) {
            if let Some(conn) = self.tracker.finished_by_id(id) {
                self.recorder.record_finished(conn);
                sink.finished(&self.tracker, conn)?;
            }
        }
        Ok(())
    }

    /// The startup dump: existing sockets enter the table.
    pub fn seeded(&mut self, dump: Dump, done: &mpsc::Sender<Done>) {
        let report = self.tracker.seed(&dump.sockets, monotonic_now_ns());
        log::info!(
            "seeded {} connections from sock_diag, {} sockets in TIME_WAIT",
            report.added,
            report.time_wait
        );
        self.detect(&dump, done);
    }

    /// A periodic dump: heal the table, then the same as after the seed.
    pub fn reconciled(&mut self, result: Result<Dump, DiagError>, done: &mpsc::Sender<Done>) {
        let dump = match result {
            Ok(dump) => dump,
            Err(err) => {
                self.recorder.metrics().reconcile_failures.inc();
                log::warn!("reconcile skipped: {err}");
                return;
            }
        };
        let report = self
            .tracker
            .reconcile(&dump.sockets, dump.started_ns, monotonic_now_ns());
        log::debug!("reconcile: {report:?} in {:?}", dump.took);
        self.detect(&dump, done);
    }

    /// After every dump: time it, run the detectors, look up new leakers' owners.
    fn detect(&mut self, dump: &Dump, done: &mpsc::Sender<Done>) {
        self.recorder
            .metrics()
            .reconcile_seconds
            .observe(dump.took.as_secs_f64());
        let now = monotonic_now_ns();
        let threshold = self.detect.close_wait_threshold.as_nanos() as u64;
        self.stuck = close_wait::find_stuck(self.tracker.live(), &dump.sockets, now, threshold);
        let range = PortRange::read(Path::new(PORT_RANGE_SYSCTL)).unwrap_or(DEFAULT_PORT_RANGE);
        self.time_wait = TimeWaitReport::new(
            self.tracker.time_wait(),
            &dump.sockets,
            range,
            self.detect.top_remotes,
            self.detect.port_pressure_threshold,
        );
        let misses = self
            .owners
            .retain_and_misses(&close_wait::inodes(&self.stuck));
        if !misses.is_empty() {
            background::spawn_owner_scan(misses, done.clone());
        }
        self.publish(now);
    }

    pub fn owners_found(&mut self, looked_up: &HashSet<u32>, found: HashMap<u32, ProcessOwner>) {
        self.owners.insert(looked_up, found);
        self.publish(monotonic_now_ns());
    }

    fn publish(&mut self, now_ns: u64) {
        let report = LeakReport::new(
            &self.stuck,
            &self.owners,
            self.time_wait.clone(),
            &self.detect,
            self.clock,
            now_ns,
        );
        self.recorder.record_leaks(&report);
        self.leaks.send_replace(Arc::new(report));
    }

    /// Once a second: levels and counters into the metrics; a warning when the kernel
    /// dropped events.
    pub fn tick(&mut self, kernel: KernelCounters, decode_errors: u64) {
        crate::fault::maybe_panic(crate::fault::Point::Engine);
        self.recorder
            .record_table(&self.tracker, kernel, decode_errors);
        let (warned_at_total, last) = self.lost_warned;
        let due = last.is_none_or(|at| at.elapsed() >= LOSS_WARNING_EVERY);
        if kernel.lost > warned_at_total && due {
            log::warn!(
                "{} events lost so far ({} since the last warning): the ring buffer was full. \
                 Timelines heal at the next reconcile; a larger --ring-buffer-bytes or \
                 kernel-side filters (-P, -4/-6) lose fewer",
                kernel.lost,
                kernel.lost - warned_at_total
            );
            self.lost_warned = (kernel.lost, Some(Instant::now()));
        }
    }

    pub fn answer(&self, query: Query) {
        crate::fault::maybe_stall();
        api::answer(query, &self.tracker, self.clock, monotonic_now_ns());
    }
}
