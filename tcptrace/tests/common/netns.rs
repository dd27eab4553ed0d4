//! Network namespaces made by the test and always removed (on drop, so also when the
//! test panics), through the guard the benchmark uses too (`netns-guard`): a deletion
//! that fails panics, unless the thread is already panicking. Traffic stays inside them.

use std::{fs::File, os::fd::AsRawFd, process::Command};

use netns_guard::Netns as Guard;

/// Two namespaces joined by a veth pair ([`NetnsPair::create`]).
pub(crate) struct NetnsPair {
    pub a: String,
    pub b: String,
    pub addr_a: std::net::Ipv4Addr,
    pub addr_b: std::net::Ipv4Addr,
    /// Deleting a namespace removes its veth end and its nft tables with it.
    _guards: [Guard; 2],
}

/// A namespace named `name`, or a clear panic.
fn add(name: String) -> Guard {
    Guard::add(name)
        .unwrap_or_else(|e| panic!("{e} (needs root; cargo xtask setup installs iproute2)"))
}

pub(crate) fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (cargo xtask setup installs it)"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl NetnsPair {
    /// Namespaces `<tag>-a-<pid>` and `<tag>-b-<pid>`, with `10.213.<net>.1/24` and
    /// `.2/24` on a veth pair where one skb is one segment: `gso_max_segs 1`, because
    /// TCP builds GSO skbs even with GSO/TSO off (`tcp_init_sock()` forces NETIF_F_GSO
    /// into `sk_route_forced_caps`; `tcp_tso_segs()` obeys only the device's
    /// `gso_max_segs`). GSO/TSO/GRO are turned off too, so nothing is merged on receive.
    pub(crate) fn create(tag: &str, net: u8) -> NetnsPair {
        let pid = std::process::id();
        let guards = [add(format!("{tag}-a-{pid}")), add(format!("{tag}-b-{pid}"))];
        let pair = NetnsPair {
            a: guards[0].name().to_owned(),
            b: guards[1].name().to_owned(),
            addr_a: std::net::Ipv4Addr::new(10, 213, net, 1),
            addr_b: std::net::Ipv4Addr::new(10, 213, net, 2),
            _guards: guards,
        };
        sh(
            "ip",
            &[
                "link",
                "add",
                "tt-veth-a",
                "netns",
                &pair.a,
                "type",
                "veth",
                "peer",
                "name",
                "tt-veth-b",
                "netns",
                &pair.b,
            ],
        );
        for (ns, dev, addr) in [
            (&pair.a, "tt-veth-a", pair.addr_a),
            (&pair.b, "tt-veth-b", pair.addr_b),
        ] {
            sh(
                "ip",
                &["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev],
            );
            sh(
                "ip",
                &["-n", ns, "link", "set", dev, "gso_max_segs", "1", "up"],
            );
            sh(
                "ip",
                &[
                    "netns", "exec", ns, "ethtool", "-K", dev, "gso", "off", "tso", "off", "gro",
                    "off",
                ],
            );
        }
        pair
    }

    /// Runs nft commands (a script) inside namespace `ns`.
    pub(crate) fn nft(&self, ns: &str, script: &str) {
        let path = std::env::temp_dir().join(format!("{ns}.nft"));
        std::fs::write(&path, script).expect("writing the nft script");
        sh(
            "ip",
            &["netns", "exec", ns, "nft", "-f", path.to_str().unwrap()],
        );
        let _ = std::fs::remove_file(path);
    }

    /// `TcpRetransSegs` as the namespace's kernel counts it.
    pub(crate) fn retrans_segs(&self, ns: &str) -> u64 {
        let out = sh(
            "ip",
            &["netns", "exec", ns, "nstat", "-asz", "TcpRetransSegs"],
        );
        out.lines()
            .find_map(|l| l.strip_prefix("TcpRetransSegs"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no TcpRetransSegs in nstat output {out:?}"))
    }
}

/// Runs `f` on a thread that has joined namespace `ns`; sockets it makes live there.
pub(crate) fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(format!("/var/run/netns/{ns}"))
                    .unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
                // SAFETY: a valid namespace fd; only this thread changes namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("netns thread panicked")
    })
}

/// One network namespace (`ip netns add <tag>-<pid>`) with loopback up, deleted on
/// drop (see the module's doc).
pub(crate) struct Netns {
    pub name: String,
    guard: Guard,
}

impl Netns {
    pub(crate) fn create(tag: &str) -> Netns {
        let guard = add(format!("{tag}-{}", std::process::id()));
        Netns {
            name: guard.name().to_owned(),
            guard,
        }
    }

    /// `/run/netns/<name>`, the bind mount `ip netns add` made.
    pub(crate) fn path(&self) -> std::path::PathBuf {
        self.guard.path()
    }

    /// The namespace's inode number (`net:[N]`).
    pub(crate) fn inum(&self) -> u32 {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(self.path())
            .unwrap_or_else(|e| panic!("stat {}: {e}", self.path().display()));
        u32::try_from(meta.ino()).expect("namespace inode numbers are 32-bit")
    }

    /// Runs `f` on a thread inside the namespace; sockets it makes live there.
    pub(crate) fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, f)
    }

    /// `ip netns exec <name> program args…`, its output.
    pub(crate) fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Deletes it now (`ip netns del`), or panics.
    pub(crate) fn delete(self) {
        self.guard.delete().unwrap_or_else(|e| panic!("{e}"));
    }
}
