//! Every Prometheus metric tcptrace exports, registered in one place.
//!
//! Names are `tcptrace_<what>_<unit>`, counters end in `_total`, durations are in
//! seconds. Every label takes values from a closed set (states, kinds, directions),
//! except those that name endpoints, namespaces or processes, and those are capped:
//! remote endpoints, listening addresses and namespaces to the top K plus `other`,
//! processes to the [`MAX_LEAK_PROCESSES`] with the most leaked sockets plus `other`.
//! No label names a connection.

mod recorder;
mod scrape;
mod series;
#[cfg(test)]
mod tests;

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
pub use recorder::EventRecorder;
pub use scrape::{ScrapeCollector, Sources};
pub use series::SeriesSet;

/// Processes that get their own `tcptrace_close_wait_stuck_by_process` series.
pub const MAX_LEAK_PROCESSES: usize = 20;

/// The label value standing for everything beyond a cap.
pub const OTHER: &str = "other";

/// Handshakes take from tens of microseconds (loopback) to seconds (SYN retries).
const HANDSHAKE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    3.0, 10.0,
];
/// States last from microseconds (SYN_SENT on loopback) to days (a leaked CLOSE_WAIT).
const STATE_BUCKETS: &[f64] = &[
    0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0,
];
/// A connection's life, from a loopback RPC to a day-long stream.
const LIFE_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 86400.0,
];
/// Smoothed RTTs, from loopback's tens of µs to a satellite hop.
const RTT_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
const RECONCILE_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

pub struct Metrics {
    registry: Registry,

    // What the connections do.
    pub transitions: IntCounterVec,
    pub connections: IntGaugeVec,
    pub opened: IntCounterVec,
    pub closed: IntCounterVec,
    pub handshake_seconds: HistogramVec,
    pub state_seconds: HistogramVec,
    pub retransmitted_skbs: IntCounterVec,
    pub resets: IntCounterVec,
    pub connect_failures: IntCounterVec,
    pub connection_seconds: HistogramVec,
    pub close_rtt_seconds: HistogramVec,
    pub bytes_sent: IntCounterVec,
    pub bytes_received: IntCounterVec,

    // Detectors.
    pub close_wait_stuck: IntGauge,
    pub close_wait_oldest_age: Gauge,
    pub close_wait_unread_bytes: IntGauge,
    pub close_wait_stuck_by_process: IntGaugeVec,
    pub time_wait: IntGauge,
    pub time_wait_by_netns: IntGaugeVec,
    pub time_wait_by_remote: IntGaugeVec,
    pub port_pressure: GaugeVec,
    pub port_pressure_max: Gauge,
    pub port_range_size: IntGauge,
    pub listener_accept_queue: IntGaugeVec,
    pub listener_accept_queue_limit: IntGaugeVec,
    pub listener_accept_queue_fill: GaugeVec,
    pub listener_syn_recv: IntGaugeVec,
    pub listen_overflows: IntCounterVec,
    pub listen_drops: IntCounterVec,
    pub syncookies_sent: IntCounterVec,
    pub syncookies_recv: IntCounterVec,
    pub syncookies_failed: IntCounterVec,
    pub half_open_suspects: IntGauge,
    pub half_open_suspects_by_netns: IntGaugeVec,
    pub half_open_oldest_unanswered: Gauge,

    // tcptrace's own health.
    pub events: IntCounterVec,
    pub reconcile_seconds: Histogram,
    pub reconcile_failures: IntCounter,
    pub programs_attached: IntGaugeVec,
    pub build_info: IntGaugeVec,

    // The HTTP server (web::serve).
    pub http_connections: IntGauge,
    pub http_connections_limit: IntGauge,
    pub http_connections_cut: IntCounterVec,
    pub http_requests_refused: IntCounterVec,
}

/// Why the HTTP server closed a connection before its client did
/// (`tcptrace_http_connections_cut_total{reason}`).
pub const HTTP_CUT_REASONS: &[&str] = &[
    "evicted",
    "idle_timeout",
    "header_timeout",
    "response_deadline",
    "tls_handshake_failed",
    "plain_http_on_tls",
];

/// Why the HTTP server refused a request (`tcptrace_http_requests_refused_total{reason}`).
pub const HTTP_REFUSED_REASONS: &[&str] = &[
    "unauthorized",
    "rate_limited",
    "body_too_large",
    "auth_busy",
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("registering metric: {0}")]
    Register(#[from] prometheus::Error),
}

