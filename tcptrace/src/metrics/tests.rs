//! Metric values and label caps, from synthetic event streams and reports.

use std::{net::SocketAddr, sync::Arc};

use super::*;
use crate::{
    detect::{
        CloseWaitLeak, LeakOwner, LeakReport, OwnerSource, PortPressure, RemoteTimeWait,
        TimeWaitReport,
    },
    diag::cgroup::{Container, Runtime, Workload},
    event::EventKind,
    probe::KernelCounters,
    state::TcpState::*,
    testing::*,
    tracker::Tracker,
};

fn recorder() -> EventRecorder {
    EventRecorder::new(Arc::new(Metrics::new().unwrap()))
}

/// The value of the one sample of `name` with exactly these labels, from the text.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.parse().unwrap())
}

fn series(text: &str, name: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .count()
}

#[test]
fn a_client_and_server_lifecycle_counts_exactly() {
    let mut recorder = recorder();
    let mut tracker = Tracker::new(16, 16);
    let events = [
        client(1, 0, Close, SynSent),
        server(2, 1, Listen, SynRecv),
        client(1, 2, SynSent, Established),
        server(2, 3, SynRecv, Established),
        client(1, 10, Established, FinWait1),
        server(2, 11, Established, CloseWait),
        client(1, 12, FinWait1, FinWait2),
        server(2, 13, CloseWait, LastAck),
        client(1, 14, FinWait2, Close),
        server(2, 15, LastAck, Close),
        event(
            3,
            20,
            EventKind::SendReset { state: None },
            SERVER,
            CLIENT,
            0,
        ),
    ];
    for e in &events {
        let applied = tracker.apply(e);
        recorder.record(e, &applied);
        if applied.finished {
            recorder.record_finished(tracker.finished_by_id(applied.conn.unwrap()).unwrap());
        }
    }
    recorder.record_table(&tracker);
    // The kernel's, the reader's and the tracker's own counts, read at scrape.
    let kernel = std::sync::Mutex::new(KernelCounters {
        lost: 7,
        read_errors: 1,
        missed: 3,
    });
    let kernel = Arc::new(kernel);
    let read = Arc::clone(&kernel);
    let pipeline = Arc::new(crate::probe::PipelineStats::default());
    pipeline
        .decode_errors
        .store(2, std::sync::atomic::Ordering::Relaxed);
    recorder
        .metrics()
        .read_at_scrape(Sources {
            kernel: Box::new(move || Some(*read.lock().unwrap())),
            pipeline,
            tracker: tracker.shared_stats(),
            table_limit: 16,
        })
        .unwrap();
    let text = recorder.metrics().render();
    let t = |from, to| {
        sample(
            &text,
            "tcptrace_state_transitions_total",
            &format!("from=\"{from}\",to=\"{to}\""),
        )
    };
    assert_eq!(t("close", "syn_sent"), Some(1.0));
    assert_eq!(t("last_ack", "close"), Some(1.0));
    assert_eq!(series(&text, "tcptrace_state_transitions_total"), 10);
    let e = |kind: &str| sample(&text, "tcptrace_events_total", &format!("kind=\"{kind}\""));
    assert_eq!(e("state_change"), Some(10.0));
    assert_eq!(e("send_reset"), Some(1.0));
    let one = |name, labels| sample(&text, name, labels);
    assert_eq!(
        one("tcptrace_connections_opened_total", "direction=\"active\""),
        Some(1.0)
    );
    assert_eq!(
        one("tcptrace_connections_opened_total", "direction=\"passive\""),
        Some(1.0)
    );
    assert_eq!(
        one("tcptrace_connections_closed_total", "kind=\"active_close\""),
        Some(1.0)
    );
    assert_eq!(
        one(
            "tcptrace_connections_closed_total",
            "kind=\"passive_close\""
        ),
        Some(1.0)
    );
    assert_eq!(
        one(
            "tcptrace_handshake_duration_seconds_count",
            "direction=\"active\""
        ),
        Some(1.0)
    );
    assert_eq!(
        one(
            "tcptrace_handshake_duration_seconds_sum",
            "direction=\"active\""
        ),
        Some(0.002)
    );
    // The passive end's SYN_RECV began at 1 ms and ended at 3 ms.
    assert_eq!(
        one(
            "tcptrace_handshake_duration_seconds_sum",
            "direction=\"passive\""
        ),
        Some(0.002)
    );
    assert_eq!(
        one(
            "tcptrace_state_duration_seconds_count",
            "state=\"established\""
        ),
        Some(2.0)
    );
    assert_eq!(
        one("tcptrace_resets_total", "direction=\"sent\",state=\"none\""),
        Some(1.0)
    );
    assert_eq!(one("tcptrace_events_lost_total", ""), Some(7.0));
    assert_eq!(one("tcptrace_events_unreadable_total", ""), Some(1.0));
    assert_eq!(one("tcptrace_events_missed_total", ""), Some(3.0));
    assert_eq!(one("tcptrace_decode_errors_total", ""), Some(2.0));
    assert_eq!(one("tcptrace_tracked_connections", ""), Some(0.0));
    assert_eq!(
        one("tcptrace_connections", "state=\"established\""),
        Some(0.0)
    );
    assert_eq!(
        one(
            "tcptrace_build_info",
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "tcptrace_tracked_connections_limit", ""),
        Some(16.0)
    );
    // Each scrape reads the kernel's number as it is now: counted once, never copied.
    kernel.lock().unwrap().lost = 9;
    let rescraped = recorder.metrics().render();
    assert_eq!(
        sample(&rescraped, "tcptrace_events_lost_total", ""),
        Some(9.0)
    );
}

