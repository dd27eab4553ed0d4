//! Privileged: loads the real programs into the running kernel and drives real sockets,
//! asserting the exact per-socket sequences the kernel reports. Ignored without root
//! (`#[ignore = "needs root"]`).

mod common;

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream},
    time::Duration,
};

use common::*;
use tcptrace::{
    event::{EventKind, TcpEvent},
    probe::KernelFilter,
    state::TcpState::{self, *},
};

/// Ports below the ephemeral range (DESIGN.md §6), one per test so they can run in
/// parallel with their own kernel filter.
const PORT_ACTIVE_V4: u16 = 21001;
const PORT_ACTIVE_V6: u16 = 21002;
const PORT_REFUSED: u16 = 21003;
const PORT_LINGER: u16 = 21004;
const PORT_FILTERED_IN: u16 = 21005;
const PORT_FILTERED_OUT: u16 = 21006;
const PORT_RETRANSMIT: u16 = 21007;

fn port_filter(ports: &[u16]) -> KernelFilter {
    KernelFilter {
        ports: ports.to_vec(),
        family: None,
        netns: None,
    }
}

const CLIENT_ACTIVE_CLOSE: [(TcpState, TcpState); 5] = [
    (Close, SynSent),
    (SynSent, Established),
    (Established, FinWait1),
    (FinWait1, FinWait2),
    // TIME_WAIT goes to a timewait mini-socket: the full socket closes (DESIGN.md §1).
    (FinWait2, Close),
];
const SERVER_PASSIVE_CLOSE: [(TcpState, TcpState); 5] = [
    (Listen, SynRecv),
    (SynRecv, Established),
    (Established, CloseWait),
    (CloseWait, LastAck),
    (LastAck, Close),
];

/// Client connects, client closes first, then the server: the textbook four-way close.
fn active_close_scenario(ip: IpAddr, port: u16) {
    let mut harness = Harness::start(port_filter(&[port]));
    let server_addr = SocketAddr::new(ip, port);
    let listener = listen(server_addr);
    let mut client = TcpStream::connect(server_addr).expect("connect");
    let client_addr = client.local_addr().unwrap();
    let (mut accepted, _) = listener.accept().expect("accept");
    client.write_all(b"hello").unwrap();
    let mut buf = [0; 5];
    accepted.read_exact(&mut buf).unwrap();
    pause();
    drop(client);
    pause();
    drop(accepted);
    drop(listener);

    let events = harness.collect_until(Duration::from_secs(5), |e| closes(e) >= 3);
    let client_events =
        socket_starting_with(events, Close, SynSent).expect("no client connect event");
    let server_events =
        socket_starting_with(events, Listen, SynRecv).expect("no accepted child socket");

    assert_eq!(
        transitions(&client_events),
        CLIENT_ACTIVE_CLOSE,
        "{client_events:#?}"
    );
    assert_eq!(
        client_events.len(),
        5,
        "no retransmit/reset expected: {client_events:#?}"
    );
    assert_eq!(
        client_events[0].task.pid,
        std::process::id(),
        "connect() runs in the client's own context"
    );
    // The kernel fills the task only where it is the owner (connect, close, listen):
    // elsewhere it would be whatever task a softirq interrupted.
    for e in client_events.iter().chain(&server_events) {
        let me = std::process::id();
        let (pid, comm_empty) = (e.task.pid, e.task.comm.as_str().is_empty());
        if e.task_is_owner() {
            assert_eq!((pid, comm_empty), (me, false), "{e:#?}");
        } else {
            assert_eq!((pid, comm_empty), (0, true), "{e:#?}");
        }
    }
    assert_eq!(
        transitions(&server_events),
        SERVER_PASSIVE_CLOSE,
        "{server_events:#?}"
    );
    assert_eq!(server_events.len(), 5, "{server_events:#?}");

    // Addresses: from SYN_SENT→ESTABLISHED on, the client's own port is known.
    for e in &client_events[1..] {
        assert_eq!((e.local, e.remote), (client_addr, server_addr), "{e:#?}");
    }
    assert_eq!(client_events[0].remote, server_addr);
    for e in &server_events {
        assert_eq!((e.local, e.remote), (server_addr, client_addr), "{e:#?}");
    }
    // The listener itself: LISTEN→CLOSE in our own context when we drop it.
    let listener_events = by_socket(events)
        .into_iter()
        .find(|evs| {
            evs.iter().any(|e| {
                e.kind
                    == EventKind::StateChange {
                        old: Listen,
                        new: Close,
                    }
            })
        })
        .expect("no listener close event");
    // It was made after the probe started, so its whole life is there.
    assert_eq!(
        transitions(&listener_events),
        [(Close, Listen), (Listen, Close)]
    );
    assert!(listener_events
        .iter()
        .all(|e| e.task.pid == std::process::id()));
}

