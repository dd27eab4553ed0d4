//! Feeds the metrics from the pipeline: per event on the hot path, per finished
//! connection, and from the table and the detectors once per tick.

use std::{collections::HashSet, sync::Arc};

use prometheus::{Histogram, IntCounter, IntCounterVec};

use super::{Metrics, SeriesSet, MAX_LEAK_PROCESSES, OTHER};
use crate::{
    detect::{
        close_wait::by_process,
        listeners::{ListenerSeries, NamespaceListens},
        LeakReport,
    },
    diag::netstat::ListenCounters,
    event::{EventKind, TcpEvent},
    state::TcpState,
    tracker::{classify, Applied, CloseKind, ConnectFailure, Connection, Direction, Tracker},
};

/// Namespaces with their own TIME_WAIT series unless told otherwise.
const DEFAULT_TOP_NAMESPACES: usize = 10;

/// Kernel state numbers go up to 12.
const STATES: usize = 13;

/// Holds the label lookups of the per-event metrics, resolved once on first use: a
/// `with_label_values` hashes its labels on every call, which the hot path can skip.
pub struct EventRecorder {
    metrics: Arc<Metrics>,
    transitions: Box<[[Option<IntCounter>; STATES]; STATES]>,
    state_seconds: [Option<Histogram>; STATES],
    events: [Option<IntCounter>; 8],
    handshake: [Option<Histogram>; 2],
    opened: [Option<IntCounter>; 3],
    closed: [Option<IntCounter>; CloseKind::ALL.len()],
    connect_failures: [Option<IntCounter>; ConnectFailure::ALL.len()],
    /// What finished connections carried, by direction: resolved once like the rest.
    carried: [Option<Carried>; 3],
    leak_processes: SeriesSet,
    time_wait_namespaces: SeriesSet,
    time_wait_remotes: SeriesSet,
    port_pressure: SeriesSet,
    /// One per listener gauge family: accept queue, limit, fill, SYN_RECV.
    listener_series: [SeriesSet; 4],
    /// Namespaces with their own listen counter series.
    listen_counter_namespaces: HashSet<u32>,
    half_open_namespaces: SeriesSet,
    /// How many namespaces get their own TIME_WAIT, listen counter and half-open series,
    /// and how many listening addresses their own listener series (`--top-remotes`).
    top_remotes: usize,
}

/// The series one direction's finished connections feed.
#[derive(Clone)]
struct Carried {
    seconds: Histogram,
    rtt: Histogram,
    sent: IntCounter,
    received: IntCounter,
}

fn cached<T: Clone>(slot: &mut Option<T>, make: impl FnOnce() -> T) -> &T {
    slot.get_or_insert_with(make)
}

fn state_index(state: TcpState) -> usize {
    usize::from(state.as_kernel())
}

fn state_label(state: Option<TcpState>) -> &'static str {
    state.map_or("none", TcpState::label)
}

impl EventRecorder {
    /// At most `top` namespaces get their own TIME_WAIT and listen counter series, and
    /// `top` listening addresses their own listener series; the rest are summed under
    /// `other`.
    pub fn with_top_namespaces(mut self, top: usize) -> Self {
        self.top_remotes = top;
        self
    }

    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            transitions: Box::new(std::array::from_fn(|_| std::array::from_fn(|_| None))),
            state_seconds: std::array::from_fn(|_| None),
            events: std::array::from_fn(|_| None),
            handshake: [None, None],
            opened: [None, None, None],
            closed: std::array::from_fn(|_| None),
            connect_failures: std::array::from_fn(|_| None),
            carried: std::array::from_fn(|_| None),
            leak_processes: SeriesSet::default(),
            time_wait_namespaces: SeriesSet::default(),
            time_wait_remotes: SeriesSet::default(),
            port_pressure: SeriesSet::default(),
            listener_series: Default::default(),
            listen_counter_namespaces: HashSet::new(),
            half_open_namespaces: SeriesSet::default(),
            top_remotes: DEFAULT_TOP_NAMESPACES,
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// One event and what the tracker made of it.
    pub fn record(&mut self, event: &TcpEvent, applied: &Applied) {
        let m = &self.metrics;
        let kind_index = match event.kind {
            EventKind::StateChange { .. } => 0,
            EventKind::Retransmit { .. } => 1,
            EventKind::RetransmitSynack => 2,
            EventKind::SendReset { .. } => 3,
            EventKind::ReceiveReset { .. } => 4,
        };
        cached(&mut self.events[kind_index], || {
            m.events.with_label_values(&[event.kind.name()])
        })
        .inc();
        match event.kind {
            EventKind::StateChange { old, new } => {
                cached(
                    &mut self.transitions[state_index(old)][state_index(new)],
                    || m.transitions.with_label_values(&[old.label(), new.label()]),
                )
                .inc();
                if let Some(ns) = applied.time_in_old_state_ns {
                    let seconds = ns as f64 / 1e9;
                    cached(&mut self.state_seconds[state_index(old)], || {
                        m.state_seconds.with_label_values(&[old.label()])
                    })
                    .observe(seconds);
                    let direction = match (old, new) {
                        (TcpState::SynSent, TcpState::Established) => Some(Direction::Active),
                        (TcpState::SynRecv, TcpState::Established) => Some(Direction::Passive),
                        _ => None,
                    };
                    if let Some(direction) = direction {
                        cached(&mut self.handshake[direction as usize], || {
                            m.handshake_seconds.with_label_values(&[direction.label()])
                        })
                        .observe(seconds);
                    }
                }
                if let Some(direction) = applied.opened {
                    cached(&mut self.opened[direction as usize], || {
                        m.opened.with_label_values(&[direction.label()])
                    })
                    .inc();
                }
            }
            // Rare enough for a plain lookup.
            EventKind::Retransmit { state, err } => {
                let outcome = if err == 0 { "sent" } else { "failed" };
                m.retransmitted_skbs
                    .with_label_values(&["data", outcome, state.label()])
                    .inc();
            }
            EventKind::RetransmitSynack => m
                .retransmitted_skbs
                .with_label_values(&["synack", "sent", TcpState::NewSynRecv.label()])
                .inc(),
            EventKind::SendReset { state } => m
                .resets
                .with_label_values(&["sent", state_label(state)])
                .inc(),
            EventKind::ReceiveReset { state } => m
                .resets
                .with_label_values(&["received", state_label(state)])
                .inc(),
        }
    }

