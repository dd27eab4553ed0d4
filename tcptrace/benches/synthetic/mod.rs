//! A synthetic ring-buffer stream shaped like the churn benchmark's load: each
//! connection is a client (5 state changes) and a server child (5), with `concurrency`
//! connections under way at once, as raw records the decoder reads.
#![allow(
    dead_code,
    reason = "each bench binary uses a different part of this module"
)]

use tcptrace_common::{
    close_flags, kind, task_is_owner, tcp_state::*, CloseDetails, Event, AF_INET, EVENT_HEAD_SIZE,
    EVENT_SIZE,
};

const CLIENT: [(u8, u8); 5] = [
    (CLOSE, SYN_SENT),
    (SYN_SENT, ESTABLISHED),
    (ESTABLISHED, FIN_WAIT1),
    (FIN_WAIT1, FIN_WAIT2),
    (FIN_WAIT2, CLOSE),
];
const SERVER: [(u8, u8); 5] = [
    (LISTEN, SYN_RECV),
    (SYN_RECV, ESTABLISHED),
    (ESTABLISHED, CLOSE_WAIT),
    (CLOSE_WAIT, LAST_ACK),
    (LAST_ACK, CLOSE),
];

/// A record as the kernel programs send it: the task only where it is the owner, the
/// close details only at →CLOSE, and then the whole `Event`, else its head alone.
fn record(ts_ns: u64, skaddr: u64, (old, new): (u8, u8), (sport, dport): (u16, u16)) -> Vec<u8> {
    let owner = task_is_owner(kind::STATE_CHANGE, old, new);
    let closing = new == CLOSE;
    let mut raw = Event {
        ts_ns,
        skaddr,
        cgroup_id: u64::from(owner),
        sock_cgroup_id: 1,
        netns: 4_026_531_840,
        tgid: if owner { 1000 } else { 0 },
        tid: if owner { 1000 } else { 0 },
        family: AF_INET,
        kind: kind::STATE_CHANGE,
        old_state: old,
        new_state: new,
        sport,
        dport,
        ..Event::ZERO
    };
    raw.saddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    raw.daddr[..4].copy_from_slice(&[127, 0, 0, 1]);
    if owner {
        raw.comm[..5].copy_from_slice(b"churn");
    }
    if closing {
        raw.close = CloseDetails {
            bytes_acked: 101,
            bytes_received: 51,
            segs_out: 4,
            segs_in: 4,
            srtt_us_x8: 80,
            rtt_min_us: 9,
            flags: close_flags::VALID,
            ..CloseDetails::ZERO
        };
    }
    let len = if closing { EVENT_SIZE } else { EVENT_HEAD_SIZE };
    // SAFETY: `Event` is plain data without implicit padding (size asserted), at least
    // `len` bytes long.
    unsafe { std::slice::from_raw_parts((&raw as *const Event).cast::<u8>(), len) }.to_vec()
}

/// 10 records per connection, `connections` of them, `concurrency` at a time.
pub(crate) fn churn(connections: u64, concurrency: u64) -> Vec<Vec<u8>> {
    let mut records = Vec::with_capacity(connections as usize * 10);
    let mut ts = 1_000_000_000u64;
    for wave in 0..connections.div_ceil(concurrency) {
        let first = wave * concurrency;
        let ids: Vec<u64> = (first..(first + concurrency).min(connections)).collect();
        for step in 0..5 {
            for &id in &ids {
                // Kernel addresses are reused across waves, as slabs reuse sockets.
                let slot = id % concurrency;
                let client_port = 1024 + (id % 60000) as u16;
                ts += 1_000;
                records.push(record(
                    ts,
                    0x1000 + slot * 2,
                    CLIENT[step],
                    (client_port, 8080),
                ));
                records.push(record(
                    ts,
                    0x1001 + slot * 2,
                    SERVER[step],
                    (8080, client_port),
                ));
            }
        }
    }
    records
}

/// One ESTABLISHED connection per id: CLOSE→SYN_SENT, SYN_SENT→ESTABLISHED.
pub(crate) fn established(connections: u64) -> Vec<Vec<u8>> {
    (0..connections)
        .flat_map(|id| {
            let port = (1024 + id % 60000) as u16;
            let remote = 1 + (id / 60000) as u16;
            CLIENT[..2]
                .iter()
                .map(move |&step| record(1_000 + id, 0x10_0000 + id * 8, step, (port, remote)))
        })
        .collect()
}
