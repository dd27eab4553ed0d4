//! The deployment files: alert rules and their unit tests (promtool), the systemd unit
//! (systemd-analyze, and its command line against tcptrace's own parser), and the
//! README's scrape configuration (promtool). No root needed.

mod common;

use std::process::Command;

use clap::Parser as _;
use common::serve::{deploy_dir, TempDir};
use tcptrace::cli::{Cli, Command as Subcommand, DEFAULT_LISTEN};

/// Runs a tool that the set-up installs; its output when it fails.
fn run(program: &str, args: &[&str], dir: &std::path::Path) -> std::process::Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}: run `cargo xtask setup` to install it"))
}

fn assert_clean(what: &str, out: &std::process::Output) {
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{what} failed:\n{stdout}{stderr}");
    assert!(stderr.trim().is_empty(), "{what} warned:\n{stderr}");
}

#[test]
fn alert_rules_load_and_pass_their_unit_tests() {
    let dir = deploy_dir().join("prometheus");
    let out = run("promtool", &["check", "rules", "tcptrace.rules.yml"], &dir);
    assert_clean("promtool check rules", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 rules found"));
    let out = run(
        "promtool",
        &["test", "rules", "tcptrace.rules.test.yml"],
        &dir,
    );
    assert_clean("promtool test rules", &out);
}

fn exec_start(unit: &str) -> &str {
    unit.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart")
}

#[test]
fn the_systemd_unit_is_valid_and_runs_serve_on_loopback() {
    let unit = std::fs::read_to_string(deploy_dir().join("systemd/tcptrace.service")).unwrap();
    let args: Vec<&str> = exec_start(&unit).split_whitespace().collect();
    assert_eq!(args[0], "/usr/local/bin/tcptrace");
    let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("ExecStart: {e}"));
    let Subcommand::Serve(serve) = cli.command else {
        panic!("ExecStart should run `serve`");
    };
    assert_eq!(serve.listen, DEFAULT_LISTEN.parse().unwrap());
    for capability in ["CAP_BPF", "CAP_PERFMON"] {
        assert!(unit.contains(capability), "{capability}");
    }
    // systemd-analyze checks that the binary exists: point it at the one just built.
    let dir = TempDir::new("unit");
    let installed = unit.replace("/usr/local/bin/tcptrace", env!("CARGO_BIN_EXE_tcptrace"));
    std::fs::write(dir.0.join("tcptrace.service"), installed).unwrap();
    let out = run("systemd-analyze", &["verify", "tcptrace.service"], &dir.0);
    assert_clean("systemd-analyze verify", &out);
}

#[test]
fn the_readme_scrape_config_is_a_valid_prometheus_config() {
    let readme = std::fs::read_to_string(deploy_dir().join("../README.md")).unwrap();
    let config = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("scrape_configs:"))
        .expect("the README shows a scrape config");
    assert!(
        config.contains(DEFAULT_LISTEN),
        "it scrapes the default address"
    );
    let dir = TempDir::new("scrape-config");
    // The README's rule path is relative to where Prometheus runs; mirror it here.
    std::fs::create_dir_all(dir.0.join("rules")).unwrap();
    std::fs::copy(
        deploy_dir().join("prometheus/tcptrace.rules.yml"),
        dir.0.join("rules/tcptrace.rules.yml"),
    )
    .unwrap();
    std::fs::write(dir.0.join("prometheus.yml"), config).unwrap();
    let out = run("promtool", &["check", "config", "prometheus.yml"], &dir.0);
    assert!(
        out.status.success(),
        "promtool check config:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
