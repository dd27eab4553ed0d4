//! Event-to-visible latency: how long after a TCP state change `/api/connections` lists
//! it. A prober connects to a port of its own; when connect() returns, the kernel has
//! already moved the client's socket SYN_SENT→ESTABLISHED. From that instant it polls
//! the API, every [`POLL_EVERY`] over one kept-alive HTTP connection, for that socket
//! (its ephemeral port) in ESTABLISHED. Only the API's answers are looked at, so the
//! figure does not depend on how events reach the daemon.

use std::{
    io::Read as _,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::http::KeepAlive;
use crate::churn::ChurnReport;

/// The prober's server port inside the namespace.
pub(super) const PROBE_PORT: u16 = 31995;
/// How often the API is asked: the measurement's resolution.
const POLL_EVERY: Duration = Duration::from_millis(1);
/// A probe not listed by then is counted as not visible, and the next one starts.
const GIVE_UP: Duration = Duration::from_secs(2);
/// The longest a probe's server waits on a client that does not close.
const STALL: Duration = Duration::from_secs(10);

/// One series of probes.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Latencies {
    /// Milliseconds from connect() returning to the first answer listing the socket.
    pub visible_ms: Vec<f64>,
    /// Probes still not listed after [`GIVE_UP`].
    pub not_visible: u64,
    /// The mean time one poll took, request to answer, in milliseconds.
    pub poll_ms: f64,
}

impl Latencies {
    /// The `q` quantile by nearest rank (p99 of 200 is the 198th smallest).
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let mut sorted = self.visible_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = (q * sorted.len() as f64).ceil() as usize;
        sorted.get(rank.max(1) - 1).copied()
    }

    /// Every probe was listed, and the p99 is within `target_ms`.
    pub(crate) fn meets(&self, target_ms: f64) -> bool {
        self.not_visible == 0 && self.quantile(0.99).is_some_and(|p99| p99 <= target_ms)
    }
}

/// Quiet, then under load, in one tcptrace run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct LatencyResults {
    /// No other traffic in the namespace.
    pub quiet: Latencies,
    /// While the churn runs at peak.
    pub loaded: Latencies,
    /// The churn the loaded probes ran alongside.
    pub churn: ChurnReport,
}

/// Whether an `/api/connections` answer lists the socket `local` in ESTABLISHED.
fn lists(body: &str, local: SocketAddr) -> anyhow::Result<bool> {
    let answer: serde_json::Value = serde_json::from_str(body).context("the API's JSON")?;
    let local = local.to_string();
    Ok(answer["connections"]
        .as_array()
        .context("no `connections` in the answer")?
        .iter()
        .any(|c| c["local"] == local.as_str() && c["state"] == "ESTABLISHED"))
}

/// Accepts the probes one at a time and reads each to its end, so that both ends stay
/// ESTABLISHED until the prober closes; returns once the listener is shut down.
fn serve_probes(listener: &TcpListener) {
    let mut buf = [0u8; 64];
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { return };
        if stream.set_read_timeout(Some(STALL)).is_err() {
            continue;
        }
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// A pause of 0–10 ms between probes, so that they start at every phase of the
/// reader's 10 ms drain timer rather than locked to it.
fn jitter(state: &mut u64) -> Duration {
    // xorshift64: cheap, and enough to spread start times.
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    Duration::from_micros(*state % 10_000)
}

/// Probes `samples` times, or until `stop` is set, against the API at `api`, with a
/// server on [`PROBE_PORT`] in this thread's network namespace. Waits `warm_up` first.
pub(super) fn probe(
    api: SocketAddr,
    samples: usize,
    warm_up: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Latencies> {
    let server_addr = SocketAddr::from(([127, 0, 0, 1], PROBE_PORT));
    let listener = TcpListener::bind(server_addr)
        .with_context(|| format!("the prober cannot listen on {server_addr}"))?;
    std::thread::scope(|scope| {
        scope.spawn(|| serve_probes(&listener));
        let result = probe_loop(api, server_addr, samples, warm_up, stop);
        // Wakes the server's accept() with EINVAL (Linux), ending its loop.
        // SAFETY: shutdown(2) on a socket this function owns.
        unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
        result
    })
}

fn probe_loop(
    api: SocketAddr,
    server: SocketAddr,
    samples: usize,
    warm_up: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Latencies> {
    std::thread::sleep(warm_up);
    let mut client = KeepAlive::new(api);
    let mut latencies = Latencies::default();
    let (mut polls, mut polling) = (0u32, Duration::ZERO);
    let mut seed = u64::from(std::process::id()) | 1;
    while latencies.visible_ms.len() + (latencies.not_visible as usize) < samples
        && !stop.load(Relaxed)
    {
        std::thread::sleep(jitter(&mut seed));
        let probe = TcpStream::connect_timeout(&server, STALL).context("a probe's connect")?;
        let connected = Instant::now();
        let local = probe.local_addr()?;
        let path = format!(
            "/api/connections?port={}&state=ESTABLISHED&limit=10",
            local.port()
        );
        loop {
            let asked = Instant::now();
            let body = client.get(&path)?;
            polls += 1;
            polling += asked.elapsed();
            if lists(&body, local)? {
                latencies
                    .visible_ms
                    .push(connected.elapsed().as_secs_f64() * 1e3);
                break;
            }
            if connected.elapsed() > GIVE_UP {
                latencies.not_visible += 1;
                break;
            }
            std::thread::sleep(POLL_EVERY.saturating_sub(asked.elapsed()));
        }
        drop(probe);
    }
    latencies.poll_ms = polling.as_secs_f64() * 1e3 / f64::from(polls.max(1));
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_by_nearest_rank() {
        let latencies = Latencies {
            visible_ms: (1..=200).rev().map(f64::from).collect(),
            ..Latencies::default()
        };
        assert_eq!(latencies.quantile(0.5), Some(100.0));
        assert_eq!(latencies.quantile(0.99), Some(198.0));
        assert_eq!(latencies.quantile(1.0), Some(200.0));
        assert_eq!(Latencies::default().quantile(0.99), None);
    }

    #[test]
    fn the_target_needs_every_probe_listed() {
        let mut latencies = Latencies {
            visible_ms: vec![5.0; 100],
            ..Latencies::default()
        };
        assert!(latencies.meets(50.0));
        latencies.not_visible = 1;
        assert!(!latencies.meets(50.0));
        assert!(!Latencies::default().meets(50.0));
    }

    #[test]
    fn an_answer_lists_the_socket_only_in_the_state_asked() {
        let local: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let row = |local: &str, state: &str| {
            format!(r#"{{"connections":[{{"local":"{local}","state":"{state}"}}]}}"#)
        };
        assert!(lists(&row("127.0.0.1:40000", "ESTABLISHED"), local).unwrap());
        assert!(!lists(&row("127.0.0.1:31995", "ESTABLISHED"), local).unwrap());
        assert!(!lists(&row("127.0.0.1:40000", "SYN_SENT"), local).unwrap());
        assert!(lists("{}", local).is_err());
    }
}
