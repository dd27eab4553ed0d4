//! Command-line interface (clap derive; the doc comments are the `--help` text).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use tcptrace_common::reads;

use crate::{
    config::{HttpConfig, TraceConfig},
    detect::DetectConfig,
    diag::netns::{self, Namespace},
    probe::{Family, KernelFilter, ProbeConfig, DEFAULT_RING_BUFFER_BYTES},
    state::TcpState,
    web::{self, Limits, WebConfigError},
};

/// Watch every TCP connection on this host from inside the kernel (eBPF).
///
/// Needs root, or CAP_BPF and CAP_PERFMON.
#[derive(Debug, Parser)]
#[command(name = "tcptrace", version, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v debug, -vv trace); RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print every TCP state change, retransmit and reset live, one line each.
    Watch(WatchArgs),
    /// Run as a daemon: track every connection, flag CLOSE_WAIT leaks, TIME_WAIT
    /// buildup and half-open connections, and serve Prometheus metrics and a JSON API
    /// over HTTP.
    Serve(ServeArgs),
    /// Check, without loading anything, what tracing needs: privileges, each
    /// tracepoint, BTF, ring-buffer support, sock_diag and the listen address. Exits 1
    /// if anything would stop tcptrace.
    Doctor(DoctorArgs),
}

#[derive(Debug, Args, Clone)]
pub struct DoctorArgs {
    /// The address `serve --listen` would use.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// The web configuration file `serve --web.config.file` would use: read and checked
    /// (certificates, keys, bcrypt hashes) as `serve` does.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
}

/// Where `tcptrace serve` listens unless told otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9977";

/// The default `--max-connections`: what 64 MiB holds at the 168 bytes a tracked
/// connection costs at 1M connections, allocated and resident (`benches/capacity.rs`,
/// BENCHMARKS.md), rounded down (390,000 × 168 B = 62.5 MiB).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 390_000;

/// What to trace and how: shared by `watch` and `serve`.
#[derive(Debug, Args, Clone)]
pub struct TraceArgs {
    /// Only connections with this port at either end; repeat for up to 8 ports.
    /// Filtered in the kernel.
    #[arg(short = 'P', long = "port", value_name = "PORT",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,

    /// Only IPv4. Filtered in the kernel.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Only IPv6. Filtered in the kernel.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Only sockets in this network namespace: its inode number (as `ls -l
    /// /proc/PID/ns/net` shows `net:[N]`), `/proc/PID/ns/net`, `/run/netns/NAME` or NAME.
    /// Filtered in the kernel; only that namespace is dumped.
    #[arg(long, value_name = "NETNS", value_parser = parse_netns)]
    pub netns: Option<Namespace>,

    /// Only sockets whose cgroup v2 path starts with this, e.g. `/kubepods.slice` or
    /// `/system.slice/docker-` (the socket's own cgroup: its creator's).
    #[arg(long = "cgroup", value_name = "PREFIX", value_parser = parse_cgroup_prefix)]
    pub cgroup_prefix: Option<String>,

    /// Most connections tracked at once; the least recently active are dropped first.
    /// About 150 bytes each: the default is what 64 MiB holds.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// How often to compare the table with the kernel's socket list (sock_diag), which
    /// heals lost events, gives exact TIME_WAIT counts and runs the leak detectors,
    /// e.g. 5s, 500ms, 1m.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_interval)]
    pub reconcile_interval: Duration,

    /// Size of the kernel's ring buffer in bytes (a power of two, at least a page).
    #[arg(long, default_value_t = DEFAULT_RING_BUFFER_BYTES, value_name = "BYTES")]
    pub ring_buffer_bytes: u32,

    /// For the benchmark, which prices each kernel read per event: `socket` leaves out
    /// the close details, `none` the socket's namespace and cgroup too (then `--netns`
    /// and `--cgroup` cannot work); `task-always` adds the task on the CPU to every
    /// event, not only the owner's transitions. Only in a build with the `bench-hooks`
    /// feature, never in the release binary.
    #[cfg(feature = "bench-hooks")]
    #[arg(long, hide = true, default_value = "all", value_parser = ["all", "socket", "none", "task-always"])]
    pub kernel_reads: String,

    #[command(flatten)]
    pub detect: DetectArgs,
}

/// When a connection is a problem.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Detectors")]
pub struct DetectArgs {
    /// A connection in CLOSE_WAIT longer than this is a leak: the peer closed and the
    /// application never closed its socket, e.g. 30s, 5m.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_threshold)]
    pub close_wait_threshold: Duration,

