//! Synthetic events shaped like what the kernel sends, for unit tests.

use std::net::SocketAddr;

use crate::{
    event::{Comm, EventKind, Task, TcpEvent},
    state::TcpState,
};

pub const CLIENT: &str = "127.0.0.1:40000";
pub const SERVER: &str = "127.0.0.1:8080";
pub const MS: u64 = 1_000_000;

pub fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

pub fn event(sk: u64, ms: u64, kind: EventKind, local: &str, remote: &str, pid: u32) -> TcpEvent {
    TcpEvent {
        ts_ns: ms * MS,
        skaddr: sk,
        task: Task {
            pid,
            tid: pid,
            cgroup_id: 1,
            comm: Comm(*b"app\0\0\0\0\0\0\0\0\0\0\0\0\0"),
        },
        local: addr(local),
        remote: addr(remote),
        kind,
    }
}

/// A state change of the client socket `sk`, made by `pid`.
pub fn client(sk: u64, ms: u64, old: TcpState, new: TcpState) -> TcpEvent {
    event(
        sk,
        ms,
        EventKind::StateChange { old, new },
        CLIENT,
        SERVER,
        100,
    )
}

pub fn server(sk: u64, ms: u64, old: TcpState, new: TcpState) -> TcpEvent {
    event(
        sk,
        ms,
        EventKind::StateChange { old, new },
        SERVER,
        CLIENT,
        0,
    )
}
