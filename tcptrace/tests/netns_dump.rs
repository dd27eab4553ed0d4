//! Privileged: sock_diag dumps of several real network namespaces, each from a netlink
//! socket created inside it (DESIGN.md §7), checked against `ss` run in each. Makes its
//! own namespaces (`ip netns add`) and always removes them. Ignored without root
//! (`#[ignore = "needs root"]`).

mod common;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
    os::{fd::FromRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{netns::Netns, *};
use tcptrace::{
    detect::time_wait::PortRange,
    diag::{
        netns::{dump_namespaces, find_namespaces, own_netns, NamespaceDump, NamespacesDump},
        DiagSocket,
    },
    state::TcpState,
};

/// The listener in every namespace: below the ephemeral range (DESIGN.md §6).
const PORT: u16 = 18080;
/// The client port of the connection both namespaces hold, same 4-tuple.
const SHARED_CLIENT_PORT: u16 = 17070;
const PORT_RANGE_SYSCTL: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// How many of each a namespace holds.
#[derive(Clone, Copy, Debug)]
struct Load {
    /// Connections left open (besides the shared 4-tuple one).
    established: usize,
    close_wait: usize,
    time_wait: usize,
}

/// What must stay open for the sockets to stay as they are.
struct Held {
    _listener: TcpListener,
    _streams: Vec<TcpStream>,
}

/// A connection from a chosen local address: std cannot bind before connecting.
fn connect_from(local: SocketAddr, remote: SocketAddr) -> TcpStream {
    let (SocketAddr::V4(local), SocketAddr::V4(remote)) = (local, remote) else {
        panic!("IPv4 only");
    };
    let sockaddr = |a: std::net::SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns, with correctly
    // sized addresses; the descriptor goes to a TcpStream that closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let (l, r) = (sockaddr(local), sockaddr(remote));
        let bound = libc::bind(fd, (&l as *const libc::sockaddr_in).cast(), len);
        assert_eq!(
            bound,
            0,
            "bind {local}: {}",
            std::io::Error::last_os_error()
        );
        let connected = libc::connect(fd, (&r as *const libc::sockaddr_in).cast(), len);
        assert_eq!(
            connected,
            0,
            "connect {remote}: {}",
            std::io::Error::last_os_error()
        );
        stream
    }
}

/// Makes `load` in the namespace: a listener on 127.0.0.1:PORT, the shared 4-tuple
/// connection, open connections, CLOSE_WAIT (and their FIN_WAIT2 peers), TIME_WAIT.
fn populate(ns: &Netns, load: Load) -> Held {
    ns.run(|| {
        let server: SocketAddr = ([127, 0, 0, 1], PORT).into();
        let listener = listen(server);
        let mut streams = Vec::new();
        streams.push(connect_from(
            ([127, 0, 0, 1], SHARED_CLIENT_PORT).into(),
            server,
        ));
        streams.push(listener.accept().unwrap().0);
        for _ in 0..load.established {
            streams.push(TcpStream::connect(server).unwrap());
            streams.push(listener.accept().unwrap().0);
        }
        streams.extend(close_wait_sockets(&listener, load.close_wait));
        time_wait_sockets(&listener, load.time_wait);
        Held {
            _listener: listener,
            _streams: streams,
        }
    })
}

/// `ss`'s name for each state it can filter on.
const SS_STATES: [(TcpState, &str); 11] = [
    (TcpState::Established, "established"),
    (TcpState::SynSent, "syn-sent"),
    (TcpState::SynRecv, "syn-recv"),
    (TcpState::FinWait1, "fin-wait-1"),
    (TcpState::FinWait2, "fin-wait-2"),
    (TcpState::TimeWait, "time-wait"),
    (TcpState::Close, "closed"),
    (TcpState::CloseWait, "close-wait"),
    (TcpState::LastAck, "last-ack"),
    (TcpState::Listen, "listening"),
    (TcpState::Closing, "closing"),
];

fn ss_counts(ns: &Netns) -> HashMap<TcpState, usize> {
    SS_STATES
        .iter()
        .map(|&(state, name)| {
            let lines = ns.exec("ss", &["-Htan", "state", name]).lines().count();
            (state, lines)
        })
        .collect()
}

fn counts(sockets: &[DiagSocket]) -> HashMap<TcpState, usize> {
    let mut counts: HashMap<TcpState, usize> =
        SS_STATES.iter().map(|&(state, _)| (state, 0)).collect();
    for socket in sockets {
        *counts.entry(socket.state).or_default() += 1;
    }
    counts
}