    /// Flag a (local address, remote endpoint) pair whose sockets use more than this
    /// share of net.ipv4.ip_local_port_range (0 < RATIO <= 1).
    #[arg(long, default_value_t = 0.5, value_name = "RATIO", value_parser = parse_ratio)]
    pub port_pressure_threshold: f64,

    /// How many remote endpoints, listening addresses and network namespaces get their
    /// own TIME_WAIT, port-pressure, accept-queue, listen-overflow and half-open series;
    /// the rest are summed under "other".
    #[arg(long, default_value_t = 10, value_name = "K",
          value_parser = clap::value_parser!(u16).range(1..=100))]
    pub top_remotes: u16,

    /// A connection whose kernel has been retransmitting or probing (zero-window,
    /// keepalive) for longer than this without any answer from the peer is a
    /// half-open suspect, e.g. 30s, 2m.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse_threshold)]
    pub half_open_after: Duration,
}

#[derive(Debug, Args, Clone)]
pub struct WatchArgs {
    #[command(flatten)]
    pub trace: TraceArgs,

    /// Print one JSON object per line instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Only connections owned by this process (by its connect, listen or close calls,
    /// or by the listener that accepted them).
    #[arg(short = 'p', long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Only events entering or leaving this state (e.g. CLOSE_WAIT); repeatable.
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<TcpState>,

    /// Print each connection's story when it ends (and every live one on SIGUSR1)
    /// instead of each event; two ends on this host get a sequence diagram.
    #[arg(long)]
    pub timelines: bool,

    /// Also serve metrics and the JSON API on this address, as `serve` does,
    /// e.g. 127.0.0.1:9977.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// With --listen.
    #[command(flatten)]
    pub web: WebArgs,
}

#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub trace: TraceArgs,

    /// Address to serve the web view (/), /metrics, /healthz and /api/* on. Anything but loopback exposes
    /// connection details to whoever can reach it: see the README.
    #[arg(long, default_value = DEFAULT_LISTEN, value_name = "ADDR")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub web: WebArgs,
}

/// How the HTTP side is served: TLS and authentication, and what a client may hold.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "HTTP server")]
pub struct WebArgs {
    /// A web configuration file in the Prometheus exporter-toolkit format, the one
    /// node_exporter takes: TLS certificate and key (`tls_server_config`), client
    /// certificates checked against a CA, `basic_auth_users` with bcrypt hashes.
    /// Relative paths in it are relative to its directory. Read once, at start: a bad
    /// file stops tcptrace before anything is loaded.
    #[arg(id = "web.config.file", long = "web.config.file", value_name = "FILE")]
    pub config_file: Option<PathBuf>,

    /// Most HTTP connections open at once. At the cap a new connection closes the one
    /// that has waited longest for a request; one being answered is never closed.
    #[arg(id = "web.max-connections", long = "web.max-connections", default_value_t = Limits::default().max_connections,
          value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_connections: u32,

    /// How long a client has to send a request's whole header (or finish a TLS
    /// handshake), from its first byte, e.g. 10s.
    #[arg(id = "web.read-header-timeout", long = "web.read-header-timeout", default_value = "10s", value_name = "DURATION",
          value_parser = parse_threshold)]
    pub read_header_timeout: Duration,

    /// How long a connection may stay open without a request, before its first one or
    /// between two (keep-alive), e.g. 60s.
    #[arg(id = "web.idle-timeout", long = "web.idle-timeout", default_value = "60s", value_name = "DURATION",
          value_parser = parse_threshold)]
    pub idle_timeout: Duration,
}

impl WebArgs {
    /// Reads `--web.config.file` (if given): call before anything is loaded.
    pub fn http_config(&self, listen: SocketAddr) -> Result<HttpConfig, WebConfigError> {
        let web = match &self.config_file {
            Some(path) => web::load(path)?,
            None => web::WebConfig::default(),
        };
        Ok(HttpConfig {
            listen,
            web,
            limits: Limits {
                max_connections: self.max_connections,
                read_header_timeout: self.read_header_timeout,
                idle_timeout: self.idle_timeout,
            },
        })
    }

    /// Whether any `--web.*` flag was given (they need `--listen` on `watch`).
    fn given(&self) -> bool {
        self.config_file.is_some()
            || self.max_connections != Limits::default().max_connections
            || self.read_header_timeout != Limits::default().read_header_timeout
            || self.idle_timeout != Limits::default().idle_timeout
    }
}

