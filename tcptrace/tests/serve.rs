//! Privileged: `tcptrace serve` as operators run it, on the real kernel: leaks found
//! with their owner, TIME_WAIT levels against `ss`, `/metrics` checked by promtool and
//! scraped by a real Prometheus.

mod common;

use std::{net::SocketAddr, process::Command, time::Duration};

use common::{serve::*, *};

const PORT_LEAK: u16 = 24001;
const PORT_SEEDED_LEAK: u16 = 24002;
const PORT_PROMETHEUS: u16 = 24003;
const PORT_WATCH: u16 = 24004;
const WAIT: Duration = Duration::from_secs(20);

/// `tcptrace serve` for the leak tests: traffic on `port` only, a 1 s threshold.
fn serve_for_leaks(port: u16) -> Serve {
    Serve::start(&[
        "-P",
        &port.to_string(),
        "--close-wait-threshold",
        "1s",
        "--reconcile-interval",
        "200ms",
    ])
}

/// `/api/leaks` once it lists `n` stuck sockets, all with a known owner.
fn leaks_with_owners(serve: &Serve, n: u64) -> serde_json::Value {
    eventually(WAIT, &format!("{n} leaks with owners"), || {
        let leaks = serve.json("/api/leaks");
        let listed = leaks["close_wait"]["leaks"].as_array()?;
        let owned = listed.iter().all(|l| l["owner"]["source"] == "proc");
        (leaks["close_wait"]["stuck"] == n && listed.len() as u64 == n && owned).then_some(leaks)
    })
}

#[test]
#[ignore = "needs root"]
fn a_close_wait_leak_is_reported_with_the_servers_pid() {
    require_root();
    const N: u64 = 4;
    let serve = serve_for_leaks(PORT_LEAK);
    let server_addr = SocketAddr::from(([127, 0, 0, 1], PORT_LEAK));
    let listener = listen(server_addr);
    let mut held = close_wait_sockets(&listener, N as usize);
    let leaks = leaks_with_owners(&serve, N);
    assert_eq!(ss_count("close-wait", PORT_LEAK), N as usize);
    let me = std::process::id();
    for leak in leaks["close_wait"]["leaks"].as_array().unwrap() {
        assert_eq!(leak["owner"]["pid"], me, "{leak}");
        assert_eq!(leak["local"], server_addr.to_string());
        assert!(leak["age_seconds"].as_f64().unwrap() >= 1.0, "{leak}");
        assert_eq!(leak["age_is_lower_bound"], false);
        assert_eq!(leak["unread_bytes"], 0, "the clients sent nothing");
        assert_eq!(leak["eof_read"], false, "the server never read");
    }
    let comm = leaks["close_wait"]["leaks"][0]["owner"]["comm"]
        .as_str()
        .unwrap()
        .to_owned();
    let metrics = serve.metrics();
    assert_eq!(
        sample(&metrics, "tcptrace_close_wait_stuck", ""),
        Some(N as f64)
    );
    assert_eq!(
        sample(
            &metrics,
            "tcptrace_close_wait_stuck_by_process",
            &format!("comm=\"{comm}\",container=\"\",pid=\"{me}\"")
        ),
        Some(N as f64)
    );
    assert_eq!(
        sample(&metrics, "tcptrace_connections", "state=\"close_wait\""),
        Some(N as f64)
    );

    // The JSON API's live table agrees, and each leak's timeline is there.
    let list = serve.json(&format!(
        "/api/connections?state=close_wait&port={PORT_LEAK}"
    ));
    assert_eq!(list["matching"], N);
    let id = list["connections"][0]["id"].as_u64().unwrap();
    let timeline = serve.json(&format!("/api/connections/{id}"));
    let states: Vec<&str> = timeline["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["LISTEN", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT"]);

    // The application finally closes one: it is no longer a leak.
    drop(held.pop());
    eventually(WAIT, "one leak fewer", || {
        let metrics = serve.metrics();
        (sample(&metrics, "tcptrace_close_wait_stuck", "") == Some((N - 1) as f64)).then_some(())
    });
    assert_eq!(ss_count("close-wait", PORT_LEAK), (N - 1) as usize);

    // What Prometheus would scrape passes its own linter.
    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(serve.metrics().as_bytes())?;
            child.wait_with_output()
        })
        .expect("promtool (Debian package `prometheus`) runs");
    assert!(
        check.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    drop(listener);
}

