//! Every lifecycle, on synthetic event streams shaped like what the kernel sends.

use super::*;
use crate::{
    event::{EventKind, TcpEvent},
    state::TcpState::{self, *},
    testing::*,
    tracker::{KernelSocket, SocketKey},
};

fn run(tracker: &mut Tracker, events: &[TcpEvent]) {
    for e in events {
        tracker.apply(e);
    }
}

fn tracker() -> Tracker {
    Tracker::new(1024, 64)
}

fn states(conn: &Connection) -> Vec<TcpState> {
    conn.steps().iter().map(|s| s.state).collect()
}

fn last_finished(t: &Tracker) -> &Connection {
    t.finished().next_back().expect("a finished connection")
}

const CLIENT_OPEN: fn(u64) -> [TcpEvent; 2] = |sk| {
    [
        client(sk, 0, Close, SynSent),
        client(sk, 2, SynSent, Established),
    ]
};

#[test]
fn three_way_handshake_active_open() {
    let mut t = tracker();
    run(&mut t, &CLIENT_OPEN(1));
    let conn = t.live().next().unwrap();
    assert_eq!(states(conn), [Close, SynSent, Established]);
    let life = classify(conn);
    assert_eq!(life.direction, Direction::Active);
    assert_eq!(life.handshake_ns, Some(2 * MS));
    assert_eq!(life.close, None);
    assert_eq!(conn.owner().unwrap().pid, 100, "connect() names the owner");
}

#[test]
fn four_way_close_active_side_goes_into_time_wait() {
    let mut t = tracker();
    run(&mut t, &CLIENT_OPEN(1));
    run(
        &mut t,
        &[
            client(1, 10, Established, FinWait1),
            client(1, 11, FinWait1, FinWait2),
            client(1, 12, FinWait2, Close),
        ],
    );
    assert_eq!(t.live_count(), 0);
    let conn = last_finished(&t);
    assert_eq!(
        states(conn),
        [Close, SynSent, Established, FinWait1, FinWait2, Close]
    );
    let life = classify(conn);
    assert_eq!(life.close, Some(CloseKind::ActiveClose));
    assert!(life.time_wait);
    let durations: Vec<_> = conn.durations().map(|(_, d)| d).collect();
    assert_eq!(
        durations,
        [
            Some(0),
            Some(2 * MS),
            Some(8 * MS),
            Some(MS),
            Some(MS),
            None
        ]
    );
}

fn passive_life(sk: u64, close_wait_ms: u64, last_ack_ms: u64) -> Vec<TcpEvent> {
    vec![
        server(sk, 1, Listen, SynRecv),
        server(sk, 2, SynRecv, Established),
        server(sk, close_wait_ms, Established, CloseWait),
        server(sk, last_ack_ms, CloseWait, LastAck),
        server(sk, last_ack_ms + 1, LastAck, Close),
    ]
}

#[test]
fn four_way_close_passive_side() {
    let mut t = tracker();
    // The listener, so the accepted socket inherits its owner.
    run(
        &mut t,
        &[event(
            9,
            0,
            EventKind::StateChange {
                old: Close,
                new: Listen,
            },
            SERVER,
            "0.0.0.0:0",
            200,
        )],
    );
    run(&mut t, &passive_life(2, 10, 20));
    let conn = last_finished(&t);
    let life = classify(conn);
    assert_eq!(life.direction, Direction::Passive);
    assert_eq!(life.handshake_ns, Some(MS));
    assert_eq!(life.close, Some(CloseKind::PassiveClose));
    assert!(!life.time_wait);
    assert_eq!(conn.owner().unwrap().pid, 200, "the listener's owner");
}

