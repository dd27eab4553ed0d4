//! The state the loop owns and what it does with each input.

use std::{
    collections::{HashMap, HashSet},
    io,
    net::SocketAddr,
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
    clock::{monotonic_now_ns, WallClock},
    config::TraceConfig,
    detect::{
        close_wait::{self, StuckCloseWait},
        half_open::{self, HalfOpenDetector, HalfOpenReport, HalfOpenSuspect},
        listeners::{
            self, ListenCounterHistory, ListenerLevel, ListenerReport, NamespaceListens,
            SynackCounts,
        },
        DetectConfig, LeakReport, TimeWaitReport,
    },
    diag::{
        cgroup::CgroupResolver,
        owners::{OwnerCache, ProcessOwner},
        tcp_info::KernelView,
    },
    event::TcpEvent,
    filter::CgroupFilter,
    metrics::{EventRecorder, Metrics},
    probe::KernelCounters,
    tracker::{ConnId, Owner, Tracker},
};

/// Finished timelines kept for pairing, late marks and `/api/connections/{id}`.
const FINISHED_RING: usize = 4096;
/// A warning about lost events at most this often.
const LOSS_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// cgroup ids whose container and pod are remembered.
const WORKLOAD_CACHE: usize = 4096;
/// Namespaces remembered as already warned about (a dump that fails every pass is
/// reported once, not every few seconds).
const MAX_WARNED_NAMESPACES: usize = 1024;

pub(super) struct Engine {
    tracker: Tracker,
    recorder: EventRecorder,
    detect: DetectConfig,
    clock: WallClock,
    owners: OwnerCache,
    /// cgroup id → container and pod; `None` without a cgroup v2 mount.
    workloads: Option<CgroupResolver>,
    /// `--cgroup`.
    cgroup_filter: Option<CgroupFilter>,
    /// The last detector pass, kept to republish when owners are found.
    stuck: Vec<StuckCloseWait>,
    time_wait: TimeWaitReport,
    half_open: HalfOpenDetector,
    suspects: Vec<HalfOpenSuspect>,
    /// The reports changed between passes (suspects ended): published at the next tick,
    /// once, however many batches changed them.
    republish: bool,
    /// Each tracked connection's timer and `tcp_info` at the last dump
    /// (`/api/connections`), and when that dump began.
    kernel: KernelViews,
    leaks: watch::Sender<Arc<LeakReport>>,
    /// The last pass's listening sockets, fullest first, and namespaces' listen counters.
    listener_levels: Vec<ListenerLevel>,
    listen_namespaces: Vec<NamespaceListens>,
    listen_history: ListenCounterHistory,
    /// SYN-ACK retransmits from the events, by the address connected to.
    synacks: SynackCounts,
    listeners: watch::Sender<Arc<ListenerReport>>,
    finished: Vec<ConnId>,
    lost_warned: (u64, Option<Instant>),
    warned_namespaces: HashSet<u32>,
    /// tcptrace's own network namespace, whose port range the metrics show.
    own_netns: Option<u32>,
}

impl Engine {
    pub(super) fn new(
        config: &TraceConfig,
        metrics: Arc<Metrics>,
        leaks: watch::Sender<Arc<LeakReport>>,
        listeners: watch::Sender<Arc<ListenerReport>>,
    ) -> Self {
        let workloads = CgroupResolver::from_host(WORKLOAD_CACHE);
        if workloads.is_none() {
            log::warn!("no cgroup v2 mount found: sockets will not be attributed to containers");
        }
        Self {
            tracker: Tracker::new(config.max_connections as usize, FINISHED_RING),
            recorder: EventRecorder::new(metrics).with_top_namespaces(config.detect.top_remotes),
            detect: config.detect,
            clock: WallClock::new(),
            owners: OwnerCache::default(),
            workloads,
            cgroup_filter: config.cgroup_prefix.clone().map(CgroupFilter::new),
            stuck: Vec::new(),
            time_wait: TimeWaitReport::default(),
            half_open: HalfOpenDetector::default(),
            suspects: Vec::new(),
            republish: false,
            kernel: KernelViews::default(),
            leaks,
            listener_levels: Vec::new(),
            listen_namespaces: Vec::new(),
            listen_history: ListenCounterHistory::default(),
            synacks: SynackCounts::default(),
            listeners,
            finished: Vec::new(),
            lost_warned: (0, None),
            warned_namespaces: HashSet::new(),
            own_netns: crate::diag::netns::own_netns().ok(),
        }
    }

    pub(super) fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// Whether `--cgroup` keeps sockets of cgroup `id`.
    fn admits(&mut self, cgroup_id: u64) -> bool {
        match (&mut self.cgroup_filter, &mut self.workloads) {
            (None, _) => true,
            (Some(filter), Some(resolver)) => filter.admits(cgroup_id, resolver),
            // `daemon::run` refuses --cgroup without a cgroup v2 mount.
            (Some(_), None) => false,
        }
    }