impl WatchArgs {
    /// The HTTP side of `watch --listen`, its web config file read: call before
    /// anything is loaded.
    pub fn http_config(&self) -> anyhow::Result<Option<HttpConfig>> {
        match self.listen {
            Some(listen) => Ok(Some(self.web.http_config(listen)?)),
            None if self.web.given() => {
                anyhow::bail!("the --web.* flags need --listen: watch serves nothing without it")
            }
            None => Ok(None),
        }
    }
}

fn parse_netns(text: &str) -> Result<Namespace, String> {
    netns::resolve(text).map_err(|e| e.to_string())
}

fn parse_cgroup_prefix(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err("a cgroup path starts with / (e.g. /kubepods.slice)".into());
    }
    Ok(text.to_owned())
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(interval)
}

fn parse_threshold(text: &str) -> Result<Duration, String> {
    let threshold = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if threshold.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(threshold)
}

fn parse_ratio(text: &str) -> Result<f64, String> {
    let ratio: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(ratio > 0.0 && ratio <= 1.0) {
        return Err("must be more than 0 and at most 1".into());
    }
    Ok(ratio)
}

impl TraceArgs {
    /// The plain configuration the daemon runs with.
    pub fn config(&self) -> TraceConfig {
        TraceConfig {
            probe: self.probe_config(),
            max_connections: self.max_connections,
            reconcile_interval: self.reconcile_interval,
            detect: DetectConfig {
                close_wait_threshold: self.detect.close_wait_threshold,
                port_pressure_threshold: self.detect.port_pressure_threshold,
                top_remotes: usize::from(self.detect.top_remotes),
                half_open_after: self.detect.half_open_after,
            },
            netns: self.netns.clone(),
            cgroup_prefix: self.cgroup_prefix.clone(),
        }
    }

    pub fn probe_config(&self) -> ProbeConfig {
        let family = match (self.ipv4, self.ipv6) {
            (true, _) => Some(Family::V4),
            (_, true) => Some(Family::V6),
            _ => None,
        };
        ProbeConfig {
            filter: KernelFilter {
                ports: self.ports.clone(),
                family,
                netns: self.netns.as_ref().map(|n| n.inum),
            },
            ring_buffer_bytes: self.ring_buffer_bytes,
            kernel_reads: self.kernel_reads(),
        }
    }

    #[cfg(feature = "bench-hooks")]
    fn kernel_reads(&self) -> u8 {
        match self.kernel_reads.as_str() {
            "none" => 0,
            "socket" => reads::SOCKET_CONTEXT,
            "task-always" => reads::ALL | reads::TASK_ON_EVERY_EVENT,
            _ => reads::ALL,
        }
    }

    #[cfg(not(feature = "bench-hooks"))]
    fn kernel_reads(&self) -> u8 {
        reads::ALL
    }
}

