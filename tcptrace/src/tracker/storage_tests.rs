//! The compact table's storage through the tracker: slots reused without ids mixing
//! up, times exact to the nanosecond however far apart, owners shared.

use super::*;
use crate::{
    event::TcpEvent,
    state::TcpState::{self, *},
    testing::*,
};

const SECOND_NS: u64 = 1_000_000_000;
const DAY_NS: u64 = 86_400 * SECOND_NS;

/// A client state change at exactly `at_ns`.
fn client_at(sk: u64, at_ns: u64, old: TcpState, new: TcpState) -> TcpEvent {
    TcpEvent {
        ts_ns: at_ns,
        ..client(sk, 0, old, new)
    }
}

fn steps_of(conn: &Connection) -> Vec<(TcpState, u64)> {
    conn.steps()
        .iter()
        .map(|s| (s.state, s.entered_ns))
        .collect()
}

#[test]
fn a_freed_slot_is_reused_and_an_old_id_never_finds_its_new_tenant() {
    // No finished ring: an id whose connection is gone must find nothing at all.
    let mut t = Tracker::new(16, 0);
    t.apply(&client(1, 0, Close, SynSent));
    let first = t.apply(&client(1, 1, SynSent, Established)).conn.unwrap();
    let first_slot = t.table.tagged_of(first.generation).unwrap();
    t.apply(&client(1, 2, Established, Close));
    assert_eq!(t.live_count(), 0);
    assert_eq!(t.by_id(first.generation), None);

    let second = t.apply(&client(2, 3, Close, SynSent)).conn.unwrap();
    assert_eq!(t.table.tagged_of(second.generation), Some(first_slot));
    assert_eq!(second.generation, first.generation + 1);
    assert_eq!(t.by_id(first.generation), None);
    assert_eq!(t.by_id(second.generation).map(|c| c.id), Some(second));
}

#[test]
fn ids_stay_unique_through_many_reuses_of_the_same_slots() {
    let mut t = Tracker::new(16, 0);
    let mut ids = Vec::new();
    for round in 0..500 {
        // Two at a time, at addresses that come back: as the kernel's slabs do.
        for sk in [1 + round % 3, 10 + round % 5] {
            t.apply(&client(sk, 3 * round, Close, SynSent));
            ids.push(
                t.apply(&client(sk, 3 * round + 1, SynSent, Established))
                    .conn
                    .unwrap(),
            );
        }
        let live: Vec<ConnId> = ids[ids.len() - 2..].to_vec();
        for id in &live {
            assert_eq!(t.by_id(id.generation).map(|c| c.id), Some(*id));
        }
        for id in live {
            t.apply(&client(id.skaddr, 3 * round + 2, Established, Close));
        }
    }
    let mut generations: Vec<u64> = ids.iter().map(|id| id.generation).collect();
    generations.sort_unstable();
    generations.dedup();
    assert_eq!(generations.len(), 1000);
    assert!(ids.iter().all(|id| t.by_id(id.generation).is_none()));
    assert_eq!(t.live_count(), 0);
    assert_eq!(t.id_index_len(), 0);
    // Two slots were ever needed: the slab never grew past its first chunk.
    assert_eq!(t.table.slab_capacity(), 1024);
}

#[test]
fn a_connection_established_for_days_keeps_every_time_to_the_nanosecond() {
    let mut t = Tracker::new(16, 4);
    let t0 = 5 * DAY_NS + 123;
    let established = t0 + 1_234_567;
    let fin_wait1 = established + 3 * DAY_NS + 89;
    let fin_wait2 = fin_wait1 + 1_000_001;
    let close = fin_wait2 + 60 * SECOND_NS + 7;
    t.apply(&client_at(1, t0, Close, SynSent));
    t.apply(&client_at(1, established, SynSent, Established));
    // Entered days after the handshake: the last step's time is kept whole inline.
    t.apply(&client_at(1, fin_wait1, Established, FinWait1));
    let expected_live = [
        (Close, t0),
        (SynSent, t0),
        (Established, established),
        (FinWait1, fin_wait1),
    ];
    assert_eq!(steps_of(t.live().next().unwrap()), expected_live);
    // ESTABLISHED lasted days: no longer a 32-bit gap, so every step moves out of line.
    t.apply(&client_at(1, fin_wait2, FinWait1, FinWait2));
    let mut expected = expected_live.to_vec();
    expected.push((FinWait2, fin_wait2));
    assert_eq!(steps_of(t.live().next().unwrap()), expected);
    assert_eq!(t.live().next().unwrap().state_since_ns(), fin_wait2);

    t.apply(&client_at(1, close, FinWait2, Close));
    let conn = t.finished().next_back().unwrap();
    expected.push((Close, close));
    assert_eq!(steps_of(conn), expected);
    assert_eq!(conn.lifetime_ns(), Some(close - t0));
    assert_eq!(
        conn.durations().map(|(_, d)| d).collect::<Vec<_>>(),
        [
            Some(0),
            Some(1_234_567),
            Some(3 * DAY_NS + 89),
            Some(1_000_001),
            Some(60 * SECOND_NS + 7),
            None
        ]
    );
}

#[test]
fn a_reconcile_fix_after_days_keeps_the_exact_time_too() {
    let mut t = Tracker::new(16, 4);
    let seen = 2 * DAY_NS + 5;
    let snap = snapshot(&[kernel_socket(Established, CLIENT, SERVER)], seen);
    t.seed(&snap, seen);
    let fixed = seen + 4 * DAY_NS + 11;
    let later = snapshot(&[kernel_socket(CloseWait, CLIENT, SERVER)], fixed);
    t.reconcile(&later, fixed);
    let conn = t.live().next().unwrap();
    assert_eq!(
        steps_of(conn),
        [(Established, seen), (CloseWait, fixed)],
        "an unbound connection's steps"
    );
}

#[test]
fn connections_of_one_owner_share_one_copy_of_it() {
    let mut t = Tracker::new(16, 4);
    let open = |sk: u64, port: u16, pid: u32| {
        event(
            sk,
            0,
            crate::event::EventKind::StateChange {
                old: Close,
                new: SynSent,
            },
            &format!("127.0.0.1:{port}"),
            SERVER,
            pid,
        )
    };
    for (sk, port, pid) in [(1, 40001, 100), (2, 40002, 100), (3, 40003, 300)] {
        t.apply(&open(sk, port, pid));
    }
    let by_sk = |sk| t.live().find(|c| c.id.skaddr == sk).unwrap();
    assert_eq!(
        [1, 2, 3].map(|sk| by_sk(sk).owner().unwrap().pid),
        [100, 100, 300]
    );
    assert!(by_sk(1).shares_owner_with(by_sk(2)));
    assert!(!by_sk(1).shares_owner_with(by_sk(3)));
    assert_eq!(t.owners.len(), 2);
}
