//! The event ABI shared by the kernel programs and the daemon.
//!
//! Everything here is plain data with fixed widths and explicit padding so that the
//! layout is the same for the `bpfel` target and the host. Kernel numbers (TCP states,
//! address families) stay raw here and become enums on the user side.
#![no_std]

use core::mem::size_of;

/// What produced an [`Event`].
///
/// Raw `u8` values rather than a Rust enum: the user side must survive a kernel
/// object that knows a kind it does not (it counts and skips such records).
pub mod kind {
    /// `sock:inet_sock_set_state`: `old_state → new_state`.
    pub const STATE_CHANGE: u8 = 1;
    /// `tcp:tcp_retransmit_skb`: one retransmitted skb (maybe several GSO segments).
    pub const RETRANSMIT: u8 = 2;
    /// `tcp:tcp_retransmit_synack`: a SYN-ACK sent again by a listener.
    pub const RETRANSMIT_SYNACK: u8 = 3;
    /// `tcp:tcp_send_reset`: this host sent a RST.
    pub const SEND_RESET: u8 = 4;
    /// `tcp:tcp_receive_reset`: a RST arrived for a socket.
    pub const RECEIVE_RESET: u8 = 5;
    /// The highest kind this ABI version defines.
    pub const MAX: u8 = RECEIVE_RESET;
}

/// `AF_INET` and `AF_INET6` as the kernel numbers them (`include/linux/socket.h`).
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// Length of `task_struct::comm` (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// The most ports `--port` can filter on in the kernel.
pub const MAX_FILTER_PORTS: usize = 8;

/// One record in the ring buffer.
///
/// Addresses are 16 bytes whatever the family: an IPv4 address sits in the first four
/// bytes, as in the tracepoints' `saddr`/`daddr`. `saddr`/`sport` are the socket's local
/// end, `daddr`/`dport` its peer; ports are in host order.
///
/// For events other than [`kind::STATE_CHANGE`], `old_state == new_state` is the socket's
/// state when it happened (0 when the kernel did not know it, e.g. a RST sent for a
/// segment that matched no socket).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, nanoseconds.
    pub ts_ns: u64,
    /// Kernel address of the `struct sock`: reused once the socket is freed.
    pub skaddr: u64,
    /// cgroup v2 id of the task on the CPU (`bpf_get_current_cgroup_id()`): in softirq
    /// an unrelated task's.
    pub cgroup_id: u64,
    /// cgroup v2 id of the socket itself (`sk->sk_cgrp_data.cgroup->kn->id`): the cgroup
    /// of the process that created it, right whatever runs on the CPU. 0 when unreadable
    /// and for RSTs sent without a full socket (none, or a timewait/request one).
    pub sock_cgroup_id: u64,
    /// Process (thread-group) id of the task on the CPU: only meaningful for
    /// transitions made in process context (see DESIGN.md).
    pub tgid: u32,
    /// Thread id of the task on the CPU.
    pub tid: u32,
    /// `tcp_retransmit_skb`'s `err` (0: the retransmit was sent); 0 for other kinds.
    pub err: i32,
    /// Inode number of the socket's network namespace (`sk->__sk_common.skc_net.net->
    /// ns.inum`, what `/proc/PID/ns/net` shows as `net:[N]`). 0 when unreadable or when
    /// the event has no socket (a RST sent for a segment that matched none).
    pub netns: u32,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub kind: u8,
    pub old_state: u8,
    pub new_state: u8,
    pub _pad: [u8; 7],
    pub comm: [u8; COMM_LEN],
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// What the socket carried and why it ended: filled only for a state change to
    /// TCP_CLOSE (its `valid` is 0 otherwise).
    pub close: CloseDetails,
}

