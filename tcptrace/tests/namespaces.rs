//! Privileged: containers' network namespaces, as tcptrace in the host's namespace sees
//! them. Every namespace, cgroup and process is made by the test and removed on drop.

mod common;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use common::{leaker::*, netns::*, serve::*, *};
use tcptrace::state::TcpState;

const WAIT: Duration = Duration::from_secs(20);

/// `serve` for namespace tests: port `port` only, a 1 s leak threshold, frequent
/// reconciles (so that several pass while a test waits).
fn serve_on(port: u16, extra: &[&str]) -> Serve {
    let port = port.to_string();
    let mut args = vec![
        "-P",
        &port,
        "--close-wait-threshold",
        "1s",
        "--reconcile-interval",
        "200ms",
    ];
    args.extend_from_slice(extra);
    Serve::start(&args)
}

/// `/api/leaks` once it lists `n` leaks, each with its owner found in `/proc`.
fn leaks(serve: &Serve, n: usize) -> Vec<serde_json::Value> {
    eventually(WAIT, &format!("{n} leaks with owners"), || {
        let report = serve.json("/api/leaks");
        let listed = report["close_wait"]["leaks"].as_array()?.clone();
        (listed.len() == n && listed.iter().all(|l| l["owner"]["source"] == "proc"))
            .then_some(listed)
    })
}

fn metric(serve: &Serve, name: &str, labels: &str) -> f64 {
    sample(&serve.metrics(), name, labels).unwrap_or(0.0)
}

/// What a reconcile closed, added or corrected, and what closed as vanished: all must
/// stay 0 while nothing is lost. (The correction series exist from the first tick;
/// `vanished` only once something vanished.)
fn corrections(serve: &Serve) -> [f64; 4] {
    let text = serve.metrics();
    let correction = |kind: &str| {
        sample(
            &text,
            "tcptrace_reconcile_corrections_total",
            &format!("kind=\"{kind}\""),
        )
        .unwrap_or_else(|| panic!("no {kind} corrections series in {text}"))
    };
    let vanished = sample(
        &text,
        "tcptrace_connections_closed_total",
        r#"kind="vanished""#,
    );
    [
        correction("closed"),
        correction("added"),
        correction("state"),
        vanished.unwrap_or(0.0),
    ]
}

#[test]
#[ignore = "needs root"]
fn a_leak_inside_a_namespace_is_counted_there_and_never_healed_away() {
    require_root();
    const N: usize = 6;
    const PORT: u16 = 27001;
    let ns = Netns::create("tt-leak");
    let serve = serve_on(PORT, &[]);
    let mut server = Leaker::spawn(&ns.name, PORT, N, 0, 0);
    server.go();
    let listed = leaks(&serve, N);
    assert_eq!(ss_count_in(&ns.name, "close-wait", PORT), N);
    assert_eq!(ss_count("close-wait", PORT), 0, "the host has none of them");
    for leak in &listed {
        assert_eq!(leak["owner"]["pid"], server.pid(), "the server's host pid");
        assert_eq!(leak["netns"], netns_of(server.pid()));
    }
    assert_eq!(metric(&serve, "tcptrace_close_wait_stuck", ""), N as f64);
    // Several reconciles later: nothing closed, added or corrected.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(corrections(&serve), [0.0; 4]);
    assert_eq!(leaks(&serve, N).len(), N);
}

#[test]
#[ignore = "needs root"]
fn the_same_loopback_tuple_in_two_namespaces_is_never_merged() {
    require_root();
    const PORT: u16 = 27002;
    // Both namespaces make 127.0.0.1:27100 → 127.0.0.1:27002, and leak its server end.
    let (one, two) = (Netns::create("tt-same-a"), Netns::create("tt-same-b"));
    let serve = serve_on(PORT, &[]);
    let mut servers = [
        Leaker::spawn(&one.name, PORT, 1, 27100, 0),
        Leaker::spawn(&two.name, PORT, 1, 27100, 0),
    ];
    servers.iter_mut().for_each(Leaker::go);
    let listed = leaks(&serve, 2);
    let mut seen: Vec<(u64, u64)> = listed
        .iter()
        .map(|l| {
            assert_eq!(l["local"], format!("127.0.0.1:{PORT}"));
            assert_eq!(l["remote"], "127.0.0.1:27100");
            (
                l["netns"].as_u64().unwrap(),
                l["owner"]["pid"].as_u64().unwrap(),
            )
        })
        .collect();
    seen.sort_unstable();
    let mut expected: Vec<(u64, u64)> = servers
        .iter()
        .map(|s| (netns_of(s.pid()), u64::from(s.pid())))
        .collect();
    expected.sort_unstable();
    assert_eq!(
        seen, expected,
        "one leak in each namespace, each its own server's"
    );
    // Each server end is paired with the client end of its own namespace.
    for leak in &listed {
        let timeline = serve.json(&format!("/api/connections/{}", leak["id"]));
        let peer = timeline["peer"].as_u64().expect("paired");
        let client = serve.json(&format!("/api/connections/{peer}"));
        assert_eq!(client["netns"], leak["netns"]);
        assert_eq!(client["local"], "127.0.0.1:27100");
    }
    assert_eq!(corrections(&serve), [0.0; 4]);
}

