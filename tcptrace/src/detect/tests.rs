//! The detectors on synthetic tables and dumps.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    time::Duration,
};

use super::{close_wait::*, time_wait::*, *};
use crate::{
    diag::{netns::NamespaceDump, owners::ProcessOwner, DiagSocket},
    event::Comm,
    state::TcpState::{self, *},
    testing::NETNS,
    tracker::{Connection, Owner},
};

const SECOND: u64 = 1_000_000_000;

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

fn conn(id: u64, local: &str, remote: &str, steps: &[(TcpState, u64)]) -> Connection {
    crate::testing::connection_through(id, (local, remote), steps, SECOND)
}

fn socket(state: TcpState, local: &str, remote: &str, inode: u32, recv_queue: u32) -> DiagSocket {
    DiagSocket {
        state,
        local: addr(local),
        remote: addr(remote),
        inode,
        uid: 0,
        recv_queue,
        send_queue: 0,
        request: false,
        timewait: state == TimeWait,
        cgroup_id: None,
        cookie: 0,
        timer: None,
        tcp_info: None,
    }
}

/// One dump of namespace [`NETNS`] holding `sockets`.
fn in_netns(sockets: &[DiagSocket]) -> Vec<NamespaceDump> {
    vec![NamespaceDump {
        netns: NETNS,
        sockets: sockets.to_vec(),
        port_range: None,
        listen_counters: None,
    }]
}

fn owner(pid: u32, comm: &str) -> Owner {
    let mut bytes = [0; 16];
    bytes[..comm.len()].copy_from_slice(comm.as_bytes());
    Owner {
        pid,
        comm: Comm(bytes),
        cgroup_id: 1,
    }
}

#[test]
fn close_wait_is_stuck_from_the_threshold_on() {
    let c = conn(
        1,
        "127.0.0.1:80",
        "127.0.0.1:50000",
        &[(SynRecv, 1), (Established, 2), (CloseWait, 10)],
    );
    let dump = [socket(CloseWait, "127.0.0.1:80", "127.0.0.1:50000", 77, 5)];
    let threshold = 30 * SECOND;
    let at = |now| find_stuck([&c].into_iter(), &in_netns(&dump), now, threshold);
    assert!(
        at(40 * SECOND - 1).is_empty(),
        "one ns short of the threshold"
    );
    let stuck = at(40 * SECOND);
    assert_eq!(
        stuck,
        [StuckCloseWait {
            id: 1,
            netns: NETNS,
            cgroup_id: 0,
            local: c.local(),
            remote: c.remote(),
            since_ns: 10 * SECOND,
            age_ns: 30 * SECOND,
            age_is_lower_bound: false,
            unread_bytes: 4,
            eof_read: false,
            inode: 77,
            event_owner: None,
        }]
    );
}

#[test]
fn only_sockets_the_kernel_still_has_in_close_wait_are_stuck() {
    let a = conn(1, "127.0.0.1:80", "127.0.0.1:50000", &[(CloseWait, 0)]);
    let b = conn(2, "127.0.0.1:80", "127.0.0.1:50001", &[(CloseWait, 0)]);
    let c = conn(3, "127.0.0.1:80", "127.0.0.1:50002", &[(LastAck, 0)]);
    let dump = [
        socket(CloseWait, "127.0.0.1:80", "127.0.0.1:50000", 1, 0),
        // b is gone from the kernel (its events are late), c is not in CLOSE_WAIT.
        socket(LastAck, "127.0.0.1:80", "127.0.0.1:50002", 3, 0),
    ];
    let stuck = find_stuck(
        [&a, &b, &c].into_iter(),
        &in_netns(&dump),
        100 * SECOND,
        SECOND,
    );
    assert_eq!(stuck.iter().map(|s| s.id).collect::<Vec<_>>(), [1]);
}

