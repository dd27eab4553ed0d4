//! Privileged: a leak inside a real Podman container, attributed to the id `podman
//! inspect` reports. The container, its root directory and its cgroup are made by the
//! test and removed on drop.
//!
//! Podman runs with explicit ulimits and runc. Podman asks the runtime to set
//! RLIMIT_NOFILE and RLIMIT_NPROC to its own defaults, above the hard limits a host may
//! have, and raising a hard limit needs CAP_SYS_RESOURCE: runc and crun both fail there
//! unless `--ulimit` stays under them. crun (Podman's default) then also refuses hybrid
//! cgroups ("cgroups in hybrid mode not supported"). `--network none` gives the container
//! a network namespace of its own holding only loopback, and leaves the host's firewall
//! rules alone.

mod common;

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    leaker::{netns_of, SCRIPT},
    require_root,
    serve::{eventually, sample, Serve, TempDir},
};

const WAIT: Duration = Duration::from_secs(20);

/// `podman --runtime runc ARGS…`: its stdout, or its stderr as the error. The global
/// `--runtime` makes runc the default for every command, so none needs crun.
fn podman_try(args: &[&str]) -> Result<String, String> {
    let out = Command::new("podman")
        .args(["--runtime", "runc"])
        .args(args)
        .output()
        .map_err(|e| {
            format!("cannot run podman ({e}): run `cargo xtask setup`, it installs podman and runc")
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

fn podman(args: &[&str]) -> String {
    podman_try(args).unwrap_or_else(|e| panic!("`podman {}` failed: {e}", args.join(" ")))
}

/// Mount points of every cgroup hierarchy, v1 and v2 (`/proc/self/mountinfo`).
fn cgroup_mounts() -> Vec<PathBuf> {
    mount_points()
        .into_iter()
        .filter(|(_, fstype)| fstype == "cgroup" || fstype == "cgroup2")
        .map(|(point, _)| point)
        .collect()
}

/// (mount point, fstype) of each mount this process sees.
fn mount_points() -> Vec<(PathBuf, String)> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some((
                PathBuf::from(fields[4]),
                (*fields.get(dash + 1)?).to_owned(),
            ))
        })
        .collect()
}

/// The process's cgroup v2 path (the `0::` line of `/proc/PID/cgroup`).
fn cgroup_v2_of(pid: u32) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_else(|| panic!("no cgroup v2 line in {text}"))
        .to_owned()
}

/// A root directory for a container that runs the host's own programs, read-only:
/// `usr/` (and `bin/`, `lib/`… as the host has them: symlinks into `usr/` on a merged-/usr
/// host, else directories) is only a mount point, the host's `/usr` is bind-mounted
/// there. Podman writes `etc/hosts`, `etc/hostname`, `run/.containerenv` and the mount
/// points into this directory, nowhere else. Returns the `--volume` arguments.
fn host_rootfs(root: &Path) -> Vec<String> {
    fs::create_dir_all(root.join("usr")).unwrap();
    let mut volumes = vec!["/usr:/usr:ro".to_owned()];
    for top in ["bin", "sbin", "lib", "lib64"] {
        let host = Path::new("/").join(top);
        if let Ok(target) = fs::read_link(&host) {
            symlink(target, root.join(top)).unwrap();
        } else if host.is_dir() {
            fs::create_dir(root.join(top)).unwrap();
            volumes.push(format!("{0}:{0}:ro", host.display()));
        }
    }
    volumes
}

/// A Podman container running the leaking server ([`SCRIPT`]) on the host's python3,
/// attached (`podman run --interactive`) so that the test can tell it to go and hear it
/// is ready. On drop: `podman rm --force`, a check that its cgroup went with it, then its
/// root directory; a failure panics unless the test already is.
struct PodmanLeaker {
    name: String,
    /// `podman run`, attached to the container's stdin and stdout.
    run: Option<Child>,
    stdin: Option<ChildStdin>,
    /// Once it runs: its full id, its pid as the host sees it, its cgroup v2 path.
    id: String,
    pid: u32,
    cgroup: String,
    dir: Option<TempDir>,
}

