//! Tracepoint records as the kernel lays them out, one struct per format file
//! (`/sys/kernel/tracing/events/<category>/<name>/format`, from
//! `include/trace/events/sock.h` and `include/trace/events/tcp.h`).
//!
//! Each struct is read with a single `bpf_probe_read_kernel` of the whole record; the
//! offset assertions pin the layout to the format files measured on 6.18 (and stable for
//! `inet_sock_set_state` since 4.16). The first 8 bytes are the common trace header.

use core::mem::offset_of;

/// `sock:inet_sock_set_state`.
#[repr(C)]
pub struct InetSockSetState {
    pub common: u64,
    pub skaddr: u64,
    pub oldstate: i32,
    pub newstate: i32,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub saddr_v6: [u8; 16],
    pub daddr_v6: [u8; 16],
}
const _: () = {
    assert!(offset_of!(InetSockSetState, skaddr) == 8);
    assert!(offset_of!(InetSockSetState, oldstate) == 16);
    assert!(offset_of!(InetSockSetState, newstate) == 20);
    assert!(offset_of!(InetSockSetState, sport) == 24);
    assert!(offset_of!(InetSockSetState, dport) == 26);
    assert!(offset_of!(InetSockSetState, family) == 28);
    assert!(offset_of!(InetSockSetState, protocol) == 30);
    assert!(offset_of!(InetSockSetState, saddr) == 32);
    assert!(offset_of!(InetSockSetState, daddr) == 36);
    assert!(offset_of!(InetSockSetState, saddr_v6) == 40);
    assert!(offset_of!(InetSockSetState, daddr_v6) == 56);
};

/// `tcp:tcp_retransmit_skb` (6.18 layout, with `err`).
#[repr(C)]
pub struct TcpRetransmitSkb {
    pub common: u64,
    pub skbaddr: u64,
    pub skaddr: u64,
    pub state: i32,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub saddr_v6: [u8; 16],
    pub daddr_v6: [u8; 16],
    pub err: i32,
}
const _: () = {
    assert!(offset_of!(TcpRetransmitSkb, skaddr) == 16);
    assert!(offset_of!(TcpRetransmitSkb, state) == 24);
    assert!(offset_of!(TcpRetransmitSkb, sport) == 28);
    assert!(offset_of!(TcpRetransmitSkb, family) == 32);
    assert!(offset_of!(TcpRetransmitSkb, saddr) == 34);
    assert!(offset_of!(TcpRetransmitSkb, saddr_v6) == 42);
    assert!(offset_of!(TcpRetransmitSkb, daddr_v6) == 58);
    assert!(offset_of!(TcpRetransmitSkb, err) == 76);
};

/// `tcp:tcp_retransmit_synack`: `skaddr` is the listener, the ports and addresses
/// are the request's.
#[repr(C)]
pub struct TcpRetransmitSynack {
    pub common: u64,
    pub skaddr: u64,
    pub req: u64,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub saddr_v6: [u8; 16],
    pub daddr_v6: [u8; 16],
}
const _: () = {
    assert!(offset_of!(TcpRetransmitSynack, skaddr) == 8);
    assert!(offset_of!(TcpRetransmitSynack, sport) == 24);
    assert!(offset_of!(TcpRetransmitSynack, family) == 28);
    assert!(offset_of!(TcpRetransmitSynack, saddr) == 30);
    assert!(offset_of!(TcpRetransmitSynack, saddr_v6) == 38);
    assert!(offset_of!(TcpRetransmitSynack, daddr_v6) == 54);
};

/// `tcp:tcp_send_reset` (6.10+ layout): no port or family fields; `saddr`/`daddr` hold a
/// `struct sockaddr_in` or `sockaddr_in6` (ports in network order). `skaddr` is 0 when
/// the RST answers a segment that matched no socket; the kernel then fills the addresses
/// from the segment, already reversed so `saddr` is this host's end.
#[repr(C)]
pub struct TcpSendReset {
    pub common: u64,
    pub skbaddr: u64,
    pub skaddr: u64,
    pub state: i32,
    pub reason: u32,
    pub saddr: SockaddrStorage,
    pub daddr: SockaddrStorage,
}
const _: () = {
    assert!(offset_of!(TcpSendReset, skaddr) == 16);
    assert!(offset_of!(TcpSendReset, state) == 24);
    assert!(offset_of!(TcpSendReset, saddr) == 32);
    assert!(offset_of!(TcpSendReset, daddr) == 60);
};

/// `sizeof(struct sockaddr_in6)` bytes holding either a `sockaddr_in` or a `sockaddr_in6`
/// (`include/uapi/linux/in.h`, `in6.h`): family at 0, port (network order) at 2, the IPv4
/// address at 4 or the IPv6 address at 8.
#[repr(C)]
pub struct SockaddrStorage {
    pub family: u16,
    pub port_be: u16,
    pub rest: [u8; 24],
}
pub const SOCKADDR_IN_ADDR: usize = 0;
pub const SOCKADDR_IN6_ADDR: usize = 4;

/// `tcp:tcp_receive_reset` (6.18): no state field, so the state is read from the socket.
#[repr(C)]
pub struct TcpReceiveReset {
    pub common: u64,
    pub skaddr: u64,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub saddr_v6: [u8; 16],
    pub daddr_v6: [u8; 16],
    pub sock_cookie: u64,
}
const _: () = {
    assert!(offset_of!(TcpReceiveReset, skaddr) == 8);
    assert!(offset_of!(TcpReceiveReset, sport) == 16);
    assert!(offset_of!(TcpReceiveReset, family) == 20);
    assert!(offset_of!(TcpReceiveReset, saddr) == 22);
    assert!(offset_of!(TcpReceiveReset, saddr_v6) == 30);
    assert!(offset_of!(TcpReceiveReset, daddr_v6) == 46);
    assert!(offset_of!(TcpReceiveReset, sock_cookie) == 64);
};

/// `IPPROTO_TCP` (`include/uapi/linux/in.h`).
pub const IPPROTO_TCP: u16 = 6;

/// `TCP_NEW_SYN_RECV` (`include/net/tcp_states.h`): the state of a request socket,
/// which is what a SYN-ACK retransmit belongs to.
pub const TCP_NEW_SYN_RECV: u8 = 12;

/// `TCP_TIME_WAIT` (`include/net/tcp_states.h`): a timewait mini-socket's state.
pub const TCP_TIME_WAIT: u8 = 6;
/// `TCP_CLOSE`: the end of a connection's life (include/net/tcp_states.h).
pub const TCP_CLOSE: u8 = 7;