    /// A connection that ended (moved to the finished ring): how it ended, why its
    /// handshake failed, and what it carried. Labels are the direction only: nothing
    /// per connection.
    pub fn record_finished(&mut self, conn: &Connection) {
        let m = &self.metrics;
        let life = classify(conn);
        let Some(kind) = life.close else {
            return;
        };
        let index = CloseKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        cached(&mut self.closed[index], || {
            m.closed.with_label_values(&[kind.label()])
        })
        .inc();
        if let Some(failure) = ConnectFailure::of(&life) {
            cached(&mut self.connect_failures[failure as usize], || {
                m.connect_failures.with_label_values(&[failure.label()])
            })
            .inc();
        }
        let direction = conn.direction.label();
        let carried = cached(&mut self.carried[conn.direction as usize], || Carried {
            seconds: m.connection_seconds.with_label_values(&[direction]),
            rtt: m.close_rtt_seconds.with_label_values(&[direction]),
            sent: m.bytes_sent.with_label_values(&[direction]),
            received: m.bytes_received.with_label_values(&[direction]),
        });
        if let Some(ns) = conn.lifetime_ns() {
            carried.seconds.observe(ns as f64 / 1e9);
        }
        if let Some(stats) = conn.closed_with() {
            carried.sent.inc_by(stats.bytes_sent);
            carried.received.inc_by(stats.bytes_received);
            if stats.srtt_us > 0 {
                carried.rtt.observe(f64::from(stats.srtt_us) / 1e6);
            }
        }
    }

    /// Connections by state, read off the table. Once per tick: counting states is
    /// O(table). (The table's size and the tracker's, the reader's and the kernel's
    /// counts are read at scrape: `scrape.rs`.)
    pub fn record_table(&self, tracker: &Tracker) {
        let m = &self.metrics;
        let mut by_state = [0i64; STATES];
        for conn in tracker.live() {
            by_state[state_index(conn.state())] += 1;
        }
        for state in TcpState::ALL {
            // A tracked connection leaves the table at CLOSE and hands over to a
            // timewait socket (exported as tcptrace_time_wait_sockets), so it is never in
            // either; listeners and request sockets are not connections.
            if !matches!(
                state,
                TcpState::Close | TcpState::TimeWait | TcpState::Listen | TcpState::NewSynRecv
            ) {
                m.connections
                    .with_label_values(&[state.label()])
                    .set(by_state[state_index(state)]);
            }
        }
    }

    /// Connections a reconcile found gone: they ended without an event to count them.
    pub fn record_vanished(&self, closed: u64) {
        if closed > 0 {
            self.metrics
                .closed
                .with_label_values(&[CloseKind::Vanished.label()])
                .inc_by(closed);
        }
    }

