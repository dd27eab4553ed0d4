//! The netlink conversation: one dump request per family, read until NLMSG_DONE.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
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
}

fn state_flags(states: &[TcpState]) -> StateFlags {
    states.iter().fold(StateFlags::empty(), |flags, s| {
        flags | StateFlags::from_bits_retain(1 << s.as_kernel())
    })
}

/// Every TCP socket (IPv4 and IPv6) in one of `states`, in this network namespace.
pub fn dump_tcp(states: &[TcpState]) -> Result<Vec<DiagSocket>, DiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(DiagError::Open)?;
    socket.bind_auto().map_err(DiagError::Open)?;
    socket
        .connect(&NetlinkAddr::new(0, 0))
        .map_err(DiagError::Open)?;
    let mut sockets = Vec::new();
    for (family, id) in [
        (AF_INET, SocketId::new_v4()),
        (AF_INET6, SocketId::new_v6()),
    ] {
        dump_family(&socket, family, id, state_flags(states), &mut sockets)?;
    }
    Ok(sockets)
}

fn dump_family(
    socket: &Socket,
    family: u8,
    socket_id: SocketId,
    states: StateFlags,
    out: &mut Vec<DiagSocket>,
) -> Result<(), DiagError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id,
        })
        .into(),
    );
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
                out.extend(DiagSocket::from_header(&response.header));
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