impl PodmanLeaker {
    /// Starts the container `tcptrace-test-<pid>`; its server listens on 127.0.0.1:`port`
    /// in the container's network namespace once told to [`go`](Self::go), and leaks
    /// `leaks` connections.
    fn start(port: u16, leaks: usize) -> PodmanLeaker {
        eprintln!("{}", podman(&["--version"]));
        let name = format!("tcptrace-test-{}", std::process::id());
        // A previous run killed before its cleanup.
        podman(&["rm", "--force", "--ignore", "--time", "0", &name]);
        let mut leaker = PodmanLeaker {
            name,
            run: None,
            stdin: None,
            id: String::new(),
            pid: 0,
            cgroup: String::new(),
            dir: Some(TempDir::new("podman")),
        };
        let rootfs = leaker.dir.as_ref().unwrap().0.join("rootfs");
        let volumes = host_rootfs(&rootfs);
        let mut command = Command::new("podman");
        command
            .args(["--runtime", "runc", "run", "--interactive", "--name"])
            .arg(&leaker.name)
            .args(["--network", "none"])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ]);
        for volume in &volumes {
            command.args(["--volume", volume]);
        }
        let mut child = command
            .arg("--rootfs")
            .arg(&rootfs)
            .args(["/usr/bin/python3", "-c", SCRIPT])
            .args([port, leaks as u16, 0, 0, 0].map(|n| n.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("podman run starts");
        leaker.stdin = child.stdin.take();
        leaker.run = Some(child);
        let name = leaker.name.clone();
        leaker.pid = eventually(WAIT, "the container to run", || {
            let pid = podman_try(&["inspect", "--format", "{{.State.Pid}}", &name]).ok()?;
            pid.parse().ok().filter(|&pid| pid != 0)
        });
        leaker.id = podman(&["inspect", "--format", "{{.Id}}", &name]);
        leaker.cgroup = cgroup_v2_of(leaker.pid);
        leaker
    }

    /// Lets the server make its sockets, and waits until they are made.
    fn go(&mut self) {
        let mut stdin = self.stdin.take().expect("go once");
        stdin.write_all(b"go\n").unwrap();
        let stdout = self.run.as_mut().unwrap().stdout.as_mut().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the leaking server did not start");
    }

    /// Removes the container and its root directory; what failed, if anything.
    fn remove(&mut self) -> Vec<String> {
        let mut failures = Vec::new();
        if let Err(e) = podman_try(&["rm", "--force", "--ignore", "--time", "0", &self.name]) {
            failures.push(format!("podman rm {}: {e}", self.name));
        }
        // The attached `podman run` ends with its container.
        if let Some(mut run) = self.run.take() {
            drop(self.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(10);
            while run.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    failures.push("podman run outlived its container".to_owned());
                    let _ = run.kill();
                    let _ = run.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !self.cgroup.is_empty() {
            let left = || {
                cgroup_mounts()
                    .into_iter()
                    .map(|m| m.join(self.cgroup.trim_start_matches('/')))
                    .filter(|dir| dir.exists())
                    .collect::<Vec<_>>()
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while !left().is_empty() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            failures.extend(
                left()
                    .iter()
                    .map(|d| format!("cgroup left: {}", d.display())),
            );
        }
        if let Some(dir) = self.dir.take() {
            // Never delete through a mount (the host's /usr, were it bound here).
            let mounted: Vec<_> = mount_points()
                .into_iter()
                .filter(|(point, _)| point.starts_with(&dir.0))
                .collect();
            if mounted.is_empty() {
                drop(dir);
            } else {
                failures.push(format!(
                    "mounts left under {}: {mounted:?}",
                    dir.0.display()
                ));
                std::mem::forget(dir);
            }
        }
        failures
    }
}

impl Drop for PodmanLeaker {
    fn drop(&mut self) {
        let failures = self.remove();
        if failures.is_empty() {
            return;
        }
        let message = format!("cleaning up container {}: {failures:#?}", self.name);
        if std::thread::panicking() {
            eprintln!("{message}");
        } else {
            panic!("{message}");
        }
    }
}

/// `nsenter -t PID -n ss -Htan state STATE '( sport = :P or dport = :P )'`, counted.
fn ss_count_of(pid: u32, state: &str, port: u16) -> usize {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ss", "-Htan", "state", state])
        .arg(format!("( sport = :{port} or dport = :{port} )"))
        .output()
        .expect("nsenter (util-linux) runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
#[ignore = "needs root"]
fn a_leak_in_a_podman_container_is_attributed_to_the_id_podman_inspect_reports() {
    require_root();
    const N: usize = 3;
    const PORT: u16 = 28001;
    let started = Instant::now();
    let port = PORT.to_string();
    let serve = Serve::start(&[
        "-P",
        &port,
        "--close-wait-threshold",
        "1s",
        "--reconcile-interval",
        "200ms",
    ]);
    let mut container = PodmanLeaker::start(PORT, N);
    eprintln!(
        "container {} (pid {}, cgroup {}) running after {:?}",
        container.id,
        container.pid,
        container.cgroup,
        started.elapsed()
    );
    assert_eq!(container.id.len(), 64, "a full id: {}", container.id);
    let unit = container.cgroup.rsplit('/').next().unwrap();
    assert!(
        unit.trim_end_matches(".scope") == format!("libpod-{}", container.id),
        "Podman's cgroup for the container: {}",
        container.cgroup
    );
    let netns = netns_of(container.pid);
    assert_ne!(
        netns,
        netns_of(std::process::id()),
        "a namespace of its own"
    );
    container.go();

    let listed = eventually(WAIT, &format!("{N} leaks with owners"), || {
        let report = serve.json("/api/leaks");
        let listed = report["close_wait"]["leaks"].as_array()?.clone();
        (listed.len() == N && listed.iter().all(|l| l["owner"]["source"] == "proc"))
            .then_some(listed)
    });
    for leak in &listed {
        assert_eq!(leak["container"]["id"], container.id.as_str(), "{leak}");
        assert_eq!(leak["container"]["runtime"], "podman", "{leak}");
        assert_eq!(leak["cgroup"], container.cgroup.as_str(), "{leak}");
        assert_eq!(leak["netns"], netns, "{leak}");
        assert_eq!(leak["owner"]["pid"], container.pid, "{leak}");
        assert_eq!(leak["owner"]["source"], "proc", "{leak}");
        assert_eq!(leak["local"], format!("127.0.0.1:{PORT}"), "{leak}");
    }
    let labels = format!(
        "comm=\"python3\",container=\"{}\",pid=\"{}\"",
        &container.id[..12],
        container.pid
    );
    assert_eq!(
        sample(
            &serve.metrics(),
            "tcptrace_close_wait_stuck_by_process",
            &labels
        ),
        Some(N as f64),
        "{labels}"
    );
    assert_eq!(ss_count_of(container.pid, "close-wait", PORT), N);
    drop(container);
    eprintln!("done, container removed, after {:?}", started.elapsed());
}