    pub(super) fn apply_batch(
        &mut self,
        batch: &[TcpEvent],
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        for event in batch {
            if !self.admits(event.sock_cgroup_id) {
                continue;
            }
            let applied = self.tracker.apply(event);
            self.recorder.record(event, &applied);
            self.synacks.record(event);
            if applied.finished {
                self.finished.extend(applied.conn);
            }
            sink.event(&self.tracker, event, &applied)?;
        }
        // After the batch, so that a RST reported just after →CLOSE is in.
        let mut ended = Vec::new();
        for id in std::mem::take(&mut self.finished) {
            if let Some(conn) = self.tracker.finished_by_id(id) {
                self.recorder.record_finished(conn);
                sink.finished(&self.tracker, conn)?;
                if !self.suspects.is_empty() {
                    ended.push(conn.key());
                }
            }
        }
        // A suspect that ended is no longer one: said within a tick, not at the next pass.
        if half_open::forget_ended(&mut self.suspects, &ended) {
            self.republish = true;
        }
        Ok(())
    }

    /// Drops the sockets `--cgroup` does not keep (those whose cgroup the dump did not
    /// give are kept: events will name it).
    fn scope(&mut self, dump: &mut Dump) {
        if self.cgroup_filter.is_none() {
            return;
        }
        for ns in &mut dump.namespaces {
            let mut sockets = std::mem::take(&mut ns.sockets);
            sockets.retain(|s| s.cgroup_id.is_none_or(|id| self.admits(id)));
            ns.sockets = sockets;
        }
    }

    /// The startup dump: existing sockets enter the table.
    pub(super) fn seeded(&mut self, mut dump: Dump, done: &mpsc::Sender<Done>) {
        self.scope(&mut dump);
        let report = self.tracker.seed(&dump.snapshot(), monotonic_now_ns());
        self.recorder.record_vanished(report.closed);
        self.warn_failed(&dump);
        self.detect(&dump, done);
        log::info!(
            "seeded {} connections from sock_diag in {} network namespaces, {} sockets in \
             TIME_WAIT",
            report.added,
            dump.namespaces.len(),
            self.time_wait.total
        );
    }

    /// A periodic dump: heal the table, then the same as after the seed; then tell the
    /// sink about listeners that overflowed since the previous pass.
    pub(super) fn reconciled(
        &mut self,
        mut dump: Dump,
        done: &mpsc::Sender<Done>,
        sink: &mut dyn Sink,
    ) -> io::Result<()> {
        self.scope(&mut dump);
        let report = self.tracker.reconcile(&dump.snapshot(), monotonic_now_ns());
        self.recorder.record_vanished(report.closed);
        if report.closed_with_namespace > 0 {
            log::info!(
                "{} connections closed with their network namespace, which is gone",
                report.closed_with_namespace
            );
        }
        self.warn_failed(&dump);
        log::debug!("reconcile: {report:?} in {:?}", dump.took);
        self.detect(&dump, done);
        let now = monotonic_now_ns();
        let overflows = self.listeners.borrow().overflows();
        for overflow in &overflows {
            sink.listen_overflow(now, overflow)?;
        }
        Ok(())
    }

    /// Namespaces that exist and could not be dumped: counted every pass, reported once
    /// each (their connections are left as they are, never closed for it). One that
    /// went away between finding and dumping it is no failure: the next pass finds it
    /// gone.
    fn warn_failed(&mut self, dump: &Dump) {
        let failures = &self.recorder.metrics().reconcile_failures;
        for (netns, err) in dump.failed.iter().filter(|(_, e)| !e.namespace_gone()) {
            failures.inc();
            if self.warned_namespaces.len() >= MAX_WARNED_NAMESPACES {
                self.warned_namespaces.clear();
            }
            if self.warned_namespaces.insert(*netns) {
                log::warn!(
                    "network namespace {netns} could not be dumped, its connections are not \
                     reconciled: {err}"
                );
            }
        }
    }

    /// After every dump: time it, run the detectors, look up new leakers' owners.
    fn detect(&mut self, dump: &Dump, done: &mpsc::Sender<Done>) {
        self.recorder
            .metrics()
            .reconcile_seconds
            .observe(dump.took.as_secs_f64());
        let now = monotonic_now_ns();
        let threshold = self.detect.close_wait_threshold.as_nanos() as u64;
        self.stuck = close_wait::find_stuck(self.tracker.live(), &dump.namespaces, now, threshold);
        self.time_wait = TimeWaitReport::new(
            &dump.namespaces,
            self.own_netns,
            self.detect.top_remotes,
            self.detect.port_pressure_threshold,
        );
        self.listener_levels = listeners::find_listeners(&dump.namespaces, &self.synacks);
        let unreadable: Vec<u32> = dump
            .failed
            .iter()
            .filter(|(_, e)| !e.namespace_gone())
            .map(|(netns, _)| *netns)
            .collect();
        let (namespaces, gone) = self.listen_history.update(&dump.namespaces, &unreadable);
        self.synacks
            .forget(&dump.namespaces, dump.started_ns, &gone);
        // Once per pass: counters take each increase exactly once.
        self.recorder.record_listen_counters(&namespaces, &gone);
        self.listen_namespaces = namespaces;
        self.recorder.record_listeners(&listeners::series(
            &self.listener_levels,
            self.detect.top_remotes,
        ));
        let threshold = self.detect.half_open_after.as_nanos() as u64;
        // Judged as of the dump: the kernel's times are.
        self.suspects = self.half_open.pass(
            self.tracker.live(),
            &dump.namespaces,
            dump.started_ns,
            threshold,
        );
        self.kernel = KernelViews::of(dump, &self.tracker);
        let mut wanted = close_wait::inodes(&self.stuck);
        wanted.extend(listeners::inodes(&self.listener_levels));
        wanted.extend(half_open::inodes(&self.suspects));
        let misses = self.owners.retain_and_misses(&wanted);
        if !misses.is_empty() {
            background::spawn_owner_scan(misses, done.clone());
        }
        self.publish(now);
    }

