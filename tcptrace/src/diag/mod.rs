//! sock_diag (`NETLINK_SOCK_DIAG`, what `ss` uses): the kernel's own list of TCP sockets.
//!
//! The event stream gives rates and stories; exact levels come from here (DESIGN.md §1,
//! §4): the startup seed, the periodic reconcile and TIME_WAIT counts; and, through the
//! socket inode, the process that owns a socket ([`owners`]); and the container and pod
//! behind a socket's cgroup id ([`cgroup`]).
//!
//! A dump lists only the sockets of the network namespace its netlink socket was created
//! in (DESIGN.md §7): [`netns`] dumps every namespace, each from a socket made inside it.

pub mod cgroup;
mod dump;
pub mod netns;
pub mod netstat;
pub mod owners;
pub mod tcp_info;

use std::net::SocketAddr;

pub use dump::{
    dump_tcp, dump_tcp_on, dump_tcp_with, open_socket, parse_replies, DiagError, ExtensionFlags,
};
use netlink_packet_core::Nla as _;
use netlink_packet_sock_diag::inet::{nlas::Nla, InetResponse, InetResponseHeader, Timer};

use self::tcp_info::{ArmedTimer, TcpInfo};
use crate::{state::TcpState, tracker::SocketKey};

/// One socket as sock_diag reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagSocket {
    pub state: TcpState,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The socket inode (0 for orphans and timewait sockets): `/proc/<pid>/fd` links
    /// `socket:[inode]` name its owner.
    pub inode: u32,
    pub uid: u32,
    /// Unread bytes; for a listener, the accept queue's length (`sk_ack_backlog`:
    /// connections that finished their handshake and wait for accept()). `ss` shows it
    /// as Recv-Q.
    pub recv_queue: u32,
    /// Unacknowledged bytes; for a listener, the accept queue's limit
    /// (`sk_max_ack_backlog`: the listen() backlog, capped by net.core.somaxconn). `ss`
    /// shows it as Send-Q. Both from `tcp_diag_get_info()` (net/ipv4/tcp_diag.c).
    pub send_queue: u32,
    /// A request mini-socket (`TCP_NEW_SYN_RECV`): a half-open connection a listener
    /// holds between its SYN-ACK and the client's ACK, before any full socket exists.
    /// sock_diag lists them with the SYN_RECV flag and reports them as SYN_RECV
    /// (`inet_req_diag_fill()`, net/ipv4/inet_diag.c), without the attributes every
    /// full socket carries: no `INET_DIAG_SHUTDOWN`, no cgroup, inode 0. Not a
    /// connection: the full socket appears only once the handshake completes.
    pub request: bool,
    /// A timewait mini-socket (TIME_WAIT, or the FIN_WAIT2 substate of an orphan),
    /// not a full socket: its full socket already went →CLOSE.
    pub timewait: bool,
    /// The cgroup v2 id of the socket (the cgroup of the task that created it; the
    /// inode number of that cgroup's directory), from `INET_DIAG_CGROUP_ID`. Only full
    /// sockets carry it: `None` for timewait and request sockets, and on kernels before
    /// 5.8 or without `CONFIG_SOCK_CGROUP_DATA`.
    pub cgroup_id: Option<u64>,

    // Half-open detection (`ss -o`, `ss -i`): which socket this is across dumps, the
    // timer armed on it, and what `tcp_info` says of its peer.
    /// The kernel's socket cookie (`idiag_cookie`): unique while the host runs, so the
    /// same socket in two dumps, whatever else reuses its 4-tuple in between.
    pub cookie: u64,
    /// The timer armed on it (`ss -o`), if any.
    pub timer: Option<ArmedTimer>,
    /// `INET_DIAG_INFO` (`ss -i`): only full sockets carry it.
    pub tcp_info: Option<TcpInfo>,
}

