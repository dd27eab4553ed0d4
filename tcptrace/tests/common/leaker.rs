//! A server process that leaks: it accepts `n` connections from clients it makes
//! itself, the clients close, and it never closes its ends (CLOSE_WAIT). Run inside a
//! network namespace (`ip netns exec`), optionally moved into a cgroup before it makes
//! any socket, so that its sockets belong there. Killed on drop.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, Command, Stdio},
};

/// Python, because the socket's owner must be a process other than the test: its
/// pid, namespace and cgroup are what tcptrace must find. Arguments: port, leaks,
/// client port, TIME_WAIT count, outside count; it starts on a line ("go") on stdin
/// and prints "ready" when its sockets are made.
pub(crate) const SCRIPT: &str = r#"
import socket, sys, time
port, n, client_port, tw, outside = (int(a) for a in sys.argv[1:6])
sys.stdin.readline()  # "go": the test has moved us where it wants
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(128)
held = []
for i in range(n):
    c = socket.socket()
    if client_port:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); c.bind(("127.0.0.1", client_port + i))
    c.connect(("127.0.0.1", port)); a, _ = srv.accept(); c.close(); held.append(a)
for i in range(tw):
    c = socket.socket(); c.connect(("127.0.0.1", port)); a, _ = srv.accept()
    c.close(); time.sleep(0.01); a.close()
print("ready", flush=True)
for i in range(outside):  # connections from other processes, held too
    a, _ = srv.accept(); held.append(a)
time.sleep(600)
"#;

pub(crate) struct Leaker {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Leaker {
    /// Starts the server in namespace `netns` (an `ip netns` name), listening on
    /// 127.0.0.1:`port`; it waits for [`Leaker::go`]. `client_port` 0: ephemeral client
    /// ports, else `client_port + i`. `time_wait` more connections end in TIME_WAIT on
    /// the client side.
    pub(crate) fn spawn(
        netns: &str,
        port: u16,
        leaks: usize,
        client_port: u16,
        time_wait: usize,
    ) -> Leaker {
        Self::spawn_accepting(netns, port, leaks, client_port, time_wait, 0)
    }

    /// The same, and once ready it accepts and holds `outside` connections made by
    /// other processes.
    pub(crate) fn spawn_accepting(
        netns: &str,
        port: u16,
        leaks: usize,
        client_port: u16,
        time_wait: usize,
        outside: usize,
    ) -> Leaker {
        let counts = [
            port,
            leaks as u16,
            client_port,
            time_wait as u16,
            outside as u16,
        ];
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "python3", "-c", SCRIPT])
            .args(counts.map(|n| n.to_string()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip netns exec python3 runs");
        let stdin = child.stdin.take();
        Leaker { child, stdin }
    }

    /// The pid as the host sees it (`ip netns exec` execs it in place).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it make its sockets, and waits until they are made.
    pub(crate) fn go(&mut self) {
        let mut stdin = self.stdin.take().expect("go once");
        stdin.write_all(b"go\n").unwrap();
        let mut line = String::new();
        BufReader::new(self.child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the leaking server did not start");
    }
}

impl Drop for Leaker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ip netns exec NS ss -Htan state STATE '( sport = :P or dport = :P )'`, counted.
pub(crate) fn ss_count_in(netns: &str, state: &str, port: u16) -> usize {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "ss", "-Htan", "state", state])
        .arg(format!("( sport = :{port} or dport = :{port} )"))
        .output()
        .expect("ss runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// The inode number of a process's network namespace (`readlink /proc/PID/ns/net`).
pub(crate) fn netns_of(pid: u32) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let text = link.to_string_lossy();
    text.trim_start_matches("net:[")
        .trim_end_matches(']')
        .parse()
        .unwrap_or_else(|_| panic!("unexpected namespace link {text}"))
}

/// The inode number of the namespace `ip netns add NAME` made.
pub(crate) fn inum_of(name: &str) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(format!("/run/netns/{name}")).unwrap();
    u32::try_from(meta.ino()).unwrap()
}