/// Both ends on this host: the passive end's FIN left before the active end saw its
/// own FIN acknowledged, so the ACK rode on that FIN.
#[test]
fn three_way_and_four_way_close_told_apart_when_both_ends_are_local() {
    for (server_fin_ms, client_fin_acked_ms, shape) in [
        (12, 12, CloseShape::ThreeWay),
        (20, 11, CloseShape::FourWay),
    ] {
        let mut t = tracker();
        run(&mut t, &CLIENT_OPEN(1));
        run(&mut t, &passive_life(2, 10, server_fin_ms)[..2]);
        run(&mut t, &[client(1, 10, Established, FinWait1)]);
        run(&mut t, &passive_life(2, 10, server_fin_ms)[2..3]);
        run(
            &mut t,
            &[
                client(1, client_fin_acked_ms, FinWait1, FinWait2),
                client(1, client_fin_acked_ms, FinWait2, Close),
            ],
        );
        run(&mut t, &passive_life(2, 10, server_fin_ms)[3..]);
        let active = t.finished().find(|c| c.id.skaddr == 1).unwrap();
        let passive = t.partner(active).expect("paired");
        assert_eq!(passive.id.skaddr, 2);
        assert_eq!(t.partner(passive).unwrap().id, active.id);
        assert_eq!(close_shape(active, passive), Some(shape));
    }
}

#[test]
fn simultaneous_close_goes_through_closing() {
    let mut t = tracker();
    run(&mut t, &CLIENT_OPEN(1));
    run(
        &mut t,
        &[
            client(1, 10, Established, FinWait1),
            client(1, 11, FinWait1, Closing),
            client(1, 12, Closing, Close),
        ],
    );
    let life = classify(last_finished(&t));
    assert_eq!(life.close, Some(CloseKind::SimultaneousClose));
    assert!(life.time_wait);
    assert_eq!(t.stats().illegal_transitions, 0);
}

#[test]
fn abort_with_linger_zero_is_a_reset_sent_even_though_the_rst_comes_after_close() {
    let mut t = tracker();
    run(&mut t, &CLIENT_OPEN(1));
    run(
        &mut t,
        &[
            client(1, 10, Established, Close),
            event(
                1,
                10,
                EventKind::SendReset { state: Some(Close) },
                CLIENT,
                SERVER,
                100,
            ),
        ],
    );
    let conn = last_finished(&t);
    assert_eq!(conn.marks().len(), 1);
    let life = classify(conn);
    assert_eq!(life.close, Some(CloseKind::ResetSent));
    assert!(!life.time_wait);
}

#[test]
fn reset_received_after_the_handshake() {
    let mut t = tracker();
    run(&mut t, &CLIENT_OPEN(1));
    run(
        &mut t,
        &[
            event(
                1,
                10,
                EventKind::ReceiveReset {
                    state: Some(Established),
                },
                CLIENT,
                SERVER,
                0,
            ),
            client(1, 10, Established, Close),
        ],
    );
    assert_eq!(
        classify(last_finished(&t)).close,
        Some(CloseKind::ResetReceived)
    );
}

#[test]
fn refused_connect_and_handshake_timeout() {
    let mut t = tracker();
    run(
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
            client(1, 1, SynSent, Close),
        ],
    );
    let life = classify(last_finished(&t));
    assert_eq!(life.close, Some(CloseKind::Refused));
    assert_eq!(life.handshake_ns, None);

    run(
        &mut t,
        &[
            client(2, 0, Close, SynSent),
            client(2, 7000, SynSent, Close),
        ],
    );
    assert_eq!(
        classify(last_finished(&t)).close,
        Some(CloseKind::NeverEstablished)
    );
}

#[test]
fn a_reused_skaddr_starts_a_new_connection() {
    let mut t = tracker();
    run(&mut t, &CLIENT_OPEN(1));
    run(&mut t, &[client(1, 5, Established, Close)]);
    run(&mut t, &CLIENT_OPEN(1));
    let first = last_finished(&t).id;
    let second = t.live().next().unwrap().id;
    assert_eq!(first.skaddr, second.skaddr);
    assert_ne!(first.generation, second.generation);
    assert_eq!(t.stats().gaps, 0);

    // Reused while we still thought it alive: its →CLOSE was lost.
    run(&mut t, &CLIENT_OPEN(1));
    assert_eq!(t.live_count(), 1);
    assert_eq!(t.stats().gaps, 1);
    assert_eq!(t.stats().finished, 2);
}

