//! Kernel programs: one per tracepoint, each shaped like libbpf-tools' tcpstates —
//! take the socket, filter, fill one [`Event`] in place in the ring buffer, count what
//! did not fit.
//!
//! They are BTF tracepoints (`tp_btf`): the kernel calls them with the tracepoint's own
//! arguments (`struct sock *`, …), before any trace record is built, and every field is
//! a direct load through those typed pointers ([`kernel`]). The classic tracepoints
//! these replace copied each record, then read the socket's namespace, cgroup and close
//! state with ~20 helper calls (BENCHMARKS.md has the before and after).
#![no_std]
#![no_main]

mod kernel;

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_skc_to_tcp_sock, generated,
    },
    macros::{btf_tracepoint, map},
    maps::{PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
    Global,
};
use kernel::{offset, read, KernelPtr};
use tcptrace_common::{
    close_flags, counter, kind, reads, task_is_owner,
    tcp_state::{CLOSE as TCP_CLOSE, NEW_SYN_RECV as TCP_NEW_SYN_RECV, TIME_WAIT as TCP_TIME_WAIT},
    CloseDetails, Event, AF_INET, AF_INET6, COMM_LEN, EVENT_HEAD_SIZE, MAX_FILTER_PORTS,
};

/// Default 4 MiB: ~33k events of 120 bytes (record + header; 176 at →CLOSE), over 100 ms
/// at the ~300k events/s of peak loopback churn. The loader may resize it.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Per-CPU counters indexed by [`counter`]: losses are counted, never hidden.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Load-time filter: 0 for any family, else `AF_INET` or `AF_INET6`.
#[unsafe(no_mangle)]
static FILTER_FAMILY: Global<u16> = Global::new(0);
/// Load-time filter: how many entries of [`FILTER_PORTS`] are set (0: every port).
#[unsafe(no_mangle)]
static FILTER_PORT_COUNT: Global<u32> = Global::new(0);
/// Load-time filter: an event passes when either end's port is one of these.
#[unsafe(no_mangle)]
static FILTER_PORTS: Global<[u16; MAX_FILTER_PORTS]> = Global::new([0; MAX_FILTER_PORTS]);

/// Load-time filter: only sockets in the network namespace with this inode number
/// (0: every namespace).
#[unsafe(no_mangle)]
static FILTER_NETNS: Global<u32> = Global::new(0);

/// Load-time setting: which of the optional kernel reads to make ([`reads`]). Always
/// [`reads::ALL`] but in the benchmark's rows that price each; a constant to the
/// verifier, so the reads turned off are pruned from the program, not skipped.
#[unsafe(no_mangle)]
static KERNEL_READS: Global<u8> = Global::new(reads::ALL);

/// Load-time setting: force a wakeup of the reader every this many events on a CPU, and
/// pass `BPF_RB_NO_WAKEUP` otherwise (0: the kernel's default, a wakeup whenever the
/// reader has caught up). A wakeup per event costs more than the rest of the program
/// (measured: ~3 µs against ~0.15 µs), and the reader drains on a timer too, so events
/// on a quiet host still arrive within its drain interval. Counting per CPU replaces a
/// `bpf_ringbuf_query` of the whole buffer's fill on every event.
#[unsafe(no_mangle)]
static WAKEUP_EVERY: Global<u64> = Global::new(0);