#[test]
#[ignore = "needs root"]
fn time_wait_in_a_namespace_is_that_namespaces_level_only() {
    require_root();
    const M: usize = 12;
    const PORT: u16 = 27003;
    let ns = Netns::create("tt-tw");
    let serve = serve_on(PORT, &[]);
    let mut server = Leaker::spawn(&ns.name, PORT, 0, 0, M);
    server.go();
    assert_eq!(ss_count_in(&ns.name, "time-wait", PORT), M);
    let inum = ns.inum();
    let report = eventually(WAIT, "the namespace's TIME_WAIT level", || {
        let report = serve.json("/api/leaks");
        let level = report["time_wait"]["namespaces"]
            .as_array()?
            .iter()
            .find(|n| n["netns"] == inum)?["time_wait"]
            .as_u64()?;
        (level == M as u64).then_some(report)
    });
    assert_eq!(
        report["time_wait"]["total"], M,
        "the host has none on this port"
    );
    let host = own_namespace().inum;
    let host_level = report["time_wait"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["netns"] == host)
        .expect("the host's namespace is dumped too")["time_wait"]
        .clone();
    assert_eq!(host_level, ss_count("time-wait", PORT));
    assert_eq!(
        metric(
            &serve,
            "tcptrace_time_wait_sockets_by_netns",
            &format!("netns=\"{inum}\"")
        ),
        M as f64
    );
}

#[test]
#[ignore = "needs root"]
fn a_connection_between_two_namespaces_lives_through_reconciles_and_closes_as_it_did() {
    require_root();
    const PORT: u16 = 27004;
    let pair = NetnsPair::create("tt-veth", 41);
    let serve = serve_on(PORT, &[]);
    let server_addr = SocketAddr::from((pair.addr_b, PORT));
    let listener: TcpListener = in_netns(&pair.b, || TcpListener::bind(server_addr).unwrap());
    let client = in_netns(&pair.a, || TcpStream::connect(server_addr).unwrap());
    let (accepted, _) = listener.accept().unwrap();
    let established = |serve: &Serve| {
        let list = serve.json(&format!("/api/connections?port={PORT}&state=ESTABLISHED"));
        let mut ids: Vec<(u64, u64)> = list["connections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["id"].as_u64().unwrap(), c["netns"].as_u64().unwrap()))
            .collect();
        ids.sort_unstable();
        ids
    };
    let before = eventually(WAIT, "both ends established", || {
        let ids = established(&serve);
        (ids.len() == 2).then_some(ids)
    });
    let mut namespaces: Vec<u64> = before.iter().map(|(_, n)| *n).collect();
    namespaces.sort_unstable();
    let mut expected = vec![u64::from(inum_of(&pair.a)), u64::from(inum_of(&pair.b))];
    expected.sort_unstable();
    assert_eq!(namespaces, expected, "each end in its own namespace");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        established(&serve),
        before,
        "the same two connections, untouched"
    );
    assert_eq!(corrections(&serve), [0.0; 4]);
    // The client closes first, then the server: a four-way close seen from both ends.
    drop(client);
    std::thread::sleep(Duration::from_millis(100));
    drop(accepted);
    for (id, netns) in before {
        let closed = eventually(WAIT, "the end finished", || {
            let timeline = serve.json(&format!("/api/connections/{id}"));
            (timeline["lifecycle"]["close"].is_string()).then_some(timeline)
        });
        let kind = if netns == expected_client(&pair) {
            "active_close"
        } else {
            "passive_close"
        };
        assert_eq!(closed["lifecycle"]["close"], kind, "{closed}");
    }
    assert_eq!(corrections(&serve), [0.0; 4]);
    drop(listener);
}

