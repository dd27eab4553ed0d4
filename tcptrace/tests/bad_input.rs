//! What an operator gets wrong, and what tcptrace says: each case a clear message and
//! a non-zero exit. `tcptrace doctor` reports the same without loading anything.
//! Privileged: the cases are made by dropping root's capabilities and unmounting tracefs
//! in a private mount namespace, so that no test depends on, or changes, whether the
//! host has tracefs mounted (a new machine has not: DESIGN.md §11).

mod common;

use std::process::{Command, Output};

use common::{serve::*, *};

const TCPTRACE: &str = env!("CARGO_BIN_EXE_tcptrace");

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tcptrace args…` as the unprivileged user nobody, with no capabilities at all.
fn as_nobody(args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(TCPTRACE)
        .args(args)
        .output()
        .expect("setpriv (util-linux) runs")
}

/// `sh -c script` in a private mount namespace: what it mounts or unmounts stays there.
fn in_private_mounts(script: &str) -> Command {
    let mut command = Command::new("unshare");
    command.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
    ]);
    command
}

/// Whether the host (this process's mount namespace) has tracefs where tcptrace
/// looks for it.
fn host_has_tracefs() -> bool {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|p| std::path::Path::new(p).is_dir())
}

#[test]
#[ignore = "needs root"]
fn doctor_passes_here_and_fails_on_a_taken_port() {
    require_root();
    let out = Command::new(TCPTRACE).arg("doctor").output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    // Object, privileges, 5 tracepoints, BTF, fields, ring buffer, sock_diag, listen.
    assert_eq!(stdout.lines().count(), 12, "{stdout}");
    assert!(stdout.lines().all(|l| l.contains("  ok  ")), "{stdout}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(TCPTRACE)
        .args(["doctor", "--listen", &addr])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains(&addr))
        .expect("a listen line");
    assert!(line.contains("FAIL") && line.contains("in use"), "{line}");
    assert!(
        stdout.contains("→ pick another address or port"),
        "{stdout}"
    );
    assert!(stderr.contains("some checks failed"), "{stderr}");
}

#[test]
#[ignore = "needs root"]
fn without_privileges_the_missing_capabilities_are_named() {
    require_root();
    for command in ["watch", "serve"] {
        let out = as_nobody(&[command, "--listen", "127.0.0.1:0"]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains("missing capabilities CAP_BPF and CAP_PERFMON"),
            "{stderr}"
        );
        assert!(stderr.contains("run as root"), "{stderr}");
    }
    let out = as_nobody(&["doctor", "--listen", "127.0.0.1:0"]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("privileges"))
        .unwrap();
    assert!(
        line.contains("FAIL") && line.contains("missing CAP_BPF and CAP_PERFMON"),
        "{line}"
    );
}

/// `tcptrace args…` in a private mount namespace where tracefs is not mounted, as root
/// with the capabilities in `drop` removed.
fn without_tracefs(drop: &str, args: &str) -> Command {
    // Unmounted whether or not the host had it mounted (a new machine has not).
    in_private_mounts(&format!(
        "for m in /sys/kernel/tracing /sys/kernel/debug/tracing; do \
           if mountpoint -q $m; then umount $m || exit 1; fi; done; \
         exec setpriv --bounding-set={drop} --inh-caps=-all {TCPTRACE} {args}"
    ))
}

/// The programs are BTF tracepoints, attached by BTF id: tracefs plays no part.
#[test]
#[ignore = "needs root"]
fn tcptrace_runs_without_tracefs_and_leaves_it_unmounted() {
    require_root();
    let host_had_tracefs = host_has_tracefs();
    let mut command = without_tracefs("+all", "serve --listen 127.0.0.1:0 -P 26010");
    let child = command
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut serve = Process::adopt(child, "tcptrace without tracefs");
    let log = serve.stderr_lines();
    let mut lines = Vec::new();
    let started = eventually(std::time::Duration::from_secs(20), "serving", || {
        lines.extend(log.try_iter());
        lines
            .iter()
            .any(|l| l.contains("serving http://"))
            .then(|| lines.clone())
    });
    assert!(
        started.iter().any(|l| l.contains(
            "attached: inet_sock_set_state, tcp_retransmit_skb, tcp_retransmit_synack, \
             tcp_send_reset, tcp_receive_reset"
        )),
        "{started:?}"
    );
    assert!(
        !started.iter().any(|l| l.contains("tracefs")),
        "{started:?}"
    );
    // Nor did it mount tracefs in its own mount namespace (`sh` exec'd it: this pid).
    let mounts = std::fs::read_to_string(format!("/proc/{}/mountinfo", serve.child.id())).unwrap();
    assert!(!mounts.is_empty());
    assert!(
        !mounts.lines().any(|l| l.contains(" - tracefs ")),
        "tracefs mounted while serving: {mounts}"
    );
    assert!(serve.stop(), "it ran and stopped cleanly");
    assert_eq!(
        host_has_tracefs(),
        host_had_tracefs,
        "the host's tracefs is as it was"
    );

    // doctor, without tracefs and without CAP_SYS_ADMIN, finds every tracepoint in BTF.
    let out = without_tracefs("-sys_admin", "doctor --listen 127.0.0.1:0")
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let tracepoints: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("tracepoint "))
        .collect();
    assert_eq!(tracepoints.len(), 5, "{stdout}");
    assert!(
        tracepoints
            .iter()
            .all(|l| l.contains("  ok  ") && l.contains("present")),
        "{stdout}"
    );
    assert!(!stdout.contains("tracefs"), "{stdout}");
}

#[test]
fn a_binary_built_without_the_ebpf_object_refuses_to_start() {
    // No root needed. A second build of the binary, in its own target directory, with
    // the eBPF build skipped as `cargo check` users do.
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("aya-build-skip");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--package",
            "tcptrace",
            "--bin",
            "tcptrace",
        ])
        .arg("--target-dir")
        .arg(&target)
        .env("AYA_BUILD_SKIP", "1")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success());
    let binary = target.join("debug/tcptrace");
    let out = Command::new(&binary)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("built with AYA_BUILD_SKIP=1"), "{stderr}");
    let out = Command::new(&binary)
        .args(["doctor", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("eBPF object"))
        .unwrap();
    assert!(line.contains("FAIL"), "{line}");
}
