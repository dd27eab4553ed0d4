//! Privileged: connection timelines from the real kernel, seeding and TIME_WAIT levels
//! checked against what the kernel itself reports (sock_diag through `ss`).

mod common;

use std::{
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use common::*;
use tcptrace::{
    clock::monotonic_now_ns,
    daemon::snapshot_of,
    detect::TimeWaitReport,
    probe::KernelFilter,
    state::TcpState,
    timeline,
    tracker::{classify, close_shape, CloseKind, CloseShape, Direction, Tracker},
};

const PORT_PAIRED: u16 = 22001;
const PORT_CLOSE_WAIT: u16 = 22002;

fn filter(port: u16) -> KernelFilter {
    KernelFilter {
        ports: vec![port],
        family: None,
        netns: None,
    }
}

#[test]
#[ignore = "needs root"]
fn both_loopback_ends_are_paired_and_classified() {
    require_root();
    let mut harness = Harness::start(filter(PORT_PAIRED));
    let server_addr = SocketAddr::from(([127, 0, 0, 1], PORT_PAIRED));
    let listener = listen(server_addr);
    let client = TcpStream::connect(server_addr).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    pause();
    drop(client);
    pause();
    drop(accepted);
    let events = harness
        .collect_until(Duration::from_secs(5), |e| closes(e) >= 2)
        .to_vec();

    let mut tracker = Tracker::new(1024, 64);
    for e in &events {
        tracker.apply(e);
    }
    let client = tracker
        .finished()
        .find(|c| c.direction == Direction::Active)
        .expect("client timeline");
    let server = tracker.partner(client).expect("the two ends are paired");
    assert_eq!(tracker.partner(server).unwrap().id, client.id);

    let (c, s) = (classify(client), classify(server));
    assert_eq!((c.close, c.time_wait), (Some(CloseKind::ActiveClose), true));
    assert_eq!(
        (s.close, s.time_wait),
        (Some(CloseKind::PassiveClose), false)
    );
    assert_eq!(s.direction, Direction::Passive);
    assert!(c.handshake_ns.is_some() && s.handshake_ns.is_some());
    assert_eq!(client.owner().unwrap().pid, std::process::id());
    assert_eq!(
        server.owner().unwrap().pid,
        std::process::id(),
        "the listener's owner"
    );
    // The client was orphaned by close(): its timewait socket acknowledged the server's
    // FIN after the server had received the ACK of the client's FIN.
    assert_eq!(close_shape(client, server), Some(CloseShape::FourWay));
    let diagram = timeline::sequence_diagram(client, server);
    let arrows: Vec<&str> = diagram
        .lines()
        .filter_map(|l| {
            ["SYN+ACK", "SYN", "ACK", "FIN"]
                .into_iter()
                .find(|seg| l.contains(&format!("─{seg}─")))
        })
        .collect();
    assert_eq!(
        arrows,
        ["SYN", "SYN+ACK", "ACK", "FIN", "ACK", "FIN", "ACK"],
        "\n{diagram}"
    );
    drop(listener);
}

#[test]
#[ignore = "needs root"]
fn close_wait_sockets_made_before_tcptrace_starts_are_seeded() {
    require_root();
    const N: usize = 5;
    let server_addr = SocketAddr::from(([127, 0, 0, 1], PORT_CLOSE_WAIT));
    let listener = listen(server_addr);
    let mut held = close_wait_sockets(&listener, N);
    pause();
    assert_eq!(ss_count("close-wait", PORT_CLOSE_WAIT), N);

    // tcptrace starts now: attach, then the startup dump.
    let mut harness = Harness::start(filter(PORT_CLOSE_WAIT));
    let mut tracker = Tracker::new(1024, 64);
    let report = tracker.seed(
        &snapshot_of(&own_dump().dumps, &[], monotonic_now_ns()),
        monotonic_now_ns(),
    );
    assert!(report.added >= N as u64);
    let close_wait = |t: &Tracker| {
        t.live()
            .filter(|c| c.state() == TcpState::CloseWait && c.local() == server_addr)
            .count()
    };
    assert_eq!(close_wait(&tracker), N);
    assert!(tracker
        .live()
        .filter(|c| c.local() == server_addr)
        .all(|c| c.seen_since_start));

    // Closing one now continues its seeded story from events.
    drop(held.pop());
    for e in harness.collect_until(Duration::from_secs(5), |e| closes(e) >= 1) {
        tracker.apply(e);
    }
    assert_eq!(close_wait(&tracker), N - 1);
    assert_eq!(ss_count("close-wait", PORT_CLOSE_WAIT), N - 1);
    let closed = tracker
        .finished()
        .next_back()
        .expect("a finished connection");
    assert_eq!(
        closed.steps().iter().map(|s| s.state).collect::<Vec<_>>(),
        [TcpState::CloseWait, TcpState::LastAck, TcpState::Close]
    );
    assert_eq!(classify(closed).close, Some(CloseKind::PassiveClose));
    drop(listener);
}

#[test]
#[ignore = "needs root"]
fn time_wait_level_equals_what_ss_counts() {
    require_root();
    const N: usize = 20;
    let port = time_wait_port(23000);
    let server_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = listen(server_addr);
    time_wait_sockets(&listener, N);
    std::thread::sleep(Duration::from_millis(100));
    let dumps = own_dump().dumps;
    let report = TimeWaitReport::new(&dumps, None, usize::MAX, 0.5);
    let ss = ss_count("time-wait", port);
    assert_eq!(ss, N, "the kernel should hold N TIME_WAIT sockets");
    let own = own_namespace().inum;
    let toward_server: Vec<_> = report
        .top_remotes
        .iter()
        .filter(|r| r.remote == server_addr)
        .map(|r| (r.netns, r.sockets))
        .collect();
    assert_eq!(toward_server, [(own, N as u64)]);
    assert!(report.in_namespace(own).unwrap() >= N as u64);
    drop(listener);
}