#[cfg(test)]
mod tests {
    use clap::{error::ErrorKind, CommandFactory};

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tcptrace").chain(args.iter().copied()))
    }

    fn watch(args: &[&str]) -> WatchArgs {
        match parse(args).unwrap().command {
            Command::Watch(w) => w,
            other => panic!("not watch: {other:?}"),
        }
    }

    fn serve(args: &[&str]) -> ServeArgs {
        match parse(args).unwrap().command {
            Command::Serve(s) => s,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_table_holds_400k_connections_unless_told() {
        assert_eq!(watch(&["watch"]).trace.max_connections, 390_000);
        assert_eq!(serve(&["serve"]).trace.max_connections, 390_000);
        let told = watch(&["watch", "--max-connections", "1000"]);
        assert_eq!(told.trace.max_connections, 1000);
    }

    #[test]
    fn watch_flags_become_kernel_filters() {
        let args = watch(&["watch", "-P", "80", "--port", "443", "-6", "--json"]);
        assert!(args.json);
        let config = args.trace.probe_config();
        assert_eq!(config.filter.ports, [80, 443]);
        assert_eq!(config.filter.family, Some(Family::V6));
        assert_eq!(
            watch(&["watch", "-4"]).trace.probe_config().filter.family,
            Some(Family::V4)
        );
        assert_eq!(watch(&["watch"]).trace.probe_config().filter.family, None);
    }

    #[test]
    fn pid_and_states_parse() {
        let args = watch(&[
            "watch",
            "-p",
            "42",
            "--state",
            "close-wait",
            "--state",
            "LISTEN",
        ]);
        assert_eq!(args.pid, Some(42));
        assert_eq!(args.states, [TcpState::CloseWait, TcpState::Listen]);
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["watch", "--bogus"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["frobnicate"]), ErrorKind::InvalidSubcommand);
        assert_eq!(kind(&["watch", "-P", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["watch", "-P", "70000"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["watch", "-P", "http"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["watch", "-p", "-1"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["watch", "-4", "-6"]), ErrorKind::ArgumentConflict);
        assert_eq!(
            kind(&["watch", "--max-connections", "0"]),
            ErrorKind::ValueValidation
        );
        let err = parse(&["watch", "--state", "ESTABLISH"]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ValueValidation);
        assert!(err.to_string().contains("CLOSE_WAIT"), "{err}");
        assert_eq!(
            kind(&[]),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(
            kind(&["serve", "--listen", "localhost"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["serve", "--listen", "127.0.0.1:99999"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["serve", "--close-wait-threshold", "soon"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["serve", "--close-wait-threshold", "0s"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            kind(&["serve", "--reconcile-interval", "10ms"]),
            ErrorKind::ValueValidation
        );
        for ratio in ["0", "1.5", "NaN", "half"] {
            assert_eq!(
                kind(&["serve", "--port-pressure-threshold", ratio]),
                ErrorKind::ValueValidation,
                "{ratio}"
            );
        }
        assert_eq!(
            kind(&["serve", "--top-remotes", "0"]),
            ErrorKind::ValueValidation
        );
        for threshold in ["0s", "never", "1 fortnight"] {
            assert_eq!(
                kind(&["serve", "--half-open-after", threshold]),
                ErrorKind::ValueValidation,
                "{threshold}"
            );
        }
        assert_eq!(kind(&["serve", "--json"]), ErrorKind::UnknownArgument);
    }

    #[test]
    fn serve_listens_on_loopback_by_default() {
        let args = serve(&["serve"]);
        assert_eq!(args.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(args.listen.ip().is_loopback());
        assert_eq!(
            args.trace.detect.close_wait_threshold,
            Duration::from_secs(30)
        );
        assert_eq!(args.trace.detect.port_pressure_threshold, 0.5);
        assert_eq!(args.trace.detect.top_remotes, 10);
        assert_eq!(args.trace.detect.half_open_after, Duration::from_secs(30));
        assert_eq!(
            serve(&["serve", "--half-open-after", "1500ms"])
                .trace
                .config()
                .detect
                .half_open_after,
            Duration::from_millis(1500)
        );
        assert_eq!(
            watch(&["watch", "--half-open-after", "2s"])
                .trace
                .detect
                .half_open_after,
            Duration::from_secs(2)
        );
        let args = serve(&[
            "serve",
            "--listen",
            "[::1]:9100",
            "--close-wait-threshold",
            "2m",
            "-P",
            "8080",
        ]);
        assert_eq!(args.listen, "[::1]:9100".parse().unwrap());
        assert_eq!(
            args.trace.detect.close_wait_threshold,
            Duration::from_secs(120)
        );
        assert_eq!(args.trace.probe_config().filter.ports, [8080]);
        assert_eq!(watch(&["watch"]).listen, None);
        assert_eq!(
            watch(&["watch", "--listen", "127.0.0.1:9300"]).listen,
            Some("127.0.0.1:9300".parse().unwrap())
        );
    }

    #[test]
    fn web_flags_have_guarded_defaults_and_bounds() {
        let args = serve(&["serve"]);
        assert_eq!(args.web.config_file, None);
        let http = args.web.http_config(args.listen).unwrap();
        assert_eq!(http.limits, Limits::default());
        assert_eq!(http.limits.max_connections, 64);
        assert!(http.web.tls.is_none() && http.web.auth.is_none());
        let args = serve(&[
            "serve",
            "--web.max-connections",
            "8",
            "--web.idle-timeout",
            "5s",
            "--web.read-header-timeout",
            "2s",
        ]);
        assert_eq!(
            args.web.http_config(args.listen).unwrap().limits,
            Limits {
                max_connections: 8,
                read_header_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(5),
            }
        );
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        for bad in [
            &["serve", "--web.max-connections", "0"][..],
            &["serve", "--web.max-connections", "100000"],
            &["serve", "--web.idle-timeout", "0s"],
            &["serve", "--web.read-header-timeout", "soon"],
        ] {
            assert_eq!(kind(bad), ErrorKind::ValueValidation, "{bad:?}");
        }
        // On watch they need --listen.
        assert!(watch(&["watch", "--web.max-connections", "8"])
            .http_config()
            .is_err());
        assert!(watch(&["watch"]).http_config().unwrap().is_none());
        let with_listen = watch(&[
            "watch",
            "--listen",
            "127.0.0.1:9300",
            "--web.max-connections",
            "8",
        ]);
        assert_eq!(
            with_listen
                .http_config()
                .unwrap()
                .unwrap()
                .limits
                .max_connections,
            8
        );
    }
}
