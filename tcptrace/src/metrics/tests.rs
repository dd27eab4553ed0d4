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
    recorder.record_table(
        &tracker,
        KernelCounters {
            lost: 7,
            read_errors: 1,
        },
        2,
    );
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
    // Catching up twice to the same total adds nothing.
    recorder.record_table(
        &tracker,
        KernelCounters {
            lost: 7,
            read_errors: 1,
        },
        2,
    );
    assert_eq!(
        sample(
            &recorder.metrics().render(),
            "tcptrace_events_lost_total",
            ""
        ),
        Some(7.0)
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
