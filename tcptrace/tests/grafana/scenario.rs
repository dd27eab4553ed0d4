//! Something for every panel to show, made for real between two network namespaces
//! joined by veth (a: clients, b: servers): a process leaking CLOSE_WAIT sockets,
//! TIME_WAIT sockets, a full accept queue that overflowed, a refused connect, a reset,
//! and a connection whose peer stopped answering (retransmits, a half-open suspect).
//! Every socket and the leaking process are held until the scenario is dropped.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
};

use crate::common::{
    connect_many,
    leaker::{inum_of, netns_of, Leaker},
    listen_with_backlog,
    netns::{in_netns, NetnsPair},
    set_linger_zero,
};

/// The leaking server (loopback in b), its leaks and its TIME_WAIT connections.
pub(crate) const LEAK_PORT: u16 = 29101;
pub(crate) const LEAKS: usize = 2;
pub(crate) const TIME_WAIT: usize = 3;
/// The listener whose accept queue fills; the queue holds backlog + 1.
pub(crate) const QUEUE_PORT: u16 = 29102;
pub(crate) const BACKLOG: i32 = 2;
const CLIENTS: usize = 8;
/// Nothing listens there: the connect is refused.
pub(crate) const REFUSED_PORT: u16 = 29103;
/// A connection the client aborts (SO_LINGER 0).
pub(crate) const RESET_PORT: u16 = 29104;
/// A connection whose server's namespace drops everything toward it from some point on.
pub(crate) const STALL_PORT: u16 = 29105;
pub(crate) const PORTS: [u16; 5] = [LEAK_PORT, QUEUE_PORT, REFUSED_PORT, RESET_PORT, STALL_PORT];
/// What tcptrace is told: the ports above, detectors that fire within the test, and
/// reconciles often enough that the levels follow within a second.
pub(crate) const HALF_OPEN_AFTER: &str = "2s";
pub(crate) const CLOSE_WAIT_THRESHOLD: &str = "1s";

pub(crate) struct Scenario {
    pub leaker: Leaker,
    /// Namespace a's and b's inode numbers.
    pub client_netns: u32,
    pub server_netns: u32,
    /// The full queue's address.
    pub queue: SocketAddr,
    _listeners: Vec<TcpListener>,
    _held: Vec<TcpStream>,
}

impl Scenario {
    /// Makes it all; returns once every socket is in the state it is meant to stay in.
    pub(crate) fn run(pair: &NetnsPair) -> Scenario {
        let mut leaker = Leaker::spawn(&pair.b, LEAK_PORT, LEAKS, 0, TIME_WAIT);
        leaker.go();
        let server_netns = inum_of(&pair.b);
        assert_eq!(netns_of(leaker.pid()), u64::from(server_netns));

        let queue = SocketAddr::from((pair.addr_b, QUEUE_PORT));
        let reset = SocketAddr::from((pair.addr_b, RESET_PORT));
        let stall = SocketAddr::from((pair.addr_b, STALL_PORT));
        let listeners = in_netns(&pair.b, || {
            [queue, reset, stall].map(|addr| listen_with_backlog(addr, BACKLOG))
        });
        let [_, reset_listener, stall_listener] = &listeners;

        // More clients than the queue holds, none accepted: the rest overflowed.
        let queued = in_netns(&pair.a, || connect_many(queue, CLIENTS));
        assert_eq!(
            queued.len(),
            BACKLOG as usize + 1,
            "the queue holds backlog + 1"
        );

        let refused = SocketAddr::from((pair.addr_b, REFUSED_PORT));
        let error = in_netns(&pair.a, || TcpStream::connect(refused)).expect_err("nothing listens");
        assert_eq!(error.kind(), ErrorKind::ConnectionRefused, "{error}");

        let aborted = in_netns(&pair.a, || TcpStream::connect(reset)).expect("connect");
        let (reset_server, _) = reset_listener.accept().expect("accept");
        set_linger_zero(&aborted);
        drop(aborted);

        let mut stalled = in_netns(&pair.a, || TcpStream::connect(stall)).expect("connect");
        let (mut stall_server, _) = stall_listener.accept().expect("accept");
        stalled.write_all(b"hello").unwrap();
        let mut hello = [0u8; 5];
        stall_server.read_exact(&mut hello).unwrap();
        pair.nft(
            &pair.b,
            &format!(
                "table inet tcptrace_grafana {{\n chain input {{\n  type filter hook input \
                 priority 0;\n  tcp dport {STALL_PORT} drop\n }}\n}}\n"
            ),
        );
        // Never acknowledged: retransmitted until the test ends (tcp_retries2 is 15).
        stalled.write_all(&[7u8; 1000]).unwrap();

        let mut held = queued;
        held.extend([reset_server, stalled, stall_server]);
        Scenario {
            leaker,
            client_netns: inum_of(&pair.a),
            server_netns,
            queue,
            _listeners: Vec::from(listeners),
            _held: held,
        }
    }
}