#[test]
fn seeded_leaks_are_flagged_with_a_lower_bound_age_oldest_first() {
    let mut seeded = conn(1, "127.0.0.1:80", "127.0.0.1:50000", &[(CloseWait, 5)]);
    seeded.seen_since_start = true;
    // Seen mid-life in ESTABLISHED, then the FIN arrived: the age is exact.
    let mut watched = conn(
        2,
        "127.0.0.1:80",
        "127.0.0.1:50001",
        &[(Established, 5), (CloseWait, 1)],
    );
    watched.seen_since_start = true;
    let dump = [
        socket(CloseWait, "127.0.0.1:80", "127.0.0.1:50000", 10, 0),
        socket(CloseWait, "127.0.0.1:80", "127.0.0.1:50001", 11, 0),
    ];
    let stuck = find_stuck(
        [&seeded, &watched].into_iter(),
        &in_netns(&dump),
        65 * SECOND,
        60 * SECOND,
    );
    assert_eq!(
        stuck
            .iter()
            .map(|s| (s.id, s.age_ns / SECOND, s.age_is_lower_bound))
            .collect::<Vec<_>>(),
        [(2, 64, false), (1, 60, true)]
    );
    assert_eq!(inodes(&stuck), HashSet::from([10, 11]));
}

#[test]
fn owners_come_from_proc_first_then_from_the_events() {
    let mut c = conn(1, "127.0.0.1:80", "127.0.0.1:50000", &[(CloseWait, 0)]);
    c.set_owner(Some(owner(10, "listener")));
    let dump = [socket(CloseWait, "127.0.0.1:80", "127.0.0.1:50000", 99, 0)];
    let stuck = find_stuck([&c].into_iter(), &in_netns(&dump), SECOND, 1);
    let mut cache = OwnerCache::default();
    let events_owner = with_owner(&stuck[0], &cache).unwrap();
    assert_eq!(
        (
            events_owner.pid,
            events_owner.comm.as_str(),
            events_owner.source
        ),
        (10, "listener", OwnerSource::Events)
    );
    let proc = ProcessOwner {
        pid: 11,
        comm: "worker".into(),
        cgroup: Some("/app.slice".into()),
    };
    cache.insert(&HashSet::from([99]), HashMap::from([(99, proc)]));
    assert_eq!(
        with_owner(&stuck[0], &cache),
        Some(LeakOwner {
            pid: 11,
            comm: "worker".into(),
            cgroup: Some("/app.slice".into()),
            source: OwnerSource::Proc,
        })
    );
}

fn leak(id: u64, owner: Option<(u32, &str)>) -> CloseWaitLeak {
    CloseWaitLeak {
        id,
        netns: NETNS,
        workload: None,
        local: addr("127.0.0.1:80"),
        remote: addr("127.0.0.1:1"),
        since: String::new(),
        age_seconds: 0.0,
        age_is_lower_bound: false,
        unread_bytes: 0,
        eof_read: false,
        owner: owner.map(|(pid, comm)| LeakOwner {
            pid,
            comm: comm.into(),
            cgroup: None,
            source: OwnerSource::Proc,
        }),
    }
}

#[test]
fn leaks_per_process_are_capped_with_an_other_bucket() {
    let leaks = [
        leak(1, Some((5, "b"))),
        leak(2, Some((5, "b"))),
        leak(3, Some((5, "b"))),
        leak(4, Some((3, "a"))),
        leak(5, Some((3, "a"))),
        leak(6, Some((7, "c"))),
        leak(7, Some((8, "d"))),
        leak(8, None),
    ];
    assert_eq!(
        by_process(&leaks, 2),
        [
            (Some((5, "b".to_owned(), String::new())), 3),
            (Some((3, "a".to_owned(), String::new())), 2),
            (None, 3),
        ]
    );
    let all = by_process(&leaks[..7], 10);
    assert_eq!(
        all.len(),
        4,
        "no other bucket when everything fits: {all:?}"
    );
    assert!(by_process(&[], 2).is_empty());
}