fn leak(id: u64, pid: u32) -> CloseWaitLeak {
    CloseWaitLeak {
        id,
        netns: 1,
        workload: (pid == 42).then(|| Workload {
            cgroup: "/docker/x".into(),
            container: Some(Container {
                id: "ab".repeat(32),
                runtime: Some(Runtime::Docker),
            }),
            pod_uid: None,
            qos: None,
        }),
        local: "127.0.0.1:80".parse().unwrap(),
        remote: "127.0.0.1:1".parse().unwrap(),
        since: String::new(),
        age_seconds: id as f64,
        age_is_lower_bound: false,
        unread_bytes: 1,
        eof_read: false,
        owner: Some(LeakOwner {
            pid,
            comm: format!("p{pid}"),
            cgroup: None,
            source: OwnerSource::Proc,
        }),
    }
}

fn remote(i: u32) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 443))
}

#[test]
fn endpoint_and_process_labels_stay_capped() {
    let mut recorder = recorder();
    let mut report = LeakReport::default();
    // 100 leaking processes: 20 series plus "other".
    report.close_wait.leaks = (0..100).map(|i| leak(i, 1000 + i as u32)).collect();
    report.close_wait.stuck = 100;
    // 10 shown remotes plus other, as the detector hands them over.
    report.time_wait.top_remotes = (0..10)
        .map(|i| RemoteTimeWait {
            netns: 1,
            remote: remote(i),
            sockets: 100 - u64::from(i),
        })
        .collect();
    report.time_wait.other = 5000;
    report.time_wait.total = 5955;
    report.time_wait.port_pressure = (0..10)
        .map(|i| PortPressure {
            netns: 1,
            local_address: "10.1.1.1".parse().unwrap(),
            remote: remote(i),
            time_wait: 10,
            live: 0,
            ratio: 0.25,
            flagged: false,
        })
        .collect();
    recorder.record_leaks(&report);
    let text = recorder.metrics().render();
    assert_eq!(
        series(&text, "tcptrace_close_wait_stuck_by_process"),
        MAX_LEAK_PROCESSES + 1
    );
    assert_eq!(
        sample(
            &text,
            "tcptrace_close_wait_stuck_by_process",
            "comm=\"other\",container=\"other\",pid=\"other\""
        ),
        Some(80.0)
    );
    assert_eq!(sample(&text, "tcptrace_close_wait_stuck", ""), Some(100.0));
    assert_eq!(series(&text, "tcptrace_time_wait_sockets_by_remote"), 11);
    assert_eq!(
        sample(
            &text,
            "tcptrace_time_wait_sockets_by_remote",
            "netns=\"other\",remote=\"other\""
        ),
        Some(5000.0)
    );
    assert_eq!(
        sample(
            &text,
            "tcptrace_time_wait_sockets_by_remote",
            "netns=\"1\",remote=\"10.0.0.0:443\""
        ),
        Some(100.0)
    );
    assert_eq!(series(&text, "tcptrace_ephemeral_port_pressure_ratio"), 10);

    // The next pass has different leakers and remotes: the old series go away.
    let next = LeakReport {
        close_wait: crate::detect::CloseWaitReport {
            leaks: vec![leak(1, 42)],
            stuck: 1,
            ..Default::default()
        },
        time_wait: TimeWaitReport {
            top_remotes: vec![RemoteTimeWait {
                netns: 1,
                remote: remote(500),
                sockets: 3,
            }],
            total: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    recorder.record_leaks(&next);
    let text = recorder.metrics().render();
    assert_eq!(series(&text, "tcptrace_close_wait_stuck_by_process"), 1);
    assert_eq!(
        sample(
            &text,
            "tcptrace_close_wait_stuck_by_process",
            "comm=\"p42\",container=\"abababababab\",pid=\"42\""
        ),
        Some(1.0)
    );
    assert_eq!(series(&text, "tcptrace_time_wait_sockets_by_remote"), 1);
    assert_eq!(series(&text, "tcptrace_ephemeral_port_pressure_ratio"), 0);
    assert_eq!(
        sample(&text, "tcptrace_ephemeral_port_pressure_max_ratio", ""),
        Some(0.0)
    );
}

#[test]
fn a_flood_of_remote_endpoints_keeps_the_series_at_the_cap() {
    use crate::{
        detect::{time_wait::MAX_TIME_WAIT_REMOTES, TimeWaitReport},
        diag::{netns::NamespaceDump, DiagSocket},
        state::TcpState,
    };
    const REMOTES: u32 = 100_000;
    let sockets: Vec<DiagSocket> = (0..REMOTES)
        .map(|i| DiagSocket {
            state: TcpState::TimeWait,
            local: "10.9.9.9:40000".parse().unwrap(),
            remote: SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 443)),
            inode: 0,
            uid: 0,
            recv_queue: 0,
            send_queue: 0,
            request: false,
            timewait: true,
            cgroup_id: None,
            cookie: 0,
            timer: None,
            tcp_info: None,
        })
        .collect();
    let dumps = [NamespaceDump {
        netns: 1,
        sockets,
        port_range: None,
        listen_counters: None,
    }];
    let report = LeakReport {
        time_wait: TimeWaitReport::new(&dumps, None, 10, 0.5),
        ..LeakReport::default()
    };
    assert_eq!(
        report.time_wait.other,
        u64::from(REMOTES) - 10,
        "beyond {MAX_TIME_WAIT_REMOTES} remotes counted in other while counting, the rest \
         beyond the top 10 after"
    );
    let mut recorder = recorder();
    recorder.record_leaks(&report);
    let text = recorder.metrics().render();
    assert_eq!(series(&text, "tcptrace_time_wait_sockets_by_remote"), 11);
    assert_eq!(series(&text, "tcptrace_ephemeral_port_pressure_ratio"), 10);
    assert_eq!(
        sample(
            &text,
            "tcptrace_time_wait_sockets_by_remote",
            "netns=\"other\",remote=\"other\""
        ),
        Some(f64::from(REMOTES - 10))
    );
    assert_eq!(
        sample(&text, "tcptrace_time_wait_sockets", ""),
        Some(f64::from(REMOTES))
    );
}

