//! `--namespaces N`: finding every network namespace and dumping each from inside it
//! (`diag::netns`), with N namespaces of `PER_NAMESPACE` TIME_WAIT sockets each. Runs in
//! the host's namespace (the namespaces are `ip netns add`ed, so `find_namespaces`
//! finds them the way it finds `ip netns` names) and removes them after, also when it
//! panics (`netns-guard`).
//!
//! Measured twice: with the namespaces sharing the host's TCP established hash (the
//! default), and with a hash of their own (`net.ipv4.tcp_child_ehash_entries` set in the
//! namespace that creates them, since 6.1). A sock_diag dump walks the whole hash its
//! namespace uses, skipping other namespaces' sockets (`inet_diag_dump_icsk()`,
//! net/ipv4/inet_diag.c), once per address family: with one shared hash, dumping every
//! namespace costs namespaces × all the host's sockets.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use netns_guard::Netns;
use serde_json::json;
use tcptrace::{
    diag::netns::{dump_namespaces, find_namespaces},
    state::TcpState,
};

/// TIME_WAIT sockets in each namespace: they hold no descriptor, so 100 × 1,000 stays
/// far below the open-files limit (DESIGN.md §6).
pub(crate) const PER_NAMESPACE: u64 = 1_000;
/// Threads making the sockets: as many as the machine's 2 cores.
const WORKERS: usize = 2;
/// Buckets of each namespace's own hash, in the second measurement.
const CHILD_EHASH_ENTRIES: u32 = 2048;

/// The namespaces, deleted on drop (the children before their parent) by the guard
/// the tests and `cargo xtask bench` use too.
struct Namespaces {
    children: Vec<Netns>,
    parent: Option<Netns>,
}

impl Namespaces {
    /// `n` namespaces, created from the host's namespace, or, with `child_ehash`, from a
    /// namespace that gives each child a hash of that many buckets.
    fn create(n: usize, child_ehash: Option<u32>) -> Namespaces {
        let pid = std::process::id();
        let mut namespaces = Namespaces {
            children: Vec::new(),
            parent: None,
        };
        if let Some(entries) = child_ehash {
            let parent = add(format!("tcptrace-bench-{pid}-parent"));
            let setting = format!("net.ipv4.tcp_child_ehash_entries={entries}");
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    parent.name(),
                    "sysctl",
                    "-q",
                    "-w",
                    &setting,
                ],
            );
            namespaces.parent = Some(parent);
        }
        for i in 0..n {
            let name = format!("tcptrace-bench-{pid}-{i}");
            let child = match &namespaces.parent {
                // `ip netns add` forked from a thread in the parent's network namespace
                // (and still in the host's mount namespace, where the name is bound).
                Some(parent) => std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            enter(parent.name());
                            add(name)
                        })
                        .join()
                        .expect("creating a child namespace")
                }),
                None => add(name),
            };
            namespaces.children.push(child);
        }
        namespaces
    }
}

/// `ip netns add name` with loopback up, or a panic.
fn add(name: String) -> Netns {
    Netns::add(name).unwrap_or_else(|e| panic!("{e}"))
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Moves the calling thread into namespace `name`.
fn enter(name: &str) {
    let file = File::open(Path::new("/run/netns").join(name)).expect("the namespace file");
    // SAFETY: a valid namespace descriptor; changes only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

/// `n` TIME_WAIT sockets in the calling thread's namespace.
fn make_time_wait(n: u64) {
    // /proc/sys/net is the namespace of the thread that opens it: this one's. A
    // namespace with its own hash allows only half as many TIME_WAIT sockets as the
    // hash has buckets (tcp_sk_init(), net/ipv4/tcp_ipv4.c).
    for (setting, value) in [("tcp_tw_reuse", "0"), ("tcp_max_tw_buckets", "2000000")] {
        std::fs::write(format!("/proc/sys/net/ipv4/{setting}"), value).expect(setting);
    }
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 30000))).unwrap();
    let addr = listener.local_addr().unwrap();
    for _ in 0..n {
        let client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        drop(client); // the client closes first: it keeps the TIME_WAIT
        drop(server);
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub(crate) fn measure(n: usize) {
    for child_ehash in [None, Some(CHILD_EHASH_ENTRIES)] {
        measure_with(n, child_ehash);
    }
}

fn measure_with(n: usize, child_ehash: Option<u32>) {
    let namespaces = Namespaces::create(n, child_ehash);
    std::thread::scope(|scope| {
        for worker in 0..WORKERS {
            let children = &namespaces.children;
            scope.spawn(move || {
                for child in children.iter().skip(worker).step_by(WORKERS) {
                    enter(child.name());
                    make_time_wait(PER_NAMESPACE);
                }
            });
        }
    });
    std::thread::sleep(Duration::from_millis(200));

    let (mut finds, mut dumps, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    let (mut found_count, mut sockets, mut failed) = (0, 0, 0);
    for _ in 0..5 {
        let started = Instant::now();
        let found = find_namespaces(Path::new("/proc"), Path::new("/run/netns"));
        let found_at = started.elapsed();
        let result = dump_namespaces(&found, &TcpState::ALL);
        let total = started.elapsed();
        finds.push(found_at.as_secs_f64() * 1e3);
        dumps.push((total - found_at).as_secs_f64() * 1e3);
        totals.push(total.as_secs_f64() * 1e3);
        found_count = found.len();
        sockets = result.dumps.iter().map(|d| d.sockets.len()).sum::<usize>();
        failed = result.failed.len();
        for (inum, error) in &result.failed {
            eprintln!("capacity: namespace {inum} not dumped: {error}");
        }
    }
    drop(namespaces);
    println!(
        "{}",
        json!({
            "measure": "namespaces",
            "child_ehash_entries": child_ehash.unwrap_or(0),
            "namespaces_made": n,
            "sockets_per_namespace": PER_NAMESPACE,
            "namespaces_found": found_count,
            "namespaces_failed": failed,
            "sockets_dumped": sockets,
            "find_milliseconds": median(finds),
            "dump_milliseconds": median(dumps),
            "total_milliseconds": median(totals),
        })
    );
}
