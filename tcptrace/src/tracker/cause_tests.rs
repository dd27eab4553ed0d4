//! Why connections end and what they carried, on synthetic streams whose →CLOSE carries
//! the socket's state as the kernel side reads it.

use super::*;
use crate::{
    event::{EventKind, SocketAtClose, TcpEvent},
    state::TcpState::{self, *},
    testing::*,
};

fn tracker() -> Tracker {
    Tracker::new(64, 64)
}

fn run(tracker: &mut Tracker, events: &[TcpEvent]) -> Connection {
    for e in events {
        tracker.apply(e);
    }
    tracker.finished().next_back().expect("finished").clone()
}

/// The client's →CLOSE at `ms` from `old`, with the socket as the kernel left it.
fn client_close(sk: u64, ms: u64, old: TcpState, kernel: SocketAtClose) -> TcpEvent {
    let mut e = client(sk, ms, old, Close);
    e.close = Some(kernel);
    e
}

fn retransmit(sk: u64, ms: u64, state: TcpState) -> TcpEvent {
    event(
        sk,
        ms,
        EventKind::Retransmit { state, err: 0 },
        "127.0.0.1:40000",
        SERVER,
        0,
    )
}

fn sent_reset(sk: u64, ms: u64, state: TcpState) -> TcpEvent {
    event(
        sk,
        ms,
        EventKind::SendReset { state: Some(state) },
        CLIENT,
        SERVER,
        0,
    )
}

const ESTABLISHED: fn(u64) -> [TcpEvent; 2] = |sk| {
    [
        client(sk, 0, Close, SynSent),
        client(sk, 1, SynSent, Established),
    ]
};

fn close_of(conn: &Connection) -> Option<CloseKind> {
    classify(conn).close
}

#[test]
fn keepalive_gives_up_with_probes_out_and_no_timeouts_even_though_it_sends_a_rst() {
    let mut t = tracker();
    let mut events = ESTABLISHED(1).to_vec();
    // tcp_keepalive_timer(): tcp_send_active_reset(), then tcp_write_err().
    events.push(sent_reset(1, 4000, Established));
    events.push(client_close(
        1,
        4000,
        Established,
        SocketAtClose {
            error: libc::ETIMEDOUT,
            probes: 2,
            bytes_acked: 1,
            ..SocketAtClose::default()
        },
    ));
    let conn = run(&mut t, &events);
    assert_eq!(close_of(&conn), Some(CloseKind::KeepaliveTimeout));
    assert_eq!(ConnectFailure::of(&classify(&conn)), None);
}

#[test]
fn retransmissions_that_run_out_are_a_timeout_and_an_icmp_error_behind_them_unreachable() {
    for (error, soft, expected) in [
        (libc::ETIMEDOUT, 0, CloseKind::TimedOut),
        // tcp_write_err() reports the soft error an ICMP message left.
        (
            libc::EHOSTUNREACH,
            libc::EHOSTUNREACH,
            CloseKind::Unreachable,
        ),
        (libc::ENETUNREACH, 0, CloseKind::Unreachable),
    ] {
        let mut t = tracker();
        let mut events = ESTABLISHED(1).to_vec();
        events.extend((0..3).map(|i| retransmit(1, 10 + i, Established)));
        events.push(client_close(
            1,
            3000,
            Established,
            SocketAtClose {
                error,
                soft_error: soft,
                timeouts: 3,
                total_retransmits: 3,
                ..SocketAtClose::default()
            },
        ));
        let conn = run(&mut t, &events);
        assert_eq!(close_of(&conn), Some(expected), "errno {error}");
        assert_eq!(conn.retransmits(), 3);
    }
}