/// Per-CPU countdown to the next forced wakeup.
#[map]
static WAKEUP_COUNTDOWN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn wakeup_flags() -> u64 {
    let every = WAKEUP_EVERY.load();
    if every == 0 {
        return 0;
    }
    let Some(left) = WAKEUP_COUNTDOWN.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
    unsafe {
        if *left <= 1 {
            *left = every;
            BPF_RB_FORCE_WAKEUP.into()
        } else {
            *left -= 1;
            BPF_RB_NO_WAKEUP.into()
        }
    }
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn wanted(family: u16, sport: u16, dport: u16) -> bool {
    let want_family = FILTER_FAMILY.load();
    if want_family != 0 && want_family != family {
        return false;
    }
    let count = FILTER_PORT_COUNT.load();
    if count == 0 {
        return true;
    }
    let ports = FILTER_PORTS.load();
    let mut i = 0;
    while i < MAX_FILTER_PORTS {
        if (i as u32) < count && (ports[i] == sport || ports[i] == dport) {
            return true;
        }
        i += 1;
    }
    false
}

/// The inode number of the socket's network namespace: `sk->__sk_common.skc_net.net->
/// ns.inum` (include/net/sock.h, include/linux/ns_common.h). Any socket, mini ones too:
/// the field is in `struct sock_common`.
#[inline(always)]
fn socket_netns(sk: KernelPtr) -> u32 {
    let net: KernelPtr = read(sk, offset!(sock_net));
    read(net, offset!(net_inum))
}

/// The socket's own cgroup v2 id: `sk->sk_cgrp_data.cgroup->kn->id`, what
/// `sock_cgroup_ptr()` + `cgroup_id()` give (include/linux/cgroup.h). Set when the
/// socket is made, so it names the creating process's cgroup even in softirq, where
/// `bpf_get_current_cgroup_id()` names whatever task was interrupted. Full sockets only.
#[inline(always)]
fn socket_cgroup_id(sk: KernelPtr) -> u64 {
    let cgroup: KernelPtr = read(sk, offset!(sock_cgroup));
    let kn: KernelPtr = read(cgroup, offset!(cgroup_kn));
    read(kn, offset!(kernfs_node_id))
}

/// What the socket carried and why it ended, read from its `tcp_sock` as it goes →CLOSE.
/// →CLOSE fires as tcp_set_state() stores the state (inet_sk_state_store()), inside
/// tcp_done(): sk_err, the probe and timeout counts and the sequence numbers are as the
/// end left them (tcp_write_queue_purge() before it reset the RTO backoff, which is why
/// that is not read).
#[inline(always)]
fn close_details(tp: KernelPtr) -> CloseDetails {
    let snd_una: u32 = read(tp, offset!(tcp_snd_una));
    let write_seq: u32 = read(tp, offset!(tcp_write_seq));
    let sock_flags: u64 = read(tp, offset!(sock_flags));
    let peer_fin = if (sock_flags >> (offset!(sock_done_bit) & 63)) & 1 != 0 {
        close_flags::PEER_FIN
    } else {
        0
    };
    CloseDetails {
        bytes_acked: read(tp, offset!(tcp_bytes_acked)),
        bytes_received: read(tp, offset!(tcp_bytes_received)),
        segs_out: read(tp, offset!(tcp_segs_out)),
        segs_in: read(tp, offset!(tcp_segs_in)),
        total_retrans: read(tp, offset!(tcp_total_retrans)),
        srtt_us_x8: read(tp, offset!(tcp_srtt_us)),
        rtt_min_us: read(tp, offset!(tcp_rtt_min) + offset!(minmax_sample_v)),
        sk_err: read(tp, offset!(sock_err)),
        unacked: write_seq.wrapping_sub(snd_una),
        retransmits: read(tp, offset!(icsk_retransmits)),
        probes_out: read(tp, offset!(icsk_probes_out)),
        flags: close_flags::VALID | peer_fin,
        _pad0: 0,
        sk_err_soft: read(tp, offset!(sock_err_soft)),
        _pad: 0,
    }
}

/// What happened, to which socket.
struct Head {
    kind: u8,
    skaddr: u64,
    old_state: u8,
    new_state: u8,
    err: i32,
}

/// Between which ends: an IPv4 address in the low 4 bytes of the first word (the event's
/// 16-byte fields are written a word at a time, not byte by byte).
#[derive(Clone, Copy)]
struct Tuple {
    family: u16,
    sport: u16,
    dport: u16,
    saddr: [u64; 2],
    daddr: [u64; 2],
}

/// Where the socket's namespace, cgroup and close details come from: the socket the
/// event names when it is a full one, the mini socket (timewait, request) it names, or
/// nothing (a RST sent for a segment that matched no socket).
#[derive(Clone, Copy)]
enum Context {
    Full(KernelPtr),
    Mini(KernelPtr),
    None,
}

/// The one emitter the five programs share: the load-time filters, then the event,
/// written field by field straight into its ring buffer slot (no copy through the
/// stack); counted as lost if it does not fit.
#[inline(always)]
fn emit(head: Head, tuple: Tuple, context: Context) {
    if !wanted(tuple.family, tuple.sport, tuple.dport) {
        return;
    }
    let mut netns = 0;
    let mut sock_cgroup_id = 0;
    if KERNEL_READS.load() & reads::SOCKET_CONTEXT != 0 {
        match context {
            Context::Full(sk) => {
                netns = socket_netns(sk);
                sock_cgroup_id = socket_cgroup_id(sk);
            }
            // Mini sockets share `struct sock_common`, so the namespace is right, but
            // have no `sk_cgrp_data`.
            Context::Mini(sk) => netns = socket_netns(sk),
            Context::None => {}
        }
        if netns == 0 && !matches!(context, Context::None) {
            bump(counter::READ_ERRORS);
        }
        let want_netns = FILTER_NETNS.load();
        if want_netns != 0 && netns != want_netns {
            return;
        }
    }
    let fields = Fields {
        head,
        tuple,
        netns,
        sock_cgroup_id,
    };
    // Only a →CLOSE carries close details; every other event is sent without them. Two
    // separate paths, so the verifier sees each slot's size with the writes into it.
    if head_is_close(&fields.head) {
        let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
            bump(counter::LOST);
            return;
        };
        let event = entry.as_mut_ptr();
        // SAFETY: a reserved slot of a whole `Event`, submitted right after.
        unsafe {
            fill_head(event, &fields);
            (*event).close = match context {
                Context::Full(tp) if KERNEL_READS.load() & reads::CLOSE_DETAILS != 0 => {
                    close_details(tp)
                }
                _ => CloseDetails::ZERO,
            };
        }
        entry.submit(wakeup_flags());
    } else {
        let Some(mut entry) = EVENTS.reserve::<[u8; EVENT_HEAD_SIZE]>(0) else {
            bump(counter::LOST);
            return;
        };
        // SAFETY: a reserved slot of an `Event`'s head, submitted right after.
        unsafe { fill_head(entry.as_mut_ptr().cast::<Event>(), &fields) };
        entry.submit(wakeup_flags());
    }
}