#[test]
fn reconcile_closes_what_the_kernel_no_longer_has_and_adds_what_it_has() {
    let mut t = tracker();
    run(&mut t, &CLIENT_OPEN(1));
    // The client's →CLOSE is lost; the kernel instead has a CLOSE_WAIT socket no event
    // told us about.
    let dump = [kernel_socket(
        CloseWait,
        "127.0.0.1:9000",
        "127.0.0.1:50000",
    )];
    let report = t.reconcile(&snapshot(&dump, 100 * MS), 101 * MS);
    assert_eq!((report.closed, report.added), (1, 1));
    assert_eq!(t.stats().reconcile_closed, 1);
    assert_eq!(t.stats().reconcile_added, 1);
    assert_eq!(classify(last_finished(&t)).close, Some(CloseKind::Vanished));
    let added = t.live().next().unwrap();
    assert_eq!((added.state(), added.seen_since_start), (CloseWait, true));

    // Its next transition names its kernel address and continues its story.
    let events = [
        event(
            7,
            200,
            EventKind::StateChange {
                old: CloseWait,
                new: LastAck,
            },
            "127.0.0.1:9000",
            "127.0.0.1:50000",
            300,
        ),
        event(
            7,
            201,
            EventKind::StateChange {
                old: LastAck,
                new: Close,
            },
            "127.0.0.1:9000",
            "127.0.0.1:50000",
            0,
        ),
    ];
    assert_eq!(
        t.apply(&events[0]).time_in_old_state_ns,
        None,
        "age unknown"
    );
    t.apply(&events[1]);
    assert_eq!(t.live_count(), 0);
    let conn = last_finished(&t);
    assert_eq!(states(conn), [CloseWait, LastAck, Close]);
    assert_eq!(classify(conn).close, Some(CloseKind::PassiveClose));
    assert_eq!(t.stats().gaps, 0);
}

#[test]
fn reconcile_moves_a_connection_whose_transition_was_lost_to_the_kernels_state() {
    let mut t = tracker();
    run(&mut t, &CLIENT_OPEN(1)); // ESTABLISHED at 2 ms
                                  // ESTABLISHED → CLOSE_WAIT was lost: only the kernel knows.
    let dump = [kernel_socket(CloseWait, CLIENT, SERVER)];
    let report = t.reconcile(&snapshot(&dump, 100 * MS), 101 * MS);
    assert_eq!((report.state_fixed, report.closed, report.added), (1, 0, 0));
    assert_eq!(t.stats().reconcile_state_fixed, 1);
    let conn = t.live().next().unwrap();
    assert_eq!(conn.state(), CloseWait);
    assert_eq!(
        conn.state_since_ns(),
        101 * MS,
        "the age counts from the correction"
    );
    // The same dump again changes nothing, and nothing newer than a dump is touched.
    assert_eq!(
        t.reconcile(&snapshot(&dump, 200 * MS), 201 * MS)
            .state_fixed,
        0
    );
    let stale = [kernel_socket(Established, CLIENT, SERVER)];
    assert_eq!(
        t.reconcile(&snapshot(&stale, 100 * MS), 202 * MS)
            .state_fixed,
        0
    );
    assert_eq!(t.live().next().unwrap().state(), CloseWait);
}

#[test]
fn reconcile_leaves_alone_what_changed_after_the_dump_started() {
    let mut t = tracker();
    run(&mut t, &CLIENT_OPEN(1)); // last activity at 2 ms
    let report = t.reconcile(&snapshot(&[], MS), 3 * MS);
    assert_eq!(report.closed, 0);
    assert_eq!(t.live_count(), 1);
}

#[test]
fn seeding_adds_connections_not_listeners() {
    let mut t = tracker();
    let mut dump = vec![
        kernel_socket(Listen, "0.0.0.0:8080", "0.0.0.0:0"),
        kernel_socket(TimeWait, "127.0.0.1:40001", SERVER),
        kernel_socket(TimeWait, "127.0.0.1:40002", SERVER),
        kernel_socket(TimeWait, "127.0.0.1:40003", "127.0.0.1:9999"),
    ];
    for port in 0..3 {
        dump.push(kernel_socket(
            CloseWait,
            SERVER,
            &format!("127.0.0.1:{}", 41000 + port),
        ));
    }
    let report = t.seed(&snapshot(&dump, 5 * MS), 5 * MS);
    assert_eq!(report.added, 3);
    assert_eq!(t.stats().seeded, 3);
    assert_eq!(t.stats().reconcile_added, 0);
    assert_eq!(t.live().filter(|c| c.state() == CloseWait).count(), 3);
    // Seeding again finds nothing new.
    assert_eq!(
        t.reconcile(&snapshot(&dump, 6 * MS), 6 * MS),
        ReconcileReport::default()
    );
}