    /// The detectors' findings.
    pub fn record_leaks(&mut self, report: &LeakReport) {
        let m = &self.metrics;
        let cw = &report.close_wait;
        m.close_wait_stuck.set(cw.stuck as i64);
        m.close_wait_oldest_age.set(cw.oldest_age_seconds);
        m.close_wait_unread_bytes.set(cw.unread_bytes as i64);
        self.leak_processes.replace(
            &m.close_wait_stuck_by_process,
            by_process(&cw.leaks, MAX_LEAK_PROCESSES)
                .into_iter()
                .map(|(process, count)| {
                    let labels = match process {
                        Some((pid, comm, container)) => vec![pid.to_string(), comm, container],
                        None => vec![OTHER.to_owned(), OTHER.to_owned(), OTHER.to_owned()],
                    };
                    (labels, count as i64)
                }),
        );

        let tw = &report.time_wait;
        m.time_wait.set(tw.total as i64);
        let top = self.top_remotes;
        let shown: u64 = tw.namespaces.iter().take(top).map(|n| n.time_wait).sum();
        let other_namespaces =
            (tw.total > shown).then(|| (vec![OTHER.to_owned()], (tw.total - shown) as i64));
        self.time_wait_namespaces.replace(
            &m.time_wait_by_netns,
            tw.namespaces
                .iter()
                .take(top)
                .map(|n| (vec![n.netns.to_string()], n.time_wait as i64))
                .chain(other_namespaces),
        );
        let other =
            (tw.other > 0).then(|| (vec![OTHER.to_owned(), OTHER.to_owned()], tw.other as i64));
        self.time_wait_remotes.replace(
            &m.time_wait_by_remote,
            tw.top_remotes
                .iter()
                .map(|r| {
                    (
                        vec![r.netns.to_string(), r.remote.to_string()],
                        r.sockets as i64,
                    )
                })
                .chain(other),
        );
        self.port_pressure.replace(
            &m.port_pressure,
            tw.port_pressure.iter().map(|p| {
                (
                    vec![
                        p.netns.to_string(),
                        p.local_address.to_string(),
                        p.remote.to_string(),
                    ],
                    p.ratio,
                )
            }),
        );
        m.port_pressure_max.set(tw.max_ratio());
        if let Some(range) = tw.port_range {
            m.port_range_size.set(i64::from(range.size()));
        }

        let ho = &report.half_open;
        m.half_open_suspects.set(ho.count as i64);
        m.half_open_oldest_unanswered
            .set(ho.oldest_unanswered_seconds);
        let shown: u64 = ho.namespaces.iter().take(top).map(|n| n.suspects).sum();
        let rest = (ho.count as u64).saturating_sub(shown);
        self.half_open_namespaces.replace(
            &m.half_open_suspects_by_netns,
            ho.namespaces
                .iter()
                .take(top)
                .map(|n| (vec![n.netns.to_string()], n.suspects as i64))
                .chain((rest > 0).then(|| (vec![OTHER.to_owned()], rest as i64))),
        );
    }

    /// The per-listener gauges: the top K listening addresses and `other`.
    pub fn record_listeners(&mut self, series: &[ListenerSeries]) {
        let m = &self.metrics;
        let labels = |s: &ListenerSeries| match s.listen {
            Some((netns, local)) => vec![netns.to_string(), local.to_string()],
            None => vec![OTHER.to_owned(), OTHER.to_owned()],
        };
        let [queue, limit, fill, syn_recv] = &mut self.listener_series;
        queue.replace(
            &m.listener_accept_queue,
            series.iter().map(|s| (labels(s), s.accept_queue as i64)),
        );
        limit.replace(
            &m.listener_accept_queue_limit,
            series
                .iter()
                .map(|s| (labels(s), s.accept_queue_limit as i64)),
        );
        fill.replace(
            &m.listener_accept_queue_fill,
            series.iter().map(|s| (labels(s), s.fill_ratio)),
        );
        syn_recv.replace(
            &m.listener_syn_recv,
            series.iter().map(|s| (labels(s), s.syn_recv as i64)),
        );
    }

    /// Adds one pass's increases of the namespaces' listen counters. Counters never go
    /// down, so a namespace keeps its series for as long as it exists: the first
    /// `--top-remotes` namespaces seen with a listener get one (made at 0, so that the
    /// first increase shows in `increase()`), the others add to `netns="other"`. A
    /// namespace that is `gone` frees its series and its place.
    pub fn record_listen_counters(&mut self, namespaces: &[NamespaceListens], gone: &[u32]) {
        let m = &self.metrics;
        type Counter = fn(&ListenCounters) -> u64;
        let families: [(&IntCounterVec, Counter); 5] = [
            (&m.listen_overflows, |c| c.listen_overflows),
            (&m.listen_drops, |c| c.listen_drops),
            (&m.syncookies_sent, |c| c.syncookies_sent),
            (&m.syncookies_recv, |c| c.syncookies_recv),
            (&m.syncookies_failed, |c| c.syncookies_failed),
        ];
        for netns in gone {
            if self.listen_counter_namespaces.remove(netns) {
                for (family, _) in &families {
                    let _ = family.remove_label_values(&[&netns.to_string()]);
                }
            }
        }
        for ns in namespaces {
            let own = self.listen_counter_namespaces.contains(&ns.netns)
                || (ns.listeners > 0 && self.listen_counter_namespaces.len() < self.top_remotes);
            let label = if own {
                self.listen_counter_namespaces.insert(ns.netns);
                ns.netns.to_string()
            } else {
                OTHER.to_owned()
            };
            let increase = ns.increase.unwrap_or_default();
            for (family, value) in &families {
                family.with_label_values(&[&label]).inc_by(value(&increase));
            }
        }
    }
}