/// The socket's counters and error state at →CLOSE, read from its `struct tcp_sock`
/// (`include/linux/tcp.h`) and `struct inet_connection_sock`
/// (`include/net/inet_connection_sock.h`) as the transition happens: what tcplife
/// prints, and what tells a dead peer from a refused or unreachable one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloseDetails {
    /// `tcp_sock.bytes_acked`: sequence space the peer acknowledged (RFC 4898
    /// tcpEStatsAppHCThruOctetsAcked): the data, and an active opener's SYN and this
    /// end's FIN once acknowledged, one each.
    pub bytes_acked: u64,
    /// `tcp_sock.bytes_received`: sequence space received in order
    /// (tcpEStatsAppHCThruOctetsReceived): the data, and the peer's FIN once it arrived.
    pub bytes_received: u64,
    /// `tcp_sock.segs_out`: segments sent, retransmits and pure ACKs included.
    pub segs_out: u32,
    /// `tcp_sock.segs_in`: segments received.
    pub segs_in: u32,
    /// `tcp_sock.total_retrans`: segments retransmitted over the connection's life.
    pub total_retrans: u32,
    /// `tcp_sock.srtt_us`: smoothed RTT in µs, shifted left by 3 as the kernel keeps it.
    pub srtt_us_x8: u32,
    /// `tcp_sock.rtt_min.s[0].v`: the windowed minimum RTT in µs (`tcp_min_rtt()`).
    pub rtt_min_us: u32,
    /// `sock.sk_err`: the error the close left for the application (positive errno:
    /// ETIMEDOUT, ECONNREFUSED, EHOSTUNREACH…), 0 for an orderly close.
    pub sk_err: i32,
    /// `write_seq - snd_una`: sequence space written but not acknowledged (data, and a
    /// FIN once sent).
    pub unacked: u32,
    /// `icsk_retransmits`: retransmission timeouts in a row without an ACK.
    pub retransmits: u8,
    /// `icsk_probes_out`: keepalive or zero-window probes unanswered.
    pub probes_out: u8,
    /// [`close_flags`]: whether the fields were read, whether the peer's FIN arrived.
    pub flags: u8,
    pub _pad0: u8,
    /// `sock.sk_err_soft`: an ICMP error seen but not (yet) fatal, e.g. while the
    /// socket was locked by a non-blocking connect(). `SO_ERROR` reads and clears it.
    pub sk_err_soft: i32,
    pub _pad: u32,
}

/// Bits of [`CloseDetails::flags`].
pub mod close_flags {
    /// The fields were read (a →CLOSE, and every read succeeded).
    pub const VALID: u8 = 1;
    /// The peer's FIN arrived (`SOCK_DONE`, set by `tcp_fin()`): `bytes_received`
    /// counts its one sequence number.
    pub const PEER_FIN: u8 = 2;
}

const _: () = assert!(size_of::<CloseDetails>() == 56);

impl CloseDetails {
    pub const ZERO: CloseDetails = CloseDetails {
        bytes_acked: 0,
        bytes_received: 0,
        segs_out: 0,
        segs_in: 0,
        total_retrans: 0,
        srtt_us_x8: 0,
        rtt_min_us: 0,
        sk_err: 0,
        unacked: 0,
        retransmits: 0,
        probes_out: 0,
        flags: 0,
        _pad0: 0,
        sk_err_soft: 0,
        _pad: 0,
    };
}

/// The record size the kernel writes: checked by the decoder on every record.
pub const EVENT_SIZE: usize = 168;
const _: () = assert!(size_of::<Event>() == EVENT_SIZE);

/// The size of a record without [`CloseDetails`]: every event but a →CLOSE state change
/// is sent this short (its close details are all zero), a cache line less per event.
pub const EVENT_HEAD_SIZE: usize = core::mem::offset_of!(Event, close);
const _: () = assert!(EVENT_HEAD_SIZE == 112 && EVENT_HEAD_SIZE.is_multiple_of(8));

/// Kernel TCP state numbers (include/net/tcp_states.h), for the kernel programs, the
/// shared rules below and the benchmarks' synthetic records; the daemon's typed
/// `TcpState` has the same numbering.
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

/// Whether the task on the CPU during this event is the socket's owner: only these
/// transitions are made by the owning process's own system calls (connect, listen,
/// close/shutdown); many others run in softirq, on whatever task was interrupted
/// (DESIGN.md §2). The kernel programs fill the task fields (pid, comm, cgroup) only for
/// these, and the daemon takes owners only from them.
pub const fn task_is_owner(kind: u8, old_state: u8, new_state: u8) -> bool {
    use tcp_state::*;
    kind == kind::STATE_CHANGE
        && matches!(
            (old_state, new_state),
            (CLOSE, SYN_SENT)
                | (CLOSE, LISTEN)
                | (ESTABLISHED, FIN_WAIT1)
                | (CLOSE_WAIT, LAST_ACK)
                | (LISTEN, CLOSE)
        )
}
// The ring buffer hands out 8-byte aligned records (kernel/bpf/ringbuf.c).
const _: () = assert!(core::mem::align_of::<Event>() == 8);

