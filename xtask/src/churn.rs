//! The connection-churn load: many short loopback connections (connect, send a few
//! bytes, the client closes first, the server reads to the end and closes), from several
//! client threads to several server threads, bounded by a count and a duration, at full
//! speed or at a fixed rate. Each connection makes 10 TCP state changes: 5 on the
//! client (CLOSE→SYN_SENT→ESTABLISHED→FIN_WAIT1→FIN_WAIT2→CLOSE) and 5 on the server's
//! child (LISTEN→SYN_RECV→ESTABLISHED→CLOSE_WAIT→LAST_ACK→CLOSE).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// State changes per connection, both ends counted.
pub(crate) const TRANSITIONS_PER_CONNECTION: u64 = 10;
/// State changes of the run's listener: CLOSE→LISTEN, and LISTEN→CLOSE at shutdown.
pub(crate) const TRANSITIONS_PER_RUN: u64 = 2;

const PAYLOAD: &[u8] = b"tcptrace churn\n";

/// The shape of the load, shared by `churn` and `bench`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// How long a run lasts, e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Client threads.
    #[arg(long, default_value_t = 2)]
    pub clients: u32,
    /// Server threads.
    #[arg(long, default_value_t = 2)]
    pub servers: u32,
    /// Connections per second in all (0: as fast as possible, the peak).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
}

#[derive(Clone, Debug, clap::Args)]
pub(crate) struct ChurnArgs {
    /// Address the servers listen on (in this network namespace).
    #[arg(long, default_value = "127.0.0.1:31998")]
    pub addr: SocketAddr,
    /// Stop after this many connections.
    #[arg(long, default_value_t = 1_000_000)]
    pub connections: u64,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// What a run did, printed as one JSON line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChurnReport {
    /// Connections the clients completed (connected, wrote, closed).
    pub connections: u64,
    /// Connections the servers accepted and read to the end.
    pub served: u64,
    /// Failed connects, writes or reads.
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
}

/// The longest any one step of a connection may wait before it counts as an error.
const STALL: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    served: AtomicU64,
    errors: AtomicU64,
}

fn serve(listener: TcpListener, counters: Arc<Counters>, stop: Arc<AtomicBool>) {
    let mut buf = [0u8; 256];
    for stream in listener.incoming() {
        if stop.load(Relaxed) {
            return;
        }
        let Ok(mut stream) = stream else {
            counters.errors.fetch_add(1, Relaxed);
            continue;
        };
        // Read to the client's FIN, then close: a passive close. A stalled peer is an
        // error, never a hang.
        if stream.set_read_timeout(Some(STALL)).is_err() {
            counters.errors.fetch_add(1, Relaxed);
            continue;
        }
        let complete = loop {
            match stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => {}
                Err(_) => break false,
            }
        };
        let counter = if complete {
            &counters.served
        } else {
            &counters.errors
        };
        counter.fetch_add(1, Relaxed);
    }
}

/// One connection from the client's side: send, close our half (the first FIN), and
/// wait for the server's FIN. Waiting keeps the load closed-loop: with clients running
/// ahead of the servers, the accept queue overflows and dropped SYNs stall a client for
/// the 1 s SYN retransmit timeout.
fn exchange(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, STALL)?;
    stream.set_read_timeout(Some(STALL))?;
    stream.set_write_timeout(Some(STALL))?;
    stream.write_all(PAYLOAD)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut rest = [0u8; 64];
    while stream.read(&mut rest)? > 0 {}
    Ok(())
}