#[test]
fn a_handshake_fails_by_timeout_refusal_icmp_or_the_application_giving_up() {
    let kernel = |error, soft_error| SocketAtClose {
        error,
        soft_error,
        unacked: 1,
        ..SocketAtClose::default()
    };
    for (close, expected, failure) in [
        (
            kernel(libc::ETIMEDOUT, 0),
            CloseKind::SynTimeout,
            ConnectFailure::SynTimeout,
        ),
        (
            kernel(libc::EHOSTUNREACH, 0),
            CloseKind::Unreachable,
            ConnectFailure::Unreachable,
        ),
        // A non-blocking connect() that met the ICMP error locked, then closed.
        (
            kernel(0, libc::EHOSTUNREACH),
            CloseKind::Unreachable,
            ConnectFailure::Unreachable,
        ),
        (
            kernel(0, 0),
            CloseKind::NeverEstablished,
            ConnectFailure::Abandoned,
        ),
    ] {
        let mut t = tracker();
        let conn = run(
            &mut t,
            &[
                client(1, 0, Close, SynSent),
                client_close(1, 3000, SynSent, close),
            ],
        );
        assert_eq!(close_of(&conn), Some(expected), "{close:?}");
        let life = classify(&conn);
        assert_eq!(ConnectFailure::of(&life), Some(failure));
        // The SYN was never acknowledged: nothing was sent, nothing lost.
        let carried = *conn.closed_with().unwrap();
        assert_eq!((carried.bytes_sent, carried.unacked_bytes), (0, 0));
    }
}

#[test]
fn a_rst_to_a_connect_is_refused_but_to_an_accepted_half_open_child_a_reset() {
    let mut t = tracker();
    let refused = run(
        &mut t,
        &[
            client(1, 0, Close, SynSent),
            event(
                1,
                1,
                EventKind::ReceiveReset {
                    state: Some(SynSent),
                },
                CLIENT,
                SERVER,
                0,
            ),
            client_close(
                1,
                1,
                SynSent,
                SocketAtClose {
                    error: libc::ECONNREFUSED,
                    ..Default::default()
                },
            ),
        ],
    );
    assert_eq!(close_of(&refused), Some(CloseKind::Refused));
    assert_eq!(
        ConnectFailure::of(&classify(&refused)),
        Some(ConnectFailure::Refused)
    );
    let child = run(
        &mut t,
        &[
            server(2, 0, Listen, SynRecv),
            event(
                2,
                1,
                EventKind::ReceiveReset {
                    state: Some(SynRecv),
                },
                SERVER,
                CLIENT,
                0,
            ),
            server(2, 1, SynRecv, Close),
        ],
    );
    assert_eq!(close_of(&child), Some(CloseKind::ResetReceived));
    assert_eq!(
        ConnectFailure::of(&classify(&child)),
        Some(ConnectFailure::Reset)
    );
}

#[test]
fn an_orderly_close_is_not_a_failure_whatever_it_carried() {
    let mut t = tracker();
    let mut events = ESTABLISHED(1).to_vec();
    events.extend([
        client(1, 10, Established, FinWait1),
        client(1, 11, FinWait1, FinWait2),
        client_close(
            1,
            12,
            FinWait2,
            SocketAtClose {
                // 1,000 bytes, plus the SYN and the FIN the peer acknowledged.
                bytes_acked: 1_002,
                // 300 bytes; the peer's FIN not yet (an orphan hands over first).
                bytes_received: 300,
                srtt_us: 42,
                ..SocketAtClose::default()
            },
        ),
    ]);
    let conn = run(&mut t, &events);
    assert_eq!(close_of(&conn), Some(CloseKind::ActiveClose));
    let carried = *conn.closed_with().unwrap();
    assert_eq!((carried.bytes_sent, carried.bytes_received), (1_000, 300));
    assert_eq!(carried.srtt_us, 42);
    assert_eq!(ConnectFailure::of(&classify(&conn)), None);
}

#[test]
fn the_passive_end_counts_neither_handshake_segment_but_both_fins() {
    let mut t = tracker();
    let mut close = server(2, 9, LastAck, Close);
    close.close = Some(SocketAtClose {
        // 300 bytes and its FIN; the SYN-ACK went before the child existed.
        bytes_acked: 301,
        // 1,000 bytes and the client's FIN.
        bytes_received: 1_001,
        peer_fin: true,
        ..SocketAtClose::default()
    });
    let conn = run(
        &mut t,
        &[
            server(2, 0, Listen, SynRecv),
            server(2, 1, SynRecv, Established),
            server(2, 5, Established, CloseWait),
            server(2, 8, CloseWait, LastAck),
            close,
        ],
    );
    let carried = *conn.closed_with().unwrap();
    assert_eq!((carried.bytes_sent, carried.bytes_received), (300, 1_000));
}