#[test]
#[ignore = "needs root"]
fn ipv4_client_active_close_and_server_passive_close() {
    require_root();
    active_close_scenario(IpAddr::from([127, 0, 0, 1]), PORT_ACTIVE_V4);
}

#[test]
#[ignore = "needs root"]
fn ipv6_client_active_close_and_server_passive_close() {
    require_root();
    active_close_scenario(IpAddr::V6(Ipv6Addr::LOCALHOST), PORT_ACTIVE_V6);
    // active_close_scenario compares whole SocketAddrs, which for V6 compares all 16
    // address bytes: ::1 is 15 zero bytes and a 1.
}

#[test]
#[ignore = "needs root"]
fn connect_to_a_closed_port_is_refused_with_a_reset() {
    require_root();
    let mut harness = Harness::start(port_filter(&[PORT_REFUSED]));
    let target = SocketAddr::from(([127, 0, 0, 1], PORT_REFUSED));
    let err = TcpStream::connect(target).expect_err("nothing listens there");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);

    let events = harness.collect_until(Duration::from_secs(5), |e| closes(e) >= 1);
    let client = socket_starting_with(events, Close, SynSent).expect("no connect event");
    assert_eq!(
        kinds(&client),
        [
            change(Close, SynSent),
            EventKind::ReceiveReset {
                state: Some(SynSent)
            },
            change(SynSent, Close),
        ],
        "{client:#?}"
    );
    // The RST came from the kernel on behalf of no socket, for the closed port.
    let sent: Vec<&TcpEvent> = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::SendReset { .. }))
        .collect();
    assert_eq!(sent.len(), 1, "{events:#?}");
    assert_eq!(sent[0].kind, EventKind::SendReset { state: None });
    assert_eq!(sent[0].skaddr, 0);
    assert_eq!(sent[0].local, target);
    assert_eq!(sent[0].remote, client[2].local);
    assert_eq!(events.len(), 4, "{events:#?}");
}

#[test]
#[ignore = "needs root"]
fn linger_zero_close_aborts_with_a_sent_reset() {
    require_root();
    let mut harness = Harness::start(port_filter(&[PORT_LINGER]));
    let server_addr = SocketAddr::from(([127, 0, 0, 1], PORT_LINGER));
    let listener = listen(server_addr);
    let client = TcpStream::connect(server_addr).expect("connect");
    let (accepted, _) = listener.accept().expect("accept");
    set_linger_zero(&client);
    pause();
    drop(client);

    let events = harness.collect_until(Duration::from_secs(5), |e| closes(e) >= 2);
    let client = socket_starting_with(events, Close, SynSent).expect("no connect event");
    // tcp_disconnect() sets CLOSE first, then tcp_send_active_reset() reports the
    // socket's state, by then CLOSE (net/ipv4/tcp.c).
    assert_eq!(
        kinds(&client),
        [
            change(Close, SynSent),
            change(SynSent, Established),
            change(Established, Close),
            EventKind::SendReset { state: Some(Close) },
        ],
        "{client:#?}"
    );
    let server = socket_starting_with(events, Listen, SynRecv).expect("no child socket");
    assert_eq!(
        kinds(&server),
        [
            change(Listen, SynRecv),
            change(SynRecv, Established),
            EventKind::ReceiveReset {
                state: Some(Established)
            },
            change(Established, Close),
        ],
        "{server:#?}"
    );
    drop(accepted);
}