impl Event {
    /// An all-zero event, the starting point kernel programs fill in.
    pub const ZERO: Event = Event {
        ts_ns: 0,
        skaddr: 0,
        cgroup_id: 0,
        sock_cgroup_id: 0,
        tgid: 0,
        tid: 0,
        err: 0,
        netns: 0,
        sport: 0,
        dport: 0,
        family: 0,
        kind: 0,
        old_state: 0,
        new_state: 0,
        _pad: [0; 7],
        comm: [0; COMM_LEN],
        saddr: [0; 16],
        daddr: [0; 16],
        close: CloseDetails::ZERO,
    };
}

/// Byte offsets of the kernel struct fields the programs read (and one flag's bit), resolved from the running
/// kernel's BTF (`/sys/kernel/btf/vmlinux`) at load time and passed as a load-time global:
/// nothing is hard-coded, so a kernel whose layout differs is read right (DESIGN.md §8).
/// Each is the offset from the start of the outer struct, nested members summed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `struct sock`: `__sk_common.skc_state` (u8).
    pub sock_state: u32,
    /// `struct sock`: `__sk_common.skc_net.net` (`struct net *`).
    pub sock_net: u32,
    /// `struct net`: `ns.inum` (u32).
    pub net_inum: u32,
    /// `struct sock`: `sk_cgrp_data.cgroup` (`struct cgroup *`).
    pub sock_cgroup: u32,
    /// `struct cgroup`: `kn` (`struct kernfs_node *`).
    pub cgroup_kn: u32,
    /// `struct kernfs_node`: `id` (u64, the cgroup v2 id).
    pub kernfs_node_id: u32,
    /// `struct sock`: `sk_err` (int).
    pub sock_err: u32,
    /// `struct sock`: `sk_err_soft` (int).
    pub sock_err_soft: u32,
    /// `struct tcp_sock`: `bytes_acked` (u64).
    pub tcp_bytes_acked: u32,
    /// `struct tcp_sock`: `bytes_received` (u64).
    pub tcp_bytes_received: u32,
    /// `struct tcp_sock`: `segs_out` (u32).
    pub tcp_segs_out: u32,
    /// `struct tcp_sock`: `segs_in` (u32).
    pub tcp_segs_in: u32,
    /// `struct tcp_sock`: `total_retrans` (u32).
    pub tcp_total_retrans: u32,
    /// `struct tcp_sock`: `srtt_us` (u32).
    pub tcp_srtt_us: u32,
    /// `struct tcp_sock`: `rtt_min.s` (`struct minmax_sample[3]`).
    pub tcp_rtt_min: u32,
    /// `struct minmax_sample`: `v` (u32), added to [`Self::tcp_rtt_min`] for `s[0].v`.
    pub minmax_sample_v: u32,
    /// `struct tcp_sock`: `inet_conn.icsk_retransmits` (u8).
    pub icsk_retransmits: u32,
    /// `struct tcp_sock`: `inet_conn.icsk_probes_out` (u8).
    pub icsk_probes_out: u32,
    /// `struct tcp_sock`: `snd_una` (u32).
    pub tcp_snd_una: u32,
    /// `struct tcp_sock`: `write_seq` (u32).
    pub tcp_write_seq: u32,
    /// `struct sock`: `__sk_common.skc_flags` (unsigned long, `sock_flag()`'s bits).
    pub sock_flags: u32,
    /// Not an offset: the bit of `SOCK_DONE` in `enum sock_flags`.
    pub sock_done_bit: u32,
    /// `struct sock`: `__sk_common.skc_family` (u16).
    pub sock_family: u32,
    /// `struct sock`: `__sk_common.skc_num` (u16, host order: the local port of a
    /// request or timewait socket; a full socket's is cleared at →CLOSE, so those use
    /// [`Self::inet_sport`]).
    pub sock_num: u32,
    /// `struct sock`: `__sk_common.skc_dport` (__be16).
    pub sock_dport: u32,
    /// `struct sock`: `__sk_common.skc_rcv_saddr` (__be32).
    pub sock_rcv_saddr: u32,
    /// `struct sock`: `__sk_common.skc_daddr` (__be32).
    pub sock_daddr: u32,
    /// `struct sock`: `__sk_common.skc_v6_rcv_saddr` (`struct in6_addr`).
    pub sock_v6_rcv_saddr: u32,
    /// `struct sock`: `__sk_common.skc_v6_daddr` (`struct in6_addr`).
    pub sock_v6_daddr: u32,
    /// `struct tcp_sock`: `inet_conn.icsk_inet.inet_sport` (__be16).
    pub inet_sport: u32,
    /// `struct tcp_sock`: `inet_conn.icsk_inet.inet_saddr` (__be32).
    pub inet_saddr: u32,
    /// `struct sk_buff`: `head` (unsigned char *).
    pub skb_head: u32,
    /// `struct sk_buff`: `data` (unsigned char *).
    pub skb_data: u32,
    /// `struct sk_buff`: `network_header` (u16, from `head`).
    pub skb_network_header: u32,
}