#[test]
fn bytes_never_acknowledged_are_counted_without_the_fin_that_followed_them() {
    let mut t = tracker();
    let mut events = ESTABLISHED(1).to_vec();
    events.extend([
        client(1, 10, Established, FinWait1),
        // The peer died: 500 bytes and the FIN stay unacknowledged.
        client_close(
            1,
            3000,
            FinWait1,
            SocketAtClose {
                bytes_acked: 101,
                unacked: 501,
                error: libc::ETIMEDOUT,
                timeouts: 3,
                ..SocketAtClose::default()
            },
        ),
    ]);
    let conn = run(&mut t, &events);
    let carried = *conn.closed_with().unwrap();
    assert_eq!((carried.bytes_sent, carried.unacked_bytes), (100, 500));
    assert_eq!(close_of(&conn), Some(CloseKind::TimedOut));
}

#[test]
fn a_connecting_socket_gets_its_port_from_a_syn_retransmit_or_the_dump_never_vanishes() {
    // connect() fires CLOSE→SYN_SENT before the port is chosen.
    let portless = "127.0.0.1:0";
    let opening = event(
        1,
        0,
        EventKind::StateChange {
            old: Close,
            new: SynSent,
        },
        portless,
        SERVER,
        100,
    );
    // Learned from the dump, which lists the connecting socket with its port.
    let mut t = tracker();
    t.apply(&opening);
    let report = t.reconcile(
        &snapshot(&[kernel_socket(SynSent, CLIENT, SERVER)], MS),
        2 * MS,
    );
    assert_eq!((report.closed, report.added), (0, 0), "{report:?}");
    let conn = t.live().next().unwrap();
    assert_eq!(conn.local(), addr(CLIENT));
    assert_eq!(conn.direction, Direction::Active);

    // Learned from a SYN retransmit, which carries it.
    let mut t = tracker();
    t.apply(&opening);
    t.apply(&retransmit(1, 1000, SynSent));
    assert_eq!(t.live().next().unwrap().local(), addr("127.0.0.1:40000"));

    // Two connecting sockets to the same peer: neither port is guessed, neither is
    // closed or added twice while both connect.
    let mut t = tracker();
    t.apply(&opening);
    let report = t.reconcile(
        &snapshot(
            &[
                kernel_socket(SynSent, "127.0.0.1:40001", SERVER),
                kernel_socket(SynSent, "127.0.0.1:40002", SERVER),
            ],
            MS,
        ),
        2 * MS,
    );
    assert_eq!((report.closed, report.added), (0, 0), "{report:?}");
    assert_eq!(t.live().next().unwrap().local(), addr(portless));
}