#[test]
#[ignore = "needs root"]
fn leaks_older_than_tcptrace_are_flagged_at_least_since_start() {
    require_root();
    const N: u64 = 2;
    let listener = listen(SocketAddr::from(([127, 0, 0, 1], PORT_SEEDED_LEAK)));
    let _held = close_wait_sockets(&listener, N as usize);
    let serve = serve_for_leaks(PORT_SEEDED_LEAK);
    let leaks = leaks_with_owners(&serve, N);
    for leak in leaks["close_wait"]["leaks"].as_array().unwrap() {
        assert_eq!(leak["age_is_lower_bound"], true, "{leak}");
        assert_eq!(leak["owner"]["pid"], std::process::id());
    }
    drop(listener);
}

#[test]
#[ignore = "needs root"]
fn time_wait_metrics_toward_one_destination_equal_what_ss_counts() {
    require_root();
    const M: usize = 25;
    let port = time_wait_port(25000);
    let serve = Serve::start(&["-P", &port.to_string(), "--reconcile-interval", "200ms"]);
    let server_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = listen(server_addr);
    time_wait_sockets(&listener, M);
    let ss = ss_count("time-wait", port);
    assert_eq!(ss, M, "the kernel holds M client sockets in TIME_WAIT");
    let netns = own_namespace().inum;
    let remote = format!("netns=\"{netns}\",remote=\"{server_addr}\"");
    let metrics = eventually(WAIT, "the TIME_WAIT level", || {
        let metrics = serve.metrics();
        (sample(&metrics, "tcptrace_time_wait_sockets_by_remote", &remote) == Some(ss as f64))
            .then_some(metrics)
    });
    assert_eq!(
        sample(&metrics, "tcptrace_time_wait_sockets", ""),
        Some(M as f64)
    );
    // The clients' ports come from the ephemeral range; the listener's does not.
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let bounds: Vec<f64> = range
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let size = bounds[1] - bounds[0] + 1.0;
    assert_eq!(sample(&metrics, "tcptrace_ephemeral_ports", ""), Some(size));
    assert_eq!(
        sample(
            &metrics,
            "tcptrace_ephemeral_port_pressure_ratio",
            &format!("local_address=\"127.0.0.1\",netns=\"{netns}\",remote=\"{server_addr}\"")
        ),
        Some(M as f64 / size)
    );
    let leaks = serve.json("/api/leaks");
    assert_eq!(leaks["time_wait"]["total"], M);
    let top = &leaks["time_wait"]["top_remotes"][0];
    assert_eq!(top["remote"], server_addr.to_string());
    assert_eq!(top["sockets"], M);
    assert_eq!(leaks["time_wait"]["port_pressure"][0]["time_wait"], M);
    drop(listener);
}

#[test]
#[ignore = "needs root"]
fn a_real_prometheus_scrapes_the_leak_count() {
    require_root();
    const N: u64 = 3;
    let serve = serve_for_leaks(PORT_PROMETHEUS);
    let listener = listen(SocketAddr::from(([127, 0, 0, 1], PORT_PROMETHEUS)));
    let _held = close_wait_sockets(&listener, N as usize);
    leaks_with_owners(&serve, N);
    let prometheus = Prometheus::start(&[serve.addr]);
    let me = std::process::id();
    let by_process = format!("tcptrace_close_wait_stuck_by_process{{pid=\"{me}\"}}");
    let result = eventually(WAIT, "Prometheus to scrape the leak", || {
        let result = prometheus.query(&by_process);
        (result.first().map(|r| r.1) == Some(N as f64)).then_some(result)
    });
    assert_eq!(result.len(), 1);
    assert_eq!(result[0].0["job"], "tcptrace");
    assert_eq!(result[0].0["instance"], serve.addr.to_string());
    let total = prometheus.query("tcptrace_close_wait_stuck");
    assert_eq!(total.len(), 1);
    assert_eq!(total[0].1, N as f64);
    assert_eq!(total[0].0["instance"], serve.addr.to_string());
    // The alert rule is loaded and its condition holds (it fires after `for: 10m`).
    let pending = eventually(WAIT, "the leak alert to be pending", || {
        let alerts = prometheus.query("ALERTS{alertname=\"TcpCloseWaitLeak\"}");
        (!alerts.is_empty()).then_some(alerts)
    });
    assert_eq!(pending[0].0["alertstate"], "pending");
    assert_eq!(pending[0].0["pid"], me.to_string());
    drop(listener);
}

