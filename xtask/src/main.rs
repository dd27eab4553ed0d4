//! Project chores: toolchain set-up, the test run CI uses, running the daemon.

mod bench;
mod churn;
mod cmd;
mod setup;

use std::process::ExitCode;

use anyhow::{bail, Context as _};
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

/// What the tests build with: the fault hooks (tcptrace/src/fault.rs), which a release
/// build never has.
const TEST_FEATURES: [&str; 2] = ["--features", "tcptrace/fault-injection"];

fn test(args: &[String]) -> anyhow::Result<()> {
    let root = cmd::is_root();
    if !root {
        eprintln!(
            "xtask: WARNING: not root: the privileged tests (#[ignore = \"needs root\"]) will \
             NOT run. Run `sudo -E cargo xtask test` for the full suite."
        );
    }
    cmd::cargo(&["fmt", "--all", "--", "--check"]).context("formatting: run `cargo fmt --all`")?;
    // The shipped build, and the one with every test and bench hook.
    for features in [&[][..], &["--all-features"]] {
        let mut clippy = vec!["clippy", "--all-targets", "--quiet"];
        clippy.extend(features);
        clippy.extend(["--", "-D", "warnings"]);
        cmd::cargo(&clippy).context("clippy found problems")?;
    }
    let mut test_args = vec!["test", "--all-targets"];
    test_args.extend(TEST_FEATURES);
    test_args.extend(args.iter().map(String::as_str));
    if root {
        // As CI runs: the privileged tests too.
        if !args.iter().any(|a| a == "--") {
            test_args.push("--");
        }
        test_args.push("--include-ignored");
    }
    let ignored = cmd::cargo_test(&test_args).context("tests failed")?;
    // As root every test runs (`--include-ignored`): one that did not is a failure.
    if root && ignored > 0 {
        bail!("{ignored} tests were ignored although this run is root and includes them");
    }
    if ignored > 0 {
        eprintln!(
            "xtask: {ignored} tests were NOT run: they need root (#[ignore = \"needs root\"]). \
             Run `sudo -E cargo xtask test` for the full suite."
        );
    }
    if root && args.is_empty() {
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