#[test]
fn what_finished_connections_carried_and_why_handshakes_failed_count_exactly() {
    use crate::event::SocketAtClose;
    let mut recorder = recorder();
    let mut tracker = Tracker::new(16, 16);
    let closing = |mut e: crate::event::TcpEvent, kernel: SocketAtClose| {
        e.close = Some(kernel);
        e
    };
    let events = [
        // A client that sent 1,000 bytes and received 300 in 14 ms, srtt 50 µs.
        client(1, 0, Close, SynSent),
        client(1, 2, SynSent, Established),
        client(1, 10, Established, FinWait1),
        client(1, 12, FinWait1, FinWait2),
        closing(
            client(1, 14, FinWait2, Close),
            SocketAtClose {
                bytes_acked: 1_002,
                bytes_received: 300,
                srtt_us: 50,
                ..SocketAtClose::default()
            },
        ),
        // A connect that ran out of SYN retries, and one refused.
        client(2, 20, Close, SynSent),
        closing(
            client(2, 3020, SynSent, Close),
            SocketAtClose {
                error: libc::ETIMEDOUT,
                unacked: 1,
                ..SocketAtClose::default()
            },
        ),
        client(3, 30, Close, SynSent),
        closing(
            client(3, 31, SynSent, Close),
            SocketAtClose {
                error: libc::ECONNREFUSED,
                unacked: 1,
                ..SocketAtClose::default()
            },
        ),
    ];
    for e in &events {
        let applied = tracker.apply(e);
        recorder.record(e, &applied);
        if applied.finished {
            recorder.record_finished(tracker.finished_by_id(applied.conn.unwrap()).unwrap());
        }
    }
    let text = recorder.metrics().render();
    let value = |name: &str, labels: &str| sample(&text, name, labels);
    assert_eq!(
        value(
            "tcptrace_connection_sent_bytes_total",
            "direction=\"active\""
        ),
        Some(1000.0)
    );
    assert_eq!(
        value(
            "tcptrace_connection_received_bytes_total",
            "direction=\"active\""
        ),
        Some(300.0)
    );
    // Three active connections ended: their lives are 14 ms, 3 s and 1 ms.
    assert_eq!(
        value(
            "tcptrace_connection_duration_seconds_count",
            "direction=\"active\""
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            "tcptrace_connection_duration_seconds_sum",
            "direction=\"active\""
        ),
        Some(0.014 + 3.0 + 0.001)
    );
    // Only the one that measured an RTT.
    assert_eq!(
        value(
            "tcptrace_connection_rtt_seconds_count",
            "direction=\"active\""
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            "tcptrace_connection_rtt_seconds_sum",
            "direction=\"active\""
        ),
        Some(0.00005)
    );
    for (reason, count) in [("syn_timeout", 1.0), ("refused", 1.0)] {
        assert_eq!(
            value(
                "tcptrace_connect_failures_total",
                &format!("reason=\"{reason}\"")
            ),
            Some(count),
            "{reason}"
        );
    }
    assert_eq!(series(&text, "tcptrace_connect_failures_total"), 2);
    for (kind, count) in [
        ("active_close", 1.0),
        ("syn_timeout", 1.0),
        ("refused", 1.0),
    ] {
        assert_eq!(
            value(
                "tcptrace_connections_closed_total",
                &format!("kind=\"{kind}\"")
            ),
            Some(count),
            "{kind}"
        );
    }
}

