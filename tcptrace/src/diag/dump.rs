//! The netlink conversation: one dump request per family, read until NLMSG_DONE.

use std::{io, path::PathBuf};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
pub use netlink_packet_sock_diag::inet::ExtensionFlags;
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NetlinkAddr};

use super::DiagSocket;
use crate::state::TcpState;

#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("opening a NETLINK_SOCK_DIAG socket: {0} (is CONFIG_INET_DIAG enabled?)")]
    Open(std::io::Error),
    #[error("sending the sock_diag request: {0}")]
    Send(std::io::Error),
    #[error("reading the sock_diag reply: {0}")]
    Receive(std::io::Error),
    #[error("undecodable sock_diag reply: {0}")]
    Decode(String),
    #[error("the kernel refused the sock_diag dump: {0}")]
    Kernel(std::io::Error),
    #[error("entering network namespace {inum} through {}: {source}", path.display())]
    Enter {
        inum: u32,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{} is now network namespace {found}, not {expected}: the namespace it named is gone",
        path.display()
    )]
    Replaced {
        expected: u32,
        found: u32,
        path: PathBuf,
    },
    #[error(
        "opening /proc/thread-self/ns/net, the dump thread's way back to its own network \
         namespace: {0} (is /proc mounted?)"
    )]
    NoWayBack(io::Error),
    #[error(
        "the dump thread could not return to its own network namespace ({0}) and stopped \
         before this one"
    )]
    Stranded(io::Error),
    #[error("the namespace dump thread: {0}")]
    Thread(String),
}

impl DiagError {
    /// The namespace went away between finding it and dumping it (its process exited,
    /// `ip netns del`): not a fault of tcptrace or of the kernel.
    pub fn namespace_gone(&self) -> bool {
        match self {
            // ESRCH: a process exiting as its ns/net is opened.
            DiagError::Enter { source, .. } => {
                source.kind() == io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ESRCH)
            }
            DiagError::Replaced { .. } => true,
            _ => false,
        }
    }
}

fn state_flags(states: &[TcpState]) -> StateFlags {
    states.iter().fold(StateFlags::empty(), |flags, s| {
        flags | StateFlags::from_bits_retain(1 << s.as_kernel())
    })
}

/// Every TCP socket (IPv4 and IPv6) in one of `states`, in the calling thread's
/// network namespace.
pub fn dump_tcp(states: &[TcpState]) -> Result<Vec<DiagSocket>, DiagError> {
    dump_tcp_on(&open_socket()?, states)
}

/// A bound `NETLINK_SOCK_DIAG` socket. It belongs to the network namespace of the
/// thread that creates it, for its whole life, whatever namespace the thread (or
/// another one) uses it from later (`netlink_create()` takes `sock_net` from the
/// creating task's nsproxy; net/netlink/af_netlink.c).
pub fn open_socket() -> Result<Socket, DiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(DiagError::Open)?;
    socket.bind_auto().map_err(DiagError::Open)?;
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(DiagError::Open)?;
    Ok(socket)
}

/// Every TCP socket (IPv4 and IPv6) in one of `states`, in the network namespace
/// `socket` was created in (see [`open_socket`]), each full socket with its
/// `tcp_info` (`INET_DIAG_INFO`, what `ss -i` asks for).
pub fn dump_tcp_on(socket: &Socket, states: &[TcpState]) -> Result<Vec<DiagSocket>, DiagError> {
    dump_tcp_with(socket, states, ExtensionFlags::INFO)
}

/// [`dump_tcp_on`] asking for the attributes `extensions` names (the request's
/// `idiag_ext`); the cgroup id comes unasked.
pub fn dump_tcp_with(
    socket: &Socket,
    states: &[TcpState],
    extensions: ExtensionFlags,
) -> Result<Vec<DiagSocket>, DiagError> {
    let mut sockets = Vec::new();
    for (family, id) in [
        (AF_INET, SocketId::new_v4()),
        (AF_INET6, SocketId::new_v6()),
    ] {
        let request = InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: extensions.clone(),
            states: state_flags(states),
            socket_id: id,
        };
        dump_family(socket, request, &mut sockets)?;
    }
    Ok(sockets)
}

fn dump_family(
    socket: &Socket,
    request: InetRequest,
    out: &mut Vec<DiagSocket>,
) -> Result<(), DiagError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).map_err(DiagError::Send)?;

    // Large enough for a page of replies; the kernel fills at most this per recv.
    let mut receive = vec![0u8; 64 * 1024];
    loop {
        receive.clear();
        let size = socket.recv(&mut receive, 0).map_err(DiagError::Receive)?;
        if parse_replies(&receive[..size], out)? {
            return Ok(());
        }
    }
}

/// Parses one `recv`'s worth of netlink messages into `out`; true once the dump's
/// NLMSG_DONE is among them. Any bytes at all give an answer or an error, never a
/// panic or a loop that does not advance.
pub fn parse_replies(buf: &[u8], out: &mut Vec<DiagSocket>) -> Result<bool, DiagError> {
    let mut offset = 0;
    while offset < buf.len() {
        let message = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[offset..])
            .map_err(|e| DiagError::Decode(e.to_string()))?;
        let length = message.header.length as usize;
        match message.payload {
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(err) => return Err(DiagError::Kernel(err.to_io())),
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                out.extend(DiagSocket::from_response(&response));
            }
            _ => {}
        }
        if length == 0 {
            return Err(DiagError::Decode("zero-length netlink message".into()));
        }
        offset += length;
    }
    Ok(false)
}