/// Registers a newly made metric and hands it back.
fn register<T>(registry: &Registry, metric: prometheus::Result<T>) -> prometheus::Result<T>
where
    T: prometheus::core::Collector + Clone + 'static,
{
    let metric = metric?;
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

fn histogram(name: &str, help: &str, buckets: &[f64]) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(buckets.to_vec())
}

impl Metrics {
    pub fn new() -> Result<Self, MetricsError> {
        let r = Registry::new();
        let m = Metrics {
            transitions: register(&r, IntCounterVec::new(
                opts("tcptrace_state_transitions_total", "TCP state changes seen, by old and new state."),
                &["from", "to"],
            ))?,
            connections: register(&r, IntGaugeVec::new(
                opts("tcptrace_connections", "Tracked connections by current state (TIME_WAIT sockets are counted in tcptrace_time_wait_sockets)."),
                &["state"],
            ))?,
            opened: register(&r, IntCounterVec::new(
                opts("tcptrace_connections_opened_total", "Connections opened: active (connect), passive (accepted) or unknown (first seen mid-life)."),
                &["direction"],
            ))?,
            closed: register(&r, IntCounterVec::new(
                opts("tcptrace_connections_closed_total", "Connections ended, by how they ended."),
                &["kind"],
            ))?,
            handshake_seconds: register(&r, HistogramVec::new(
                histogram("tcptrace_handshake_duration_seconds", "SYN_SENT or SYN_RECV to ESTABLISHED.", HANDSHAKE_BUCKETS),
                &["direction"],
            ))?,
            state_seconds: register(&r, HistogramVec::new(
                histogram("tcptrace_state_duration_seconds", "Time spent in a state, observed when the connection leaves it.", STATE_BUCKETS),
                &["state"],
            ))?,
            retransmitted_skbs: register(&r, IntCounterVec::new(
                opts("tcptrace_retransmitted_skbs_total", "Retransmissions, one per skb the kernel retransmitted (an skb holds one or more segments); outcome=failed: the retransmit did not go out (e.g. the original was still queued)."),
                &["kind", "outcome", "state"],
            ))?,
            resets: register(&r, IntCounterVec::new(
                opts("tcptrace_resets_total", "RST segments sent or received, by the socket's state (none: no socket matched)."),
                &["direction", "state"],
            ))?,
            connect_failures: register(&r, IntCounterVec::new(
                opts("tcptrace_connect_failures_total", "Connections that never completed their handshake, by why: refused (RST), syn_timeout (no answer through every SYN retry), unreachable (ICMP), reset (RST to an accepted connection in SYN_RECV), abandoned (closed while connecting)."),
                &["reason"],
            ))?,
            connection_seconds: register(&r, HistogramVec::new(
                histogram("tcptrace_connection_duration_seconds", "Life of a finished connection, from its open (connect or accept) to CLOSE; connections first seen mid-life, and those whose CLOSE was lost (vanished), are left out.", LIFE_BUCKETS),
                &["direction"],
            ))?,
            close_rtt_seconds: register(&r, HistogramVec::new(
                histogram("tcptrace_connection_rtt_seconds", "The kernel's smoothed RTT (srtt) of a connection as it closed; connections that never measured one are left out.", RTT_BUCKETS),
                &["direction"],
            ))?,
            bytes_sent: register(&r, IntCounterVec::new(
                opts("tcptrace_connection_sent_bytes_total", "Bytes finished connections sent that the peer acknowledged (tcp_sock.bytes_acked less the SYN and FIN it counts), counted at close."),
                &["direction"],
            ))?,
            bytes_received: register(&r, IntCounterVec::new(
                opts("tcptrace_connection_received_bytes_total", "Bytes finished connections received in order (tcp_sock.bytes_received less the peer's FIN), counted at close."),
                &["direction"],
            ))?,
            close_wait_stuck: register(&r, IntGauge::with_opts(opts(
                "tcptrace_close_wait_stuck",
                "Connections in CLOSE_WAIT longer than --close-wait-threshold: the peer closed and the application did not.",
            )))?,
            close_wait_oldest_age: register(&r, Gauge::with_opts(opts(
                "tcptrace_close_wait_oldest_age_seconds",
                "Age of the oldest stuck CLOSE_WAIT connection (a lower bound for ones found at start).",
            )))?,
            close_wait_unread_bytes: register(&r, IntGauge::with_opts(opts(
                "tcptrace_close_wait_unread_bytes",
                "Unread receive-queue bytes held by stuck CLOSE_WAIT connections.",
            )))?,
            close_wait_stuck_by_process: register(&r, IntGaugeVec::new(
                opts("tcptrace_close_wait_stuck_by_process", "Stuck CLOSE_WAIT connections by owning process and its container's short id (\"\" outside containers); the processes with the most, the rest and unknown owners under pid=\"other\"."),
                &["pid", "comm", "container"],
            ))?,
            time_wait: register(&r, IntGauge::with_opts(opts(
                "tcptrace_time_wait_sockets",
                "TIME_WAIT sockets in every network namespace, as sock_diag counted them at the last reconcile.",
            )))?,
            time_wait_by_netns: register(&r, IntGaugeVec::new(
                opts("tcptrace_time_wait_sockets_by_netns", "TIME_WAIT sockets in the network namespaces (inode numbers) with the most; the rest under netns=\"other\"."),
                &["netns"],
            ))?,
            time_wait_by_remote: register(&r, IntGaugeVec::new(
                opts("tcptrace_time_wait_sockets_by_remote", "TIME_WAIT sockets toward the (namespace, remote endpoint) pairs with the most; the rest under remote=\"other\"."),
                &["netns", "remote"],
            ))?,
            port_pressure: register(&r, GaugeVec::new(
                opts("tcptrace_ephemeral_port_pressure_ratio", "Share of the namespace's ephemeral port range in use (TIME_WAIT and live sockets) from one local address toward one remote endpoint, for the most used pairs."),
                &["netns", "local_address", "remote"],
            ))?,
            port_pressure_max: register(&r, Gauge::with_opts(opts(
                "tcptrace_ephemeral_port_pressure_max_ratio",
                "The highest ephemeral port pressure ratio of any (local address, remote endpoint) pair.",
            )))?,
            port_range_size: register(&r, IntGauge::with_opts(opts(
                "tcptrace_ephemeral_ports",
                "Ports in net.ipv4.ip_local_port_range of tcptrace's own network namespace.",
            )))?,
            listener_accept_queue: register(&r, IntGaugeVec::new(
                opts("tcptrace_listener_accept_queue", "Connections that finished their handshake and wait for accept() (ss -lnt's Recv-Q), per listening address: the --top-remotes fullest, the rest summed under listen=\"other\"; sockets sharing an address (SO_REUSEPORT) summed."),
                &["netns", "listen"],
            ))?,
            listener_accept_queue_limit: register(&r, IntGaugeVec::new(
                opts("tcptrace_listener_accept_queue_limit", "The accept queue's limit, the listen() backlog capped by net.core.somaxconn (ss -lnt's Send-Q), for the same series as tcptrace_listener_accept_queue."),
                &["netns", "listen"],
            ))?,
            listener_accept_queue_fill: register(&r, GaugeVec::new(
                opts("tcptrace_listener_accept_queue_fill_ratio", "Accept queue length / (limit + 1): at 1 the queue is full and the kernel drops new connection attempts (it queues one more than the backlog). The fullest socket of the address; for listen=\"other\", the fullest of the rest."),
                &["netns", "listen"],
            ))?,
            listener_syn_recv: register(&r, IntGaugeVec::new(
                opts("tcptrace_listener_syn_recv", "Half-open connections (request sockets in SYN_RECV: SYN-ACK sent, the client's ACK not yet in) toward a listening address."),
                &["netns", "listen"],
            ))?,
            listen_overflows: register(&r, IntCounterVec::new(
                opts("tcptrace_listen_overflows_total", "Connection attempts (SYNs, or handshakes' last ACKs) dropped because a listener's accept queue was full: the namespace's TcpExt ListenOverflows, counted from when tcptrace first read it. The first --top-remotes namespaces with a listener get their own series, the rest netns=\"other\"."),
                &["netns"],
            ))?,
            listen_drops: register(&r, IntCounterVec::new(
                opts("tcptrace_listen_drops_total", "Connection attempts a listener dropped for any reason, overflows included: the namespace's TcpExt ListenDrops (series as for tcptrace_listen_overflows_total)."),
                &["netns"],
            ))?,
            syncookies_sent: register(&r, IntCounterVec::new(
                opts("tcptrace_syncookies_sent_total", "SYN-ACKs sent with a SYN cookie because a listener's SYN queue was full: TcpExt SyncookiesSent."),
                &["netns"],
            ))?,
            syncookies_recv: register(&r, IntCounterVec::new(
                opts("tcptrace_syncookies_received_total", "ACKs that carried a valid SYN cookie: TcpExt SyncookiesRecv."),
                &["netns"],
            ))?,
            syncookies_failed: register(&r, IntCounterVec::new(
                opts("tcptrace_syncookies_failed_total", "ACKs whose SYN cookie did not check out: TcpExt SyncookiesFailed."),
                &["netns"],
            ))?,
            half_open_suspects: register(&r, IntGauge::with_opts(opts(
                "tcptrace_half_open_suspects",
                "Connections whose kernel has been retransmitting or probing without an answer from the peer for longer than --half-open-after, in every network namespace.",
            )))?,
            half_open_suspects_by_netns: register(&r, IntGaugeVec::new(
                opts("tcptrace_half_open_suspects_by_netns", "Half-open suspects in the network namespaces (inode numbers) with the most; the rest under netns=\"other\"."),
                &["netns"],
            ))?,
            half_open_oldest_unanswered: register(&r, Gauge::with_opts(opts(
                "tcptrace_half_open_oldest_unanswered_seconds",
                "How long the longest-waiting half-open suspect has gone without an answer (0 with none).",
            )))?,
            events: register(&r, IntCounterVec::new(
                opts("tcptrace_events_total", "Events received from the kernel, by kind."),
                &["kind"],
            ))?,
            reconcile_seconds: register(&r, Histogram::with_opts(histogram(
                "tcptrace_reconcile_duration_seconds",
                "Time to dump every TCP socket with sock_diag.",
                RECONCILE_BUCKETS,
            )))?,
            reconcile_failures: register(&r, IntCounter::with_opts(opts(
                "tcptrace_reconcile_failures_total",
                "sock_diag dumps that failed.",
            )))?,
            programs_attached: register(&r, IntGaugeVec::new(
                opts("tcptrace_programs_attached", "1 for each kernel program attached, 0 for one that could not be."),
                &["program"],
            ))?,
            build_info: register(&r, IntGaugeVec::new(
                opts("tcptrace_build_info", "Always 1; the labels say which tcptrace runs."),
                &["version"],
            ))?,
            http_connections: register(&r, IntGauge::with_opts(opts(
                "tcptrace_http_connections",
                "HTTP connections open to tcptrace's own server.",
            )))?,
            http_connections_limit: register(&r, IntGauge::with_opts(opts(
                "tcptrace_http_connections_limit",
                "The cap on open HTTP connections (--web.max-connections).",
            )))?,
            http_connections_cut: register(&r, IntCounterVec::new(
                opts("tcptrace_http_connections_cut_total", "HTTP connections the server closed before the client did: evicted (the longest idle, for a new connection at the cap), idle_timeout, header_timeout, response_deadline, tls_handshake_failed, plain_http_on_tls."),
                &["reason"],
            ))?,
            http_requests_refused: register(&r, IntCounterVec::new(
                opts("tcptrace_http_requests_refused_total", "HTTP requests refused before routing: unauthorized (401), rate_limited (429), body_too_large (413), auth_busy (503, password checks queued too long)."),
                &["reason"],
            ))?,
            registry: r,
        };
        for reason in HTTP_CUT_REASONS {
            m.http_connections_cut.with_label_values(&[reason]);
        }
        for reason in HTTP_REFUSED_REASONS {
            m.http_requests_refused.with_label_values(&[reason]);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        Ok(m)
    }

    /// Registers the numbers read where they live, at each scrape (see `scrape.rs`).
    pub fn read_at_scrape(&self, sources: Sources) -> Result<(), MetricsError> {
        self.registry
            .register(Box::new(ScrapeCollector::new(sources)))?;
        Ok(())
    }

    /// Every metric's current value, as a scrape reads them (the web view's health
    /// panel reads its numbers here, so that they are the ones Prometheus sees).
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|err| format!("# tcptrace: encoding metrics failed: {err}\n"))
    }
}