#[inline(always)]
fn head_is_close(head: &Head) -> bool {
    head.kind == kind::STATE_CHANGE && head.new_state == TCP_CLOSE
}

/// Everything an event's head holds that the program worked out before reserving it.
struct Fields {
    head: Head,
    tuple: Tuple,
    netns: u32,
    sock_cgroup_id: u64,
}

/// Writes every field before `close`, in place.
///
/// # Safety
/// `event` points to a reserved, writable slot at least [`EVENT_HEAD_SIZE`] long.
#[inline(always)]
unsafe fn fill_head(event: *mut Event, fields: &Fields) {
    let (head, tuple) = (&fields.head, &fields.tuple);
    unsafe {
        (*event).ts_ns = bpf_ktime_get_ns();
        (*event).skaddr = head.skaddr;
        (*event).sock_cgroup_id = fields.sock_cgroup_id;
        (*event).err = head.err;
        (*event).netns = fields.netns;
        (*event).sport = tuple.sport;
        (*event).dport = tuple.dport;
        (*event).family = tuple.family;
        (*event).kind = head.kind;
        (*event).old_state = head.old_state;
        (*event).new_state = head.new_state;
        (*event)._pad = [0; 7];
        *core::ptr::addr_of_mut!((*event).saddr).cast::<[u64; 2]>() = tuple.saddr;
        *core::ptr::addr_of_mut!((*event).daddr).cast::<[u64; 2]>() = tuple.daddr;
        let owner = task_is_owner(head.kind, head.old_state, head.new_state);
        fill_task(
            event,
            owner || KERNEL_READS.load() & reads::TASK_ON_EVERY_EVENT != 0,
        );
    }
}

/// The task on the CPU, only where it is the socket's owner (`task_is_owner`): elsewhere
/// it is whatever task a softirq interrupted, worth less than the ~100 ns the three
/// helpers cost, so those fields stay zero.
///
/// # Safety
/// `event` points to a reserved, writable `Event` head.
#[inline(always)]
unsafe fn fill_task(event: *mut Event, wanted: bool) {
    unsafe {
        if wanted {
            let pid_tgid = bpf_get_current_pid_tgid();
            (*event).tgid = (pid_tgid >> 32) as u32;
            (*event).tid = pid_tgid as u32;
            (*event).cgroup_id = bpf_get_current_cgroup_id();
            let comm = core::ptr::addr_of_mut!((*event).comm);
            if generated::bpf_get_current_comm(comm.cast::<c_void>(), COMM_LEN as u32) == 0 {
                return;
            }
            *comm = [0; COMM_LEN];
        } else {
            (*event).tgid = 0;
            (*event).tid = 0;
            (*event).cgroup_id = 0;
            *core::ptr::addr_of_mut!((*event).comm).cast::<[u64; 2]>() = [0; 2];
        }
    }
}

