//! Helpers for the privileged tests: load the real programs, drive real sockets.
//! Each such test is `#[ignore = "needs root"]` and starts with [`require_root`].
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

pub(crate) mod leaker;
pub(crate) mod netns;
pub(crate) mod serve;

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use tcptrace::{
    diag::netns::{dump_namespaces, Namespace, NamespacesDump},
    event::{EventKind, TcpEvent},
    probe::{spawn_reader, EventBatch, KernelFilter, PipelineStats, Probe, ProbeConfig},
    state::TcpState,
};
use tokio::{runtime::Runtime, sync::mpsc};

/// Panics unless root. Every privileged test is `#[ignore = "needs root"]`, so that a
/// run without root reports it as ignored instead of passing it; this says why one run
/// anyway (`--include-ignored`) cannot work. `cargo xtask test` runs them all as root.
pub(crate) fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "{} needs root: it loads eBPF programs, makes network namespaces or drops \
         privileges. Run `sudo -E cargo xtask test`.",
        std::thread::current().name().unwrap_or("this test")
    );
}

/// Panics unless the binary under test has the test hooks (`TCPTRACE_INJECT_*`,
/// src/fault.rs), which only a build with the `fault-injection` feature has.
pub(crate) fn require_fault_injection() {
    #[cfg(not(feature = "fault-injection"))]
    panic!(
        "{} injects faults: run `cargo test --features fault-injection` (as \
         `cargo xtask test` does)",
        std::thread::current().name().unwrap_or("this test")
    );
}

/// The programs loaded into the running kernel with a filter, and what they sent.
pub(crate) struct Harness {
    pub rt: Runtime,
    pub probe: Probe,
    rx: mpsc::Receiver<EventBatch>,
    pub stats: std::sync::Arc<PipelineStats>,
    pub events: Vec<TcpEvent>,
}

impl Harness {
    pub(crate) fn start(filter: KernelFilter) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let config = ProbeConfig {
            filter,
            ring_buffer_bytes: 1 << 20,
            ..ProbeConfig::default()
        };
        let (probe, ring) = Probe::load(&config).unwrap_or_else(|e| panic!("loading: {e}"));
        let stats = std::sync::Arc::default();
        let (tx, rx) = mpsc::channel(64);
        let _guard = rt.enter();
        spawn_reader(ring, tx, std::sync::Arc::clone(&stats));
        drop(_guard);
        Harness {
            rt,
            probe,
            rx,
            stats,
            events: Vec::new(),
        }
    }

    /// Collects events until `done(events)` holds or `timeout` passes, then for
    /// `settle` more so that an unexpected extra event would be caught too.
    pub(crate) fn collect_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[TcpEvent]) -> bool,
    ) -> &[TcpEvent] {
        let deadline = Instant::now() + timeout;
        let settle = Duration::from_millis(300);
        let mut settle_until: Option<Instant> = None;
        let rx = &mut self.rx;
        let events = &mut self.events;
        self.rt.block_on(async {
            loop {
                if settle_until.is_none() && done(events) {
                    settle_until = Some(Instant::now() + settle);
                }
                let until = settle_until
                    .unwrap_or(deadline)
                    .min(deadline.max(Instant::now()));
                if Instant::now() >= until {
                    break;
                }
                match tokio::time::timeout(until - Instant::now(), rx.recv()).await {
                    Ok(Some(batch)) => events.extend(batch),
                    Ok(None) => panic!("the ring buffer reader stopped"),
                    Err(_) => {}
                }
            }
        });
        &self.events
    }
}

/// Events grouped by socket (skaddr), sockets in order of first appearance.
pub(crate) fn by_socket(events: &[TcpEvent]) -> Vec<Vec<TcpEvent>> {
    let mut order: Vec<u64> = Vec::new();
    for e in events {
        if e.skaddr != 0 && !order.contains(&e.skaddr) {
            order.push(e.skaddr);
        }
    }
    order
        .into_iter()
        .map(|sk| events.iter().filter(|e| e.skaddr == sk).cloned().collect())
        .collect()
}

/// The socket whose first event is `old → new`.
pub(crate) fn socket_starting_with(
    events: &[TcpEvent],
    old: TcpState,
    new: TcpState,
) -> Option<Vec<TcpEvent>> {
    by_socket(events)
        .into_iter()
        .find(|evs| evs[0].kind == EventKind::StateChange { old, new })
}

pub(crate) fn transitions(events: &[TcpEvent]) -> Vec<(TcpState, TcpState)> {
    events
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::StateChange { old, new } => Some((old, new)),
            _ => None,
        })
        .collect()
}