    pub(super) fn owners_found(
        &mut self,
        looked_up: &HashSet<u32>,
        found: HashMap<u32, ProcessOwner>,
    ) {
        self.owners.insert(looked_up, found);
        self.publish(monotonic_now_ns());
    }

    fn publish(&mut self, now_ns: u64) {
        let workloads = &mut self.workloads;
        let mut report = LeakReport::new(
            &self.stuck,
            &self.owners,
            &mut |id| workloads.as_mut()?.resolve(id),
            self.time_wait.clone(),
            &self.detect,
            self.clock,
            now_ns,
        );
        report.half_open = HalfOpenReport::new(
            &self.suspects,
            &self.owners,
            &mut |id| workloads.as_mut()?.resolve(id),
            self.detect.half_open_after.as_secs_f64(),
            self.clock,
        );
        self.recorder.record_leaks(&report);
        self.leaks.send_replace(Arc::new(report));
        // Who called listen() on each address, as the events saw it.
        let listened: HashMap<(u32, SocketAddr), Owner> = self
            .tracker
            .listeners()
            .filter_map(|l| Some(((l.netns, l.local), l.owner?)))
            .collect();
        let workloads = &mut self.workloads;
        let listeners = ListenerReport::new(
            &self.listener_levels,
            &self.listen_namespaces,
            &self.owners,
            &listened,
            &mut |id| workloads.as_mut()?.resolve(id),
            self.clock,
            now_ns,
        );
        self.listeners.send_replace(Arc::new(listeners));
    }

    /// Once a second: levels and counters into the metrics; a warning when the kernel
    /// dropped events.
    pub(super) fn tick(&mut self, kernel: KernelCounters) {
        crate::fault::maybe_panic(crate::fault::Point::Engine);
        self.recorder.record_table(&self.tracker);
        if std::mem::take(&mut self.republish) {
            self.publish(monotonic_now_ns());
        }
        let (warned_at_total, last) = self.lost_warned;
        let due = last.is_none_or(|at| at.elapsed() >= LOSS_WARNING_EVERY);
        if kernel.lost > warned_at_total && due {
            log::warn!(
                "{} events lost so far ({} since the last warning): the ring buffer was full. \
                 Timelines heal at the next reconcile; a larger --ring-buffer-bytes or \
                 kernel-side filters (-P, -4/-6, --netns) lose fewer",
                kernel.lost,
                kernel.lost - warned_at_total
            );
            self.lost_warned = (kernel.lost, Some(Instant::now()));
        }
    }

    pub(super) fn answer(&mut self, query: Query) {
        crate::fault::maybe_stall();
        let workloads = &mut self.workloads;
        api::answer(
            query,
            &self.tracker,
            &api::Kernel {
                views: &self.kernel.views,
                dumped_ns: self.kernel.dumped_ns,
            },
            &mut |id| workloads.as_mut()?.resolve(id),
            self.clock,
            monotonic_now_ns(),
        );
    }
}

/// The last dump's timers and `tcp_info` of the connections the table holds, by
/// connection id (`id.generation`): at most `--max-connections` entries of 48 bytes,
/// however many sockets the host has.
#[derive(Debug, Default)]
struct KernelViews {
    views: HashMap<u64, KernelView>,
    /// When that dump began (CLOCK_MONOTONIC); `None` before the first.
    dumped_ns: Option<u64>,
}

impl KernelViews {
    /// `tracker` was just reconciled with `dump`.
    /// Each full socket of the dump looked up in the table's own key index: no map of
    /// the whole dump, nor of the whole table, per pass.
    fn of(dump: &Dump, tracker: &Tracker) -> Self {
        let views = dump
            .namespaces
            .iter()
            .flat_map(|d| d.sockets.iter().map(move |s| (d.netns, s)))
            .filter(|(_, s)| s.is_full() && (s.tcp_info.is_some() || s.timer.is_some()))
            .filter_map(|(netns, s)| {
                let conn = tracker.live_by_key(&s.key(netns))?;
                let view = KernelView {
                    timer: s.timer,
                    tcp_info: s.tcp_info,
                };
                Some((conn.id.generation, view))
            })
            .collect();
        KernelViews {
            views,
            dumped_ns: Some(dump.started_ns),
        }
    }
}