/// A 16-byte address field of a socket.
#[inline(always)]
fn address16(sk: KernelPtr, offset: u32) -> [u64; 2] {
    [read(sk, offset), read(sk, offset + 8)]
}

/// A socket's family, ports and addresses: the remote end and IPv6 addresses from
/// `sock_common`, the local port as given, the local IPv4 address at `v4_saddr`.
#[inline(always)]
fn socket_tuple(sk: KernelPtr, sport: u16, v4_saddr: u32) -> Tuple {
    let family: u16 = read(sk, offset!(sock_family));
    let (saddr, daddr) = if family == AF_INET6 {
        (
            address16(sk, offset!(sock_v6_rcv_saddr)),
            address16(sk, offset!(sock_v6_daddr)),
        )
    } else {
        (
            [u64::from(read::<u32>(sk, v4_saddr)), 0],
            [u64::from(read::<u32>(sk, offset!(sock_daddr))), 0],
        )
    };
    Tuple {
        family,
        sport,
        dport: u16::from_be(read(sk, offset!(sock_dport))),
        saddr,
        daddr,
    }
}

/// A full TCP socket's 4-tuple as the tracepoints' `TP_STORE_ADDRS` read it: the local
/// port and IPv4 address from `inet_sock` (`skc_num` is cleared before →CLOSE fires).
#[inline(always)]
fn full_socket_tuple(tp: KernelPtr) -> Tuple {
    let sport = u16::from_be(read(tp, offset!(inet_sport)));
    socket_tuple(tp, sport, offset!(inet_saddr))
}

/// A request or timewait socket's 4-tuple, all in its `sock_common` (`ir_num`,
/// `ir_rmt_port`, `ir_loc_addr`, … are names for these fields).
#[inline(always)]
fn mini_socket_tuple(sk: KernelPtr) -> Tuple {
    socket_tuple(sk, read(sk, offset!(sock_num)), offset!(sock_rcv_saddr))
}

/// `sk` as a `struct tcp_sock *` when it is a full TCP socket: what `bpf_skc_to_tcp_sock`
/// checks (`sk_fullsock()`, `IPPROTO_TCP`, `SOCK_STREAM`), so MPTCP and SCTP sockets,
/// which fire `inet_sock_set_state` too, give `None`.
#[inline(always)]
fn tcp_sock(sk: KernelPtr) -> Option<KernelPtr> {
    if sk.is_null() {
        return None;
    }
    // SAFETY: a helper that checks what the pointer is before it casts.
    let tp = unsafe { bpf_skc_to_tcp_sock(sk as *mut c_void) } as KernelPtr;
    (!tp.is_null()).then_some(tp)
}

/// An event about a full socket in the state it is in.
#[inline(always)]
fn emit_for_full_socket(kind: u8, tp: KernelPtr, err: i32) {
    let state: u8 = read(tp, offset!(sock_state));
    let head = Head {
        kind,
        skaddr: tp as u64,
        old_state: state,
        new_state: state,
        err,
    };
    emit(head, full_socket_tuple(tp), Context::Full(tp));
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: BtfTracePointContext) -> i32 {
    let Some(tp) = tcp_sock(ctx.arg(0)) else {
        return 0;
    };
    let old_state: i32 = ctx.arg(1);
    let new_state: i32 = ctx.arg(2);
    let head = Head {
        kind: kind::STATE_CHANGE,
        skaddr: tp as u64,
        old_state: old_state as u8,
        new_state: new_state as u8,
        err: 0,
    };
    emit(head, full_socket_tuple(tp), Context::Full(tp));
    0
}

#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: BtfTracePointContext) -> i32 {
    if let Some(tp) = tcp_sock(ctx.arg(0)) {
        emit_for_full_socket(kind::RETRANSMIT, tp, ctx.arg(2));
    }
    0
}