fn dump_of(result: &NamespacesDump, inum: u32) -> &NamespaceDump {
    result
        .dumps
        .iter()
        .find(|d| d.netns == inum)
        .unwrap_or_else(|| {
            panic!(
                "namespace {inum} was not dumped; failed: {:?}",
                result.failed
            )
        })
}

/// The cgroup v2 mount point, from /proc/self/mountinfo (hybrid hosts mount it at
/// /sys/fs/cgroup/unified, pure v2 ones at /sys/fs/cgroup; DESIGN.md §9).
fn cgroup2_mount() -> PathBuf {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mountinfo
        .lines()
        .find_map(|line| {
            let (fields, fs) = line.split_once(" - ")?;
            let mount_point = fields.split(' ').nth(4)?;
            fs.starts_with("cgroup2 ")
                .then(|| PathBuf::from(mount_point))
        })
        .expect("a cgroup2 mount in /proc/self/mountinfo")
}

/// The inode number of `process`'s cgroup v2 directory (`stat -c %i`).
fn cgroup_inode_of(pid: &str) -> u64 {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line");
    let dir = cgroup2_mount().join(path.trim_start_matches('/'));
    std::fs::metadata(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .ino()
}

#[test]
#[ignore = "needs root"]
fn each_namespace_is_dumped_from_inside_it() {
    require_root();
    let host_range = std::fs::read_to_string(PORT_RANGE_SYSCTL).unwrap();
    let own = own_netns().unwrap();
    let a = Netns::create("tt-dump-a");
    let b = Netns::create("tt-dump-b");
    a.exec(
        "sysctl",
        &["-q", "-w", "net.ipv4.ip_local_port_range=45000 45999"],
    );
    let loads = [
        (
            &a,
            Load {
                established: 3,
                close_wait: 2,
                time_wait: 4,
            },
        ),
        (
            &b,
            Load {
                established: 5,
                close_wait: 4,
                time_wait: 1,
            },
        ),
    ];
    let _held: Vec<Held> = loads.iter().map(|&(ns, load)| populate(ns, load)).collect();
    std::thread::sleep(Duration::from_millis(100)); // the last FINs on loopback

    let found = find_namespaces(Path::new("/proc"), Path::new("/run/netns"));
    assert_eq!(
        found[0].inum, own,
        "the caller's namespace first: {found:?}"
    );
    for ns in [&a, &b] {
        let entry = found
            .iter()
            .find(|f| f.inum == ns.inum())
            .unwrap_or_else(|| panic!("{} not found in {found:?}", ns.name));
        assert_eq!(entry.path, ns.path(), "nothing else holds it");
    }
    let chosen: Vec<_> = found
        .iter()
        .filter(|f| [own, a.inum(), b.inum()].contains(&f.inum))
        .cloned()
        .collect();

    let result = dump_namespaces(&chosen, &TcpState::ALL);
    assert_eq!(own_netns().unwrap(), own, "the calling thread stayed home");
    assert!(result.failed.is_empty(), "{:?}", result.failed);
    assert_eq!(
        result.dumps.iter().map(|d| d.netns).collect::<Vec<_>>(),
        chosen.iter().map(|n| n.inum).collect::<Vec<_>>(),
        "in the order given"
    );

    let own_cgroup = cgroup_inode_of("self");
    let shared: (SocketAddr, SocketAddr) = (
        ([127, 0, 0, 1], SHARED_CLIENT_PORT).into(),
        ([127, 0, 0, 1], PORT).into(),
    );
    for (ns, load) in loads {
        let dump = dump_of(&result, ns.inum());
        let got = counts(&dump.sockets);
        assert_eq!(got, ss_counts(ns), "{}: dump against ss", ns.name);
        let expected = [
            (TcpState::Listen, 1),
            (TcpState::Established, 2 * (load.established + 1)),
            (TcpState::CloseWait, load.close_wait),
            (TcpState::FinWait2, load.close_wait),
            (TcpState::TimeWait, load.time_wait),
        ];
        for (state, n) in expected {
            assert_eq!(got[&state], n, "{}: {state:?}", ns.name);
        }
        assert_eq!(
            dump.sockets.len(),
            expected.iter().map(|e| e.1).sum::<usize>(),
            "{}: nothing else",
            ns.name
        );
        assert!(
            dump.sockets.iter().any(|s| s.tuple() == shared),
            "{}: the 4-tuple both namespaces hold",
            ns.name
        );
        // Full sockets carry the cgroup of the process that made them (this one);
        // timewait mini-sockets carry none.
        for socket in &dump.sockets {
            let expected = (!socket.timewait).then_some(own_cgroup);
            assert_eq!(socket.cgroup_id, expected, "{}: {socket:?}", ns.name);
        }
    }

    let range =
        |ns: &Netns| PortRange::parse(&ns.exec("sysctl", &["-n", "net.ipv4.ip_local_port_range"]));
    assert_eq!(
        dump_of(&result, a.inum()).port_range,
        Some(PortRange {
            low: 45000,
            high: 45999
        })
    );
    assert_eq!(dump_of(&result, b.inum()).port_range, range(&b));
    assert_ne!(range(&a), range(&b));
    assert_eq!(
        dump_of(&result, own).port_range,
        PortRange::parse(&host_range),
        "the host's own range"
    );
    assert_eq!(
        std::fs::read_to_string(PORT_RANGE_SYSCTL).unwrap(),
        host_range,
        "the host's range is unchanged"
    );
}

#[test]
#[ignore = "needs root"]
fn a_namespace_deleted_before_its_dump_fails_cleanly() {
    require_root();
    let own = own_netns().unwrap();
    let kept = Netns::create("tt-dump-kept");
    let gone = Netns::create("tt-dump-gone");
    let (kept_inum, gone_inum, gone_path) = (kept.inum(), gone.inum(), gone.path());
    let found = find_namespaces(Path::new("/proc"), Path::new("/run/netns"));
    assert!(found.iter().any(|f| f.inum == gone_inum), "{found:?}");
    gone.delete();

    let result = dump_namespaces(&found, &[TcpState::Listen, TcpState::TimeWait]);
    assert_eq!(own_netns().unwrap(), own);
    let (_, error) = result
        .failed
        .iter()
        .find(|(inum, _)| *inum == gone_inum)
        .unwrap_or_else(|| panic!("the deleted namespace is in failed: {result:?}"));
    assert!(error.namespace_gone(), "{error}");
    assert!(
        error.to_string().contains(&*gone_path.to_string_lossy()),
        "{error}"
    );
    assert!(!result.dumps.iter().any(|d| d.netns == gone_inum));
    dump_of(&result, own);
    dump_of(&result, kept_inum);
    // Other namespaces on the host may come and go meanwhile; nothing else failed.
    for (inum, error) in &result.failed {
        assert!(error.namespace_gone(), "{inum}: {error}");
    }
}

/// A process of our own, in a cgroup and a namespace of its own, holding a listener.
struct Listener {
    child: Child,
    cgroup: PathBuf,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The cgroup empties asynchronously after its last process exits.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let message = format!("removing cgroup {}", self.cgroup.display());
        if std::thread::panicking() {
            eprintln!("{message}");
        } else {
            panic!("{message}");
        }
    }
}

