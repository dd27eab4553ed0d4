//! The tracers compared, started and stopped around each churn run, and what each one
//! reports: events delivered, events lost, its own CPU time, its kernel programs.

use std::{
    collections::HashSet,
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::{Deserialize, Serialize};

use super::http;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Tracer {
    /// No tracer: the baseline.
    None,
    /// `tcptrace serve` with everything on: timelines, detectors, metrics.
    Tcptrace,
    /// `tcptrace serve` without the socket's namespace and cgroup or the close
    /// details: the kernel reads of before issue 10, priced in the same run.
    TcptraceReadsNone,
    /// `tcptrace serve` reading the task on the CPU (pid, comm, cgroup) on every event,
    /// as before issue 12, not only where it is the socket's owner.
    TcptraceTaskAlways,
    /// bpftrace counting matching events into a map: the cheapest possible peer.
    BpftraceCount,
    /// bpftrace printing every event, as tcpstates-like tools do.
    BpftracePrint,
}

impl Tracer {
    pub(crate) const ALL: [Tracer; 6] = [
        Tracer::None,
        Tracer::Tcptrace,
        Tracer::TcptraceReadsNone,
        Tracer::TcptraceTaskAlways,
        Tracer::BpftraceCount,
        Tracer::BpftracePrint,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Tracer::None => "no tracer (baseline)",
            Tracer::Tcptrace => "tcptrace serve",
            Tracer::TcptraceReadsNone => "tcptrace, reads before #10",
            Tracer::TcptraceTaskAlways => "tcptrace, task on every event (before #12)",
            Tracer::BpftraceCount => "bpftrace, count in a map",
            Tracer::BpftracePrint => "bpftrace, print each event",
        }
    }

    pub(crate) fn is_bpftrace(self) -> bool {
        matches!(self, Tracer::BpftraceCount | Tracer::BpftracePrint)
    }

    /// A tcptrace row with fewer kernel reads (needs the `bench-hooks` build).
    pub(crate) fn prices_reads(self) -> bool {
        matches!(self, Tracer::TcptraceReadsNone | Tracer::TcptraceTaskAlways)
    }

    /// `tcptrace serve`, whatever it reads in the kernel.
    pub(crate) fn is_tcptrace(self) -> bool {
        self.kernel_reads().is_some()
    }

    /// The `--kernel-reads` of a tcptrace row (a flag of the `bench-hooks` build).
    fn kernel_reads(self) -> Option<&'static str> {
        match self {
            Tracer::Tcptrace => Some("all"),
            Tracer::TcptraceTaskAlways => Some("task-always"),
            Tracer::TcptraceReadsNone => Some("none"),
            _ => None,
        }
    }
}

/// What one tracer run measured.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct TracerReport {
    pub events: u64,
    pub lost: u64,
    /// The tracer process's user + system time during the churn, in seconds.
    pub cpu_seconds: f64,
    /// Its kernel programs' total run time and runs (kernel.bpf_stats_enabled).
    pub kernel_run_ns: u64,
    pub kernel_runs: u64,
}

pub(super) struct Running {
    tracer: Tracer,
    child: Child,
    output: mpsc::Receiver<String>,
    http: Option<SocketAddr>,
    programs: Vec<u32>,
    cpu_at_start: f64,
}

/// A tracer is stopped however the run ends: an error between its start and
/// [`finish`] would otherwise leave it running with its programs attached.
impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Running {
    /// Where tcptrace serves its API; `None` for bpftrace.
    pub(super) fn http(&self) -> Option<SocketAddr> {
        self.http
    }
}

/// Lines from a child's pipe, through a channel.
fn lines(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn wait_for_line(
    output: &mpsc::Receiver<String>,
    what: &str,
    found: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = output
            .recv_timeout(left)
            .with_context(|| format!("waiting for {what}"))?;
        if found(&line) {
            return Ok(line);
        }
    }
}

/// utime + stime of `pid` (all its threads), in seconds.
pub(super) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised comm, which may contain spaces.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks as f64 / per_second)
}

fn bpftrace_script(tracer: Tracer, ports: &[u16]) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|port| format!("args->sport == {port} || args->dport == {port}"))
        .collect();
    let filter = format!("/args->protocol == 6 && ({})/", ports.join(" || "));
    let action = match tracer {
        Tracer::BpftraceCount => "@events = count();".to_owned(),
        _ => "printf(\"%d %s %d %d %d %d\\n\", pid, comm, args->sport, args->dport, \
              args->oldstate, args->newstate);"
            .to_owned(),
    };
    format!("tracepoint:sock:inet_sock_set_state {filter} {{ {action} }}")
}

/// `tcptrace serve` on an ephemeral loopback port with these arguments, once it
/// serves: the child, its stderr's lines, and the address it serves on.
pub(super) fn serve(
    tcptrace: &Path,
    args: &[String],
) -> anyhow::Result<(Child, mpsc::Receiver<String>, SocketAddr)> {
    let mut child = Command::new(tcptrace)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", tcptrace.display()))?;
    let output = lines(child.stderr.take().expect("piped"));
    let addr = wait_for_line(&output, "tcptrace to serve", |l| {
        l.contains("serving http://")
    })
    .and_then(|line| {
        line.split("serving http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .and_then(|a| a.parse().ok())
            .context("tcptrace's address")
    });
    match addr {
        Ok(addr) => Ok((child, output, addr)),
        Err(err) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(err)
        }
    }
}

