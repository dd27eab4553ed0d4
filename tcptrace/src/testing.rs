//! Synthetic events shaped like what the kernel sends, for unit tests.

use std::net::SocketAddr;

use crate::{
    diag::{netns::NamespaceDump, netstat::ListenCounters, DiagSocket},
    event::{Comm, EventKind, Task, TcpEvent},
    state::TcpState,
    tracker::{ConnId, Connection, Direction, KernelSocket, Snapshot, SocketKey},
};

pub(crate) const CLIENT: &str = "127.0.0.1:40000";
pub(crate) const SERVER: &str = "127.0.0.1:8080";
pub(crate) const MS: u64 = 1_000_000;
/// The network namespace synthetic events and sockets are in unless a test says.
pub(crate) const NETNS: u32 = 4_026_531_840;
/// The cgroup id synthetic sockets belong to.
pub(crate) const SOCK_CGROUP: u64 = 77;

pub(crate) fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

pub(crate) fn event(
    sk: u64,
    ms: u64,
    kind: EventKind,
    local: &str,
    remote: &str,
    pid: u32,
) -> TcpEvent {
    TcpEvent {
        ts_ns: ms * MS,
        skaddr: sk,
        netns: NETNS,
        sock_cgroup_id: SOCK_CGROUP,
        task: Task {
            pid,
            tid: pid,
            cgroup_id: 1,
            comm: Comm(*b"app\0\0\0\0\0\0\0\0\0\0\0\0\0"),
        },
        local: addr(local),
        remote: addr(remote),
        kind,
        close: None,
    }
}

/// A state change of the client socket `sk`, made by `pid`.
pub(crate) fn client(sk: u64, ms: u64, old: TcpState, new: TcpState) -> TcpEvent {
    event(
        sk,
        ms,
        EventKind::StateChange { old, new },
        CLIENT,
        SERVER,
        100,
    )
}

pub(crate) fn server(sk: u64, ms: u64, old: TcpState, new: TcpState) -> TcpEvent {
    event(
        sk,
        ms,
        EventKind::StateChange { old, new },
        SERVER,
        CLIENT,
        0,
    )
}

/// A connection that went through `steps` (state, time in `unit_ns`): passive when it
/// starts at LISTEN, else active; its id's skaddr and generation are both `id`.
pub(crate) fn connection_through(
    id: u64,
    (local, remote): (&str, &str),
    steps: &[(TcpState, u64)],
    unit_ns: u64,
) -> Connection {
    let (&(first, first_at), rest) = steps.split_first().expect("at least one step");
    let direction = if first == TcpState::Listen {
        Direction::Passive
    } else {
        Direction::Active
    };
    let key = SocketKey {
        netns: NETNS,
        local: addr(local),
        remote: addr(remote),
    };
    let id = ConnId {
        skaddr: id,
        generation: id,
    };
    let mut conn = Connection::new(id, key, direction, first, first_at * unit_ns);
    for &(state, t) in rest {
        conn.push_step(state, t * unit_ns);
    }
    conn
}

/// A socket as a namespace's dump lists it, in [`NETNS`].
pub(crate) fn kernel_socket(state: TcpState, local: &str, remote: &str) -> KernelSocket {
    KernelSocket {
        key: SocketKey {
            netns: NETNS,
            local: addr(local),
            remote: addr(remote),
        },
        state,
        cgroup_id: 0,
    }
}

/// A pass that dumped the namespaces of `sockets` (and [`NETNS`]), begun at
/// `started_ns`.
pub(crate) fn snapshot(sockets: &[KernelSocket], started_ns: u64) -> Snapshot {
    Snapshot {
        sockets: sockets.to_vec(),
        dumped: sockets.iter().map(|s| s.key.netns).chain([NETNS]).collect(),
        unreachable: Default::default(),
        started_ns,
    }
}

/// A full socket as sock_diag reports it.
pub(crate) fn diag_socket(state: TcpState, local: &str, remote: &str) -> DiagSocket {
    DiagSocket {
        state,
        local: addr(local),
        remote: addr(remote),
        inode: 0,
        uid: 0,
        recv_queue: 0,
        send_queue: 0,
        request: false,
        timewait: state == TcpState::TimeWait,
        cgroup_id: Some(SOCK_CGROUP),
        cookie: 0,
        timer: None,
        tcp_info: None,
    }
}

/// A listening socket: its accept queue's length and limit, as sock_diag reports them
/// in the queue fields.
pub(crate) fn diag_listener(local: &str, inode: u32, queue: u32, limit: u32) -> DiagSocket {
    let any = if addr(local).is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    DiagSocket {
        inode,
        recv_queue: queue,
        send_queue: limit,
        ..diag_socket(TcpState::Listen, local, any)
    }
}

/// A request mini-socket: a half-open handshake toward `local`.
pub(crate) fn diag_request(local: &str, remote: &str) -> DiagSocket {
    DiagSocket {
        request: true,
        cgroup_id: None,
        ..diag_socket(TcpState::SynRecv, local, remote)
    }
}

/// One namespace's dump.
pub(crate) fn namespace_dump(
    netns: u32,
    sockets: Vec<DiagSocket>,
    listen_counters: Option<ListenCounters>,
) -> NamespaceDump {
    NamespaceDump {
        netns,
        sockets,
        port_range: None,
        listen_counters,
    }
}

/// A SYN-ACK retransmit toward `local` in namespace `netns`.
pub(crate) fn synack(netns: u32, ms: u64, local: &str) -> TcpEvent {
    TcpEvent {
        netns,
        ..event(
            9,
            ms,
            EventKind::RetransmitSynack,
            local,
            "10.9.9.9:50000",
            0,
        )
    }
}