#[test]
fn the_table_stays_at_its_cap_and_counts_evictions() {
    let mut t = Tracker::new(16, 4);
    // Opened in reverse address order, so that survival follows activity time, not
    // the address.
    for sk in (1..=100u64).rev() {
        run(&mut t, &[client(sk, 200 - sk, Close, SynSent)]);
    }
    assert_eq!(t.live_count(), 16);
    assert_eq!(t.stats().evictions, 84);
    // The survivors are the most recently active: the last 16 opened.
    let mut kept: Vec<u64> = t.live().map(|c| c.id.skaddr).collect();
    kept.sort();
    assert_eq!(kept, (1..=16).collect::<Vec<_>>());
    // The finished ring is bounded too.
    for sk in 1..=16u64 {
        run(&mut t, &[client(sk, 500, SynSent, Close)]);
    }
    assert_eq!(t.finished().count(), 4);
}

#[test]
fn eviction_spares_close_wait_so_a_full_table_still_shows_its_leaks() {
    let mut t = Tracker::new(16, 4);
    // Four leaks, the least recently active connections of all...
    for sk in 1..=4u64 {
        run(&mut t, &passive_life(sk, 3, 1_000_000)[..3]);
    }
    assert!(t.live().all(|c| c.state() == CloseWait));
    // ...then a flood of newer connections, five times the cap.
    for sk in 100..180u64 {
        run(&mut t, &[client(sk, 10 + sk, Close, SynSent)]);
    }
    assert_eq!(t.live_count(), 16);
    let mut leaks: Vec<u64> = t
        .live()
        .filter(|c| c.state() == CloseWait)
        .map(|c| c.id.skaddr)
        .collect();
    leaks.sort();
    assert_eq!(leaks, [1, 2, 3, 4], "every leak kept");
    // The others are still the most recently active: 12 of the flood's last.
    let mut kept: Vec<u64> = t
        .live()
        .filter(|c| c.state() != CloseWait)
        .map(|c| c.id.skaddr)
        .collect();
    kept.sort();
    assert_eq!(kept, (168..180).collect::<Vec<_>>());

    // A table of nothing but leaks still stays at its cap.
    let mut t = Tracker::new(4, 4);
    for sk in 1..=6u64 {
        run(&mut t, &passive_life(sk, 2 + sk, 1_000_000)[..3]);
    }
    assert_eq!(t.live_count(), 4);
    assert_eq!(t.stats().evictions, 2);
}

#[test]
fn an_illegal_transition_is_flagged_not_dropped() {
    let mut t = tracker();
    run(
        &mut t,
        &[
            client(1, 0, Close, SynSent),
            client(1, 1, SynSent, CloseWait),
        ],
    );
    let conn = t.live().next().unwrap();
    assert_eq!(conn.state(), CloseWait);
    assert_eq!(conn.illegal(), [(SynSent, CloseWait)]);
    assert_eq!(t.stats().illegal_transitions, 1);
}

#[test]
fn partners_are_found_through_the_index_live_and_finished() {
    let mut t = Tracker::new(1024, 2);
    // connect() reports port 0 first; the index learns the port on the next event.
    run(
        &mut t,
        &[event(
            1,
            0,
            EventKind::StateChange {
                old: Close,
                new: SynSent,
            },
            "127.0.0.1:0",
            SERVER,
            100,
        )],
    );
    run(&mut t, &passive_life(2, 10, 20)[..2]);
    let server_conn = t.live().find(|c| c.id.skaddr == 2).unwrap().clone();
    assert_eq!(t.partner(&server_conn), None, "client port not known yet");
    run(&mut t, &[client(1, 2, SynSent, Established)]);
    let client_conn = t.live().find(|c| c.id.skaddr == 1).unwrap().clone();
    assert_eq!(t.partner(&server_conn).unwrap().id, client_conn.id);
    assert_eq!(t.partner(&client_conn).unwrap().id, server_conn.id);

    // The client finishes: the live server still finds it, in the finished ring.
    run(&mut t, &[client(1, 5, Established, Close)]);
    assert_eq!(t.partner(&server_conn).unwrap().id, client_conn.id);
    assert_eq!(t.finished_by_id(client_conn.id).unwrap().id, client_conn.id);

    // Two more finish; the ring holds two, and its indexes forget the first.
    run(
        &mut t,
        &[client(3, 6, Close, SynSent), client(3, 7, SynSent, Close)],
    );
    run(
        &mut t,
        &[client(4, 8, Close, SynSent), client(4, 9, SynSent, Close)],
    );
    assert_eq!(t.finished_by_id(client_conn.id), None);
    assert_eq!(t.finished().count(), 2);
    // The latest generation with a 4-tuple is the one found.
    let newest = t.finished().next_back().unwrap().clone();
    assert_eq!(newest.id.skaddr, 4);
    assert_eq!(t.partner(&server_conn).unwrap().id, newest.id);
}

