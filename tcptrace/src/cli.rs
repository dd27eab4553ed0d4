//! Command-line interface (clap derive; the doc comments are the `--help` text).

use clap::{Args, Parser, Subcommand};

use crate::{
    probe::{Family, KernelFilter, ProbeConfig, DEFAULT_RING_BUFFER_BYTES},
    state::TcpState,
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
}

#[derive(Debug, Args, Clone)]
pub struct WatchArgs {
    /// Print one JSON object per line instead of the table.
    #[arg(long)]
    pub json: bool,

    /// Only connections owned by this process (by its connect, listen or close calls,
    /// or by the listener that accepted them).
    #[arg(short = 'p', long, value_name = "PID")]
    pub pid: Option<u32>,

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

    /// Only events entering or leaving this state (e.g. CLOSE_WAIT); repeatable.
    #[arg(long = "state", value_name = "STATE")]
    pub states: Vec<TcpState>,

    /// Most connections tracked at once; the least recently active are dropped first.
    #[arg(long, default_value_t = 65_536, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Print each connection's story when it ends (and every live one on SIGUSR1)
    /// instead of each event; two ends on this host get a sequence diagram.
    #[arg(long)]
    pub timelines: bool,

    /// How often to compare the table with the kernel's socket list (sock_diag), which
    /// heals lost events and gives exact TIME_WAIT counts, e.g. 5s, 500ms, 1m.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_interval)]
    pub reconcile_interval: std::time::Duration,

    /// Size of the kernel's ring buffer in bytes (a power of two, at least a page).
    #[arg(long, default_value_t = DEFAULT_RING_BUFFER_BYTES, value_name = "BYTES")]
    pub ring_buffer_bytes: u32,
}

fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if interval < std::time::Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(interval)
}

impl WatchArgs {
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
            },
            ring_buffer_bytes: self.ring_buffer_bytes,
        }
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
        }
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn watch_flags_become_kernel_filters() {
        let args = watch(&["watch", "-P", "80", "--port", "443", "-6", "--json"]);
        assert!(args.json);
        let config = args.probe_config();
        assert_eq!(config.filter.ports, [80, 443]);
        assert_eq!(config.filter.family, Some(Family::V6));
        assert_eq!(
            watch(&["watch", "-4"]).probe_config().filter.family,
            Some(Family::V4)
        );
        assert_eq!(watch(&["watch"]).probe_config().filter.family, None);
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
    }
}
