//! Privileged: the web view in a real browser. Debian's Chromium runs headless against a
//! real `tcptrace serve` while the test makes a CLOSE_WAIT leak (in a namespace of its
//! own) and a connection whose two ends are both on this host. Everything asserted is
//! read from the rendered DOM through the DevTools protocol, not from the HTML source;
//! every request the page makes is recorded (all must go to tcptrace on loopback), and
//! so is every console error and uncaught exception (there must be none). Screenshots
//! land in `target/web-view/`. Chromium, its profile, the namespace and the leaking
//! server are all removed on drop, also when the test fails.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use common::{leaker::Leaker, netns::Netns, require_root, serve::*};
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

const WAIT: Duration = Duration::from_secs(30);
const LEAK_PORT: u16 = 27301;
const PAIR_PORT: u16 = 27302;
const LEAKS: usize = 3;

/// Headless Chromium with a profile of its own, in a process group of its own so that
/// its helper processes (zygote, renderer, GPU) go with it.
struct Chromium {
    child: Child,
    profile: TempDir,
}

impl Chromium {
    fn start() -> Chromium {
        let profile = TempDir::new("chromium");
        let child = Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                // Nothing of its own to fetch: the test watches what the page fetches.
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-gpu",
                "--window-size=1280,900",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromium (Debian package `chromium`, installed by cargo xtask setup)");
        Chromium { child, profile }
    }

    /// The DevTools port, from the `DevToolsActivePort` file it writes once listening.
    fn devtools_port(&mut self) -> u16 {
        let file = self.profile.0.join("DevToolsActivePort");
        eventually(WAIT, "chromium's DevToolsActivePort", || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromium exited at start: {status}");
            }
            let text = std::fs::read_to_string(&file).ok()?;
            text.lines().next()?.trim().parse().ok()
        })
    }

    /// The websocket of its one page (the about:blank it started with).
    fn page(&mut self) -> Page {
        let port = self.devtools_port();
        let devtools = SocketAddr::from(([127, 0, 0, 1], port));
        let url = eventually(WAIT, "chromium's page target", || {
            let targets = devtools_json(devtools, "/json/list")?;
            targets.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                .as_str()
                .map(str::to_owned)
        });
        let stream = TcpStream::connect(devtools).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let (socket, _) = tungstenite::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("websocket {url}: {e}"));
        Page {
            socket,
            next_id: 0,
            requests: Vec::new(),
            errors: Vec::new(),
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let group = -(self.child.id() as i32);
        // SAFETY: kill(2) on the process group our own child leads.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Whatever of the group is left (a helper that outlived the browser).
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
        // The profile (a TempDir) is removed after this, once nothing writes to it.
    }
}

/// GET `path` from the DevTools HTTP endpoint, which keeps the connection open: the body
/// is read to its Content-Length. `None` on any failure (it may not listen yet).
fn devtools_json(devtools: SocketAddr, path: &str) -> Option<Value> {
    let mut stream = TcpStream::connect(devtools).ok()?;
    stream.set_read_timeout(Some(WAIT)).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {devtools}\r\n\r\n").ok()?;
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        let length: usize = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })?;
        if body.len() >= length {
            return serde_json::from_str(&body[..length]).ok();
        }
    }
}

/// A DevTools protocol session with one page, recording what the page requests and
/// every error it reports.
struct Page {
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// Every URL the page requested (Network.requestWillBeSent).
    requests: Vec<String>,
    /// Uncaught exceptions, console.error calls and error log entries.
    errors: Vec<String>,
}