#[test]
fn a_flood_of_connections_keeps_the_table_and_its_index_at_the_cap() {
    const CAP: usize = 1000;
    const FLOOD: u64 = 2_000_000;
    let mut t = Tracker::new(CAP, 64);
    for i in 0..FLOOD {
        // Distinct sockets and 4-tuples, each left ESTABLISHED.
        let local = format!(
            "10.{}.{}.{}:{}",
            i >> 16 & 255,
            i >> 8 & 255,
            i & 255,
            1024 + i % 60000
        );
        for (old, new) in [(Close, SynSent), (SynSent, Established)] {
            let mut e = client(i + 1, i, old, new);
            e.local = addr(&local);
            t.apply(&e);
        }
        assert!(t.live_count() <= CAP);
    }
    assert!(t.key_index_len() <= t.live_count());
    let stats = t.stats();
    assert_eq!(stats.opened, FLOOD);
    assert_eq!(
        stats.evictions + t.live_count() as u64,
        FLOOD,
        "every drop is counted"
    );
    assert!(
        t.live_count() > CAP / 2,
        "evicts a sixteenth at a time, not everything"
    );
}

#[test]
fn reconcile_forgets_listeners_whose_close_was_lost() {
    let mut t = tracker();
    t.apply(&server(50, 1, Close, Listen));
    t.apply(&event(
        51,
        2,
        EventKind::StateChange {
            old: Close,
            new: Listen,
        },
        "127.0.0.1:9090",
        "0.0.0.0:0",
        300,
    ));
    assert_eq!(t.listeners().count(), 2);
    // The kernel lists only :8080 as listening now; :9090's LISTEN→CLOSE was lost.
    let dump = [kernel_socket(Listen, SERVER, CLIENT)];
    t.reconcile(&snapshot(&dump, 10 * MS), 11 * MS);
    let left: Vec<_> = t.listeners().map(|l| l.local).collect();
    assert_eq!(left, [addr(SERVER)]);
}

mod fuzz {
    //! Arbitrary event streams, lost events included: the tracker never panics and its
    //! table stays consistent and bounded.
    use proptest::prelude::*;

    use super::*;

    fn any_event() -> impl Strategy<Value = TcpEvent> {
        let state = (1u8..=12).prop_map(|s| TcpState::from_kernel(s).unwrap());
        let kind = prop_oneof![
            4 => (state.clone(), state.clone()).prop_map(|(old, new)| EventKind::StateChange { old, new }),
            1 => (state.clone(), -20i32..1).prop_map(|(state, err)| EventKind::Retransmit { state, err }),
            1 => Just(EventKind::RetransmitSynack),
            1 => prop::option::of(state.clone()).prop_map(|state| EventKind::SendReset { state }),
            1 => prop::option::of(state).prop_map(|state| EventKind::ReceiveReset { state }),
        ];
        (
            0u64..6,
            0u64..1000,
            kind,
            0u16..3,
            0u16..3,
            0u32..3,
            0u32..2,
        )
            .prop_map(|(sk, ms, kind, local, remote, pid, netns)| {
                let mut e = event(
                    sk,
                    ms,
                    kind,
                    &format!("127.0.0.1:{}", [0, 8080, 40000][usize::from(local)]),
                    &format!("127.0.0.1:{}", [0, 8080, 40001][usize::from(remote)]),
                    pid,
                );
                // Two namespaces holding the same tuples.
                e.netns = NETNS + netns;
                e
            })
    }