fn expected_client(pair: &NetnsPair) -> u64 {
    u64::from(inum_of(&pair.a))
}

#[test]
#[ignore = "needs root"]
fn a_deleted_namespace_closes_its_connections_as_vanished_once() {
    require_root();
    const PORT: u16 = 27005;
    let ns = Netns::create("tt-gone");
    let serve = serve_on(PORT, &[]);
    // Sockets held by this process, in a namespace nothing else will name once its
    // /run/netns entry is gone.
    let (listener, client, accepted) = ns.run(|| {
        let listener = TcpListener::bind(("127.0.0.1", PORT)).unwrap();
        let client = TcpStream::connect(("127.0.0.1", PORT)).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        (listener, client, accepted)
    });
    eventually(WAIT, "both ends tracked", || {
        let list = serve.json(&format!("/api/connections?port={PORT}"));
        (list["matching"] == 2).then_some(())
    });
    ns.delete();
    let vanished = |serve: &Serve| {
        metric(
            serve,
            "tcptrace_connections_closed_total",
            r#"kind="vanished""#,
        )
    };
    eventually(WAIT, "both closed as vanished", || {
        (vanished(&serve) == 2.0).then_some(())
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(vanished(&serve), 2.0, "once");
    let mut log = Vec::new();
    while let Ok(line) = serve.log.try_recv() {
        log.push(line);
    }
    let about: Vec<_> = log
        .iter()
        .filter(|l| l.contains("network namespace"))
        .collect();
    assert_eq!(
        about.len(),
        1,
        "one line about it, not one per reconcile: {log:#?}"
    );
    drop((listener, client, accepted));
}

/// Directories under the cgroup v2 mount, laid out as a runtime lays them out; on drop
/// the processes in them are killed first, then every directory goes, deepest first (a
/// failure panics unless the test already is).
struct CgroupTree {
    top: std::path::PathBuf,
    made: Vec<std::path::PathBuf>,
}

impl CgroupTree {
    fn new(tag: &str, layout: &str) -> CgroupTree {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = tcptrace::diag::cgroup::cgroup2_mount(&mountinfo).expect("a cgroup v2 mount");
        let top = mount.join(format!("tcptrace-test-{}-{tag}", std::process::id()));
        let mut made = Vec::new();
        let mut dir = top.clone();
        std::fs::create_dir(&dir).unwrap();
        made.push(dir.clone());
        for part in layout.split('/') {
            dir = dir.join(part);
            std::fs::create_dir(&dir).unwrap();
            made.push(dir.clone());
        }
        CgroupTree { top, made }
    }

    fn leaf(&self) -> &std::path::Path {
        self.made.last().unwrap()
    }

    fn enter(&self, pid: u32) {
        std::fs::write(self.leaf().join("cgroup.procs"), pid.to_string()).unwrap();
    }

    fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(self.leaf()).unwrap().ino()
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        let mut failures = Vec::new();
        for dir in self.made.iter().rev() {
            // Its processes were killed by their owners' drops; rmdir waits for them.
            let mut left = 50;
            while let Err(e) = std::fs::remove_dir(dir) {
                left -= 1;
                if left == 0 {
                    failures.push(format!("{}: {e}", dir.display()));
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !failures.is_empty() && !std::thread::panicking() {
            panic!(
                "cgroups under {} left behind: {failures:?}",
                self.top.display()
            );
        }
    }
}

#[test]
#[ignore = "needs root"]
fn a_leak_in_a_kubernetes_container_is_attributed_to_its_container_and_pod() {
    require_root();
    const N: usize = 3;
    const PORT: u16 = 27006;
    let container = "3f2a".repeat(16);
    let pod = "5d1c3b0e-7a1f-4c2e-9b8d-2f0e6c4a1b7d";
    let layout = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/\
         cri-containerd-{container}.scope",
        pod.replace('-', "_")
    );
    let cgroups = CgroupTree::new("k8s", &layout);
    let ns = Netns::create("tt-pod");
    let serve = serve_on(PORT, &[]);
    let mut harness = Harness::start(tcptrace::probe::KernelFilter {
        ports: vec![PORT],
        family: None,
        netns: Some(ns.inum()),
    });
    // The server makes every socket after it is moved into the container's cgroup;
    // the last connection's client is this test's thread (another cgroup), so the
    // server end enters CLOSE_WAIT in softirq while this process is on the CPU.
    let mut server = Leaker::spawn_accepting(&ns.name, PORT, N - 1, 0, 0, 1);
    cgroups.enter(server.pid());
    server.go();
    ns.run(|| drop(TcpStream::connect(("127.0.0.1", PORT)).unwrap()));
    let listed = leaks(&serve, N);
    for leak in &listed {
        assert_eq!(leak["owner"]["pid"], server.pid());
        assert_eq!(leak["container"]["id"], container);
        assert_eq!(leak["container"]["runtime"], "containerd");
        assert_eq!(leak["pod_uid"], pod);
        assert!(
            leak["cgroup"].as_str().unwrap().ends_with(&layout),
            "{leak}"
        );
    }
    assert_eq!(
        metric(
            &serve,
            "tcptrace_close_wait_stuck_by_process",
            &format!(
                "comm=\"python3\",container=\"{}\",pid=\"{}\"",
                &container[..12],
                server.pid()
            )
        ),
        N as f64
    );
    // The transitions into CLOSE_WAIT carry the socket's cgroup, whatever task ran them
    // (the raw events, before tcptrace names an owner).
    let into_close_wait: Vec<_> = harness
        .collect_until(WAIT, |events| {
            events
                .iter()
                .filter(|e| e.kind == change(TcpState::Established, TcpState::CloseWait))
                .count()
                == N
        })
        .iter()
        .filter(|e| e.kind == change(TcpState::Established, TcpState::CloseWait))
        .map(|e| (e.sock_cgroup_id, e.task.cgroup_id, e.task.pid))
        .collect();
    assert_eq!(into_close_wait.len(), N);
    assert!(
        into_close_wait
            .iter()
            .all(|&(sock, _, _)| sock == cgroups.id()),
        "{into_close_wait:?}"
    );
    // The FIN arrives in softirq, on whatever task was on the CPU: the programs leave
    // the task out there (it is not the owner), and the socket's own cgroup stands.
    assert!(
        into_close_wait
            .iter()
            .all(|&(_, task, pid)| task == 0 && pid == 0),
        "no task on a softirq transition: {into_close_wait:?}"
    );
    drop(server);
}

#[test]
#[ignore = "needs root"]
fn the_cgroup_filter_keeps_only_the_containers_below_the_prefix() {
    require_root();
    const PORT: u16 = 27007;
    let inside = CgroupTree::new("filter-in", "kubepods.slice/pod-a");
    let outside = CgroupTree::new("filter-out", "system.slice/other.service");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = tcptrace::diag::cgroup::cgroup2_mount(&mountinfo).unwrap();
    let prefix = format!(
        "/{}",
        inside
            .top
            .join("kubepods.slice")
            .strip_prefix(&mount)
            .unwrap()
            .display()
    );
    let (one, two) = (Netns::create("tt-cg-in"), Netns::create("tt-cg-out"));
    let serve = serve_on(PORT, &["--cgroup", &prefix]);
    let mut kept = Leaker::spawn(&one.name, PORT, 2, 0, 0);
    inside.enter(kept.pid());
    kept.go();
    let mut dropped = Leaker::spawn(&two.name, PORT, 3, 0, 0);
    outside.enter(dropped.pid());
    dropped.go();
    let listed = leaks(&serve, 2);
    assert!(
        listed.iter().all(|l| l["owner"]["pid"] == kept.pid()),
        "{listed:?}"
    );
    // Long enough for the other server's leaks to pass the threshold too.
    std::thread::sleep(Duration::from_millis(1500));
    let report = serve.json("/api/leaks");
    assert_eq!(report["close_wait"]["stuck"], 2);
    let tracked = serve.json(&format!("/api/connections?port={PORT}"));
    let namespaces: std::collections::BTreeSet<_> = tracked["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["netns"].as_u64().unwrap())
        .collect();
    assert_eq!(namespaces, [u64::from(one.inum())].into(), "{tracked}");
    drop((kept, dropped));
}
