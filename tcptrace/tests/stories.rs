//! The ways TCP fails, each made for real between two network namespaces joined by veth
//! (nftables drops or rejects in the server's namespace, sysctls lowered in the client's),
//! and what `tcptrace watch --timelines` says of each: why it ended, what it carried.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{
    leaker::inum_of,
    netns::{in_netns, sh, NetnsPair},
    require_root,
    serve::{sample, Serve},
};
use serde_json::Value;

/// Long enough for every scenario's kernel timer (about 3 s each) and a reconcile.
const WAIT: Duration = Duration::from_secs(30);

/// `watch --timelines --json` on `ports`, reconciling often, so that a connection the
/// reconcile wrongly closed would show up as `vanished` within the test.
fn watch(ports: &[u16]) -> Serve {
    let mut args = vec![
        "--timelines".to_owned(),
        "--json".to_owned(),
        "--reconcile-interval".to_owned(),
        "300ms".to_owned(),
    ];
    for port in ports {
        args.extend(["-P".to_owned(), port.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Serve::run("watch", &args)
}

/// The finished timelines printed so far and until `done` holds for them, then for two
/// reconciles more: a second timeline of the same socket would be caught too.
fn timelines_until(watch: &Serve, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut settle: Option<Instant> = None;
    loop {
        if settle.is_none() && done(&seen) {
            settle = Some(Instant::now() + Duration::from_millis(800));
        }
        let until = settle.unwrap_or(deadline);
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match watch.output.recv_timeout(left) {
            Ok(line) => {
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("watch --json printed {line:?}: {e}"));
                // Timelines carry a lifecycle; event lines do not.
                if value.get("lifecycle").is_some() {
                    seen.push(value);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => panic!("watch stopped printing: {e}"),
        }
    }
    assert!(
        done(&seen),
        "never printed the expected timelines: {seen:#?}"
    );
    seen
}

/// The timelines of the socket at `local` in namespace `netns`.
fn of_socket(timelines: &[Value], netns: u32, local: SocketAddr) -> Vec<Value> {
    timelines
        .iter()
        .filter(|t| t["netns"] == netns && t["local"] == local.to_string())
        .cloned()
        .collect()
}

/// The one timeline of the socket at `local` in `netns`, once it is printed.
fn the_timeline(watch: &Serve, netns: u32, local: SocketAddr) -> Value {
    let timelines = timelines_until(watch, |t| !of_socket(t, netns, local).is_empty());
    let mine = of_socket(&timelines, netns, local);
    assert_eq!(mine.len(), 1, "exactly one timeline for {local}: {mine:#?}");
    mine.into_iter().next().unwrap()
}

fn setsockopt_int(stream: &TcpStream, level: i32, name: i32, value: i32) {
    // SAFETY: a valid socket fd and a correctly sized int option.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt: {}", std::io::Error::last_os_error());
}

fn sysctl(ns: &str, setting: &str) {
    sh("ip", &["netns", "exec", ns, "sysctl", "-qw", setting]);
}

/// A listener in the pair's server namespace (b).
fn listen_in(pair: &NetnsPair, port: u16) -> TcpListener {
    let addr = SocketAddr::from((pair.addr_b, port));
    in_netns(&pair.b, || {
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
    })
}

/// A connection from the client namespace (a) to `port` in b: the stream, or the error.
fn connect_from_a(pair: &NetnsPair, port: u16) -> std::io::Result<TcpStream> {
    let addr = SocketAddr::from((pair.addr_b, port));
    in_netns(&pair.a, || TcpStream::connect_timeout(&addr, WAIT))
}

/// Reads until the connection fails; the error.
fn read_until_error(stream: &mut TcpStream) -> std::io::Error {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => panic!("the peer closed in order; expected the connection to fail"),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                // SO_RCVTIMEO expiring says EAGAIN; the kernel's ETIMEDOUT is an error code.
                if e.raw_os_error() == Some(libc::ETIMEDOUT) {
                    return e;
                }
                panic!("nothing ended the connection within {WAIT:?}");
            }
            Err(e) => return e,
        }
    }
}

/// Drops every packet that reaches namespace `ns`.
const DROP_ALL: &str = "table inet tcptrace_test {
    chain input { type filter hook input priority 0; policy drop; }
}";

fn metric(watch: &Serve, name: &str, labels: &str) -> f64 {
    sample(&watch.metrics(), name, labels).unwrap_or(0.0)
}