    proptest! {
        #[test]
        fn any_event_stream_keeps_the_table_consistent(
            events in prop::collection::vec(any_event(), 0..200),
            reconcile_at in 0usize..200,
        ) {
            let mut t = Tracker::new(4, 4);
            for (i, e) in events.iter().enumerate() {
                let applied = t.apply(e);
                if applied.finished {
                    let id = applied.conn.unwrap();
                    prop_assert_eq!(t.finished_by_id(id).map(|c| c.id), Some(id));
                }
                if i == reconcile_at {
                    let dump = [kernel_socket(CloseWait, SERVER, CLIENT), kernel_socket(Listen, SERVER, CLIENT)];
                    t.reconcile(&snapshot(&dump, e.ts_ns), e.ts_ns + 1);
                }
                prop_assert!(t.live_count() <= 4);
                prop_assert!(
                    t.key_index_len() <= t.live_count(),
                    "{:?}",
                    events[..=i]
                        .iter()
                        .map(|e| (e.skaddr, e.local.port(), e.remote.port(), e.kind))
                        .collect::<Vec<_>>()
                );
                prop_assert!(t.live().all(|c| !c.is_finished()));
                for conn in t.live() {
                    let _ = classify(conn);
                    let _ = t.partner(conn);
                    // Every live connection is found by its opaque id, through the index.
                    prop_assert_eq!(t.by_id(conn.id.generation).map(|c| c.id), Some(conn.id));
                }
                prop_assert_eq!(t.id_index_len(), t.live_count());
                let (by_address, unbound_by_key) = t.table.slot_index_lens();
                prop_assert_eq!(by_address + unbound_by_key, t.live_count());
                for conn in t.finished() {
                    prop_assert_eq!(t.by_id(conn.id.generation).map(|c| c.id), Some(conn.id));
                }
            }
        }
    }
}

/// `events` moved into namespace `netns`.
fn in_netns(netns: u32, mut events: Vec<TcpEvent>) -> Vec<TcpEvent> {
    for e in &mut events {
        e.netns = netns;
    }
    events
}

/// A loopback client and server, both ends, in one namespace: the client's sockets
/// at `sk`, the server child's at `sk + 1`.
fn loopback_pair(sk: u64, netns: u32) -> Vec<TcpEvent> {
    in_netns(
        netns,
        vec![
            client(sk, 0, Close, SynSent),
            server(sk + 1, 1, Listen, SynRecv),
            client(sk, 2, SynSent, Established),
            server(sk + 1, 3, SynRecv, Established),
        ],
    )
}

#[test]
fn the_same_four_tuple_in_two_namespaces_is_two_connections_paired_within_each() {
    let mut t = tracker();
    run(&mut t, &loopback_pair(10, NETNS));
    run(&mut t, &loopback_pair(20, NETNS + 1));
    assert_eq!(t.live_count(), 4);
    for conn in t.live() {
        let partner = t.partner(conn).expect("its other end");
        assert_eq!(
            partner.netns, conn.netns,
            "loopback never pairs across namespaces"
        );
        assert_eq!(
            (partner.local(), partner.remote()),
            (conn.remote(), conn.local())
        );
    }
    // One namespace's client closes: the other namespace's same tuple is untouched.
    run(
        &mut t,
        &in_netns(
            NETNS + 1,
            vec![
                client(20, 10, Established, FinWait1),
                server(21, 11, Established, CloseWait),
            ],
        ),
    );
    let states_in = |netns| {
        let mut s: Vec<_> = t
            .live()
            .filter(|c| c.netns == netns)
            .map(|c| c.state())
            .collect();
        s.sort_by_key(|s| s.as_kernel());
        s
    };
    assert_eq!(states_in(NETNS), [Established, Established]);
    assert_eq!(states_in(NETNS + 1), [FinWait1, CloseWait]);
    assert_eq!(t.stats().gaps, 0);
    assert_eq!(t.key_index_len(), 4);
}

