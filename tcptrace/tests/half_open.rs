//! Privileged: half-open suspects on a real kernel. A client in one network namespace
//! talks to a server in another over a veth pair; then the server's namespace drops
//! every packet it receives (nftables) while the client has data outstanding, as a
//! crashed or partitioned peer would. `tcptrace serve` must flag the client's
//! connection once it has gone unanswered for `--half-open-after`, with the client's
//! pid and namespace, and stop when the connection ends. The namespaces and the
//! client process are the test's, removed on drop.

mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use common::{leaker::*, netns::*, serve::*, *};

const WAIT: Duration = Duration::from_secs(30);

/// The client: a process of its own, so that its pid (as `/proc` sees it) is not the
/// test's. Arguments: server address and port. It connects, sends 5 bytes, prints
/// `connected <local port>`, then obeys stdin: `send` writes 1000 more bytes, `reset`
/// closes with SO_LINGER 0 (an abort), `wait` blocks reading until the kernel ends the
/// connection and prints the errno.
const CLIENT: &str = r#"
import errno, socket, struct, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
c.sendall(b"hello")
print("connected", c.getsockname()[1], flush=True)
for line in sys.stdin:
    command = line.strip()
    if command == "send":
        c.sendall(b"x" * 1000)
        print("sent", flush=True)
    elif command == "reset":
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
        print("closed", flush=True)
    elif command == "wait":
        try:
            c.recv(1)
            print("eof", flush=True)
        except OSError as e:
            print("error", errno.errorcode.get(e.errno, e.errno), flush=True)
"#;

struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl Client {
    fn connect(netns: &str, server: SocketAddr) -> Client {
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "python3", "-c", CLIENT])
            .args([server.ip().to_string(), server.port().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip netns exec python3 runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut client = Client {
            child,
            stdin,
            stdout,
            port: 0,
        };
        let line = client.line();
        client.port = line
            .strip_prefix("connected ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the client did not connect: {line:?}"));
        client
    }

    /// The pid as the host sees it (`ip netns exec` execs python in place).
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    /// Sends a command and returns its answer.
    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.line()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server end: accepts the client and reads its greeting, so that the connection
/// has carried data both ways before the drop.
fn accept_greeting(listener: &TcpListener) -> std::net::TcpStream {
    let (mut accepted, _) = listener.accept().unwrap();
    let mut hello = [0u8; 5];
    accepted.read_exact(&mut hello).unwrap();
    assert_eq!(&hello, b"hello");
    accepted
}

/// Every packet into namespace `ns` is dropped from now on.
fn drop_all_input(pair: &NetnsPair, ns: &str) {
    pair.nft(
        ns,
        "table inet tcptrace_half_open {\n chain input {\n  \
         type filter hook input priority 0; policy drop;\n }\n}\n",
    );
}

fn serve_on(port: u16) -> Serve {
    Serve::start(&[
        "-P",
        &port.to_string(),
        "--half-open-after",
        "2s",
        "--reconcile-interval",
        "200ms",
    ])
}

/// The suspects `/api/half-open` lists, once `accept` holds for them.
fn suspects_when(
    serve: &Serve,
    what: &str,
    accept: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    eventually(WAIT, what, || {
        let report = serve.json("/api/half-open");
        let listed = report["suspects"].as_array()?.clone();
        assert_eq!(report["count"], listed.len(), "{report}");
        accept(&listed).then_some(listed)
    })
}

fn metric(serve: &Serve, name: &str, labels: &str) -> Option<f64> {
    sample(&serve.metrics(), name, labels)
}

/// What `ss -tino` shows of the client socket: `timer:(on,…,N)`'s N (retransmission
/// timeouts), `backoff`, `unacked`, and the total of `retrans:a/total`.
#[derive(Debug, PartialEq, Eq)]
struct SsView {
    timer_retransmits: u64,
    backoff: u64,
    unacked: u64,
    total_retrans: u64,
}

fn ss_view(ns: &str, port: u16) -> Option<SsView> {
    let out = sh(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "ss",
            "-Htino",
            "state",
            "established",
            &format!("( sport = :{port} )"),
        ],
    );
    let tokens: Vec<&str> = out.split_whitespace().collect();
    let field = |name: &str| {
        tokens
            .iter()
            .find_map(|t| t.strip_prefix(name)?.strip_prefix(':'))
    };
    let timer = field("timer")?; // (on,1.620ms,3)
    let timer_retransmits = timer
        .strip_prefix("(on,")?
        .trim_end_matches(')')
        .rsplit(',')
        .next()?
        .parse()
        .ok()?;
    Some(SsView {
        timer_retransmits,
        backoff: field("backoff")?.parse().ok()?,
        unacked: field("unacked")?.parse().ok()?,
        total_retrans: field("retrans")?.split('/').nth(1)?.parse().ok()?,
    })
}

fn as_u64(value: &serde_json::Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("not a number: {value}"))
}