/// `-P port` for each port.
pub(super) fn port_flags(ports: &[u16]) -> Vec<String> {
    ports
        .iter()
        .flat_map(|p| ["-P".to_owned(), p.to_string()])
        .collect()
}

/// Starts `tracer` filtering on `ports` in the kernel; `None` for the baseline.
pub(super) fn start(
    tracer: Tracer,
    tcptrace: &Path,
    ports: &[u16],
    before: &HashSet<u32>,
) -> anyhow::Result<Option<Running>> {
    let (mut child, output, http) = match tracer {
        Tracer::None => return Ok(None),
        _ if tracer.is_tcptrace() => {
            let mut args = port_flags(ports);
            if let Some(reads) = tracer.kernel_reads().filter(|_| tracer.prices_reads()) {
                args.extend(["--kernel-reads".to_owned(), reads.to_owned()]);
            }
            let (child, output, addr) = serve(tcptrace, &args)?;
            (child, output, Some(addr))
        }
        _ => {
            // bpftrace's tracepoints need tracefs, which a new machine has not mounted
            // (tcptrace does not need it): mount it in a mount namespace of bpftrace's
            // own, so the host's mounts stay as they were. `unshare` and `sh` exec, so
            // the child's pid is bpftrace's and SIGINT reaches it.
            let mut child = Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(
                    "mountpoint -q /sys/kernel/tracing || \
                     mount -t tracefs tracefs /sys/kernel/tracing || exit 1; \
                     exec bpftrace -e \"$0\"",
                )
                .arg(bpftrace_script(tracer, ports))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting bpftrace (Debian package `bpftrace`)")?;
            let output = lines(child.stdout.take().unwrap());
            wait_for_line(&output, "bpftrace to attach", |l| {
                l.starts_with("Attaching")
            })?;
            (child, output, None)
        }
    };
    // Attached once the programs are listed (bpftrace says "Attaching" before it does).
    let deadline = Instant::now() + Duration::from_secs(10);
    let programs = loop {
        let new: Vec<u32> = super::kernel::program_ids()?
            .into_iter()
            .filter(|id| !before.contains(id))
            .collect();
        if !new.is_empty() {
            break new;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{}: no program of its appeared in the kernel within 10 s",
                tracer.label()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(300));
    let cpu_at_start = cpu_seconds(child.id())?;
    Ok(Some(Running {
        tracer,
        child,
        output,
        http,
        programs,
        cpu_at_start,
    }))
}

/// How long a tracer may take to exit after SIGINT, and its output to end after that.
const EXIT_GRACE: Duration = Duration::from_secs(15);

/// Waits for `child` to exit; past `grace`, kills it and fails with where it was
/// stuck, so that a tracer that ignores SIGINT costs one run, not the whole benchmark.
fn wait_or_kill(child: &mut Child, grace: Duration) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = child.id();
    let stuck_in = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    bail!(
        "pid {pid} did not exit within {} s of SIGINT (it waited in `{stuck_in}`); killed it",
        grace.as_secs()
    )
}

/// Sends SIGINT to `child` and waits, at most [`EXIT_GRACE`], for it to exit.
pub(super) fn interrupt(child: &mut Child) -> anyhow::Result<ExitStatus> {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    wait_or_kill(child, EXIT_GRACE)
}

/// The lines still to come, until the pipe closes or `grace` passes.
fn drain(output: &mpsc::Receiver<String>, grace: Duration) -> Vec<String> {
    let deadline = Instant::now() + grace;
    let mut lines = Vec::new();
    while let Ok(line) = output.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        lines.push(line);
    }
    lines
}

/// After the churn: reads what the tracer counted, then stops it.
pub(super) fn finish(mut running: Running) -> anyhow::Result<TracerReport> {
    let pid = running.child.id();
    // Let the tracer drain its buffers.
    std::thread::sleep(Duration::from_secs(1));
    let cpu_seconds = cpu_seconds(pid)? - running.cpu_at_start;
    let (kernel_run_ns, kernel_runs) = super::kernel::program_stats(&running.programs)?;
    let mut report = TracerReport {
        cpu_seconds,
        kernel_run_ns,
        kernel_runs,
        ..TracerReport::default()
    };
    if let Some(addr) = running.http {
        let text = http::get(addr, "/metrics")?;
        report.events = http::metric(&text, "tcptrace_events_total{kind=\"state_change\"}");
        report.lost = http::metric(&text, "tcptrace_events_lost_total");
    }
    let status = interrupt(&mut running.child)
        .with_context(|| format!("stopping {}", running.tracer.label()))?;
    if !status.success() && running.tracer.is_tcptrace() {
        bail!("tcptrace exited with {status}");
    }
    if running.tracer.is_bpftrace() {
        for line in drain(&running.output, EXIT_GRACE) {
            if let Some(count) = line.strip_prefix("@events: ") {
                // Printed twice at exit (END, then the map dump): take the first.
                if report.events == 0 {
                    report.events = count.trim().parse().unwrap_or(0);
                }
            } else if let Some(lost) = line
                .strip_prefix("Lost ")
                .and_then(|l| l.strip_suffix(" events"))
            {
                report.lost += lost.trim().parse::<u64>().unwrap_or(0);
            } else if running.tracer == Tracer::BpftracePrint
                && line.split_whitespace().count() == 6
            {
                report.events += 1;
            }
        }
    }
    Ok(report)
}