#[test]
#[ignore = "needs root"]
fn port_filter_keeps_other_ports_out_in_the_kernel() {
    require_root();
    let mut harness = Harness::start(port_filter(&[PORT_FILTERED_IN]));
    for port in [PORT_FILTERED_OUT, PORT_FILTERED_IN] {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = listen(addr);
        let client = TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        drop(client);
        pause();
        drop(accepted);
    }
    let events = harness.collect_until(Duration::from_secs(5), |e| closes(e) >= 3);
    let touches = |e: &TcpEvent, port| e.local.port() == port || e.remote.port() == port;
    assert!(
        events.iter().all(|e| !touches(e, PORT_FILTERED_OUT)),
        "an unfiltered port's event got through: {events:#?}"
    );
    // The filtered-in port's connection is all there: listener open + both sockets' lives.
    assert_eq!(closes(events), 3, "{events:#?}");
    assert_eq!(
        transitions(&socket_starting_with(events, Close, SynSent).unwrap()),
        CLIENT_ACTIVE_CLOSE
    );
    assert!(events.iter().all(|e| touches(e, PORT_FILTERED_IN)));
}

/// Retransmit events are per skb (DESIGN.md §5). With GSO/TSO/GRO off on the veths,
/// one skb is one segment, so the kernel's own counter must satisfy, summed over both
/// namespaces:
///   ΔTcpRetransSegs = #tcp_retransmit_skb{err == 0} + #tcp_retransmit_synack
/// (failed retransmits, err != 0, are counted in TCPRetransFail instead).
#[test]
#[ignore = "needs root"]
fn retransmit_events_equal_the_kernels_retrans_segs() {
    require_root();
    let pair = netns::NetnsPair::create("tt-rtx", 7);
    // Drop 5% of data segments arriving at the server; leave the handshake alone so the
    // test does not wait on SYN timeouts.
    pair.nft(
        &pair.b,
        &format!(
            "table inet tcptrace_test {{\n chain input {{\n  type filter hook input priority 0;\n  \
             tcp dport {PORT_RETRANSMIT} meta length > 200 numgen random mod 100 < 5 drop\n }}\n}}\n"
        ),
    );
    let before = pair.retrans_segs(&pair.a) + pair.retrans_segs(&pair.b);
    let mut harness = Harness::start(port_filter(&[PORT_RETRANSMIT]));

    const BYTES: usize = 2 << 20;
    let server_addr = SocketAddr::from((pair.addr_b, PORT_RETRANSMIT));
    let listener = netns::in_netns(&pair.b, || listen(server_addr));
    std::thread::scope(|scope| {
        let server = scope.spawn(|| {
            let (mut conn, _) = listener.accept().expect("accept");
            conn.set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let mut received = Vec::new();
            conn.read_to_end(&mut received).expect("read");
            received.len()
        });
        netns::in_netns(&pair.a, || {
            let mut client =
                TcpStream::connect_timeout(&server_addr, Duration::from_secs(10)).expect("connect");
            client
                .set_write_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            client.write_all(&vec![0x5a; BYTES]).expect("write");
        });
        assert_eq!(server.join().unwrap(), BYTES);
    });
    drop(listener);
    // Let the last retransmits and the close finish before reading the counters: the
    // close's FIN can itself be retransmitted after the data is all in, so read until
    // the kernel's counter and the events both stop moving.
    harness.collect_until(Duration::from_secs(10), |e| closes(e) >= 3);
    let mut after = pair.retrans_segs(&pair.a) + pair.retrans_segs(&pair.b);
    let mut settled = false;
    for _ in 0..20 {
        let seen = harness.events.len();
        harness.collect_until(Duration::from_millis(300), |_| false);
        let now = pair.retrans_segs(&pair.a) + pair.retrans_segs(&pair.b);
        if now == after && harness.events.len() == seen {
            settled = true;
            break;
        }
        after = now;
    }
    assert!(
        settled,
        "the retransmit counters and the events still moved after 6 s"
    );
    let events = &harness.events;

    let sent_ok = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Retransmit { err: 0, .. }))
        .count() as u64;
    let synack = events
        .iter()
        .filter(|e| e.kind == EventKind::RetransmitSynack)
        .count() as u64;
    // err == -EBUSY (the original still in the host queue) is neither sent nor counted
    // in TcpRetransSegs or TCPRetransFail: seen here in most runs.
    let not_sent = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Retransmit { err, .. } if err != 0))
        .count();
    assert!(sent_ok > 0, "5% loss produced no retransmit: {events:#?}");
    assert_eq!(
        sent_ok + synack,
        after - before,
        "tcptrace saw {sent_ok} sent retransmits + {synack} SYN-ACK retransmits \
         ({not_sent} not sent, err != 0); nstat says {}",
        after - before
    );
    assert_eq!(harness.probe.kernel_counters().unwrap().lost, 0);
}