/// One client thread: `share` of the rate, until the budget or the deadline runs out.
fn client(args: &ChurnArgs, index: u32, counters: &Counters, started: Instant) {
    let load = &args.load;
    let deadline = started + load.duration;
    let interval = (load.rate > 0)
        .then(|| Duration::from_secs_f64(f64::from(load.clients) / load.rate as f64));
    // Threads start staggered so paced connects spread over the interval.
    let mut next = started + interval.map_or(Duration::ZERO, |i| i * index / load.clients);
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        if let Some(interval) = interval {
            if next > now {
                std::thread::sleep(next - now);
            }
            next += interval;
        }
        // Claim a connection from the shared budget first, so the total is exact.
        if counters.connections.fetch_add(1, Relaxed) >= args.connections {
            counters.connections.fetch_sub(1, Relaxed);
            return;
        }
        if exchange(args.addr).is_err() {
            counters.connections.fetch_sub(1, Relaxed);
            counters.errors.fetch_add(1, Relaxed);
        }
    }
}

pub(crate) fn run(args: &ChurnArgs) -> anyhow::Result<ChurnReport> {
    let listener = TcpListener::bind(args.addr)
        .map_err(|e| anyhow::anyhow!("churn: cannot listen on {}: {e}", args.addr))?;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let servers: Vec<_> = (0..args.load.servers.max(1))
        .map(|_| {
            let (listener, counters, stop) = (
                listener.try_clone().expect("dup a listening socket"),
                Arc::clone(&counters),
                Arc::clone(&stop),
            );
            std::thread::spawn(move || serve(listener, counters, stop))
        })
        .collect();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for index in 0..args.load.clients.max(1) {
            let counters = &counters;
            scope.spawn(move || client(args, index, counters, started));
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    // Let the servers finish what was connected, then wake each one to stop.
    let connected = counters.connections.load(Relaxed);
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while counters.served.load(Relaxed) + counters.errors.load(Relaxed) < connected
        && Instant::now() < drain_deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    // shutdown() on a listening socket wakes every thread blocked in accept() with
    // EINVAL (Linux), without making connections that would add to the count.
    stop.store(true, Relaxed);
    // SAFETY: shutdown(2) on a socket this function owns.
    unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
    for server in servers {
        let _ = server.join();
    }
    let connections = counters.connections.load(Relaxed);
    Ok(ChurnReport {
        connections,
        served: counters.served.load(Relaxed),
        errors: counters.errors.load(Relaxed),
        seconds,
        per_second: connections as f64 / seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(connections: u64, rate: u64) -> ChurnArgs {
        // Port 0 would differ per listener clone; pick a free one.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        ChurnArgs {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            connections,
            load: LoadArgs {
                duration: Duration::from_secs(20),
                clients: 3,
                servers: 2,
                rate,
            },
        }
    }

    /// `ss -Htan state time-wait dst ADDR`, counted: each client end left one.
    fn time_wait_toward(addr: SocketAddr) -> usize {
        let out = std::process::Command::new("ss")
            .args(["-Htan", "state", "time-wait", "dst", &addr.to_string()])
            .output()
            .expect("ss runs");
        String::from_utf8_lossy(&out.stdout).lines().count()
    }

    #[test]
    fn makes_exactly_the_connections_it_reports() {
        let args = args(300, 0);
        let report = run(&args).unwrap();
        assert_eq!(report.connections, 300);
        assert_eq!(report.served, 300);
        assert_eq!(report.errors, 0);
        assert!(report.per_second > 0.0);
        // The kernel saw them: every client end is now in TIME_WAIT toward the server.
        assert_eq!(time_wait_toward(args.addr), 300);
    }

    #[test]
    fn a_paced_run_keeps_its_rate() {
        // 200 connections at 1000/s take 0.2 s, not less.
        let report = run(&args(200, 1000)).unwrap();
        assert_eq!((report.connections, report.served), (200, 200));
        assert!(report.seconds >= 0.19, "{report:?}");
    }

    #[test]
    fn the_duration_bounds_a_run() {
        let mut args = args(u64::MAX, 100);
        args.load.duration = Duration::from_millis(300);
        let report = run(&args).unwrap();
        // 100/s for 0.3 s: bounded by time, not by the count. Pacing caps each of the
        // 3 clients at one connection per 30 ms, so at most 11 each.
        assert!((1..=33).contains(&report.connections), "{report:?}");
        assert_eq!(report.served, report.connections);
    }
}
