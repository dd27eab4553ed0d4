//! Privileged: the guarded HTTP server against 1,000 idle or trickling loopback
//! connections that reconnect whenever the server closes them. `/metrics` from a fresh
//! connection must keep answering within a second, and the daemon must hold no more
//! descriptors than its connection cap allows. Bounded: 1,000 sockets at once, at most
//! 10,000 connects, 20 s; everything is closed at the end, even on failure.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use common::{serve::*, *};

const CAP: usize = 64;
const CONNECTIONS: usize = 1000;
/// Of which these send their request's header a byte a second, never finishing.
const TRICKLING: usize = 100;
const MAX_CONNECTS: u64 = 10_000;
const FLOOD_FOR: Duration = Duration::from_secs(20);
/// What the daemon may hold beyond its baseline and the cap: the accepted connection
/// waiting for a slot, and slack for descriptors that come and go (a dump's netlink
/// socket, a /proc scan).
const FD_SLACK: usize = 8;

/// Raises this process's soft RLIMIT_NOFILE to `want` (within the hard limit).
fn raise_nofile(want: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
    assert!(
        limit.rlim_cur >= CONNECTIONS as u64 + 100,
        "RLIMIT_NOFILE {} is too low",
        limit.rlim_cur
    );
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the daemon's /proc/PID/fd")
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The attackers: `CONNECTIONS` sockets, each reopened a second after the server
/// closes it, the first `TRICKLING` sending a header a byte a second. Stops on `stop`,
/// after `FLOOD_FOR` or `MAX_CONNECTS`, and closes every socket.
struct Flood {
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicU64>,
    closed_by_server: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// One attacker: connect, stay (trickling or silent) until the server closes, wait a
/// second, again.
async fn attacker(
    addr: SocketAddr,
    trickles: bool,
    stop: Arc<AtomicBool>,
    connects: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    const HEADER: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: flood\r\nX-Trickle: ";
    let deadline = Instant::now() + FLOOD_FOR;
    let running = || !stop.load(Relaxed) && Instant::now() < deadline;
    while running() && connects.load(Relaxed) < MAX_CONNECTS {
        let connected =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                .await;
        let Ok(Ok(mut stream)) = connected else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        connects.fetch_add(1, Relaxed);
        let mut sent = 0;
        let mut buf = [0u8; 512];
        while running() {
            tokio::select! {
                read = stream.read(&mut buf) => if matches!(read, Ok(0) | Err(_)) {
                    closed.fetch_add(1, Relaxed);
                    break;
                },
                () = tokio::time::sleep(Duration::from_secs(1)) => if trickles {
                    let byte = HEADER.get(sent).copied().unwrap_or(b'a');
                    if stream.write_all(&[byte]).await.is_ok() {
                        sent += 1;
                    }
                },
            }
        }
        if running() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl Flood {
    fn start(addr: SocketAddr) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let connects = Arc::new(AtomicU64::new(0));
        let closed_by_server = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, connects, closed) = (
                Arc::clone(&stop),
                Arc::clone(&connects),
                Arc::clone(&closed_by_server),
            );
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut attackers = tokio::task::JoinSet::new();
                    for i in 0..CONNECTIONS {
                        attackers.spawn(attacker(
                            addr,
                            i < TRICKLING,
                            Arc::clone(&stop),
                            Arc::clone(&connects),
                            Arc::clone(&closed),
                        ));
                    }
                    while attackers.join_next().await.is_some() {}
                });
                // Every socket is closed with its task.
            })
        };
        Flood {
            stop,
            connects,
            closed_by_server,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the flood thread");
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The most descriptors and the most RSS seen while it runs.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(usize, u64)>>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut most_fds, mut most_rss) = (0, 0);
                while !stop.load(Relaxed) {
                    most_fds = most_fds.max(fds(pid));
                    most_rss = most_rss.max(rss_kib(pid));
                    std::thread::sleep(Duration::from_millis(10));
                }
                (most_fds, most_rss)
            })
        };
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, u64) {
        self.stop.store(true, Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// GET /metrics over a fresh connection: (status, how long it took).
fn timed_metrics(addr: SocketAddr) -> (u16, Duration) {
    let started = Instant::now();
    let (status, body) = http_get(addr, "/metrics");
    let took = started.elapsed();
    assert!(
        status != 200 || body.contains("tcptrace_build_info"),
        "{body}"
    );
    (status, took)
}

#[test]
#[ignore = "needs root"]
fn a_thousand_idle_or_trickling_connections_leave_metrics_answering() {
    require_root();
    raise_nofile(4096);
    let serve = Serve::start(&["-P", "24110", "--web.max-connections", &CAP.to_string()]);
    let pid = serve.process.child.id();
    // Warm: the first render, the first reconciles. The baseline is the most seen over
    // a second (a dump's netlink socket comes and goes).
    serve.metrics();
    let fds_before = (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(100));
            fds(pid)
        })
        .max()
        .unwrap();
    serve.metrics();
    let rss_before = rss_kib(pid);

    let sampler = Sampler::start(pid);
    let mut flood = Flood::start(serve.addr);
    // Let the flood fill the cap, then scrape while it goes on.
    eventually(Duration::from_secs(10), "the flood to fill the cap", || {
        (flood.closed_by_server.load(Relaxed) >= CONNECTIONS as u64).then_some(())
    });
    let mut scrapes = Vec::new();
    while scrapes.len() < 20 && flood.thread.as_ref().is_some_and(|t| !t.is_finished()) {
        scrapes.push(timed_metrics(serve.addr));
        std::thread::sleep(Duration::from_millis(250));
    }
    let connects = flood.connects.load(Relaxed);
    let closed = flood.closed_by_server.load(Relaxed);
    let fds_flooded = fds(pid);
    flood.stop();
    let (most_fds, most_rss) = sampler.finish();

    // Everything closed: the daemon's descriptors go back to where they were.
    let fds_after = eventually(Duration::from_secs(10), "the daemon to close them", || {
        let n = fds(pid);
        if n > fds_before + 1 {
            let links: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|p| p.display().to_string())
                .filter(|l| !l.starts_with("anon_inode"))
                .collect();
            eprintln!("fds {n}: {links:?}");
        }
        (n <= fds_before + 1).then_some(n)
    });
    let rss_after = rss_kib(pid);
    let slowest = scrapes.iter().map(|s| s.1).max().unwrap_or_default();
    eprintln!(
        "\n=== guard figures: cap {CAP}, {CONNECTIONS} flood sockets ({TRICKLING} trickling), \
         {connects} connects, {closed} closed by the server\n\
         daemon fds: {fds_before} before, {fds_flooded} during (most {most_fds}), {fds_after} after\n\
         daemon RSS: {rss_before} KiB before, most {most_rss} KiB during, {rss_after} KiB after\n\
         /metrics from a fresh connection: {} scrapes, slowest {slowest:?}, all: {:?}\n",
        scrapes.len(),
        scrapes.iter().map(|s| s.1).collect::<Vec<_>>()
    );
    assert!(
        scrapes.len() >= 10,
        "the flood ended before 10 scrapes: {scrapes:?}"
    );
    assert!(
        scrapes.iter().all(|(status, _)| *status == 200),
        "{scrapes:?}"
    );
    assert!(slowest < Duration::from_secs(1), "{scrapes:?}");
    assert!(
        most_fds <= fds_before + CAP + FD_SLACK,
        "the daemon held {most_fds} descriptors: {fds_before} + cap {CAP} + {FD_SLACK} allowed"
    );
    assert!(
        connects > CONNECTIONS as u64,
        "the server closed idle connections for new ones"
    );
    // Still well, and it says what it did.
    let metrics = serve.metrics();
    assert_eq!(
        sample(&metrics, "tcptrace_http_connections_limit", ""),
        Some(CAP as f64)
    );
    let evicted = sample(
        &metrics,
        "tcptrace_http_connections_cut_total",
        "reason=\"evicted\"",
    )
    .unwrap();
    assert!(
        evicted >= (connects - CAP as u64) as f64 * 0.9,
        "{evicted} evicted of {connects}"
    );
    // This scrape's own connection.
    assert_eq!(sample(&metrics, "tcptrace_http_connections", ""), Some(1.0));
}