/// `INET_DIAG_CGROUP_ID` (include/uapi/linux/inet_diag.h; since 5.8): a u64 the kernel
/// adds to every full socket's reply unasked, no request extension bit
/// (`inet_diag_msg_attrs_fill()`, net/ipv4/inet_diag.c). netlink-packet-sock-diag 0.5
/// has no variant for it: it arrives as `Nla::Other`.
pub const INET_DIAG_CGROUP_ID: u16 = 21;

/// `idiag_cookie` as the kernel writes it: two 32-bit words in host order, the low
/// one first (net/core/sock_diag.c: `sock_diag_save_cookie()`).
fn cookie(bytes: &[u8; 8]) -> u64 {
    let [a, b, c, d, e, f, g, h] = *bytes;
    u64::from(u32::from_ne_bytes([a, b, c, d])) | u64::from(u32::from_ne_bytes([e, f, g, h])) << 32
}

impl DiagSocket {
    /// Converts a response header; `None` for a state this build does not know.
    pub fn from_header(header: &InetResponseHeader) -> Option<DiagSocket> {
        let id = &header.socket_id;
        Some(DiagSocket {
            state: TcpState::from_kernel(header.state)?,
            local: SocketAddr::new(id.source_address, id.source_port),
            remote: SocketAddr::new(id.destination_address, id.destination_port),
            inode: header.inode,
            uid: header.uid,
            recv_queue: header.recv_queue,
            send_queue: header.send_queue,
            request: false,
            timewait: header.timer == Some(Timer::TimeWait),
            cgroup_id: None,
            cookie: cookie(&id.cookie),
            timer: ArmedTimer::from_header(header.timer.as_ref()),
            tcp_info: None,
        })
    }

    /// Converts a whole response: the header and the attributes used here.
    pub fn from_response(response: &InetResponse) -> Option<DiagSocket> {
        let mut socket = Self::from_header(&response.header)?;
        // `inet_diag_msg_attrs_fill()` gives every full socket its shutdown state; the
        // request and timewait fillers add no such attribute.
        let full = response
            .nlas
            .iter()
            .any(|nla| matches!(nla, Nla::Shutdown(_)));
        socket.request = socket.state == TcpState::SynRecv && !full;
        socket.cgroup_id = response.nlas.iter().find_map(|nla| match nla {
            Nla::Other(attr) if attr.kind() == INET_DIAG_CGROUP_ID && attr.value_len() == 8 => {
                let mut value = [0u8; 8];
                attr.emit_value(&mut value);
                Some(u64::from_ne_bytes(value))
            }
            _ => None,
        });
        socket.tcp_info = response.nlas.iter().find_map(|nla| match nla {
            Nla::TcpInfo(bytes) => TcpInfo::parse(bytes),
            _ => None,
        });
        Some(socket)
    }

    /// Its 4-tuple as (local, remote).
    pub fn tuple(&self) -> (SocketAddr, SocketAddr) {
        (self.local, self.remote)
    }

    /// A full socket: neither a timewait nor a request mini-socket.
    pub fn is_full(&self) -> bool {
        !self.timewait && !self.request
    }

    /// Where it is, given the namespace whose dump listed it.
    pub fn key(&self, netns: u32) -> SocketKey {
        SocketKey {
            netns,
            local: self.local,
            remote: self.remote,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr},
        time::Duration,
    };

    use netlink_packet_sock_diag::inet::SocketId;

    use super::*;

    fn header(state: u8, timer: Option<Timer>) -> InetResponseHeader {
        let mut id = SocketId::new_v4();
        id.source_address = IpAddr::V4(Ipv4Addr::LOCALHOST);
        id.source_port = 8080;
        id.destination_address = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        id.destination_port = 50000;
        InetResponseHeader {
            family: 2,
            state,
            timer,
            socket_id: id,
            recv_queue: 12,
            send_queue: 3,
            uid: 1000,
            inode: 4242,
        }
    }