#[btf_tracepoint(function = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: BtfTracePointContext) -> i32 {
    let listener: KernelPtr = ctx.arg(0);
    let req: KernelPtr = ctx.arg(1);
    if listener.is_null() || req.is_null() {
        return 0;
    }
    // The event names the listener (as the tracepoint's skaddr does) with the request
    // socket's 4-tuple; namespace and cgroup are the listener's.
    let head = Head {
        kind: kind::RETRANSMIT_SYNACK,
        skaddr: listener as u64,
        old_state: TCP_NEW_SYN_RECV,
        new_state: TCP_NEW_SYN_RECV,
        err: 0,
    };
    let context = match tcp_sock(listener) {
        Some(tp) => Context::Full(tp),
        None => Context::Mini(listener),
    };
    emit(head, mini_socket_tuple(req), context);
    0
}

#[btf_tracepoint(function = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: BtfTracePointContext) -> i32 {
    let sk: KernelPtr = ctx.arg(0);
    if let Some(tp) = tcp_sock(sk) {
        emit_for_full_socket(kind::SEND_RESET, tp, 0);
    } else if !sk.is_null() {
        // A timewait or request socket answering a segment: its 4-tuple is the reversed
        // segment's, which is what the tracepoint's record holds.
        let state: u8 = read(sk, offset!(sock_state));
        if matches!(state, TCP_TIME_WAIT | TCP_NEW_SYN_RECV) {
            let head = Head {
                kind: kind::SEND_RESET,
                skaddr: sk as u64,
                old_state: state,
                new_state: state,
                err: 0,
            };
            emit(head, mini_socket_tuple(sk), Context::Mini(sk));
        }
    } else if let Some(tuple) = packet_tuple(ctx.arg(1)) {
        let head = Head {
            kind: kind::SEND_RESET,
            skaddr: 0,
            old_state: 0,
            new_state: 0,
            err: 0,
        };
        emit(head, tuple, Context::None);
    }
    0
}

/// The 4-tuple of a RST sent for a segment that matched no socket: the segment's,
/// reversed, read from its headers (`skb->data` is the TCP header here, as the
/// tracepoint assumes). The headers are packet data, not a BTF-typed struct, so this
/// rare path reads them through the helper.
#[inline(always)]
fn packet_tuple(skb: KernelPtr) -> Option<Tuple> {
    if skb.is_null() {
        return None;
    }
    let head: u64 = read(skb, offset!(skb_head));
    let network_header: u16 = read(skb, offset!(skb_network_header));
    let tcp_header: u64 = read(skb, offset!(skb_data));
    let ip = head + u64::from(network_header);
    let version = probe::<u8>(ip)? >> 4;
    // struct tcphdr: source then dest, big endian.
    let ports: [u8; 4] = probe(tcp_header)?;
    let (family, saddr, daddr) = match version {
        // struct iphdr: saddr at 12, daddr at 16.
        4 => (
            AF_INET,
            [u64::from(probe::<u32>(ip + 16)?), 0],
            [u64::from(probe::<u32>(ip + 12)?), 0],
        ),
        // struct ipv6hdr: saddr at 8, daddr at 24.
        6 => (AF_INET6, probe(ip + 24)?, probe(ip + 8)?),
        _ => return None,
    };
    Some(Tuple {
        family,
        sport: u16::from_be_bytes([ports[2], ports[3]]),
        dport: u16::from_be_bytes([ports[0], ports[1]]),
        saddr,
        daddr,
    })
}

/// Packet bytes at `address`, through the helper that fails cleanly on a bad address.
#[inline(always)]
fn probe<T>(address: u64) -> Option<T> {
    // SAFETY: a kernel read through the helper.
    let value = unsafe { bpf_probe_read_kernel(address as *const T) }.ok();
    if value.is_none() {
        bump(counter::READ_ERRORS);
    }
    value
}

#[btf_tracepoint(function = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: BtfTracePointContext) -> i32 {
    // Fired from tcp_reset() before tcp_done(), so its state is the state the RST hit.
    if let Some(tp) = tcp_sock(ctx.arg(0)) {
        emit_for_full_socket(kind::RECEIVE_RESET, tp, 0);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