const _: () = assert!(size_of::<KernelOffsets>() == 136);

impl KernelOffsets {
    /// The placeholder the kernel programs are compiled with; the loader always sets it.
    pub const ZERO: KernelOffsets = KernelOffsets {
        sock_state: 0,
        sock_net: 0,
        net_inum: 0,
        sock_cgroup: 0,
        cgroup_kn: 0,
        kernfs_node_id: 0,
        sock_err: 0,
        sock_err_soft: 0,
        tcp_bytes_acked: 0,
        tcp_bytes_received: 0,
        tcp_segs_out: 0,
        tcp_segs_in: 0,
        tcp_total_retrans: 0,
        tcp_srtt_us: 0,
        tcp_rtt_min: 0,
        minmax_sample_v: 0,
        icsk_retransmits: 0,
        icsk_probes_out: 0,
        tcp_snd_una: 0,
        tcp_write_seq: 0,
        sock_flags: 0,
        sock_done_bit: 0,
        sock_family: 0,
        sock_num: 0,
        sock_dport: 0,
        sock_rcv_saddr: 0,
        sock_daddr: 0,
        sock_v6_rcv_saddr: 0,
        sock_v6_daddr: 0,
        inet_sport: 0,
        inet_saddr: 0,
        skb_head: 0,
        skb_data: 0,
        skb_network_header: 0,
    };
}

/// Which kernel reads the programs make, a load-time setting (`KERNEL_READS`). Only
/// the benchmark turns any off: it measures what each costs per event.
pub mod reads {
    /// The socket's namespace and cgroup, on every event.
    pub const SOCKET_CONTEXT: u8 = 1;
    /// The `tcp_sock` counters and error state, at →CLOSE.
    pub const CLOSE_DETAILS: u8 = 2;
    pub const ALL: u8 = SOCKET_CONTEXT | CLOSE_DETAILS;
    /// Not a default: the task on the CPU (pid, comm, cgroup) on every event, as before
    /// issue 12, where the programs now read it only on the transitions whose task is
    /// the owner ([`crate::task_is_owner`]). The benchmark prices the difference.
    pub const TASK_ON_EVERY_EVENT: u8 = 4;
}

/// Per-CPU counters kept by the kernel side, indices into the `COUNTERS` array.
pub mod counter {
    /// Events that did not fit in the ring buffer (reservation failed).
    pub const LOST: u32 = 0;
    /// Events whose tracepoint fields, or their socket's namespace, could not be read.
    pub const READ_ERRORS: u32 = 1;
    pub const COUNT: u32 = 2;
}

#[cfg(feature = "user")]
// SAFETY: `Event` is `repr(C)`, made only of integers and byte arrays, with explicit padding,
// so every bit pattern is valid and there are no implicit padding bytes.
unsafe impl aya::Pod for Event {}

#[cfg(feature = "user")]
// SAFETY: `KernelOffsets` is `repr(C)` and made only of `u32`s: no padding, every bit
// pattern valid.
unsafe impl aya::Pod for KernelOffsets {}
