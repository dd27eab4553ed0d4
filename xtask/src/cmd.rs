//! Running commands, and what xtask needs to know about the machine.

use std::{
    ffi::OsStr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn is_root() -> bool {
    // /proc/self is ours; "Uid:" lists real, effective, saved, fs ids.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Runs `program args…` and fails with its name if it fails.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> anyhow::Result<()> {
    run_with_env(program, args, &[])
}

/// [`run`] with extra environment variables.
pub fn run_with_env<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    env: &[(&str, &OsStr)],
) -> anyhow::Result<()> {
    let status = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        bail!("`{program} {}` failed ({status})", shown.join(" "));
    }
    Ok(())
}

/// Runs a command and returns its stdout, or None if it cannot run or fails.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cargo that runs xtask, so the same toolchain builds everything.
pub fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(&cargo_program(), args)
}

/// Replaces this process with `binary args…`, through sudo when not root, so that
/// Ctrl-C and SIGTERM reach it directly.
pub fn exec_as_root(binary: &Path, args: &[String]) -> anyhow::Result<()> {
    let err = if is_root() {
        Command::new(binary).args(args).exec()
    } else {
        eprintln!("xtask: tcptrace needs root; running it through sudo");
        Command::new("sudo").arg(binary).args(args).exec()
    };
    Err(err).with_context(|| format!("cannot run {}", binary.display()))
}
