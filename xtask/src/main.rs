//! Project chores: toolchain set-up, the test run CI uses, running the daemon.

mod bench;
mod churn;
mod cmd;
mod setup;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Chores for the tcptrace workspace.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what this machine lacks (nightly rust-src, bpf-linker, Debian packages
    /// the tests use). Idempotent; prints nothing when all is there.
    Setup,
    /// Set up, then run every test (privileged ones too when root), clippy and the
    /// format check. This is what CI runs.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build in release mode and run tcptrace with these arguments (through
    /// sudo when not root), e.g. `cargo xtask run -- watch -P 8080`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then measure tcptrace against no tracer and bpftrace on the same
    /// connection churn, and its userspace capacity; writes BENCHMARKS.md. Root.
    Bench(bench::BenchArgs),
    /// Make connection churn on loopback (the benchmark's load) and print what it did
    /// as JSON.
    Churn(churn::ChurnArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup => setup::run(),
        Command::Test { args } => setup::run().and_then(|()| test(&args)),
        Command::Run { args } => setup::run().and_then(|()| run(&args)),
        // Inside the namespace the set-up already ran.
        Command::Bench(args) if args.inside.is_some() => bench::run(&args),
        Command::Bench(args) => setup::run().and_then(|()| bench::run(&args)),
        Command::Churn(args) => churn::run(&args).map(|report| {
            println!("{}", serde_json::to_string(&report).expect("plain data"));
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn test(args: &[String]) -> anyhow::Result<()> {
    if !cmd::is_root() {
        eprintln!(
            "xtask: WARNING: not root: the privileged kernel tests will be SKIPPED. \
             Run `sudo -E cargo xtask test` for the full suite."
        );
    }
    cmd::cargo(&["fmt", "--all", "--", "--check"])
        .context("formatting: run `cargo +nightly fmt --all`")?;
    cmd::cargo(&["clippy", "--all-targets", "--quiet", "--", "-D", "warnings"])
        .context("clippy found problems")?;
    let mut test_args = vec!["test", "--all-targets"];
    test_args.extend(args.iter().map(String::as_str));
    cmd::cargo(&test_args).context("tests failed")?;
    if cmd::is_root() && args.is_empty() {
        // The benchmark's own machinery, end to end, on a few hundred connections.
        bench::run(&bench::BenchArgs::smoke()).context("the benchmark smoke run failed")?;
    }
    Ok(())
}

fn run(args: &[String]) -> anyhow::Result<()> {
    cmd::cargo(&["build", "--release", "--quiet", "--package", "tcptrace"])?;
    let binary = cmd::workspace_root().join("target/release/tcptrace");
    cmd::exec_as_root(&binary, args)
}