/// What happened to one socket, in order.
pub(crate) fn kinds(events: &[TcpEvent]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

/// `old → new`, for writing expected sequences.
pub(crate) fn change(old: TcpState, new: TcpState) -> EventKind {
    EventKind::StateChange { old, new }
}

/// How many `→ CLOSE` transitions, to know when a scenario is over.
pub(crate) fn closes(events: &[TcpEvent]) -> usize {
    transitions(events)
        .iter()
        .filter(|(_, new)| *new == TcpState::Close)
        .count()
}

pub(crate) fn listen(addr: SocketAddr) -> TcpListener {
    TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

/// A listener on `addr` with a listen() backlog of `backlog`, in the calling thread's
/// namespace. (std listens with its own backlog; listen() again on a listening socket
/// sets the new one: `inet_listen()`.)
pub(crate) fn listen_with_backlog(addr: SocketAddr, backlog: i32) -> TcpListener {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    // SAFETY: listen(2) on a valid socket descriptor.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), backlog) };
    assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
    listener
}

/// `clients` connections toward `addr` from the calling thread's namespace, each a
/// non-blocking connect given 300 ms: those the kernel queued are returned, the others
/// (their SYN dropped on the full queue) are closed before their first SYN retry (1 s),
/// so that nothing more overflows afterwards.
pub(crate) fn connect_many(addr: SocketAddr, clients: usize) -> Vec<TcpStream> {
    (0..clients)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
        .collect()
}

/// `SO_LINGER {on, 0}`: close() then aborts with a RST instead of a FIN.
pub(crate) fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_LINGER): {}",
        std::io::Error::last_os_error()
    );
}

pub(crate) fn pause() {
    std::thread::sleep(Duration::from_millis(30));
}

/// `ss -Htan state <state> '( sport = :P or dport = :P )'`, counted.
pub(crate) fn ss_count(state: &str, port: u16) -> usize {
    let out = std::process::Command::new("ss")
        .args([
            "-Htan",
            "state",
            state,
            &format!("( sport = :{port} or dport = :{port} )"),
        ])
        .output()
        .expect("ss (iproute2) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// TIME_WAIT lasts 60 s: a port of its own per run (in `base..base + 1000`), so that a
/// quick re-run does not find the previous run's sockets.
pub(crate) fn time_wait_port(base: u16) -> u16 {
    base + (std::process::id() % 1000) as u16
}

/// Leaves `n` accepted sockets on `listener` in CLOSE_WAIT: each client closes at once,
/// and the returned ends are never closed.
pub(crate) fn close_wait_sockets(listener: &TcpListener, n: usize) -> Vec<TcpStream> {
    let addr = listener.local_addr().unwrap();
    (0..n)
        .map(|_| {
            let client = TcpStream::connect(addr).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            drop(client);
            accepted
        })
        .collect()
}

/// Leaves `n` client sockets toward `listener` in TIME_WAIT: the client closes first.
pub(crate) fn time_wait_sockets(listener: &TcpListener, n: usize) {
    let addr = listener.local_addr().unwrap();
    for _ in 0..n {
        let client = TcpStream::connect(addr).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        drop(client);
        pause();
        drop(accepted);
    }
}

/// The ids of every BPF program loaded in the kernel (`bpftool prog show`).
pub(crate) fn loaded_program_ids() -> std::collections::HashSet<u64> {
    bpftool_ids("prog")
}

/// The ids of every BPF map in the kernel (`bpftool map show`).
pub(crate) fn loaded_map_ids() -> std::collections::HashSet<u64> {
    bpftool_ids("map")
}

fn bpftool_ids(object: &str) -> std::collections::HashSet<u64> {
    let out = std::process::Command::new("bpftool")
        .args([object, "show", "--json"])
        .output()
        .expect("bpftool (Debian package `bpftool`) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let programs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    programs.iter().filter_map(|p| p["id"].as_u64()).collect()
}

/// The test's own network namespace, as the daemon finds it.
pub(crate) fn own_namespace() -> Namespace {
    tcptrace::diag::netns::own_namespace().expect("/proc/self/ns/net")
}

/// Every TCP socket of the test's own network namespace, dumped as the daemon does.
pub(crate) fn own_dump() -> NamespacesDump {
    let dump = dump_namespaces(&[own_namespace()], &TcpState::ALL);
    assert!(dump.failed.is_empty(), "dumping the own namespace failed");
    dump
}