#[test]
#[ignore = "needs root"]
fn a_dead_peer_found_by_keepalive_is_a_keepalive_timeout() {
    require_root();
    const PORT: u16 = 24101;
    let pair = NetnsPair::create("tt-ka", 51);
    let watch = watch(&[PORT]);
    let listener = listen_in(&pair, PORT);
    let mut client = connect_from_a(&pair, PORT).expect("connect");
    // TCP_KEEPIDLE 1 s, TCP_KEEPINTVL 1 s, TCP_KEEPCNT 2: dead after about 3 s.
    setsockopt_int(&client, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    setsockopt_int(&client, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 1);
    setsockopt_int(&client, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 1);
    setsockopt_int(&client, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 2);
    let (_server, _) = listener.accept().expect("accept");
    let local = client.local_addr().unwrap();
    // The peer dies silently: its namespace drops everything.
    pair.nft(&pair.b, DROP_ALL);
    let err = read_until_error(&mut client);
    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}");

    let timeline = the_timeline(&watch, inum_of(&pair.a), local);
    assert_eq!(
        timeline["lifecycle"]["close"], "keepalive_timeout",
        "{timeline:#}"
    );
    assert_eq!(timeline["direction"], "active");
    assert_eq!(timeline["vanished"], false);
    assert_eq!(timeline["closed_with"]["error"], "ETIMEDOUT");
    assert_eq!(timeline["closed_with"]["probes"], 2, "{timeline:#}");
    assert_eq!(timeline["closed_with"]["timeouts"], 0);
    assert_eq!(
        metric(
            &watch,
            "tcptrace_connections_closed_total",
            "kind=\"keepalive_timeout\""
        ),
        1.0
    );
    assert_eq!(
        metric(
            &watch,
            "tcptrace_connections_closed_total",
            "kind=\"vanished\""
        ),
        0.0
    );
    // The API lists it among the recently closed, with its owner.
    let closed = watch.json("/api/closed?kind=keepalive_timeout");
    assert_eq!(closed["matching"], 1, "{closed:#}");
    let row = &closed["connections"][0];
    assert_eq!(row["local"], local.to_string());
    assert_eq!(row["netns"], inum_of(&pair.a));
    assert_eq!(row["owner"]["pid"], std::process::id());
    assert_eq!(row["carried"]["error"], "ETIMEDOUT");
    let (status, body) = watch.get("/api/closed?kind=crashed");
    assert_eq!(status, 400, "{body}");
}

#[test]
#[ignore = "needs root"]
fn data_unacknowledged_through_every_retransmission_is_timed_out() {
    require_root();
    const PORT: u16 = 24102;
    let pair = NetnsPair::create("tt-rto", 52);
    // tcp_retries2 3: gives up after about 3 s of RTOs (200 ms doubling) instead of 15 min.
    sysctl(&pair.a, "net.ipv4.tcp_retries2=3");
    let watch = watch(&[PORT]);
    let listener = listen_in(&pair, PORT);
    let mut client = connect_from_a(&pair, PORT).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let local = client.local_addr().unwrap();
    // A first exchange, so the connection has an RTT.
    client.write_all(b"hello").unwrap();
    let mut hello = [0u8; 5];
    server.read_exact(&mut hello).unwrap();

    let retrans_before = pair.retrans_segs(&pair.a);
    pair.nft(&pair.b, DROP_ALL);
    client.write_all(&[7u8; 1000]).unwrap();
    let err = read_until_error(&mut client);
    assert_eq!(err.raw_os_error(), Some(libc::ETIMEDOUT), "{err}");
    let retransmitted = pair.retrans_segs(&pair.a) - retrans_before;
    assert!(retransmitted >= 3, "only {retransmitted} retransmits");

    let timeline = the_timeline(&watch, inum_of(&pair.a), local);
    assert_eq!(timeline["lifecycle"]["close"], "timed_out", "{timeline:#}");
    assert_eq!(timeline["direction"], "active");
    // Every retransmitted segment is a mark on the timeline, and the kernel's own count.
    assert_eq!(timeline["retransmits"], retransmitted, "{timeline:#}");
    let carried = &timeline["closed_with"];
    assert_eq!(carried["total_retransmits"], retransmitted);
    assert_eq!(carried["error"], "ETIMEDOUT");
    // "hello" arrived; the 1,000 bytes never did.
    assert_eq!(carried["bytes_sent"], 5, "{carried:#}");
    assert_eq!(carried["unacked_bytes"], 1000);
    assert_eq!(
        metric(
            &watch,
            "tcptrace_connections_closed_total",
            "kind=\"timed_out\""
        ),
        1.0
    );
}