impl Page {
    /// Calls `method` and waits for its answer, recording the events that come first.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let request = json!({ "id": id, "method": method, "params": params });
        self.socket
            .send(Message::text(request.to_string()))
            .unwrap_or_else(|e| panic!("sending {method}: {e}"));
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no answer to {method}");
            let Some(message) = self.receive() else {
                continue;
            };
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method}: {error}");
                }
                return message["result"].clone();
            }
        }
    }

    /// One message, or None when none came within the socket's read timeout.
    fn receive(&mut self) -> Option<Value> {
        let message = match self.socket.read() {
            Ok(Message::Text(text)) => serde_json::from_str::<Value>(&text).unwrap(),
            Ok(_) => return None,
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                return None
            }
            Err(e) => panic!("the DevTools websocket failed: {e}"),
        };
        self.record(&message);
        Some(message)
    }

    fn record(&mut self, message: &Value) {
        let params = &message["params"];
        match message["method"].as_str() {
            Some("Network.requestWillBeSent") => {
                let url = params["request"]["url"].as_str().unwrap_or_default();
                self.requests.push(url.to_owned());
            }
            Some("Runtime.exceptionThrown") => {
                self.errors
                    .push(format!("exception: {}", params["exceptionDetails"]));
            }
            Some("Runtime.consoleAPICalled")
                if matches!(params["type"].as_str(), Some("error" | "assert")) =>
            {
                self.errors.push(format!("console: {}", params["args"]));
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", params["entry"]));
            }
            _ => {}
        }
    }

    /// Reads events for `time`: requests and errors made meanwhile are recorded.
    fn listen_for(&mut self, time: Duration) {
        let until = Instant::now() + time;
        while Instant::now() < until {
            self.receive();
        }
    }

    /// The value of a JavaScript expression in the page.
    fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        if let Some(details) = result.get("exceptionDetails") {
            panic!("evaluating {expression}: {details}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is neither null nor false; its value.
    fn wait_for(&mut self, what: &str, expression: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.evaluate(expression);
            if !value.is_null() && value != false {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}; it shows: {}",
                self.evaluate("document.getElementById('main').innerText")
            );
            self.listen_for(Duration::from_millis(250));
        }
    }

    fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
    }

    /// A PNG of the whole page (beyond the window), saved at `path`.
    fn screenshot(&mut self, path: &PathBuf) {
        let metrics = self.call("Page.getLayoutMetrics", json!({}));
        let size = &metrics["cssContentSize"];
        let shot = self.call(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {
                    "x": 0, "y": 0,
                    "width": size["width"].as_f64().unwrap().max(1280.0),
                    "height": size["height"].as_f64().unwrap(),
                    "scale": 1,
                },
            }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert_eq!(&png[1..4], b"PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

/// `target/web-view/<name>`.
fn screenshot_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is target/tmp")
        .join("web-view")
        .join(name)
}

/// The kernel's TCP state of `stream` (TCP_INFO's `tcpi_state`).
fn tcp_state(stream: &TcpStream) -> u8 {
    // SAFETY: tcp_info is plain data; getsockopt fills at most `len` bytes of it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid socket and a buffer of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_state
}

/// `TCP_FIN_WAIT2` in include/net/tcp_states.h.
const TCP_FIN_WAIT2: u8 = 5;

/// Opens a connection on loopback, sends five bytes to the server, and closes it the
/// textbook way, the client first: both ends are this host's. The server closes only
/// once its ACK of the client's FIN is in (the client in FIN_WAIT2): a socket that
/// receives a FIN delays its ACK (tcp_fin() enters pingpong mode), and closing sooner
/// would send that ACK with the server's own FIN (a three-way close). The client's
/// address.
fn paired_connection() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", PAIR_PORT)).unwrap();
    let mut client = TcpStream::connect(("127.0.0.1", PAIR_PORT)).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let local = client.local_addr().unwrap();
    client.write_all(b"hello").unwrap();
    let mut buf = [0u8; 16];
    server.read_exact(&mut buf[..5]).unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    server.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(server.read(&mut buf).unwrap(), 0, "the client's FIN");
    eventually(WAIT, "the client in FIN_WAIT2", || {
        (tcp_state(&client) == TCP_FIN_WAIT2).then_some(())
    });
    drop(server);
    client.set_read_timeout(Some(WAIT)).unwrap();
    assert_eq!(client.read(&mut buf).unwrap(), 0, "the server's FIN");
    drop(client);
    local
}