#[test]
fn the_leak_report_sums_what_an_operator_needs() {
    let config = DetectConfig {
        close_wait_threshold: Duration::from_secs(30),
        port_pressure_threshold: 0.5,
        top_remotes: 10,
        half_open_after: Duration::from_secs(30),
    };
    let a = conn(1, "127.0.0.1:80", "127.0.0.1:50000", &[(CloseWait, 0)]);
    let b = conn(2, "127.0.0.1:80", "127.0.0.1:50001", &[(CloseWait, 20)]);
    let dump = [
        // 99 bytes and the FIN unread; the second read everything, the end of stream too.
        socket(CloseWait, "127.0.0.1:80", "127.0.0.1:50000", 1, 100),
        socket(CloseWait, "127.0.0.1:80", "127.0.0.1:50001", 2, 0),
    ];
    let stuck = find_stuck(
        [&a, &b].into_iter(),
        &in_netns(&dump),
        60 * SECOND,
        30 * SECOND,
    );
    let report = LeakReport::new(
        &stuck,
        &OwnerCache::default(),
        &mut |_| None,
        TimeWaitReport::default(),
        &config,
        crate::clock::WallClock::new(),
        60 * SECOND,
    );
    let cw = &report.close_wait;
    assert_eq!((cw.stuck, cw.unread_bytes), (2, 99));
    assert_eq!(
        cw.leaks.iter().map(|l| l.eof_read).collect::<Vec<_>>(),
        [false, true]
    );
    assert_eq!((cw.threshold_seconds, cw.oldest_age_seconds), (30.0, 60.0));
    assert_eq!(cw.leaks[1].age_seconds, 40.0);
    assert!(report.checked_at.is_some());
    // /api/leaks?limit=1: one listed, the sums still over all.
    let one = report.limited(1);
    assert_eq!(one.close_wait.leaks, report.close_wait.leaks[..1]);
    assert_eq!((one.close_wait.stuck, one.close_wait.unread_bytes), (2, 99));
    assert_eq!(report.limited(10), report);
}