#[test]
#[ignore = "needs root"]
fn an_icmp_unreachable_ends_a_handshake_and_an_established_connection() {
    require_root();
    const HANDSHAKE: u16 = 24103;
    const ESTABLISHED: u16 = 24104;
    let pair = NetnsPair::create("tt-unr", 53);
    sysctl(&pair.a, "net.ipv4.tcp_retries2=3");
    let watch = watch(&[HANDSHAKE, ESTABLISHED]);
    let _listener = listen_in(&pair, ESTABLISHED);
    let mut established = connect_from_a(&pair, ESTABLISHED).expect("connect");
    let established_local = established.local_addr().unwrap();
    // The server's namespace answers both ports with ICMP host-unreachable.
    pair.nft(
        &pair.b,
        &format!(
            "table inet tcptrace_test {{
                chain input {{ type filter hook input priority 0;
                    tcp dport {{ {HANDSHAKE}, {ESTABLISHED} }} reject with icmp type host-unreachable;
                }}
            }}"
        ),
    );
    // A blocking connect() sleeps unlocked, so the kernel ends the socket with the
    // ICMP error itself (a non-blocking one may meet it locked: then the error is soft
    // and the application closes the socket).
    let addr = SocketAddr::from((pair.addr_b, HANDSHAKE));
    let refused = in_netns(&pair.a, || TcpStream::connect(addr)).expect_err("the SYN is rejected");
    assert_eq!(
        refused.raw_os_error(),
        Some(libc::EHOSTUNREACH),
        "{refused}"
    );
    // Established: the ICMP errors are soft (RFC 1122 4.2.3.9); the kernel keeps
    // retransmitting and, when it gives up, reports the ICMP error it saw.
    established.write_all(&[1u8; 100]).unwrap();
    let err = read_until_error(&mut established);
    assert_eq!(err.raw_os_error(), Some(libc::EHOSTUNREACH), "{err}");

    let netns = inum_of(&pair.a);
    let timelines = timelines_until(&watch, |t| {
        t.iter()
            .filter(|t| t["netns"] == netns && t["lifecycle"]["close"].is_string())
            .count()
            >= 2
    });
    let handshake: Vec<&Value> = timelines
        .iter()
        .filter(|t| t["remote"] == format!("{}:{HANDSHAKE}", pair.addr_b))
        .collect();
    assert_eq!(handshake.len(), 1, "{timelines:#?}");
    assert_eq!(
        handshake[0]["lifecycle"]["close"], "unreachable",
        "{:#}",
        handshake[0]
    );
    assert_eq!(handshake[0]["closed_with"]["error"], "EHOSTUNREACH");
    let after = of_socket(&timelines, netns, established_local);
    assert_eq!(after.len(), 1, "{timelines:#?}");
    assert_eq!(
        after[0]["lifecycle"]["close"], "unreachable",
        "{:#}",
        after[0]
    );
    assert_eq!(after[0]["closed_with"]["error"], "EHOSTUNREACH");
    assert_eq!(
        metric(
            &watch,
            "tcptrace_connect_failures_total",
            "reason=\"unreachable\""
        ),
        1.0
    );
    assert_eq!(
        metric(
            &watch,
            "tcptrace_connections_closed_total",
            "kind=\"unreachable\""
        ),
        2.0
    );
}

#[test]
#[ignore = "needs root"]
fn a_dropped_syn_times_out_and_a_closed_port_refuses() {
    require_root();
    const DROPPED: u16 = 24105;
    const CLOSED: u16 = 24106;
    let pair = NetnsPair::create("tt-syn", 54);
    // One SYN retry: connect() gives up after 1 + 2 s.
    sysctl(&pair.a, "net.ipv4.tcp_syn_retries=1");
    let watch = watch(&[DROPPED, CLOSED]);
    pair.nft(
        &pair.b,
        &format!(
            "table inet tcptrace_test {{
                chain input {{ type filter hook input priority 0; tcp dport {DROPPED} drop; }}
            }}"
        ),
    );
    let timed_out = connect_from_a(&pair, DROPPED).expect_err("the SYNs are dropped");
    assert_eq!(
        timed_out.raw_os_error(),
        Some(libc::ETIMEDOUT),
        "{timed_out}"
    );
    let refused = connect_from_a(&pair, CLOSED).expect_err("nothing listens");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");

    let netns = inum_of(&pair.a);
    let to = |port: u16| format!("{}:{port}", pair.addr_b);
    let timelines = timelines_until(&watch, |t| {
        t.iter().filter(|t| t["netns"] == netns).count() >= 2
    });
    for (port, kind, error) in [
        (DROPPED, "syn_timeout", "ETIMEDOUT"),
        (CLOSED, "refused", "ECONNREFUSED"),
    ] {
        let mine: Vec<&Value> = timelines
            .iter()
            .filter(|t| t["remote"] == to(port))
            .collect();
        assert_eq!(mine.len(), 1, "{timelines:#?}");
        assert_eq!(mine[0]["lifecycle"]["close"], kind, "{:#}", mine[0]);
        assert_eq!(mine[0]["closed_with"]["error"], error);
        assert_eq!(mine[0]["direction"], "active");
    }
    for reason in ["syn_timeout", "refused"] {
        assert_eq!(
            metric(
                &watch,
                "tcptrace_connect_failures_total",
                &format!("reason=\"{reason}\"")
            ),
            1.0,
            "{reason}"
        );
    }
}