#[test]
fn ends_in_two_namespaces_over_a_routable_address_are_paired() {
    let mut t = tracker();
    let (a, b) = ("10.213.1.1:40000", "10.213.1.2:8080");
    let client_ns = NETNS + 1;
    let server_ns = NETNS + 2;
    let change = |sk, ms, old, new, local, remote| {
        let mut e = event(
            sk,
            ms,
            EventKind::StateChange { old, new },
            local,
            remote,
            1,
        );
        e.netns = if local == a { client_ns } else { server_ns };
        e
    };
    run(
        &mut t,
        &[
            change(1, 0, Close, SynSent, a, b),
            change(2, 1, Listen, SynRecv, b, a),
            change(1, 2, SynSent, Established, a, b),
        ],
    );
    let client_end = t.live().find(|c| c.netns == client_ns).unwrap();
    let server_end = t.partner(client_end).expect("paired across namespaces");
    assert_eq!((server_end.netns, server_end.local()), (server_ns, addr(b)));
    assert_eq!(t.partner(server_end).unwrap().id, client_end.id);
}

#[test]
fn reconcile_judges_each_namespace_by_its_own_dump_only() {
    let mut t = tracker();
    let (host, pod, unreachable, gone) = (NETNS, NETNS + 1, NETNS + 2, NETNS + 3);
    for (sk, netns) in [(10, host), (20, pod), (30, unreachable), (40, gone)] {
        run(&mut t, &loopback_pair(sk, netns));
    }
    assert_eq!(t.live_count(), 8);
    // The pod's dump lists both its ends; the host's lists nothing (its ends' closes
    // were lost); the third namespace exists but could not be dumped; the fourth is
    // gone.
    let pod_sockets = [
        KernelSocket {
            key: SocketKey {
                netns: pod,
                local: addr(CLIENT),
                remote: addr(SERVER),
            },
            state: Established,
            cgroup_id: 0,
        },
        KernelSocket {
            key: SocketKey {
                netns: pod,
                local: addr(SERVER),
                remote: addr(CLIENT),
            },
            state: Established,
            cgroup_id: 0,
        },
    ];
    let mut pass = snapshot(&pod_sockets, 100 * MS);
    pass.unreachable.insert(unreachable);
    let report = t.reconcile(&pass, 101 * MS);
    assert_eq!(
        (report.closed, report.closed_with_namespace, report.added),
        (2, 0, 0),
        "the host's lost ends; a namespace missed once is not gone yet"
    );
    let report = t.reconcile(&pass, 102 * MS);
    assert_eq!(
        (report.closed, report.closed_with_namespace, report.added),
        (2, 2, 0),
        "missed twice: gone"
    );
    let mut left: Vec<u32> = t.live().map(|c| c.netns).collect();
    left.sort_unstable();
    assert_eq!(left, [pod, pod, unreachable, unreachable]);
    assert!(t
        .finished()
        .filter(|c| c.netns == host || c.netns == gone)
        .all(|c| c.vanished));
    // Once: the next pass closes nothing more.
    let report = t.reconcile(&pass, 103 * MS);
    assert_eq!((report.closed, report.added, report.state_fixed), (0, 0, 0));
    assert_eq!(t.stats().reconcile_closed, 4);
}

#[test]
fn seeded_sockets_bind_to_the_events_of_their_own_namespace() {
    let mut t = tracker();
    let mut pod = kernel_socket(CloseWait, SERVER, CLIENT);
    pod.key.netns = NETNS + 1;
    pod.cgroup_id = 99;
    let host = kernel_socket(CloseWait, SERVER, CLIENT);
    t.seed(&snapshot(&[pod, host], 0), 0);
    assert_eq!(t.live_count(), 2);
    // The host's socket closes: only the host's seeded connection continues.
    run(
        &mut t,
        &[
            server(7, 5, CloseWait, LastAck),
            server(7, 6, LastAck, Close),
        ],
    );
    let live: Vec<_> = t
        .live()
        .map(|c| (c.netns, c.state(), c.cgroup_id))
        .collect();
    assert_eq!(live, [(NETNS + 1, CloseWait, 99)]);
    let done = last_finished(&t);
    assert_eq!(
        (done.netns, states(done)),
        (NETNS, vec![CloseWait, LastAck, Close])
    );
    assert_eq!(done.cgroup_id, SOCK_CGROUP, "learned from the events");
}