#[test]
fn port_ranges_parse_like_the_sysctl_prints_them() {
    assert_eq!(
        PortRange::parse("32768\t60999\n"),
        Some(PortRange {
            low: 32768,
            high: 60999
        })
    );
    assert_eq!(DEFAULT_PORT_RANGE.size(), 28232);
    assert_eq!(PortRange::parse("1024 1024").unwrap().size(), 1);
    for bad in ["", "1024", "60999 32768", "a b", "1 2 3", "1 70000"] {
        assert_eq!(PortRange::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn time_wait_report_keeps_the_top_remotes_and_sums_the_rest() {
    let range = PortRange {
        low: 40000,
        high: 40009,
    };
    let mut dump = Vec::new();
    // 6 toward :80 (5 TIME_WAIT + 1 live), 3 toward :81, 1 toward :82, in the range.
    for (port, remote, state) in [
        (40000, "10.0.0.1:80", TimeWait),
        (40001, "10.0.0.1:80", TimeWait),
        (40002, "10.0.0.1:80", TimeWait),
        (40003, "10.0.0.1:80", TimeWait),
        (40004, "10.0.0.1:80", TimeWait),
        (40005, "10.0.0.1:80", Established),
        (40000, "10.0.0.1:81", TimeWait),
        (40001, "10.0.0.1:81", TimeWait),
        (40002, "10.0.0.1:81", TimeWait),
        (40000, "10.0.0.1:82", TimeWait),
    ] {
        dump.push(socket(state, &format!("10.0.0.2:{port}"), remote, 0, 0));
    }
    // Outside the range (a server's accepted socket) and a listener: no pressure.
    dump.push(socket(TimeWait, "10.0.0.2:443", "10.0.0.9:5000", 0, 0));
    dump.push(socket(Listen, "0.0.0.0:40009", "0.0.0.0:0", 0, 0));
    let mut dumps = in_netns(&dump);
    dumps[0].port_range = Some(range);
    let report = TimeWaitReport::new(&dumps, Some(NETNS), 2, 0.6);
    assert_eq!(report.total, 10);
    let remotes: Vec<_> = report
        .top_remotes
        .iter()
        .map(|r| (r.remote, r.sockets))
        .collect();
    assert_eq!(
        remotes,
        [(addr("10.0.0.1:80"), 5), (addr("10.0.0.1:81"), 3)]
    );
    assert_eq!(report.other, 2, "10.0.0.1:82 and 10.0.0.9:5000");
    let pressure: Vec<_> = report
        .port_pressure
        .iter()
        .map(|p| (p.remote.port(), p.time_wait, p.live, p.ratio, p.flagged))
        .collect();
    assert_eq!(pressure, [(80, 5, 1, 0.6, true), (81, 3, 0, 0.3, false)]);
    assert_eq!(report.max_ratio(), 0.6);
    assert_eq!(report.port_range, Some(range), "the own namespace's");
    assert_eq!(TimeWaitReport::default().max_ratio(), 0.0);
}

#[test]
fn time_wait_is_counted_per_namespace_with_each_namespaces_own_port_range() {
    // The same tuples in two namespaces; the second has a range of 10 ports.
    let tw = |port: u16| socket(TimeWait, &format!("127.0.0.1:{port}"), "127.0.0.1:80", 0, 0);
    let host: Vec<DiagSocket> = (40000..40003).map(tw).collect();
    let pod: Vec<DiagSocket> = (40000..40005).map(tw).collect();
    let pod_range = PortRange {
        low: 40000,
        high: 40009,
    };
    let dumps = vec![
        NamespaceDump {
            netns: NETNS,
            sockets: host,
            port_range: None,
            listen_counters: None,
        },
        NamespaceDump {
            netns: NETNS + 1,
            sockets: pod,
            port_range: Some(pod_range),
            listen_counters: None,
        },
    ];
    let report = TimeWaitReport::new(&dumps, Some(NETNS + 1), 10, 0.5);
    assert_eq!(report.total, 8);
    assert_eq!(report.in_namespace(NETNS), Some(3));
    assert_eq!(report.in_namespace(NETNS + 1), Some(5));
    assert_eq!(report.in_namespace(7), None);
    assert_eq!(report.port_range, Some(pod_range));
    assert_eq!(
        report
            .namespaces
            .iter()
            .map(|n| (n.netns, n.time_wait, n.port_range))
            .collect::<Vec<_>>(),
        [(NETNS + 1, 5, pod_range), (NETNS, 3, DEFAULT_PORT_RANGE)]
    );
    let remotes: Vec<_> = report
        .top_remotes
        .iter()
        .map(|r| (r.netns, r.sockets))
        .collect();
    assert_eq!(remotes, [(NETNS + 1, 5), (NETNS, 3)], "never merged");
    let pressure: Vec<_> = report
        .port_pressure
        .iter()
        .map(|p| (p.netns, p.time_wait, p.ratio, p.flagged))
        .collect();
    assert_eq!(
        pressure,
        [
            (NETNS + 1, 5, 0.5, true),
            (NETNS, 3, 3.0 / f64::from(DEFAULT_PORT_RANGE.size()), false)
        ]
    );
}

#[test]
fn a_leak_is_joined_with_its_own_namespaces_dump_only() {
    // The same tuple in CLOSE_WAIT in two namespaces; only one is tracked as such.
    let mut tracked = conn(1, "127.0.0.1:80", "127.0.0.1:50000", &[(CloseWait, 0)]);
    tracked.netns = NETNS + 1;
    let dump = [socket(CloseWait, "127.0.0.1:80", "127.0.0.1:50000", 5, 0)];
    // Only the host's dump lists it: the pod's connection is not stuck by it.
    let stuck = find_stuck(
        [&tracked].into_iter(),
        &in_netns(&dump),
        100 * SECOND,
        SECOND,
    );
    assert!(stuck.is_empty());
    let mut both = in_netns(&dump);
    both.push(NamespaceDump {
        netns: NETNS + 1,
        sockets: vec![socket(CloseWait, "127.0.0.1:80", "127.0.0.1:50000", 6, 0)],
        port_range: None,
        listen_counters: None,
    });
    let stuck = find_stuck([&tracked].into_iter(), &both, 100 * SECOND, SECOND);
    assert_eq!(
        stuck.iter().map(|s| (s.netns, s.inode)).collect::<Vec<_>>(),
        [(NETNS + 1, 6)]
    );
}

mod listener_health {
    use std::collections::HashMap;

    use super::{addr, owner, SECOND};
    use crate::{
        detect::{listeners::*, LeakOwner, OwnerSource},
        diag::{
            netstat::ListenCounters,
            owners::{OwnerCache, ProcessOwner},
        },
        state::TcpState::*,
        testing::*,
    };

    /// Namespace NETNS: a full loopback listener, a wildcard one on the same port, a
    /// dual-stack one; namespace NETNS + 1: two SO_REUSEPORT sockets on one address.
    fn dumps() -> Vec<crate::diag::netns::NamespaceDump> {
        vec![
            namespace_dump(
                NETNS,
                vec![
                    diag_listener("0.0.0.0:80", 10, 3, 128),
                    diag_listener("127.0.0.1:80", 11, 2, 1),
                    diag_listener("[::]:443", 12, 0, 4),
                    // Toward 127.0.0.1:80: its own listener, not the wildcard one.
                    diag_request("127.0.0.1:80", "127.0.0.1:50000"),
                    diag_request("127.0.0.1:80", "127.0.0.1:50001"),
                    diag_request("10.0.0.1:80", "10.0.0.9:50000"),
                    // IPv4 to a dual-stack listener, and IPv6.
                    diag_request("10.0.0.1:443", "10.0.0.9:50001"),
                    diag_request("[::1]:443", "[::1]:50002"),
                    // No listener on the port.
                    diag_request("10.0.0.1:8080", "10.0.0.9:50003"),
                    // Neither listeners nor requests.
                    diag_socket(Established, "127.0.0.1:80", "127.0.0.1:50009"),
                    diag_socket(TimeWait, "127.0.0.1:80", "127.0.0.1:50008"),
                ],
                None,
            ),
            namespace_dump(
                NETNS + 1,
                vec![
                    diag_listener("127.0.0.1:9000", 20, 1, 9),
                    diag_listener("127.0.0.1:9000", 21, 9, 9),
                    diag_request("127.0.0.1:9000", "127.0.0.1:40000"),
                ],
                None,
            ),
        ]
    }

    fn synacks() -> SynackCounts {
        let mut counts = SynackCounts::default();
        for e in [
            synack(NETNS, 1, "10.0.0.1:80"),
            synack(NETNS, 2, "10.0.0.1:80"),
            synack(NETNS, 3, "127.0.0.1:80"),
            synack(NETNS, 4, "[::ffff:10.0.0.1]:443"),
            synack(NETNS + 1, 5, "127.0.0.1:9000"),
            // Not a SYN-ACK retransmit.
            client(1, 6, Close, SynSent),
        ] {
            counts.record(&e);
        }
        counts
    }

    fn summary(levels: &[ListenerLevel]) -> Vec<(u32, String, u32, u32, u32, u64, u64)> {
        levels
            .iter()
            .map(|l| {
                (
                    l.netns - NETNS,
                    l.local.to_string(),
                    l.inode,
                    l.accept_queue,
                    l.accept_queue_limit,
                    l.syn_recv,
                    l.synack_retransmits,
                )
            })
            .collect()
    }

    #[test]
    fn each_listener_gets_its_queue_and_the_handshakes_toward_its_address() {
        let levels = find_listeners(&dumps(), &synacks());
        // Fullest first: 2/(1+1), then 9/(9+1), 3/129, 1/10, 0/5.
        assert_eq!(
            summary(&levels),
            [
                (0, "127.0.0.1:80".into(), 11, 2, 1, 2, 1),
                (1, "127.0.0.1:9000".into(), 21, 9, 9, 1, 1),
                (1, "127.0.0.1:9000".into(), 20, 1, 9, 1, 1),
                (0, "0.0.0.0:80".into(), 10, 3, 128, 1, 2),
                (0, "[::]:443".into(), 12, 0, 4, 2, 1),
            ]
        );
        assert_eq!(levels[0].fill_ratio(), 1.0);
        assert_eq!(levels[1].fill_ratio(), 0.9);
        assert_eq!(fill_ratio(0, 0), 0.0);
        assert_eq!(fill_ratio(1, 0), 1.0, "listen(fd, 0) holds one");
    }

    #[test]
    fn metric_series_keep_the_fullest_addresses_and_sum_the_rest() {
        let levels = find_listeners(&dumps(), &synacks());
        let series = series(&levels, 2);
        assert_eq!(series.len(), 3);
        assert_eq!(series[0].listen, Some((NETNS, addr("127.0.0.1:80"))));
        // The two SO_REUSEPORT sockets: queues summed, the fullest's fill, the
        // address's handshakes once.
        assert_eq!(
            series[1],
            ListenerSeries {
                listen: Some((NETNS + 1, addr("127.0.0.1:9000"))),
                accept_queue: 10,
                accept_queue_limit: 18,
                fill_ratio: 0.9,
                syn_recv: 1,
            }
        );
        assert_eq!(
            series[2],
            ListenerSeries {
                listen: None,
                accept_queue: 3,
                accept_queue_limit: 132,
                fill_ratio: 3.0 / 129.0,
                syn_recv: 3,
            }
        );
        assert_eq!(
            super::super::listeners::series(&levels, 10).len(),
            4,
            "no other"
        );
    }

    #[test]
    fn synack_counts_forget_addresses_without_a_listener_and_gone_namespaces() {
        let mut counts = synacks();
        counts.record(&synack(NETNS, 7, "10.0.0.2:7777"));
        let mut dumps = dumps();
        counts.forget(&dumps, 5 * MS, &[]);
        // 10.0.0.2:7777 has no listener, but its retransmit is newer than the pass.
        dumps[0]
            .sockets
            .push(diag_listener("10.0.0.2:7777", 30, 0, 1));
        let levels = find_listeners(&dumps, &counts);
        let find = |local: &str| levels.iter().find(|l| l.local == addr(local)).unwrap();
        assert_eq!(find("10.0.0.2:7777").synack_retransmits, 1);
        dumps[0].sockets.pop();
        counts.forget(&dumps, 10 * MS, &[NETNS + 1]);
        let levels = find_listeners(&dumps, &counts);
        let find = |local: &str| levels.iter().find(|l| l.local == addr(local)).unwrap();
        assert_eq!(find("0.0.0.0:80").synack_retransmits, 2);
        assert_eq!(
            find("127.0.0.1:9000").synack_retransmits,
            0,
            "namespace gone"
        );
        dumps[0]
            .sockets
            .push(diag_listener("10.0.0.2:7777", 30, 0, 1));
        let levels = find_listeners(&dumps, &counts);
        let find = |local: &str| levels.iter().find(|l| l.local == addr(local)).unwrap();
        assert_eq!(find("10.0.0.2:7777").synack_retransmits, 0, "forgotten");
    }

    #[test]
    fn synack_counts_are_bounded() {
        let mut counts = SynackCounts::default();
        for i in 0..MAX_SYNACK_ADDRESSES as u32 + 10 {
            let local = std::net::SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80));
            counts.record(&synack(NETNS, 1, &local.to_string()));
        }
        let dumps = [namespace_dump(
            NETNS,
            vec![diag_listener("0.0.0.0:80", 1, 0, 1)],
            None,
        )];
        let levels = find_listeners(&dumps, &counts);
        assert_eq!(levels[0].synack_retransmits, MAX_SYNACK_ADDRESSES as u64);
    }

    fn counters(overflows: u64, drops: u64) -> Option<ListenCounters> {
        Some(ListenCounters {
            listen_overflows: overflows,
            listen_drops: drops,
            ..ListenCounters::default()
        })
    }

    #[test]
    fn namespace_counters_start_at_a_baseline_and_report_increases() {
        let mut history = ListenCounterHistory::default();
        let listener = || vec![diag_listener("0.0.0.0:80", 1, 0, 1)];
        let pass = |a: Option<ListenCounters>, b: Option<ListenCounters>| {
            vec![
                namespace_dump(NETNS, listener(), a),
                namespace_dump(NETNS + 1, vec![], b),
            ]
        };
        let (first, gone) = history.update(&pass(counters(100, 120), counters(0, 0)), &[]);
        assert!(gone.is_empty());
        assert_eq!(first[0].listeners, 1);
        assert_eq!(first[1].listeners, 0);
        assert_eq!(first[0].total, counters(100, 120).unwrap());
        assert!(first.iter().all(|n| n.increase.is_none()), "baselines");

        let (second, _) = history.update(&pass(counters(115, 135), counters(0, 1)), &[]);
        assert_eq!(second[0].increase, counters(15, 15));
        assert_eq!(second[1].increase, counters(0, 1));

        // NETNS + 1 unreadable this pass: kept; then readable again, the increase spans
        // both passes.
        let (third, gone) = history.update(&pass(counters(115, 135), None), &[]);
        assert!(gone.is_empty());
        assert_eq!(third.len(), 1);
        let (fourth, _) = history.update(&pass(counters(115, 135), counters(0, 4)), &[]);
        assert_eq!(fourth[1].increase, counters(0, 3));

        // NETNS + 1 could not be dumped (it exists): kept. Then missed by two passes in
        // a row (one can miss a namespace that is there): gone, forgotten.
        let only_first = || vec![namespace_dump(NETNS, listener(), counters(115, 135))];
        let (_, gone) = history.update(&only_first(), &[NETNS + 1]);
        assert!(gone.is_empty());
        let (_, gone) = history.update(&only_first(), &[]);
        assert!(gone.is_empty(), "one missed pass");
        let (_, gone) = history.update(&only_first(), &[]);
        assert_eq!(gone, [NETNS + 1]);
        // Its inode number reused by a new namespace: a new baseline.
        let (again, _) = history.update(&pass(counters(115, 135), counters(7, 7)), &[]);
        assert_eq!(again[1].increase, None);
        // Counters that went down: another namespace under the same number.
        let (reset, _) = history.update(&pass(counters(2, 2), counters(7, 7)), &[]);
        assert_eq!(reset[0].increase, None);
    }

    #[test]
    fn the_report_names_owners_and_workloads_and_the_overflowing_namespaces() {
        let levels = find_listeners(&dumps(), &synacks());
        let mut owners = OwnerCache::default();
        let looked_up = [11, 21].into_iter().collect();
        owners.insert(
            &looked_up,
            [(
                11,
                ProcessOwner {
                    pid: 42,
                    comm: "nginx".into(),
                    cgroup: Some("/system.slice/nginx.service".into()),
                },
            )]
            .into(),
        );
        // 21 has no process (looked up, not found); the events saw 77 listen.
        let listened: HashMap<_, _> = [((NETNS + 1, addr("127.0.0.1:9000")), owner(77, "java"))]
            .into_iter()
            .collect();
        let namespaces = vec![
            NamespaceListens {
                netns: NETNS,
                listeners: 3,
                total: counters(9, 9).unwrap(),
                increase: counters(0, 0),
            },
            NamespaceListens {
                netns: NETNS + 1,
                listeners: 2,
                total: counters(40, 41).unwrap(),
                increase: counters(6, 7),
            },
            NamespaceListens {
                netns: NETNS + 2,
                listeners: 0,
                total: counters(50, 50).unwrap(),
                increase: counters(50, 50),
            },
        ];
        let report = ListenerReport::new(
            &levels,
            &namespaces,
            &owners,
            &listened,
            &mut |_| None,
            crate::clock::WallClock::new(),
            SECOND,
        );
        assert_eq!((report.total, report.truncated), (5, false));
        let first = &report.listeners[0];
        assert_eq!(
            first.owner,
            Some(LeakOwner {
                pid: 42,
                comm: "nginx".into(),
                cgroup: Some("/system.slice/nginx.service".into()),
                source: OwnerSource::Proc,
            })
        );
        assert_eq!(
            first.workload.as_ref().unwrap().cgroup,
            "/system.slice/nginx.service",
            "from the owner's cgroup when the socket's cannot be resolved"
        );
        assert_eq!(report.listeners[1].owner.as_ref().unwrap().pid, 77);
        assert_eq!(
            report.listeners[1].owner.as_ref().unwrap().source,
            OwnerSource::Events
        );
        assert_eq!(report.listeners[3].owner, None);
        // Most overflows since the previous pass first.
        assert_eq!(
            report
                .namespaces
                .iter()
                .map(|n| n.netns - NETNS)
                .collect::<Vec<_>>(),
            [2, 1, 0]
        );
        // Only NETNS + 1: NETNS + 2 has no listener the filters keep.
        let overflows = report.overflows();
        assert_eq!(overflows.len(), 1);
        assert_eq!(overflows[0].netns, NETNS + 1);
        assert_eq!(overflows[0].increase, counters(6, 7).unwrap());
        let fullest = overflows[0].fullest.as_ref().unwrap();
        assert_eq!((fullest.inode, fullest.accept_queue), (21, 9));

        let value = serde_json::to_value(&report).unwrap();
        assert_eq!(value["listeners"][0]["local"], "127.0.0.1:80");
        assert_eq!(value["listeners"][0]["accept_queue_limit"], 1);
        assert_eq!(value["listeners"][0]["fill_ratio"], 1.0);
        assert_eq!(
            value["listeners"][0]["cgroup"],
            "/system.slice/nginx.service"
        );
        assert_eq!(value["namespaces"][1]["increase"]["listen_overflows"], 6);

        // /api/listeners?limit=2, and ?netns=.
        let two = report.limited(2, None);
        assert_eq!(
            (two.total, two.truncated, two.listeners.len()),
            (5, true, 2)
        );
        assert_eq!(two.namespaces.len(), 2);
        let one_ns = report.limited(10, Some(NETNS + 1));
        assert_eq!((one_ns.total, one_ns.truncated), (2, false));
        assert!(one_ns.listeners.iter().all(|l| l.netns == NETNS + 1));
        assert_eq!(one_ns.namespaces.len(), 1);
        assert_eq!(report.limited(10, None), report);
    }
}
