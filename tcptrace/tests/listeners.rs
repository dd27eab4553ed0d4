//! Privileged: listener health on the real kernel, in network namespaces the tests make
//! and always remove. A listener whose accept queue overflows is measured as `ss -lnt`
//! and `nstat` see it; half-open handshakes and SYN-ACK retransmits as `ss` and the
//! namespace's counters see them; `watch` prints the overflow.

mod common;

use std::{
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use common::{leaker::ss_count_in, netns::*, serve::*, *};

const WAIT: Duration = Duration::from_secs(20);
/// The listen() backlog: the queue holds BACKLOG + 1 (`sk_acceptq_is_full()` is
/// `ack_backlog > max_ack_backlog`).
const BACKLOG: i32 = 4;
/// More clients than fit.
const CLIENTS: usize = 20;

/// A kernel counter of namespace `ns`, absolute (`nstat -a`), without touching nstat's
/// history file (`-s`), which is per user and shared by every namespace.
fn nstat(ns: &Netns, counter: &str) -> u64 {
    let out = ns.exec("nstat", &["-asz", counter]);
    out.lines()
        .find_map(|l| l.strip_prefix(counter))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {counter} in nstat output {out:?}"))
}

/// `ss -Hlnt sport = :PORT` in the namespace: (Recv-Q, Send-Q) of the one listener.
fn ss_listen_queue(ns: &Netns, port: u16) -> (u64, u64) {
    let out = ns.exec("ss", &["-Hlnt", &format!("sport = :{port}")]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "one listener on {port}: {out:?}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(fields[0], "LISTEN", "{out:?}");
    (fields[1].parse().unwrap(), fields[2].parse().unwrap())
}

/// The namespace's entry in `/api/listeners`, once tcptrace has sampled it.
fn namespace_entry(tcptrace: &Serve, inum: u32) -> Option<serde_json::Value> {
    tcptrace.json(&format!("/api/listeners?netns={inum}"))["namespaces"]
        .as_array()?
        .first()
        .cloned()
}

/// The one listener `/api/listeners` shows in namespace `inum`.
fn listener_entry(tcptrace: &Serve, inum: u32) -> Option<serde_json::Value> {
    let report = tcptrace.json(&format!("/api/listeners?netns={inum}"));
    let listeners = report["listeners"].as_array()?;
    (listeners.len() == 1).then(|| listeners[0].clone())
}

/// Waits for tcptrace's first sample of namespace `ns` (its baseline: overflows before
/// it are not tcptrace's to count), then returns what nstat says then, which must be
/// what tcptrace sampled.
fn baseline(tcptrace: &Serve, ns: &Netns) -> u64 {
    let inum = ns.inum();
    let sampled = eventually(WAIT, "tcptrace's first sample of the namespace", || {
        namespace_entry(tcptrace, inum)
    });
    let before = nstat(ns, "TcpExtListenOverflows");
    assert_eq!(sampled["total"]["listen_overflows"], before, "{sampled}");
    before
}

#[test]
#[ignore = "needs root"]
fn a_full_accept_queue_and_its_overflows_are_what_ss_and_nstat_say() {
    require_root();
    const PORT: u16 = 28101;
    let ns = Netns::create("tt-acceptq");
    let inum = ns.inum();
    let tcptrace = Serve::start(&["-P", &PORT.to_string(), "--reconcile-interval", "200ms"]);
    let before = baseline(&tcptrace, &ns);

    // A server that never accepts, and more clients than its queue holds.
    let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
    let (listener, queued) = ns.run(|| {
        let listener = listen_with_backlog(addr, BACKLOG);
        let queued = connect_many(addr, CLIENTS);
        (listener, queued)
    });
    assert_eq!(
        queued.len(),
        BACKLOG as usize + 1,
        "the queue holds backlog + 1"
    );
    // Every client is queued or closed: the counters no longer move.
    let (recv_q, send_q) = ss_listen_queue(&ns, PORT);
    assert_eq!((recv_q, send_q), (BACKLOG as u64 + 1, BACKLOG as u64));
    let after = nstat(&ns, "TcpExtListenOverflows");
    assert!(
        after - before >= (CLIENTS - queued.len()) as u64,
        "each client that did not fit had its SYN dropped: {before} → {after}"
    );

    // A reconcile after the last overflow has the namespace's final count.
    let entry = eventually(WAIT, "tcptrace to see the final count", || {
        let entry = namespace_entry(&tcptrace, inum)?;
        (entry["total"]["listen_overflows"] == after).then_some(entry)
    });
    assert_eq!(entry["listeners"], 1);
    let listed = listener_entry(&tcptrace, inum).expect("the listener is listed");
    assert_eq!(listed["local"], addr.to_string());
    assert_eq!(listed["accept_queue"], recv_q, "ss -lnt Recv-Q");
    assert_eq!(listed["accept_queue_limit"], send_q, "ss -lnt Send-Q");
    assert_eq!(listed["fill_ratio"], 1.0);
    assert_eq!(listed["syn_recv"], 0);
    assert_eq!(listed["owner"]["pid"], std::process::id());
    assert_eq!(listed["owner"]["source"], "proc");

    let metrics = tcptrace.metrics();
    let listen = format!("listen=\"{addr}\",netns=\"{inum}\"");
    let netns = format!("netns=\"{inum}\"");
    assert_eq!(
        sample(&metrics, "tcptrace_listener_accept_queue", &listen),
        Some(recv_q as f64)
    );
    assert_eq!(
        sample(&metrics, "tcptrace_listener_accept_queue_limit", &listen),
        Some(send_q as f64)
    );
    assert_eq!(
        sample(
            &metrics,
            "tcptrace_listener_accept_queue_fill_ratio",
            &listen
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "tcptrace_listen_overflows_total", &netns),
        Some((after - before) as f64),
        "tcptrace's count equals nstat's TcpExtListenOverflows delta"
    );
    // Every overflow is a drop too; nothing else dropped here.
    assert_eq!(
        sample(&metrics, "tcptrace_listen_drops_total", &netns),
        Some((after - before) as f64)
    );

    // The application accepts: the queue drains, and nothing more overflows.
    let drained: Vec<TcpStream> = queued
        .iter()
        .map(|_| listener.accept().unwrap().0)
        .collect();
    eventually(WAIT, "an empty queue", || {
        let listed = listener_entry(&tcptrace, inum)?;
        (listed["accept_queue"] == 0).then_some(())
    });
    assert_eq!(ss_listen_queue(&ns, PORT), (0, BACKLOG as u64));
    assert_eq!(nstat(&ns, "TcpExtListenOverflows"), after);
    assert_eq!(
        sample(
            &tcptrace.metrics(),
            "tcptrace_listen_overflows_total",
            &netns
        ),
        Some((after - before) as f64)
    );
    drop((drained, queued, listener));
}

/// `nft -f` a script inside namespace `ns`.
fn nft(ns: &Netns, script: &str) {
    let path = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&path, script).unwrap();
    ns.exec("nft", &["-f", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(path);
}

#[test]
#[ignore = "needs root"]
fn half_open_handshakes_and_synack_retransmits_are_what_ss_and_nstat_say() {
    require_root();
    const PORT: u16 = 28102;
    const HALF_OPEN: usize = 3;
    let ns = Netns::create("tt-synrecv");
    let inum = ns.inum();
    // The handshakes' last ACKs never reach the listener, so its request sockets stay
    // in SYN_RECV; each resends its SYN-ACK once (after 1 s), and is dropped 2 s later.
    nft(
        &ns,
        &format!(
            "table inet tcptrace_test {{\n chain input {{\n  type filter hook input priority 0;\n  \
             tcp dport {PORT} tcp flags & (syn | ack) == ack drop\n }}\n}}\n"
        ),
    );
    ns.exec("sysctl", &["-qw", "net.ipv4.tcp_synack_retries=1"]);
    let tcptrace = Serve::start(&["-P", &PORT.to_string(), "--reconcile-interval", "200ms"]);
    baseline(&tcptrace, &ns);
    let retrans_before = nstat(&ns, "TcpExtTCPSynRetrans");

    let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
    let (listener, clients) = ns.run(|| {
        let listener = listen_with_backlog(addr, 16);
        // The clients get the SYN-ACK: established on their side.
        let clients: Vec<TcpStream> = (0..HALF_OPEN)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        (listener, clients)
    });
    let listed = eventually(WAIT, "the half-open handshakes", || {
        let listed = listener_entry(&tcptrace, inum)?;
        (listed["syn_recv"] == HALF_OPEN).then_some(listed)
    });
    assert_eq!(ss_count_in(&ns.name, "syn-recv", PORT), HALF_OPEN);
    assert_eq!(listed["accept_queue"], 0);
    let metrics = tcptrace.metrics();
    assert_eq!(
        sample(
            &metrics,
            "tcptrace_listener_syn_recv",
            &format!("listen=\"{addr}\",netns=\"{inum}\"")
        ),
        Some(HALF_OPEN as f64)
    );
    // Request sockets are not connections: the table has none of them.
    assert_eq!(
        sample(&metrics, "tcptrace_connections", "state=\"syn_recv\""),
        Some(0.0)
    );
    let table = tcptrace.json(&format!("/api/connections?state=syn_recv&port={PORT}"));
    assert_eq!(table["matching"], 0, "{table}");

    // Once every request has resent its SYN-ACK and expired, the counts stand still.
    eventually(WAIT, "the requests to expire", || {
        (ss_count_in(&ns.name, "syn-recv", PORT) == 0).then_some(())
    });
    let retransmitted = nstat(&ns, "TcpExtTCPSynRetrans") - retrans_before;
    assert_eq!(
        retransmitted, HALF_OPEN as u64,
        "one SYN-ACK retransmit each"
    );
    let listed = eventually(WAIT, "tcptrace to count the retransmits", || {
        let listed = listener_entry(&tcptrace, inum)?;
        (listed["syn_recv"] == 0 && listed["synack_retransmits"] == retransmitted).then_some(listed)
    });
    assert_eq!(listed["synack_retransmits"], retransmitted, "{listed}");
    drop((clients, listener));
}

#[test]
#[ignore = "needs root"]
fn watch_prints_the_overflow_at_the_next_reconcile() {
    require_root();
    const PORT: u16 = 28103;
    let ns = Netns::create("tt-overflow-watch");
    let inum = ns.inum();
    let watch = Serve::run(
        "watch",
        &[
            "-P",
            &PORT.to_string(),
            "--reconcile-interval",
            "200ms",
            "--json",
        ],
    );
    let before = baseline(&watch, &ns);
    let addr = SocketAddr::from(([127, 0, 0, 1], PORT));
    let (listener, queued) = ns.run(|| {
        let listener = listen_with_backlog(addr, BACKLOG);
        (listener, connect_many(addr, CLIENTS))
    });
    let overflowed = nstat(&ns, "TcpExtListenOverflows") - before;
    assert!(overflowed > 0);
    // Each reconcile that saw the counter rise printed one line for the namespace.
    let mut printed = 0;
    while printed < overflowed {
        let line = watch
            .output
            .recv_timeout(WAIT)
            .expect("watch prints the overflow");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        if value["event"] != "listen_overflow" {
            continue;
        }
        assert_eq!(value["netns"], inum, "{value}");
        assert!(
            value["listen_drops"].as_u64().unwrap() >= value["listen_overflows"].as_u64().unwrap()
        );
        assert_eq!(value["fullest"]["local"], addr.to_string(), "{value}");
        assert_eq!(value["fullest"]["accept_queue_limit"], BACKLOG, "{value}");
        printed += value["listen_overflows"].as_u64().unwrap();
    }
    assert_eq!(
        printed, overflowed,
        "the printed increases add up to nstat's"
    );
    drop((queued, listener));
}
