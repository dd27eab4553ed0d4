//! Running commands, and what xtask needs to know about the machine.

use std::{
    ffi::OsStr,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub(crate) fn is_root() -> bool {
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
pub(crate) fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> anyhow::Result<()> {
    run_with_env(program, args, &[])
}

/// [`run`] with extra environment variables.
pub(crate) fn run_with_env<S: AsRef<OsStr>>(
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
pub(crate) fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits for `child`, at most `limit`; past it, kills it and fails.
fn wait_within(child: &mut Child, limit: Duration, what: &str) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{what}` did not finish within {limit:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`run`], killing the command if it has not finished within `limit`.
pub(crate) fn run_within<S: AsRef<OsStr>>(
    program: &str,
    args: &[S],
    limit: Duration,
) -> anyhow::Result<()> {
    let shown = || {
        let args: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        format!("{program} {}", args.join(" "))
    };
    let mut child = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let status = wait_within(&mut child, limit, &shown())?;
    if !status.success() {
        bail!("`{}` failed ({status})", shown());
    }
    Ok(())
}

/// The stdout of a command that must succeed within `limit` (it is killed past it).
pub(crate) fn output_within(
    program: &str,
    args: &[&str],
    limit: Duration,
) -> anyhow::Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    // Read meanwhile: a full pipe would stop the command before it exits.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).map(|_| out)
    });
    let what = format!("{program} {}", args.join(" "));
    let status = wait_within(&mut child, limit, &what)?;
    let out = reader.join().expect("the reader does not panic")?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The cargo that runs xtask, so the same toolchain builds everything.
pub(crate) fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

pub(crate) fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(&cargo_program(), args)
}

/// `cargo test …` with its output passed through, and how many tests its binaries
/// reported ignored (libtest's `test result: … N ignored;` lines), that is, did not run.
pub(crate) fn cargo_test(args: &[&str]) -> anyhow::Result<u64> {
    let mut child = Command::new(cargo_program())
        .args(args)
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;
    let mut ignored = 0;
    let mut out = std::io::stdout().lock();
    // Bytes, not strings: a test may print anything. A line that cannot be passed on
    // is lost, not a reason to stop reading (cargo would die of SIGPIPE).
    for line in BufReader::new(child.stdout.take().expect("piped")).split(b'\n') {
        let Ok(line) = line else { break };
        let _ = out.write_all(&line).and_then(|()| out.write_all(b"\n"));
        ignored += ignored_in(&String::from_utf8_lossy(&line));
    }
    drop(out);
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(ignored)
}

/// `N` in a libtest summary `test result: ok. 3 passed; 0 failed; N ignored; …`.
fn ignored_in(line: &str) -> u64 {
    let Some(counts) = line.strip_prefix("test result: ") else {
        return 0;
    };
    counts
        .split(';')
        .find_map(|part| part.trim().strip_suffix(" ignored")?.parse().ok())
        .unwrap_or(0)
}

/// Replaces this process with `binary args…`, through sudo when not root, so that
/// Ctrl-C and SIGTERM reach it directly.
pub(crate) fn exec_as_root(binary: &Path, args: &[String]) -> anyhow::Result<()> {
    let err = if is_root() {
        Command::new(binary).args(args).exec()
    } else {
        eprintln!("xtask: tcptrace needs root; running it through sudo");
        Command::new("sudo").arg(binary).args(args).exec()
    };
    Err(err).with_context(|| format!("cannot run {}", binary.display()))
}

#[cfg(test)]
mod tests {
    use super::ignored_in;

    #[test]
    fn the_ignored_count_is_read_from_libtests_summary() {
        let summary = "test result: ok. 4 passed; 0 failed; 44 ignored; 0 measured; \
                       0 filtered out; finished in 9.43s";
        assert_eq!(ignored_in(summary), 44);
        assert_eq!(
            ignored_in("test result: FAILED. 1 passed; 1 failed; 2 ignored;"),
            2
        );
        assert_eq!(ignored_in("test serve ... ignored, needs root"), 0);
        assert_eq!(ignored_in("running 3 tests"), 0);
    }
}