#[test]
fn a_port_is_never_taken_from_a_dump_older_than_the_connection_and_an_event_corrects_a_guess() {
    let portless = "127.0.0.1:0";
    let opening = |sk, ms| {
        event(
            sk,
            ms,
            EventKind::StateChange {
                old: Close,
                new: SynSent,
            },
            portless,
            SERVER,
            100,
        )
    };
    let established = |sk, ms, local: &str| {
        event(
            sk,
            ms,
            EventKind::StateChange {
                old: SynSent,
                new: Established,
            },
            local,
            SERVER,
            0,
        )
    };
    // Opened after the dump began: the dump's connecting socket is another one.
    let mut t = tracker();
    t.apply(&opening(1, 5));
    t.reconcile(
        &snapshot(&[kernel_socket(SynSent, "127.0.0.1:40001", SERVER)], MS),
        6 * MS,
    );
    assert_eq!(t.live().filter(|c| c.id.skaddr == 1).count(), 1);
    assert_eq!(
        t.live().find(|c| c.id.skaddr == 1).unwrap().local(),
        addr(portless),
        "not the dump's port"
    );
    t.apply(&established(1, 7, "127.0.0.1:40002"));
    assert_eq!(
        t.live().find(|c| c.id.skaddr == 1).unwrap().local(),
        addr("127.0.0.1:40002")
    );

    // Older than the dump, the only candidate, yet not that socket: its next event
    // says its own port, and the key follows.
    let mut t = tracker();
    t.apply(&opening(1, 0));
    t.reconcile(
        &snapshot(&[kernel_socket(SynSent, "127.0.0.1:40001", SERVER)], MS),
        2 * MS,
    );
    t.apply(&established(1, 3, "127.0.0.1:40002"));
    let conn = t.live().find(|c| c.id.skaddr == 1).unwrap();
    assert_eq!(conn.local(), addr("127.0.0.1:40002"));
    let key = conn.key();
    // The index follows the key: its partner lookups and removal find it.
    let closed = {
        let mut e = client(1, 9, Established, Close);
        e.local = addr("127.0.0.1:40002");
        t.apply(&e);
        t.finished().next_back().unwrap().clone()
    };
    assert_eq!(closed.key(), key);
    assert_eq!(t.live().filter(|c| c.id.skaddr == 1).count(), 0);
}

#[test]
fn a_zero_window_probe_timeout_is_a_timeout_not_a_keepalive() {
    let mut t = tracker();
    let mut events = ESTABLISHED(1).to_vec();
    // tcp_probe_timer(): probes out, no retransmission timeouts, data queued.
    events.push(client_close(
        1,
        9000,
        Established,
        SocketAtClose {
            error: libc::ETIMEDOUT,
            probes: 15,
            unacked: 500,
            bytes_acked: 1,
            ..SocketAtClose::default()
        },
    ));
    let conn = run(&mut t, &events);
    assert_eq!(close_of(&conn), Some(CloseKind::TimedOut));
}

#[test]
fn any_icmp_error_a_handshake_dies_of_is_unreachable() {
    // EACCES: ICMPv6 administratively prohibited, what a firewall's reject sends.
    for errno in [libc::EACCES, libc::ENONET, libc::EPROTO, libc::ENETDOWN] {
        let mut t = tracker();
        let conn = run(
            &mut t,
            &[
                client(1, 0, Close, SynSent),
                client_close(
                    1,
                    1,
                    SynSent,
                    SocketAtClose {
                        error: errno,
                        ..SocketAtClose::default()
                    },
                ),
            ],
        );
        assert_eq!(
            close_of(&conn),
            Some(CloseKind::Unreachable),
            "errno {errno}"
        );
    }
}

#[test]
fn a_connection_first_seen_in_fin_wait2_does_not_count_its_fin_as_data() {
    let mut t = tracker();
    t.reconcile(
        &snapshot(&[kernel_socket(FinWait2, CLIENT, SERVER)], MS),
        2 * MS,
    );
    let mut close = client(1, 10, FinWait2, Close);
    close.close = Some(SocketAtClose {
        // 300 bytes and its FIN, acknowledged.
        bytes_acked: 301,
        ..SocketAtClose::default()
    });
    let conn = run(&mut t, &[close]);
    assert_eq!(conn.closed_with().unwrap().bytes_sent, 300);
}

#[test]
fn a_lost_handshake_event_does_not_make_a_data_timeout_a_syn_timeout() {
    let mut t = tracker();
    let conn = run(
        &mut t,
        &[
            client(1, 0, Close, SynSent),
            // SYN_SENT→ESTABLISHED lost; the SYN was acknowledged, data was not.
            client_close(
                1,
                5000,
                SynSent,
                SocketAtClose {
                    error: libc::ETIMEDOUT,
                    timeouts: 5,
                    bytes_acked: 1,
                    unacked: 100,
                    ..SocketAtClose::default()
                },
            ),
        ],
    );
    assert_eq!(close_of(&conn), Some(CloseKind::TimedOut));
    assert_eq!(ConnectFailure::of(&classify(&conn)), None);
}