#[test]
#[ignore = "needs root"]
fn watch_with_listen_prints_and_serves_at_once() {
    require_root();
    let watch = Serve::run("watch", &["-P", &PORT_WATCH.to_string(), "--json"]);
    let server_addr = SocketAddr::from(([127, 0, 0, 1], PORT_WATCH));
    let listener = listen(server_addr);
    drop(close_wait_sockets(&listener, 1));
    // The four sockets' stories on stdout: listener, client, server child.
    let mut printed = Vec::new();
    let closes = |lines: &[serde_json::Value]| {
        lines
            .iter()
            .filter(|l| l["event"] == "state_change" && l["new_state"] == "CLOSE")
            .count()
    };
    while closes(&printed) < 2 {
        let line = watch
            .output
            .recv_timeout(WAIT)
            .expect("watch prints each event");
        printed.push(serde_json::from_str(&line).unwrap());
    }
    let metrics = eventually(WAIT, "the same events in /metrics", || {
        let metrics = watch.metrics();
        let transitions = |from: &str, to: &str| {
            sample(
                &metrics,
                "tcptrace_state_transitions_total",
                &format!("from=\"{from}\",to=\"{to}\""),
            )
        };
        (transitions("last_ack", "close") == Some(1.0)).then_some(metrics)
    });
    let state_changes = printed
        .iter()
        .filter(|l| l["event"] == "state_change")
        .count();
    assert_eq!(
        sample(&metrics, "tcptrace_events_total", "kind=\"state_change\""),
        Some(state_changes as f64),
        "{printed:#?}"
    );
    drop(listener);
}

#[test]
#[ignore = "needs root"]
fn the_http_side_is_read_only_and_bounded() {
    require_root();
    let serve = Serve::start(&["-P", "24005"]);
    for (request, status) in [
        ("POST /metrics", 405),
        ("DELETE /api/connections/1", 405),
        ("PUT /api/leaks", 405),
        ("GET /nothing-here", 404),
        ("GET /api/connections?limit=10001", 400),
        ("GET /api/connections?limit=0", 400),
        ("GET /api/connections?port=70000", 400),
        ("GET /api/connections?state=ESTABLISH", 400),
        ("GET /api/connections/not-a-number", 400),
        ("GET /api/leaks?limit=10001", 400),
        ("POST /api/half-open", 405),
        ("GET /api/half-open?limit=0", 400),
        ("GET /api/half-open?limit=10", 200),
        ("GET /api/connections?limit=10000", 200),
    ] {
        let (method, path) = request.split_once(' ').unwrap();
        assert_eq!(
            http_request(serve.addr, method, path).0,
            status,
            "{request}"
        );
    }
}

#[test]
#[cfg_attr(feature = "fault-injection", ignore = "needs root")]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs root and the fault-injection feature"
)]
fn a_request_the_daemon_cannot_answer_times_out() {
    require_root();
    require_fault_injection();
    // The loop that owns the table stalls for 15 s on its first question.
    let serve = Serve::run_with_env(
        "serve",
        &["-P", "24006"],
        &[("TCPTRACE_INJECT_STALL", "engine")],
    );
    let started = std::time::Instant::now();
    let (status, _) = serve.get("/api/connections");
    assert_eq!(status, 408, "answered after {:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(14),
        "the 10 s timeout, not the stall"
    );
    // /metrics does not need the loop: it still answers meanwhile.
    assert_eq!(serve.get("/metrics").0, 200);
}

#[test]
fn a_taken_listen_port_is_refused_before_anything_starts() {
    // No root needed: the address is bound before the probe loads.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tcptrace"))
        .args([
            "serve",
            "--listen",
            &taken.local_addr().unwrap().to_string(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert!(stderr.contains("Address already in use"), "{stderr}");
    assert!(!stderr.contains("attached"), "nothing was loaded: {stderr}");
}

#[test]
fn unparsable_addresses_and_durations_are_refused() {
    for (args, complaint) in [
        (
            &["serve", "--listen", "localhost:80"][..],
            "invalid socket address",
        ),
        (
            &["serve", "--listen", "127.0.0.1"][..],
            "invalid socket address",
        ),
        (
            &["serve", "--close-wait-threshold", "10 parsecs"][..],
            "--close-wait-threshold",
        ),
        (
            &["serve", "--reconcile-interval", "0s"][..],
            "at least 100ms",
        ),
        (&["watch", "--listen", "::1"][..], "invalid socket address"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tcptrace"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(complaint), "{args:?}: {stderr}");
    }
}