#[test]
#[ignore = "needs root"]
fn a_peer_that_stops_answering_makes_a_suspect_until_the_connection_is_reset() {
    require_root();
    const PORT: u16 = 29001;
    let pair = NetnsPair::create("tt-ho-rst", 61);
    let serve = serve_on(PORT);
    let server = SocketAddr::from((pair.addr_b, PORT));
    let listener = in_netns(&pair.b, || listen(server));
    let mut client = Client::connect(&pair.a, server);
    let _accepted = accept_greeting(&listener);
    let client_netns = inum_of(&pair.a);
    assert_eq!(netns_of(client.pid()), u64::from(client_netns));
    let local = format!("{}:{}", pair.addr_a, client.port);

    // Both ends live and answered: nothing suspect, whatever the passes.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(serve.json("/api/half-open")["count"], 0);

    drop_all_input(&pair, &pair.b);
    assert_eq!(client.ask("send"), "sent");
    let listed = suspects_when(&serve, "the client flagged with its /proc owner", |s| {
        s.len() == 1 && s[0]["owner"]["source"] == "proc"
    });
    let suspect = &listed[0];
    assert_eq!(suspect["local"], local);
    assert_eq!(suspect["remote"], server.to_string());
    assert_eq!(suspect["state"], "ESTABLISHED");
    assert_eq!(suspect["netns"], client_netns);
    assert_eq!(suspect["owner"]["pid"], client.pid());
    assert_eq!(suspect["owner"]["comm"], "python3");
    assert!(
        suspect["unanswered_seconds"].as_f64().unwrap() >= 2.0,
        "{suspect}"
    );
    assert_eq!(suspect["timer"]["kind"], "retransmit");
    assert!(
        as_u64(&suspect["retransmits"]) >= 3,
        "2 s of 200 ms doubling: {suspect}"
    );
    assert_eq!(suspect["unacked"], 1, "one 1000-byte segment");
    // Its id finds it in the table, with the same kernel view alongside.
    let timeline = serve.json(&format!("/api/connections/{}", suspect["id"]));
    assert_eq!(timeline["local"], local);
    assert_eq!(timeline["kernel"]["timer"]["kind"], "retransmit");

    // The counts agree with ss's for the same socket. They change at each timeout
    // (backoff doubles the gaps: 3.2 s, then 6.4 s), so compare while ss says the
    // same before and after reading the API.
    eventually(
        WAIT,
        "the API and ss to agree on the retransmissions",
        || {
            let before = ss_view(&pair.a, client.port)?;
            let report = serve.json("/api/half-open");
            let s = &report["suspects"][0];
            let after = ss_view(&pair.a, client.port)?;
            let api = SsView {
                timer_retransmits: as_u64(&s["retransmits"]),
                backoff: as_u64(&s["backoff"]),
                unacked: as_u64(&s["unacked"]),
                total_retrans: as_u64(&s["total_retrans"]),
            };
            (before == after && api == before).then_some(())
        },
    );

    let text = serve.metrics();
    assert_eq!(sample(&text, "tcptrace_half_open_suspects", ""), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "tcptrace_half_open_suspects_by_netns",
            &format!("netns=\"{client_netns}\"")
        ),
        Some(1.0)
    );
    assert!(sample(&text, "tcptrace_half_open_oldest_unanswered_seconds", "").unwrap() >= 2.0);
    assert_eq!(serve.json("/api/leaks")["half_open"]["count"], 1);
    // Both ends are tracked; the server's end owes nothing (it sent no data): never a
    // suspect.
    let rows = serve.json(&format!("/api/connections?port={PORT}"));
    assert_eq!(rows["matching"], 2, "{rows}");
    let server_end = format!("{}:{PORT}", pair.addr_b);
    let report = serve.json("/api/half-open");
    let suspects = report["suspects"].as_array().unwrap();
    assert!(
        suspects.iter().all(|s| s["local"] != server_end.as_str()),
        "{report:#}"
    );

    // The client aborts: the connection ends, and so does the suspicion.
    assert_eq!(client.ask("reset"), "closed");
    suspects_when(
        &serve,
        "no suspect once the connection ended",
        <[_]>::is_empty,
    );
    assert_eq!(metric(&serve, "tcptrace_half_open_suspects", ""), Some(0.0));
    assert_eq!(
        metric(
            &serve,
            "tcptrace_half_open_suspects_by_netns",
            &format!("netns=\"{client_netns}\"")
        ),
        None,
        "the namespace's series is gone"
    );
}

#[test]
#[ignore = "needs root"]
fn a_suspect_the_kernel_gives_up_on_is_no_longer_one() {
    require_root();
    const PORT: u16 = 29002;
    let pair = NetnsPair::create("tt-ho-tmo", 62);
    // The client's kernel gives up after 4 timeouts: 200 ms · (2^5 - 1) = 6.2 s.
    sh(
        "ip",
        &[
            "netns",
            "exec",
            &pair.a,
            "sysctl",
            "-qw",
            "net.ipv4.tcp_retries2=4",
        ],
    );
    let serve = serve_on(PORT);
    let server = SocketAddr::from((pair.addr_b, PORT));
    let listener = in_netns(&pair.b, || listen(server));
    let mut client = Client::connect(&pair.a, server);
    let _accepted = accept_greeting(&listener);

    drop_all_input(&pair, &pair.b);
    assert_eq!(client.ask("send"), "sent");
    let listed = suspects_when(&serve, "the client flagged", |s| {
        s.len() == 1 && s[0]["owner"]["source"] == "proc"
    });
    assert_eq!(listed[0]["owner"]["pid"], client.pid());
    assert_eq!(listed[0]["netns"], inum_of(&pair.a));
    assert_eq!(metric(&serve, "tcptrace_half_open_suspects", ""), Some(1.0));

    // The application learns it only when the kernel gives up.
    assert_eq!(client.ask("wait"), "error ETIMEDOUT");
    suspects_when(
        &serve,
        "no suspect once the kernel gave up",
        <[_]>::is_empty,
    );
    assert_eq!(metric(&serve, "tcptrace_half_open_suspects", ""), Some(0.0));
}