#[test]
#[ignore = "needs root"]
fn the_cgroup_id_is_that_of_the_process_that_made_the_socket() {
    require_root();
    let ns = Netns::create("tt-dump-cg");
    let cgroup = cgroup2_mount().join(format!("tcptrace-test-{}", std::process::id()));
    let _ = std::fs::remove_dir(&cgroup);
    std::fs::create_dir(&cgroup).unwrap_or_else(|e| panic!("mkdir {}: {e}", cgroup.display()));
    let cgroup_inode = std::fs::metadata(&cgroup).unwrap().ino();
    // The shell moves itself into the cgroup, then becomes `ip netns exec` (which execs
    // without forking; it remounts /sys, so the cgroup is written before) and then perl
    // (perl-base, always on Debian), which makes the socket and exits when its stdin
    // closes.
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec ip netns exec {} perl -MIO::Socket::INET -e '\
         my $s = IO::Socket::INET->new(LocalAddr => \"127.0.0.1\", LocalPort => {PORT}, \
         Listen => 5, ReuseAddr => 1) or die \"listen: $!\"; \
         $| = 1; print \"ready\\n\"; <STDIN>;'",
        cgroup.display(),
        ns.name
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh runs");
    let mut listener = Listener { child, cgroup };
    let mut ready = String::new();
    BufReader::new(listener.child.stdout.as_mut().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready, "ready\n", "the helper started");
    assert_eq!(
        cgroup_inode_of(&listener.child.id().to_string()),
        cgroup_inode,
        "the helper is in the cgroup"
    );

    let namespace = find_namespaces(Path::new("/proc"), Path::new("/run/netns"))
        .into_iter()
        .find(|f| f.inum == ns.inum())
        .expect("the namespace is found");
    let result = dump_namespaces(&[namespace], &[TcpState::Listen]);
    let sockets = &dump_of(&result, ns.inum()).sockets;
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    assert_eq!(sockets[0].local, SocketAddr::from(([127, 0, 0, 1], PORT)));
    assert_eq!(sockets[0].cgroup_id, Some(cgroup_inode));
    assert_ne!(Some(cgroup_inode_of("self")), sockets[0].cgroup_id);
    drop(listener);
}
