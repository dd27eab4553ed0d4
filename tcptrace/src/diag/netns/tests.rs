use std::os::unix::fs::symlink;

use super::*;
use crate::diag::parse_replies;

/// A directory laid out like /proc and /run/netns, whose `ns/net` entries are symlinks
/// to plain files standing for namespaces: their inode numbers are the `inum`s.
struct FakeRoot {
    root: PathBuf,
}

impl FakeRoot {
    fn new(tag: &str) -> FakeRoot {
        let root = std::env::temp_dir().join(format!(
            "tcptrace-netns-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&root);
        for dir in ["namespaces", "proc", "run/netns"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        FakeRoot { root }
    }

    fn proc(&self) -> PathBuf {
        self.root.join("proc")
    }

    fn run_netns(&self) -> PathBuf {
        self.root.join("run/netns")
    }

    /// A file standing for a namespace; its inode number.
    fn namespace(&self, name: &str) -> u32 {
        let path = self.root.join("namespaces").join(name);
        fs::write(&path, name).unwrap();
        u32::try_from(fs::metadata(&path).unwrap().ino()).expect("a 32-bit inode number")
    }

    /// `proc/<entry>/ns/net` → `target` (a namespace name, or any path).
    fn hold(&self, entry: &str, target: &str) {
        let dir = self.proc().join(entry).join("ns");
        fs::create_dir_all(&dir).unwrap();
        symlink(self.target(target), dir.join("net")).unwrap();
    }

    /// `run/netns/<name>` → `target`.
    fn bind(&self, name: &str, target: &str) {
        symlink(self.target(target), self.run_netns().join(name)).unwrap();
    }

    fn target(&self, target: &str) -> PathBuf {
        if target.starts_with('/') {
            PathBuf::from(target)
        } else {
            self.root.join("namespaces").join(target)
        }
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

#[test]
fn finds_each_namespace_once_own_first_then_names_then_processes() {
    let fake = FakeRoot::new("find");
    let [own, a, b, c] = ["own", "a", "b", "c"].map(|n| fake.namespace(n));
    fake.hold("thread-self", "own");
    fake.hold("self", "own");
    fake.hold("1", "own");
    fake.hold("20", "a");
    fake.hold("300", "a"); // the same namespace again: only the first path is kept
    fake.hold("4000", "b");
    fake.hold("66", "gone"); // dangling: the process exited
    fake.hold("77", "/dev/null"); // not on the namespaces' filesystem
    fs::create_dir_all(fake.proc().join("55")).unwrap(); // no ns/net to read
    fs::create_dir_all(fake.proc().join("sys/ns")).unwrap(); // not a pid
    fake.bind("zeta", "c");
    fake.bind("alpha", "b"); // held by pid 4000 too: the name wins, it outlives it
    fake.bind("stale", "/dev/null"); // a name whose bind mount is gone
    fake.bind("dangling", "missing");

    let found = find_namespaces(&fake.proc(), &fake.run_netns());
    let expected = [
        (own, fake.proc().join("self/ns/net")),
        (b, fake.run_netns().join("alpha")),
        (c, fake.run_netns().join("zeta")),
        (a, fake.proc().join("20/ns/net")),
    ]
    .map(|(inum, path)| Namespace { inum, path });
    assert_eq!(found, expected);
}

#[test]
fn the_own_namespace_is_the_threads_even_when_the_process_is_elsewhere() {
    let fake = FakeRoot::new("own");
    let [own, leader] = ["own", "leader"].map(|n| fake.namespace(n));
    fake.hold("thread-self", "own");
    fake.hold("self", "leader");
    fake.hold("7", "leader");
    let found = find_namespaces(&fake.proc(), &fake.root.join("no-run-netns"));
    assert_eq!(
        found,
        [
            Namespace {
                inum: own,
                path: fake.proc().join("thread-self/ns/net"),
            },
            Namespace {
                inum: leader,
                path: fake.proc().join("7/ns/net"),
            },
        ]
    );
    assert!(find_namespaces(&fake.root.join("none"), &fake.root.join("none")).is_empty());
}

#[test]
fn resolves_inode_numbers_names_and_paths_and_says_what_it_tried() {
    let fake = FakeRoot::new("resolve");
    let [own, b] = ["own", "b"].map(|n| fake.namespace(n));
    fake.hold("thread-self", "own");
    fake.hold("4000", "b");
    fake.bind("plain", "b");
    let resolve = |arg: &str| resolve_in(arg, &fake.proc(), &fake.run_netns());

    assert_eq!(
        resolve(&b.to_string()).unwrap(),
        Namespace {
            inum: b,
            path: fake.run_netns().join("plain"),
        }
    );
    assert_eq!(resolve(&own.to_string()).unwrap().inum, own);
    let missing = resolve("4026531999").unwrap_err();
    assert!(matches!(
        missing,
        NetnsError::NotFound {
            inum: 4026531999,
            ..
        }
    ));
    let message = missing.to_string();
    assert!(
        message.contains("ns/net") && message.contains("run/netns"),
        "{message}"
    );
    for bad in ["", "99999999999", "a/b", "..", ".", "-1"] {
        let err = resolve(bad).unwrap_err();
        // "-1" is a name; nothing is called that.
        assert!(
            matches!(
                err,
                NetnsError::Invalid { .. } | NetnsError::NoSuchName { .. }
            ),
            "{bad:?}: {err}"
        );
    }
    let err = resolve("web").unwrap_err();
    assert!(matches!(err, NetnsError::NoSuchName { .. }), "{err}");
    assert!(err.to_string().contains("run/netns/web"), "{err}");
    // A file that is there but is not a namespace.
    let err = resolve("plain").unwrap_err();
    assert!(matches!(err, NetnsError::NotNamespace { .. }), "{err}");
    let err = resolve("/nonexistent/ns").unwrap_err();
    assert!(matches!(err, NetnsError::Open { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/ns"), "{err}");
}

#[test]
fn resolves_real_namespace_files_and_refuses_other_kinds() {
    // A process may always open its own namespace files: no root needed.
    let ns = resolve("/proc/thread-self/ns/net").unwrap();
    assert_eq!(ns.inum, own_netns().unwrap());
    let err = resolve("/proc/self/ns/mnt").unwrap_err();
    assert!(
        matches!(err, NetnsError::NotNetwork { kind: "mount", .. }),
        "{err}"
    );
    let err = resolve("/proc/self/status").unwrap_err();
    assert!(matches!(err, NetnsError::NotNamespace { .. }), "{err}");
}

#[test]
fn the_own_namespace_is_dumped_and_vanished_or_replaced_ones_fail() {
    let own = own_netns().unwrap();
    let namespaces = [
        Namespace {
            inum: 4026530000,
            path: PathBuf::from("/proc/self/ns/missing"),
        },
        // The path now names another namespace (ours): not the one asked for.
        Namespace {
            inum: own.wrapping_add(1),
            path: PathBuf::from("/proc/self/ns/net"),
        },
        Namespace {
            inum: own,
            path: PathBuf::from("/proc/self/ns/net"),
        },
    ];
    let before = own_netns().unwrap();
    let result = dump_namespaces(&namespaces, &[TcpState::Listen]);
    assert_eq!(own_netns().unwrap(), before);
    assert_eq!(result.dumps.len(), 1);
    assert_eq!(result.dumps[0].netns, own);
    assert!(result.dumps[0].port_range.is_some());
    assert_eq!(result.failed.len(), 2);
    for (i, (inum, err)) in result.failed.iter().enumerate() {
        assert_eq!(*inum, namespaces[i].inum);
        assert!(err.namespace_gone(), "{err}");
    }
    assert!(matches!(
        result.failed[0].1,
        DiagError::Enter { ref source, .. } if source.kind() == io::ErrorKind::NotFound
    ));
    assert!(matches!(result.failed[1].1, DiagError::Replaced { found, .. } if found == own));
}

#[test]
fn without_a_way_back_nothing_is_visited() {
    let namespaces = [Namespace {
        inum: 1,
        path: PathBuf::from("/proc/self/ns/net"),
    }];
    let home = Err(io::Error::from_raw_os_error(libc::ENOENT));
    let result = dump_each(home, &namespaces, &TcpState::ALL);
    assert!(result.dumps.is_empty());
    assert!(matches!(result.failed[..], [(1, DiagError::NoWayBack(_))]));
}

/// Root: enters a real namespace, then cannot return (the way back is not a
/// namespace), so it must stop and fail everything from there on.
#[test]
#[ignore = "needs root"]
fn a_thread_that_cannot_return_stops() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "makes a network namespace, needs root: run `sudo -E cargo xtask test`"
    );
    let own = own_netns().unwrap();
    // A namespace that lives as long as a helper thread that made it.
    let (made, made_rx) = std::sync::mpsc::channel();
    let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
    let helper = std::thread::spawn(move || {
        // SAFETY: unshare with a flag; affects only this helper thread.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        made.send((own_netns().unwrap(), tid)).unwrap();
        let _ = stop_rx.recv();
    });
    let (inum, tid) = made_rx.recv().unwrap();
    assert_ne!(inum, own);
    let namespaces = [
        Namespace {
            inum,
            path: PathBuf::from(format!("/proc/self/task/{tid}/ns/net")),
        },
        Namespace {
            inum: own,
            path: PathBuf::from("/proc/self/ns/net"),
        },
    ];
    let result = std::thread::spawn(move || {
        let home = File::open("/dev/null").map(|f| (f, own));
        dump_each(home, &namespaces, &TcpState::ALL)
    })
    .join()
    .unwrap();
    stop.send(()).unwrap();
    helper.join().unwrap();
    assert!(result.dumps.is_empty());
    assert_eq!(result.failed.len(), 2);
    assert!(
        result
            .failed
            .iter()
            .all(|(_, e)| matches!(e, DiagError::Stranded(_))),
        "{:?}",
        result.failed
    );
    assert_eq!(result.failed[0].0, inum);
}

/// One sock_diag reply message as the kernel lays it out (`struct inet_diag_msg`,
/// include/uapi/linux/inet_diag.h), with attributes.
fn reply(state: u8, timer: u8, inode: u32, attributes: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = vec![libc::AF_INET as u8, state, timer, 0];
    body.extend(8080u16.to_be_bytes());
    body.extend(50000u16.to_be_bytes());
    body.extend([127, 0, 0, 1]);
    body.extend([0; 12]);
    body.extend([127, 0, 0, 2]);
    body.extend([0; 12]);
    body.extend(0u32.to_ne_bytes()); // interface
    body.extend([0xff; 8]); // cookie
    for value in [0u32, 0, 0, 1000, inode] {
        // expires, rqueue, wqueue, uid, inode
        body.extend(value.to_ne_bytes());
    }
    assert_eq!(body.len(), 72);
    for (kind, value) in attributes {
        body.extend((4 + value.len() as u16).to_ne_bytes());
        body.extend(kind.to_ne_bytes());
        body.extend(*value);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    netlink_message(20, &body) // SOCK_DIAG_BY_FAMILY
}

fn netlink_message(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::new();
    message.extend((16 + body.len() as u32).to_ne_bytes());
    message.extend(kind.to_ne_bytes());
    message.extend(2u16.to_ne_bytes()); // NLM_F_MULTI
    message.extend([0; 8]); // sequence, port
    message.extend(body);
    message
}

#[test]
fn reads_the_cgroup_id_attribute_when_the_kernel_sends_it() {
    let cgroup_id = 0x1_0000_2a2au64; // above 2^32: all eight bytes count
    let mut bytes = reply(
        1,
        0,
        4242,
        &[
            (14, &[]), // INET_DIAG_PAD, as nla_put_u64_64bit may add
            (8, &[3]), // INET_DIAG_SHUTDOWN
            (21, &cgroup_id.to_ne_bytes()),
            (15, &7u32.to_ne_bytes()), // INET_DIAG_MARK
        ],
    );
    bytes.extend(reply(6, 3, 0, &[])); // a timewait socket: no attributes
    bytes.extend(reply(10, 0, 17, &[(21, &[1, 2, 3, 4])])); // the wrong size: ignored
    bytes.extend(netlink_message(3, &0i32.to_ne_bytes())); // NLMSG_DONE
    let mut sockets = Vec::new();
    assert!(parse_replies(&bytes, &mut sockets).unwrap());
    assert_eq!(sockets.len(), 3);
    assert_eq!(sockets[0].state, TcpState::Established);
    assert_eq!(sockets[0].local, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(sockets[0].inode, 4242);
    assert_eq!(sockets[0].cgroup_id, Some(cgroup_id));
    assert_eq!(sockets[1].state, TcpState::TimeWait);
    assert!(sockets[1].timewait);
    assert_eq!(sockets[1].cgroup_id, None);
    assert_eq!(sockets[2].state, TcpState::Listen);
    assert_eq!(sockets[2].cgroup_id, None);
}
