//! The real `tcptrace serve` binary as a child process, a plain HTTP/1.1 client for it,
//! and a real Prometheus server; each stopped and cleaned up on drop, even when the
//! test fails.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// A child process that is stopped with SIGTERM (then SIGKILL) when dropped.
pub(crate) struct Process {
    pub child: Child,
    name: &'static str,
}

impl Process {
    pub(crate) fn adopt(child: Child, name: &'static str) -> Process {
        Process { child, name }
    }

    /// Its stderr, line by line (it must have been spawned with a piped stderr).
    pub(crate) fn stderr_lines(&mut self) -> mpsc::Receiver<String> {
        lines(self.child.stderr.take().expect("a piped stderr"), self.name)
    }

    pub(crate) fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Its exit status, once it exits; panics if it is still running after `timeout`
    /// (the drop then kills it).
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it: SIGTERM, then SIGKILL after 5 s. Returns whether it exited with 0.
    pub(crate) fn stop(&mut self) -> bool {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.success();
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} ignored SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `tcptrace serve` (or `watch --listen`) with `args`, listening on a port the kernel
/// picks.
pub(crate) struct Serve {
    pub process: Process,
    pub addr: SocketAddr,
    /// Every stderr line, as it comes.
    pub log: mpsc::Receiver<String>,
    /// Every stdout line, as it comes.
    pub output: mpsc::Receiver<String>,
}

/// Forwards each line of `from` to the returned channel (and to the test's stderr).
fn lines(from: impl Read + Send + 'static, tag: &'static str) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            eprintln!("[{tag}] {line}");
            let _ = tx.send(line);
        }
    });
    rx
}

impl Serve {
    pub(crate) fn start(args: &[&str]) -> Serve {
        Self::run("serve", args)
    }

    pub(crate) fn run(subcommand: &str, args: &[&str]) -> Serve {
        Self::run_with_env(subcommand, args, &[])
    }

    pub(crate) fn run_with_env(subcommand: &str, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tcptrace"))
            .args([subcommand, "--listen", "127.0.0.1:0"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcptrace starts");
        let log = lines(child.stderr.take().unwrap(), "tcptrace");
        let output = lines(child.stdout.take().unwrap(), "tcptrace stdout");
        let process = Process {
            child,
            name: "tcptrace",
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("tcptrace serve should log the address it serves");
            // "serving http://ADDR/…", or https with --web.config.file.
            let served = line
                .split("serving http://")
                .nth(1)
                .or_else(|| line.split("serving https://").nth(1));
            if let Some(rest) = served {
                let addr = rest.split('/').next().unwrap().parse().unwrap();
                return Serve {
                    process,
                    addr,
                    log,
                    output,
                };
            }
        }
    }

    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path)
    }

    pub(crate) fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    pub(crate) fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }
}

/// GET over a fresh connection; (status, body).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path)
}

/// A bodiless request over a fresh connection; (status, body).
pub(crate) fn http_request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

/// The value of the sample `name{labels}` (labels as rendered, sorted by name) in a
/// Prometheus text exposition, if present.
pub(crate) fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
}

/// Polls `check` until it returns Some or `timeout` passes.
pub(crate) fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A port free at the time of asking (for servers that cannot be told to pick one).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The workspace's `deploy/` directory.
pub(crate) fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// A temporary directory removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        // Unique within the process too: tests of one binary run at once, and two with
        // the same tag would delete each other's directory.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("tcptrace-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Debian's Prometheus, scraping `targets` every second, with tcptrace's alert rules
/// loaded, its data in a temporary directory.
pub(crate) struct Prometheus {
    pub addr: SocketAddr,
    // Dropped in this order: the server first, then its directory.
    _process: Process,
    _dir: TempDir,
}

impl Prometheus {
    pub(crate) fn start(targets: &[SocketAddr]) -> Prometheus {
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        Self::start_with_jobs(&format!(
            "  - job_name: tcptrace\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ))
    }

    /// With `jobs` as its `scrape_configs:` list (YAML, indented by two spaces).
    pub(crate) fn start_with_jobs(jobs: &str) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let rules = deploy_dir().join("prometheus/tcptrace.rules.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - '{}'\n\
             scrape_configs:\n{jobs}",
            rules.display(),
        );
        std::fs::write(dir.0.join("prometheus.yml"), config).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.0.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package `prometheus`, installed by cargo xtask setup)");
        let prometheus = Prometheus {
            addr,
            _process: Process {
                child,
                name: "prometheus",
            },
            _dir: dir,
        };
        eventually(Duration::from_secs(30), "prometheus to be ready", || {
            TcpStream::connect(addr).ok()?;
            (http_get(addr, "/-/ready").0 == 200).then_some(())
        });
        prometheus
    }

    /// An instant PromQL query; the result vector's (labels, value) pairs.
    pub(crate) fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        let (status, answer) = self.api(&format!("/api/v1/query?query={}", url_encode(promql)));
        assert_eq!(status, 200, "{answer}");
        answer["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let value = r["value"][1].as_str().unwrap().parse().unwrap();
                (r["metric"].clone(), value)
            })
            .collect()
    }

    /// GET `path_and_query` from the HTTP API: the status and the JSON answer, which
    /// for an error (a query that does not parse) says why.
    pub(crate) fn api(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        let (status, body) = http_get(self.addr, path_and_query);
        let answer = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}: {body}"));
        (status, answer)
    }
}

/// `text` as a URL query value.
pub(crate) fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
