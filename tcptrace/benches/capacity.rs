//! Capacity figures that are sizes or one-off times rather than throughput: memory per
//! tracked connection (counted by the allocator, and as resident memory), the `/metrics`
//! render time with a full table, and sock_diag dump + reconcile time with many
//! TIME_WAIT sockets (`--time-wait N`: makes N real ones; root, inside a throwaway
//! network namespace). `--established N` measures what asking for `tcp_info`
//! (`INET_DIAG_INFO`) adds to a dump of N established connections (2N sockets; root,
//! inside a throwaway network namespace). `--namespaces N` instead measures only finding and dumping N
//! network namespaces of 1,000 TIME_WAIT sockets each (root, in the host's namespace;
//! see `namespaces/mod.rs`). Prints one JSON object per line.

mod namespaces;
mod synthetic;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::json;
use tcptrace::{
    clock::monotonic_now_ns,
    daemon::snapshot_of,
    decode::decode,
    detect::TimeWaitReport,
    diag::{
        dump_tcp_with,
        netns::{dump_namespaces, own_namespace},
        open_socket, ExtensionFlags,
    },
    metrics::{EventRecorder, Metrics},
    state::TcpState,
    tracker::{Connection, Tracker},
};

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: the caller's pointer and layout, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Relaxed);
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: the caller's arguments, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// A table holding `n` ESTABLISHED connections, from their events.
fn filled(n: u64) -> Tracker {
    let records = synthetic::established(n);
    let mut tracker = Tracker::new(n as usize + 1, 16);
    for record in &records {
        tracker.apply(&decode(record).expect("valid records"));
    }
    tracker
}

fn memory(n: u64) {
    let records = synthetic::established(n);
    let (live, resident) = (LIVE.load(Relaxed), resident_bytes());
    let mut tracker = Tracker::new(n as usize + 1, 16);
    for record in &records {
        tracker.apply(&decode(record).expect("valid records"));
    }
    let allocated = LIVE.load(Relaxed) - live;
    let grown = resident_bytes().saturating_sub(resident);
    assert_eq!(tracker.live_count() as u64, n);
    println!(
        "{}",
        json!({
            "measure": "memory",
            "connections": n,
            "allocated_bytes_per_connection": allocated as f64 / n as f64,
            "resident_bytes_per_connection": grown as f64 / n as f64,
            "connection_struct_bytes": std::mem::size_of::<Connection>(),
        })
    );
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn render(n: u64) {
    let tracker = filled(n);
    let metrics = Arc::new(Metrics::new().expect("metrics register"));
    let recorder = EventRecorder::new(Arc::clone(&metrics));
    let times: Vec<f64> = (0..21)
        .map(|_| {
            let started = Instant::now();
            recorder.record_table(&tracker);
            let text = metrics.render();
            std::hint::black_box(text);
            started.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    println!(
        "{}",
        json!({
            "measure": "metrics_render",
            "connections": n,
            "milliseconds": median(times),
        })
    );
}

/// Leaves `n` client sockets in TIME_WAIT, spread over several listeners so that no
/// (address, port) pair runs out of ports.
fn make_time_wait(n: u64) -> Vec<TcpListener> {
    // Each connection must leave its own TIME_WAIT socket: no reuse while we build.
    let _ = std::fs::write("/proc/sys/net/ipv4/tcp_tw_reuse", "0");
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_local_port_range", "1024 65535");
    let _ = std::fs::write("/proc/sys/net/ipv4/tcp_max_tw_buckets", "2000000");
    let listeners: Vec<TcpListener> = (0..4)
        .map(|i| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 30000 + i))).unwrap())
        .collect();
    let per_listener = n.div_ceil(listeners.len() as u64);
    std::thread::scope(|scope| {
        for listener in &listeners {
            scope.spawn(move || {
                let addr = listener.local_addr().unwrap();
                for _ in 0..per_listener {
                    let client = TcpStream::connect(addr).unwrap();
                    let (server, _) = listener.accept().unwrap();
                    drop(client); // the client closes first: it keeps the TIME_WAIT
                    drop(server);
                }
            });
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    listeners
}

fn reconcile(n: u64) {
    let _listeners = make_time_wait(n);
    let mut tracker = Tracker::new(65_536, 16);
    let mut dumps = Vec::new();
    let mut reconciles = Vec::new();
    let mut found = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let own = own_namespace().expect("/proc/self/ns/net");
        let dump = dump_namespaces(&[own], &TcpState::ALL);
        assert!(dump.failed.is_empty(), "sock_diag dump failed");
        dumps.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let now = monotonic_now_ns();
        tracker.reconcile(&snapshot_of(&dump.dumps, &[], now), now);
        found = TimeWaitReport::new(&dump.dumps, None, 10, 0.5).total;
        reconciles.push(started.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "{}",
        json!({
            "measure": "reconcile",
            "time_wait_sockets": found,
            "dump_milliseconds": median(dumps),
            "reconcile_milliseconds": median(reconciles),
        })
    );
}

/// Holds `n` loopback connections open (both ends), from 2 listeners.
fn make_established(n: u64) -> Vec<TcpStream> {
    let limit = libc::rlimit {
        rlim_cur: 4 * n + 1024,
        rlim_max: 4 * n + 1024,
    };
    // SAFETY: a valid rlimit for our own process.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    let listeners: Vec<TcpListener> = (0..2)
        .map(|i| TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 31000 + i))).unwrap())
        .collect();
    let mut held = Vec::with_capacity(2 * n as usize);
    for i in 0..n {
        let listener = &listeners[(i % 2) as usize];
        held.push(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        held.push(listener.accept().unwrap().0);
    }
    held
}

/// Dump time of `n` established connections without and with `INET_DIAG_INFO`,
/// interleaved, medians of 31 each.
fn tcp_info_cost(n: u64) {
    let _held = make_established(n);
    let socket = open_socket().expect("a sock_diag socket");
    let (mut plain, mut with_info) = (Vec::new(), Vec::new());
    let mut listed = 0;
    for _ in 0..31 {
        for (extensions, times) in [
            (ExtensionFlags::empty(), &mut plain),
            (ExtensionFlags::INFO, &mut with_info),
        ] {
            let started = Instant::now();
            let sockets = dump_tcp_with(&socket, &TcpState::ALL, extensions).expect("dump");
            times.push(started.elapsed().as_secs_f64() * 1e3);
            listed = sockets.len();
            std::hint::black_box(sockets);
        }
    }
    let (plain, with_info) = (median(plain), median(with_info));
    println!(
        "{}",
        json!({
            "measure": "tcp_info_dump",
            "sockets": listed,
            "dump_milliseconds": plain,
            "dump_with_tcp_info_milliseconds": with_info,
            "ratio": with_info / plain,
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    if let Some(n) = flag("--namespaces").and_then(|n| n.parse().ok()) {
        namespaces::measure(n);
        return;
    }
    if let Some(n) = flag("--established").and_then(|n| n.parse().ok()) {
        tcp_info_cost(n);
        return;
    }
    let time_wait = flag("--time-wait").and_then(|n| n.parse().ok());
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this once without
    // it, as a quick check that it still works.
    let sizes: &[u64] = if args.iter().any(|a| a == "--bench") {
        &[100_000, 1_000_000]
    } else {
        &[1_000]
    };
    for &n in sizes {
        memory(n);
    }
    render(sizes[0]);
    if let Some(n) = time_wait {
        reconcile(n);
    }
}