    #[test]
    fn converts_a_close_wait_socket() {
        let socket = DiagSocket::from_header(&header(8, None)).unwrap();
        assert_eq!(socket.state, TcpState::CloseWait);
        assert_eq!(socket.local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(socket.remote, "127.0.0.2:50000".parse().unwrap());
        assert_eq!(
            (
                socket.inode,
                socket.uid,
                socket.recv_queue,
                socket.send_queue
            ),
            (4242, 1000, 12, 3)
        );
        assert!(!socket.timewait);
        assert!(socket.is_full());
    }

    fn response(state: u8, timer: Option<Timer>, nlas: Vec<Nla>) -> InetResponse {
        InetResponse {
            header: header(state, timer),
            nlas: nlas.into(),
        }
    }

    #[test]
    fn tells_request_mini_sockets_from_full_syn_recv_sockets() {
        let retransmit = || Some(Timer::Retransmit(std::time::Duration::from_millis(700), 1));
        // What inet_req_diag_fill() sends: SYN_RECV, the retransmit timer, no attributes
        // (INET_DIAG_MARK only for CAP_NET_ADMIN).
        let request =
            DiagSocket::from_response(&response(3, retransmit(), vec![Nla::Mark(0)])).unwrap();
        assert_eq!(request.state, TcpState::SynRecv);
        assert!(request.request && !request.timewait && !request.is_full());
        // A full socket in SYN_RECV (a Fast Open child) carries its shutdown state.
        let full =
            DiagSocket::from_response(&response(3, retransmit(), vec![Nla::Shutdown(0)])).unwrap();
        assert!(!full.request && full.is_full());
        // Only SYN_RECV can be a request socket.
        let listener = DiagSocket::from_response(&response(10, None, vec![])).unwrap();
        assert!(!listener.request);
    }

    #[test]
    fn recognises_timewait_mini_sockets_and_unknown_states() {
        let socket = DiagSocket::from_header(&header(6, Some(Timer::TimeWait))).unwrap();
        assert_eq!(socket.state, TcpState::TimeWait);
        assert!(socket.timewait);
        // An orphan's FIN_WAIT2 substate is a timewait socket too.
        assert!(
            DiagSocket::from_header(&header(5, Some(Timer::TimeWait)))
                .unwrap()
                .timewait
        );
        assert_eq!(DiagSocket::from_header(&header(0, None)), None);
        assert_eq!(DiagSocket::from_header(&header(99, None)), None);
    }

    #[test]
    fn reads_the_cookie_the_timer_and_tcp_info_of_a_reply() {
        use netlink_packet_sock_diag::inet::InetResponse;
        use tcp_info::{TimerKind, MIN_TCP_INFO_LEN};

        let mut head = header(1, Some(Timer::Retransmit(Duration::from_millis(1630), 3)));
        let cookie: u64 = 0x0000_0001_0000_2a2b;
        let (low, high) = (cookie as u32, (cookie >> 32) as u32);
        head.socket_id.cookie[..4].copy_from_slice(&low.to_ne_bytes());
        head.socket_id.cookie[4..].copy_from_slice(&high.to_ne_bytes());
        let info = TcpInfo {
            retransmits: 3,
            backoff: 3,
            rto_us: 1_600_000,
            unacked: 2,
            last_ack_recv_ms: 2_010,
            total_retrans: 3,
            ..TcpInfo::default()
        };
        let response = |bytes: Vec<u8>| InetResponse {
            header: head.clone(),
            nlas: [Nla::TcpInfo(bytes)].into_iter().collect(),
        };
        let socket = DiagSocket::from_response(&response(info.to_bytes(232))).unwrap();
        assert_eq!(socket.cookie, cookie);
        assert_eq!(
            socket.timer,
            Some(ArmedTimer {
                kind: TimerKind::Retransmit,
                expires_ms: 1630
            })
        );
        assert_eq!(socket.tcp_info, Some(info));
        // A struct too short for the fields: no tcp_info, the socket still listed.
        let short = DiagSocket::from_response(&response(vec![0; MIN_TCP_INFO_LEN - 4])).unwrap();
        assert_eq!((short.tcp_info, short.cookie), (None, cookie));
        let plain = DiagSocket::from_header(&header(8, None)).unwrap();
        assert_eq!((plain.timer, plain.tcp_info, plain.cookie), (None, None, 0));
    }
}