/// `ss -tin` in `ns` for the socket at `local`: its srtt in µs.
fn ss_srtt_us(ns: &str, local: SocketAddr) -> f64 {
    let out = sh(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "ss",
            "-Htin",
            "src",
            &local.to_string(),
        ],
    );
    // "… rtt:0.046/0.023 …": srtt/rttvar in ms.
    let rtt = out
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rtt:"))
        .and_then(|r| r.split('/').next())
        .and_then(|ms| ms.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no rtt in ss output {out:?}"));
    rtt * 1000.0
}

#[test]
#[ignore = "needs root"]
fn a_finished_connection_says_exactly_what_it_carried() {
    require_root();
    const PORT: u16 = 24107;
    const SENT: usize = 123_457;
    const RECEIVED: usize = 54_321;
    let pair = NetnsPair::create("tt-life", 55);
    let watch = watch(&[PORT]);
    let listener = listen_in(&pair, PORT);
    let mut client = connect_from_a(&pair, PORT).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let (client_local, server_local) = (client.local_addr().unwrap(), server.local_addr().unwrap());
    let writer = std::thread::spawn(move || {
        client.write_all(&vec![1u8; SENT]).unwrap();
        client
    });
    let mut got = vec![0u8; SENT];
    server.read_exact(&mut got).unwrap();
    let mut client = writer.join().unwrap();
    server.write_all(&vec![2u8; RECEIVED]).unwrap();
    let mut back = vec![0u8; RECEIVED];
    client.read_exact(&mut back).unwrap();
    // The kernel's srtt just before the close, as ss shows it.
    let srtt_before_us = ss_srtt_us(&pair.a, client_local);
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(server.read(&mut [0u8; 1]).unwrap(), 0, "the client's FIN");
    drop(server);
    assert_eq!(client.read(&mut [0u8; 1]).unwrap(), 0, "the server's FIN");
    drop(client);

    let ends = [
        (inum_of(&pair.a), client_local),
        (inum_of(&pair.b), server_local),
    ];
    let timelines = timelines_until(&watch, |t| {
        ends.iter()
            .all(|(netns, local)| !of_socket(t, *netns, *local).is_empty())
    });
    let [client_side, server_side] = ends.map(|(netns, local)| {
        let mine = of_socket(&timelines, netns, local);
        assert_eq!(mine.len(), 1, "{timelines:#?}");
        mine[0].clone()
    });
    for (side, sent, received) in [
        (&client_side, SENT, RECEIVED),
        (&server_side, RECEIVED, SENT),
    ] {
        let carried = &side["closed_with"];
        assert_eq!(carried["bytes_sent"], sent, "{side:#}");
        assert_eq!(carried["bytes_received"], received, "{side:#}");
        assert_eq!(carried["unacked_bytes"], 0);
        assert!(carried["error"].is_null());
    }
    assert_eq!(client_side["lifecycle"]["close"], "active_close");
    assert_eq!(server_side["lifecycle"]["close"], "passive_close");
    // The close's FIN exchange adds an RTT sample or two to the average (7/8 weight
    // on the old value each), so: within 10%, or 100 µs on this veth's tens of µs.
    let srtt_at_close_us = client_side["closed_with"]["srtt_us"].as_f64().unwrap();
    let bound = (srtt_before_us * 0.1).max(100.0);
    assert!(
        (srtt_at_close_us - srtt_before_us).abs() <= bound,
        "srtt {srtt_at_close_us} µs at close, {srtt_before_us} µs in ss before it"
    );
    let metrics = watch.metrics();
    let bytes = |name: &str, direction: &str| {
        sample(&metrics, name, &format!("direction=\"{direction}\"")).unwrap_or(0.0)
    };
    assert_eq!(
        bytes("tcptrace_connection_sent_bytes_total", "active"),
        SENT as f64
    );
    assert_eq!(
        bytes("tcptrace_connection_received_bytes_total", "active"),
        RECEIVED as f64
    );
    assert_eq!(
        bytes("tcptrace_connection_sent_bytes_total", "passive"),
        RECEIVED as f64
    );
    assert_eq!(
        bytes("tcptrace_connection_received_bytes_total", "passive"),
        SENT as f64
    );
    for direction in ["active", "passive"] {
        assert_eq!(
            sample(
                &metrics,
                "tcptrace_connection_duration_seconds_count",
                &format!("direction=\"{direction}\"")
            ),
            Some(1.0),
            "{direction}"
        );
    }
}
