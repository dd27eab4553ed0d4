//! Numbers read where they live, at each scrape (ebpf_exporter's `Collect`): the
//! kernel's per-CPU counters, the decoder's, and the tracker's counts and sizes. Each
//! is counted once, by whoever counts it; nothing copies it into a second counter on a
//! timer, so a scrape always sees the current value.

use std::sync::{atomic::Ordering::Relaxed, Arc};

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
    IntCounter, IntCounterVec, IntGauge, Opts,
};

use crate::{
    probe::{KernelCounters, PipelineStats},
    tracker::SharedStats,
};

/// Where the scrape reads from.
pub struct Sources {
    /// The kernel's counters; `None` when they cannot be read (then the two series
    /// are left out of that scrape, not reported as 0).
    pub kernel: Box<dyn Fn() -> Option<KernelCounters> + Send + Sync>,
    pub pipeline: Arc<PipelineStats>,
    pub tracker: Arc<SharedStats>,
    /// `--max-connections`.
    pub table_limit: u64,
}

/// The metrics read at scrape; their names and help are declared here once.
pub struct ScrapeCollector {
    sources: Sources,
    events_lost: IntCounter,
    events_unreadable: IntCounter,
    events_missed: IntCounter,
    decode_errors: IntCounter,
    tracked: IntGauge,
    tracked_limit: IntGauge,
    listeners: IntGauge,
    evictions: IntCounter,
    gaps: IntCounter,
    illegal_transitions: IntCounter,
    reconcile_corrections: IntCounterVec,
    descs: Vec<Desc>,
}

fn counter(name: &str, help: &str) -> IntCounter {
    IntCounter::with_opts(Opts::new(name, help)).expect("valid metric name")
}

fn gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::with_opts(Opts::new(name, help)).expect("valid metric name")
}

impl ScrapeCollector {
    pub fn new(sources: Sources) -> Self {
        let mut collector = ScrapeCollector {
            sources,
            events_lost: counter(
                "tcptrace_events_lost_total",
                "Events the kernel could not deliver because the ring buffer was full.",
            ),
            events_unreadable: counter(
                "tcptrace_events_unreadable_total",
                "Tracepoint records the kernel programs could not read.",
            ),
            events_missed: counter(
                "tcptrace_events_missed_total",
                "Tracepoint hits the kernel ran no tcptrace program for, because another BPF program was running on that CPU (its bpf_prog_info recursion_misses): events lost before anything could filter or count them, so for any port.",
            ),
            decode_errors: counter(
                "tcptrace_decode_errors_total",
                "Ring-buffer records that did not decode (wrong size, kind, family or state).",
            ),
            tracked: gauge("tcptrace_tracked_connections", "Connections in the table."),
            tracked_limit: gauge(
                "tcptrace_tracked_connections_limit",
                "The table's cap (--max-connections).",
            ),
            listeners: gauge(
                "tcptrace_listeners",
                "Listening sockets seen opening since tcptrace started.",
            ),
            evictions: counter(
                "tcptrace_evictions_total",
                "Connections dropped from the full table, least recently active first.",
            ),
            gaps: counter(
                "tcptrace_event_gaps_total",
                "Transitions whose old state was not the state tracked: an event was missed.",
            ),
            illegal_transitions: counter(
                "tcptrace_illegal_transitions_total",
                "Transitions the RFC 793 state machine does not allow.",
            ),
            reconcile_corrections: IntCounterVec::new(
                Opts::new(
                    "tcptrace_reconcile_corrections_total",
                    "Corrections the sock_diag reconcile made: closed (gone from the kernel), added (unknown to tcptrace), state (tracked in another state than the kernel's).",
                ),
                &["kind"],
            )
            .expect("valid metric name"),
            descs: Vec::new(),
        };
        collector.descs = collector
            .all()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        collector
    }

    fn all(&self) -> [&dyn Collector; 11] {
        [
            &self.events_lost,
            &self.events_unreadable,
            &self.events_missed,
            &self.decode_errors,
            &self.tracked,
            &self.tracked_limit,
            &self.listeners,
            &self.evictions,
            &self.gaps,
            &self.illegal_transitions,
            &self.reconcile_corrections,
        ]
    }
}

/// A fresh copy of `template` holding `value`: each scrape builds its own, so two
/// scrapes at once never see each other's half-set values.
fn counter_at(template: &IntCounter, value: u64) -> Vec<MetricFamily> {
    let desc = &template.desc()[0];
    let fresh = counter(&desc.fq_name, &desc.help);
    fresh.inc_by(value);
    fresh.collect()
}

fn gauge_at(template: &IntGauge, value: u64) -> Vec<MetricFamily> {
    let desc = &template.desc()[0];
    let fresh = gauge(&desc.fq_name, &desc.help);
    fresh.set(i64::try_from(value).unwrap_or(i64::MAX));
    fresh.collect()
}

impl Collector for ScrapeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let s = &self.sources;
        let mut families = Vec::new();
        if let Some(kernel) = (s.kernel)() {
            families.extend(counter_at(&self.events_lost, kernel.lost));
            families.extend(counter_at(&self.events_unreadable, kernel.read_errors));
            families.extend(counter_at(&self.events_missed, kernel.missed));
        }
        families.extend(counter_at(
            &self.decode_errors,
            s.pipeline.decode_errors.load(Relaxed),
        ));
        let t = s.tracker.snapshot();
        families.extend(gauge_at(&self.tracked, t.live));
        families.extend(gauge_at(&self.tracked_limit, s.table_limit));
        families.extend(gauge_at(&self.listeners, t.listeners));
        families.extend(counter_at(&self.evictions, t.evictions));
        families.extend(counter_at(&self.gaps, t.gaps));
        families.extend(counter_at(&self.illegal_transitions, t.illegal_transitions));
        let desc = &self.reconcile_corrections.desc()[0];
        let corrections =
            IntCounterVec::new(Opts::new(&desc.fq_name, &desc.help), &["kind"]).expect("valid");
        for (kind, total) in [
            ("closed", t.reconcile_closed),
            ("added", t.reconcile_added),
            ("state", t.reconcile_state_fixed),
        ] {
            corrections.with_label_values(&[kind]).inc_by(total);
        }
        families.extend(corrections.collect());
        families
    }
}