#[test]
#[ignore = "needs root"]
fn a_browser_shows_the_leak_on_the_overview_and_the_pair_as_a_sequence_diagram() {
    require_root();
    let ns = Netns::create("tt-view");
    let serve = Serve::start(&[
        "-P",
        &LEAK_PORT.to_string(),
        "-P",
        &PAIR_PORT.to_string(),
        "--close-wait-threshold",
        "1s",
        "--reconcile-interval",
        "300ms",
    ]);
    let mut leaker = Leaker::spawn(&ns.name, LEAK_PORT, LEAKS, 0, 0);
    leaker.go();
    let client = paired_connection();
    // The client's id, to open its page; both ends finished.
    let id = eventually(WAIT, "the pair's two finished ends", || {
        let closed = serve.json(&format!("/api/closed?port={PAIR_PORT}"));
        let ends = closed["connections"].as_array()?;
        (ends.len() == 2).then_some(())?;
        ends.iter().find(|c| c["local"] == client.to_string())?["id"].as_u64()
    });

    let mut chromium = Chromium::start();
    let mut page = chromium.page();
    for domain in ["Page", "Runtime", "Log", "Network"] {
        page.call(&format!("{domain}.enable"), json!({}));
    }
    let origin = format!("http://{}/", serve.addr);

    // The overview: the leaking process, with its pid and how many it leaks.
    page.navigate(&origin);
    let rows = page.wait_for(
        "the leaking process",
        &format!(
            "(() => {{
                const rows = [...document.querySelectorAll('#leaks-by-process tbody tr')]
                    .map(tr => [tr.querySelector('td.pid').textContent,
                                tr.querySelector('td.count').textContent]);
                return rows.some(r => r[0] === '{pid}') ? rows : null;
            }})()",
            pid = leaker.pid()
        ),
    );
    assert_eq!(rows, json!([[leaker.pid().to_string(), LEAKS.to_string()]]));
    let summary = page.evaluate("document.getElementById('leak-summary').textContent");
    assert!(
        summary
            .as_str()
            .unwrap()
            .starts_with(&format!("{LEAKS} connections stuck in CLOSE_WAIT")),
        "{summary}"
    );
    let programs = page.evaluate("document.getElementById('health-programs').textContent");
    let (attached, of) = programs
        .as_str()
        .unwrap()
        .split_once(" of ")
        .expect("`N of M` programs");
    assert_eq!(attached, of, "every program attached: {programs}");
    assert_ne!(attached, "0");
    page.screenshot(&screenshot_path("overview.png"));

    // The connections page lists the pair's port only when asked for it (its ends are
    // finished: none is live), and the leaks' sockets by port.
    page.navigate(&format!(
        "{origin}#/connections?port={LEAK_PORT}&state=CLOSE_WAIT"
    ));
    let range = page.wait_for(
        "the leaks in the connections table",
        "(() => { const r = document.getElementById('page-range');
                  const rows = document.querySelectorAll('#connections-table tbody tr');
                  return r && rows.length ? [r.textContent, rows.length] : null; })()",
    );
    assert_eq!(range, json!([format!("1–{LEAKS} of {LEAKS}"), LEAKS]));
    page.screenshot(&screenshot_path("connections.png"));

    // One connection: its two ends' states in the order they happened, beside the
    // segments each sent, and what the client carried.
    page.navigate(&format!("{origin}#/connection/{id}"));
    let states = page.wait_for(
        "the sequence diagram",
        "(() => { const svg = document.querySelector('#diagram svg');
                  return svg && [...svg.querySelectorAll('text.state')]
                      .map(t => t.getAttribute('data-end') + ' ' + t.textContent); })()",
    );
    assert_eq!(
        states,
        json!([
            "client SYN_SENT",
            "server SYN_RECV",
            "client ESTABLISHED",
            "server ESTABLISHED",
            "client FIN_WAIT1",
            "server CLOSE_WAIT",
            "client FIN_WAIT2",
            "server LAST_ACK",
            "client TIME_WAIT",
            "server CLOSE",
        ])
    );
    let segments = page.evaluate(
        "[...document.querySelectorAll('#diagram svg text.segment')].map(t => t.textContent)",
    );
    assert_eq!(
        segments,
        json!(["SYN", "SYN+ACK", "ACK", "FIN", "ACK", "FIN", "ACK"])
    );
    let carried = page.evaluate(
        "(() => { const dl = document.getElementById('carried');
                  const facts = {};
                  dl.querySelectorAll('dt').forEach(dt => facts[dt.textContent] = dt.nextElementSibling.textContent);
                  return [facts['sent'], facts['received']]; })()",
    );
    assert_eq!(carried, json!(["5 B", "0 B"]));
    page.screenshot(&screenshot_path("connection.png"));

    // A few refreshes more, then: no error, and nothing but tcptrace asked.
    page.listen_for(Duration::from_millis(2500));
    assert_eq!(
        page.errors,
        Vec::<String>::new(),
        "the page reported errors"
    );
    let paths: Vec<&str> = page
        .requests
        .iter()
        .map(|url| {
            url.strip_prefix(&origin)
                .unwrap_or_else(|| panic!("a request left tcptrace on loopback: {url}"))
        })
        .collect();
    for wanted in [
        "",
        "ui/app.js",
        "ui/style.css",
        "api/overview",
        &format!("api/connections/{id}"),
        &format!("api/connections/{id}/diagram.svg"),
    ] {
        assert!(
            paths.contains(&wanted),
            "no request for /{wanted}: {paths:?}"
        );
    }
    drop(chromium);
    drop(leaker);
    drop(ns);
}