/// Three reconciles over four namespaces, with two series per kind (`--top-remotes 2`),
/// as the engine feeds them: every listener gauge and listen counter takes its exact
/// value, the rest goes to `other`, and a namespace that goes away frees its series.
#[test]
fn listener_health_metrics_take_exact_values_within_the_cap() {
    use crate::{
        detect::listeners::{self, find_listeners, ListenCounterHistory, SynackCounts},
        diag::{netns::NamespaceDump, netstat::ListenCounters},
    };

    fn counters(overflows: u64, drops: u64) -> Option<ListenCounters> {
        Some(ListenCounters {
            listen_overflows: overflows,
            listen_drops: drops,
            syncookies_sent: overflows / 2,
            ..ListenCounters::default()
        })
    }
    let (a, b, c, d) = (NETNS, NETNS + 1, NETNS + 2, NETNS + 3);
    let dumps = |with_b: bool, counts: [(u64, u64); 4]| {
        let mut dumps = vec![
            namespace_dump(
                a,
                vec![
                    diag_listener("127.0.0.1:80", 1, 5, 4),
                    diag_listener("0.0.0.0:22", 2, 0, 128),
                    diag_request("127.0.0.1:80", "127.0.0.1:50000"),
                    diag_request("127.0.0.1:80", "127.0.0.1:50001"),
                ],
                counters(counts[0].0, counts[0].1),
            ),
            namespace_dump(
                b,
                vec![diag_listener("10.0.0.1:8080", 3, 1, 9)],
                counters(counts[1].0, counts[1].1),
            ),
            // No listener: its drops are someone else's business, in `other`.
            namespace_dump(c, vec![], counters(counts[2].0, counts[2].1)),
            namespace_dump(
                d,
                vec![diag_listener("[::]:443", 4, 0, 4)],
                counters(counts[3].0, counts[3].1),
            ),
        ];
        if !with_b {
            dumps.remove(1);
        }
        dumps
    };
    let mut recorder = recorder().with_top_namespaces(2);
    let mut history = ListenCounterHistory::default();
    let mut pass = |recorder: &mut EventRecorder, dumps: &[NamespaceDump]| {
        let levels = find_listeners(dumps, &SynackCounts::default());
        let (namespaces, gone) = history.update(dumps, &[]);
        recorder.record_listen_counters(&namespaces, &gone);
        recorder.record_listeners(&listeners::series(&levels, 2));
        recorder.metrics().render()
    };
    let counter =
        |text: &str, name: &str, netns: &str| sample(text, name, &format!("netns=\"{netns}\""));
    let gauge = |text: &str, name: &str, netns: &str, listen: &str| {
        sample(
            text,
            name,
            &format!("listen=\"{listen}\",netns=\"{netns}\""),
        )
    };

    // The first pass is every namespace's baseline: the series exist, at 0.
    let text = pass(
        &mut recorder,
        &dumps(true, [(100, 120), (0, 0), (7, 7), (3, 3)]),
    );
    for netns in [a.to_string(), b.to_string(), "other".into()] {
        assert_eq!(
            counter(&text, "tcptrace_listen_overflows_total", &netns),
            Some(0.0)
        );
        assert_eq!(
            counter(&text, "tcptrace_listen_drops_total", &netns),
            Some(0.0)
        );
    }
    assert_eq!(series(&text, "tcptrace_listen_overflows_total"), 3);
    let (a_, b_) = (a.to_string(), b.to_string());
    assert_eq!(
        gauge(&text, "tcptrace_listener_accept_queue", &a_, "127.0.0.1:80"),
        Some(5.0)
    );
    assert_eq!(
        gauge(
            &text,
            "tcptrace_listener_accept_queue_limit",
            &a_,
            "127.0.0.1:80"
        ),
        Some(4.0)
    );
    assert_eq!(
        gauge(
            &text,
            "tcptrace_listener_accept_queue_fill_ratio",
            &a_,
            "127.0.0.1:80"
        ),
        Some(1.0)
    );
    assert_eq!(
        gauge(&text, "tcptrace_listener_syn_recv", &a_, "127.0.0.1:80"),
        Some(2.0)
    );
    assert_eq!(
        gauge(
            &text,
            "tcptrace_listener_accept_queue_fill_ratio",
            &b_,
            "10.0.0.1:8080"
        ),
        Some(0.1)
    );
    // 0.0.0.0:22 and [::]:443 summed.
    assert_eq!(
        gauge(&text, "tcptrace_listener_accept_queue", "other", "other"),
        Some(0.0)
    );
    assert_eq!(
        gauge(
            &text,
            "tcptrace_listener_accept_queue_limit",
            "other",
            "other"
        ),
        Some(132.0)
    );
    assert_eq!(
        gauge(
            &text,
            "tcptrace_listener_accept_queue_fill_ratio",
            "other",
            "other"
        ),
        Some(0.0)
    );
    for name in [
        "tcptrace_listener_accept_queue",
        "tcptrace_listener_accept_queue_limit",
        "tcptrace_listener_accept_queue_fill_ratio",
        "tcptrace_listener_syn_recv",
    ] {
        assert_eq!(series(&text, name), 3, "{name}");
    }

    // The second pass adds what each counter gained; c and d (no place left) in other.
    let text = pass(
        &mut recorder,
        &dumps(true, [(115, 136), (2, 2), (9, 9), (4, 5)]),
    );
    assert_eq!(
        counter(&text, "tcptrace_listen_overflows_total", &a_),
        Some(15.0)
    );
    assert_eq!(
        counter(&text, "tcptrace_listen_drops_total", &a_),
        Some(16.0)
    );
    assert_eq!(
        counter(&text, "tcptrace_syncookies_sent_total", &a_),
        Some(7.0)
    );
    assert_eq!(
        counter(&text, "tcptrace_listen_overflows_total", &b_),
        Some(2.0)
    );
    assert_eq!(
        counter(&text, "tcptrace_listen_overflows_total", "other"),
        Some(3.0)
    );
    assert_eq!(
        counter(&text, "tcptrace_listen_drops_total", "other"),
        Some(4.0)
    );
    // c: 9/2 - 7/2, d: 4/2 - 3/2.
    assert_eq!(
        counter(&text, "tcptrace_syncookies_sent_total", "other"),
        Some(2.0)
    );

    // b is missed once (nothing moves), then again: gone. Its series and place go, and
    // d takes the place.
    pass(
        &mut recorder,
        &dumps(false, [(115, 136), (0, 0), (9, 9), (4, 5)]),
    );
    let text = pass(
        &mut recorder,
        &dumps(false, [(120, 141), (0, 0), (9, 9), (10, 11)]),
    );
    let d_ = d.to_string();
    assert_eq!(
        counter(&text, "tcptrace_listen_overflows_total", &a_),
        Some(20.0)
    );
    assert_eq!(
        counter(&text, "tcptrace_listen_drops_total", &a_),
        Some(21.0)
    );
    assert_eq!(counter(&text, "tcptrace_listen_overflows_total", &b_), None);
    assert_eq!(
        counter(&text, "tcptrace_listen_overflows_total", &d_),
        Some(6.0)
    );
    assert_eq!(
        counter(&text, "tcptrace_listen_drops_total", &d_),
        Some(6.0)
    );
    assert_eq!(
        counter(&text, "tcptrace_listen_overflows_total", "other"),
        Some(3.0)
    );
    for name in [
        "tcptrace_listen_overflows_total",
        "tcptrace_listen_drops_total",
        "tcptrace_syncookies_sent_total",
        "tcptrace_syncookies_received_total",
        "tcptrace_syncookies_failed_total",
    ] {
        assert_eq!(series(&text, name), 3, "{name}");
    }
    // b's listener left the gauges; 0.0.0.0:22 moved up (ties go by namespace, address).
    assert_eq!(
        gauge(
            &text,
            "tcptrace_listener_accept_queue",
            &b_,
            "10.0.0.1:8080"
        ),
        None
    );
    assert_eq!(
        gauge(
            &text,
            "tcptrace_listener_accept_queue_limit",
            &a_,
            "0.0.0.0:22"
        ),
        Some(128.0)
    );
    assert_eq!(
        gauge(
            &text,
            "tcptrace_listener_accept_queue_limit",
            "other",
            "other"
        ),
        Some(4.0)
    );
    assert_eq!(series(&text, "tcptrace_listener_accept_queue"), 3);
}

#[test]
fn half_open_suspects_count_exactly_per_namespace_with_a_cap() {
    use crate::{
        clock::WallClock,
        detect::{HalfOpenDetector, HalfOpenReport},
        diag::{
            netns::NamespaceDump,
            owners::OwnerCache,
            tcp_info::{ArmedTimer, TcpInfo, TimerKind},
            DiagSocket,
        },
    };
    const SECOND: u64 = 1_000_000_000;
    // A socket after n timeouts of a 200 ms RTO (now 200 ms · 2^n), the next due now:
    // proven waiting 200 ms · (2^(n+1) - 1), its peer silent for 10 minutes.
    let rtx = |port: u16, retransmits: u8| DiagSocket {
        state: Established,
        local: SocketAddr::from(([10, 1, 1, 1], port)),
        remote: "10.1.1.2:5432".parse().unwrap(),
        inode: u32::from(port),
        uid: 0,
        recv_queue: 0,
        send_queue: 0,
        request: false,
        timewait: false,
        cgroup_id: None,
        cookie: u64::from(port),
        timer: Some(ArmedTimer {
            kind: TimerKind::Retransmit,
            expires_ms: 0,
        }),
        tcp_info: Some(TcpInfo {
            retransmits,
            backoff: retransmits,
            rto_us: 200_000 << retransmits,
            unacked: 1,
            last_ack_recv_ms: 600_000,
            total_retrans: u32::from(retransmits),
            ..TcpInfo::default()
        }),
    };
    // Namespace 3 has three suspects, 1 has two and an idle socket, 2 has one and one
    // that is not yet (one timeout: 0.6 s proven).
    let mut idle = rtx(1, 0);
    idle.timer = None;
    let dump = |netns, sockets: Vec<DiagSocket>| NamespaceDump {
        netns,
        sockets,
        port_range: None,
        listen_counters: None,
    };
    let dumps = [
        dump(1, vec![rtx(40001, 4), rtx(40002, 5), idle]),
        dump(2, vec![rtx(40001, 6), rtx(40003, 1)]),
        dump(3, vec![rtx(40001, 4), rtx(40002, 4), rtx(40003, 4)]),
    ];
    let mut detector = HalfOpenDetector::default();
    let suspects = detector.pass(std::iter::empty(), &dumps, 1000 * SECOND, 2 * SECOND);
    let report = LeakReport {
        half_open: HalfOpenReport::new(
            &suspects,
            &OwnerCache::default(),
            &mut |_| None,
            2.0,
            WallClock::new(),
        ),
        ..LeakReport::default()
    };
    // Two namespaces get their own series (--top-remotes 2), the third is "other".
    let mut recorder = recorder().with_top_namespaces(2);
    recorder.record_leaks(&report);
    let text = recorder.metrics().render();
    assert_eq!(sample(&text, "tcptrace_half_open_suspects", ""), Some(6.0));
    let by_netns = |netns: &str| {
        sample(
            &text,
            "tcptrace_half_open_suspects_by_netns",
            &format!("netns=\"{netns}\""),
        )
    };
    assert_eq!(by_netns("3"), Some(3.0));
    assert_eq!(by_netns("1"), Some(2.0));
    assert_eq!(by_netns("other"), Some(1.0));
    assert_eq!(series(&text, "tcptrace_half_open_suspects_by_netns"), 3);
    // 6 timeouts: 200 ms · 127.
    assert_eq!(
        sample(&text, "tcptrace_half_open_oldest_unanswered_seconds", ""),
        Some(25.4)
    );

    // The peers answered: every series goes to 0 or away.
    recorder.record_leaks(&LeakReport::default());
    let text = recorder.metrics().render();
    assert_eq!(sample(&text, "tcptrace_half_open_suspects", ""), Some(0.0));
    assert_eq!(series(&text, "tcptrace_half_open_suspects_by_netns"), 0);
    assert_eq!(
        sample(&text, "tcptrace_half_open_oldest_unanswered_seconds", ""),
        Some(0.0)
    );
}
