//! Every network namespace on the host, and a sock_diag dump of each.
//!
//! A `NETLINK_SOCK_DIAG` dump lists only the sockets of the namespace its netlink socket
//! was created in (DESIGN.md §7). So a dedicated thread enters each namespace with
//! `setns(2)`, creates a netlink socket there (it keeps that namespace: `netlink_create()`
//! takes it from the creating task, net/netlink/af_netlink.c), reads the namespace's
//! `ip_local_port_range` and listen counters ([`super::netstat`]), returns to its own
//! namespace, and only then dumps.
//!
//! Namespaces are found the way `lsns -t net` finds them: through the processes that
//! hold them (`/proc/<pid>/ns/net`) and the names bound under `/run/netns` (`ip netns`).
//! A namespace's inode number (`net:[N]`) is its identity, the `inum` the kernel
//! programs read from `sock.__sk_common.skc_net → net.ns.inum`.

use std::{
    collections::HashSet,
    fs::{self, File},
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use netlink_sys::Socket;

use super::{
    dump_tcp_on,
    netstat::{ListenCounters, THREAD_NETSTAT},
    open_socket, DiagError, DiagSocket,
};
use crate::{detect::time_wait::PortRange, state::TcpState};

/// Where processes are listed.
pub const PROC: &str = "/proc";
/// Where `ip netns add NAME` binds its namespaces.
pub const RUN_NETNS: &str = "/run/netns";
/// The calling thread's own namespace. `/proc/self` would be the thread-group
/// leader's, which another thread's `setns` does not change.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";
/// Per network namespace: procfs's `/proc/sys/net` shows the namespace of the thread
/// that opens the file (measured: a thread that entered a namespace reads that
/// namespace's value, the other threads of the process their own; a file opened inside
/// keeps reading the inside value after the thread returns).
const PORT_RANGE_SYSCTL: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// A network namespace and a path that enters it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    /// The namespace's inode number: what `readlink /proc/PID/ns/net` shows as
    /// `net:[N]`, and what the kernel programs report.
    pub inum: u32,
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "{arg:?} is not a network namespace: expected an inode number (as in net:[N]), \
         /run/netns/NAME, /proc/PID/ns/net, or a NAME under {}",
        run_netns.display()
    )]
    Invalid { arg: String, run_netns: PathBuf },
    #[error(
        "network namespace {inum}: no process holds it ({}/*/ns/net; processes we may not \
         inspect are skipped) and nothing under {} is bound to it",
        proc_root.display(),
        run_netns.display()
    )]
    NotFound {
        inum: u32,
        proc_root: PathBuf,
        run_netns: PathBuf,
    },
    #[error(
        "no network namespace named {name:?}: {}: {source} (`ip netns list` shows the names)",
        path.display()
    )]
    NoSuchName {
        name: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    Open { path: PathBuf, source: io::Error },
    #[error("{} is not a namespace file: {source}", path.display())]
    NotNamespace { path: PathBuf, source: io::Error },
    #[error("{} is a {kind} namespace, not a network namespace", path.display())]
    NotNetwork { path: PathBuf, kind: &'static str },
}

/// A namespace file's inode number, the namespace's `inum` (stat follows the
/// `/proc/PID/ns/net` link to the nsfs inode). `None` when unreadable, or too large to
/// be an `inum` (the kernel's `ns_common.inum` is an `unsigned int`).
fn stat_inum(path: &Path) -> Option<(u32, u64)> {
    let meta = fs::metadata(path).ok()?;
    Some((u32::try_from(meta.ino()).ok()?, meta.dev()))
}

fn inum_of(file: &File) -> io::Result<u32> {
    u32::try_from(file.metadata()?.ino())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "inode number above 2^32"))
}

/// Every network namespace held by a process (`<proc_root>/<pid>/ns/net`) or bound
/// under `run_netns` (normally /run/netns), deduplicated by inode number (`st_ino` of
/// the namespace file is the namespace's `inum`). The caller's own namespace (its
/// thread's, `<proc_root>/thread-self/ns/net`) comes first, with the path
/// `<proc_root>/self/ns/net` when the process's main thread shares it. Then the bound
/// names, sorted (a name outlives the processes in it), then processes by pid. Cheap:
/// one stat per process, and only the first path per namespace is kept.
///
/// Skipped: unreadable entries (a process root may not ptrace, e.g. one holding
/// capabilities root lacks, as PID 1 on the project's machines: EACCES), and any file
/// not on the namespace filesystem (a stale `/run/netns` entry whose bind mount is
/// gone). Threads that entered a namespace of their own without their process are not
/// seen.
pub fn find_namespaces(proc_root: &Path, run_netns: &Path) -> Vec<Namespace> {
    let mut found = Vec::new();
    let mut seen = HashSet::new();
    let own_path = proc_root.join("thread-self/ns/net");
    let own = stat_inum(&own_path);
    // Every namespace file lives on the one nsfs superblock: another device is not one.
    let nsfs = own.map(|(_, dev)| dev);
    let mut add = |path: PathBuf| {
        if let Some((inum, dev)) = stat_inum(&path) {
            if nsfs.is_none_or(|nsfs| nsfs == dev) && seen.insert(inum) {
                found.push(Namespace { inum, path });
            }
        }
    };
    if let Some((inum, _)) = own {
        let leader = proc_root.join("self/ns/net");
        add(if stat_inum(&leader).is_some_and(|(i, _)| i == inum) {
            leader
        } else {
            own_path
        });
    }
    if let Ok(entries) = fs::read_dir(run_netns) {
        let mut names: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        names.sort();
        names.into_iter().for_each(&mut add);
    }
    if let Ok(entries) = fs::read_dir(proc_root) {
        let mut pids: Vec<u32> = entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        for pid in pids {
            add(proc_root.join(pid.to_string()).join("ns/net"));
        }
    }
    found
}

/// The process's own network namespace (its main thread's), as [`find_namespaces`]
/// lists it first when the thread shares it.
pub fn own_namespace() -> io::Result<Namespace> {
    let path = Path::new(PROC).join("self/ns/net");
    let inum = inum_of(&File::open(&path)?)?;
    Ok(Namespace { inum, path })
}

/// Where namespace `wanted` can be entered now: its own path while that still names
/// it (a `--netns /proc/PID/ns/net` names nothing once the process exits, and another
/// namespace once the pid is reused), else any path [`find_namespaces`] finds for it.
pub fn locate(wanted: &Namespace) -> Option<Namespace> {
    let still = File::open(&wanted.path).and_then(|f| inum_of(&f));
    if still.is_ok_and(|inum| inum == wanted.inum) {
        return Some(wanted.clone());
    }
    find_namespaces(Path::new(PROC), Path::new(RUN_NETNS))
        .into_iter()
        .find(|n| n.inum == wanted.inum)
}

/// Inode number of the calling thread's network namespace.
pub fn own_netns() -> io::Result<u32> {
    inum_of(&File::open(THREAD_NETNS)?)
}

/// `--netns` values: a bare inode number, `/run/netns/NAME`, `/proc/PID/ns/net` (any
/// absolute path to a network namespace file), or a bare NAME (looked up under
/// /run/netns). Errors say what was tried.
pub fn resolve(arg: &str) -> Result<Namespace, NetnsError> {
    resolve_in(arg, Path::new(PROC), Path::new(RUN_NETNS))
}

/// [`resolve`] against another `/proc` and `/run/netns`.
pub(crate) fn resolve_in(
    arg: &str,
    proc_root: &Path,
    run_netns: &Path,
) -> Result<Namespace, NetnsError> {
    let invalid = || NetnsError::Invalid {
        arg: arg.to_owned(),
        run_netns: run_netns.to_owned(),
    };
    if !arg.is_empty() && arg.bytes().all(|b| b.is_ascii_digit()) {
        let inum: u32 = arg.parse().map_err(|_| invalid())?;
        return find_namespaces(proc_root, run_netns)
            .into_iter()
            .find(|ns| ns.inum == inum)
            .ok_or_else(|| NetnsError::NotFound {
                inum,
                proc_root: proc_root.to_owned(),
                run_netns: run_netns.to_owned(),
            });
    }
    let path = PathBuf::from(arg);
    if path.is_absolute() {
        let file = File::open(&path).map_err(|source| NetnsError::Open {
            path: path.clone(),
            source,
        })?;
        let inum = check_network_namespace(&file, &path)?;
        return Ok(Namespace { inum, path });
    }
    if arg.is_empty() || arg.contains('/') || arg == "." || arg == ".." {
        return Err(invalid());
    }
    let path = run_netns.join(arg);
    let file = File::open(&path).map_err(|source| NetnsError::NoSuchName {
        name: arg.to_owned(),
        path: path.clone(),
        source,
    })?;
    let inum = check_network_namespace(&file, &path)?;
    Ok(Namespace { inum, path })
}

/// The namespace's inode number, if `file` is a network namespace: `NS_GET_NSTYPE`
/// (linux/nsfs.h, since 4.11) answers with its `CLONE_NEW*` type, and fails with
/// ENOTTY on any other file.
fn check_network_namespace(file: &File, path: &Path) -> Result<u32, NetnsError> {
    // SAFETY: an ioctl without argument on a valid descriptor.
    let kind = unsafe { libc::ioctl(file.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if kind < 0 {
        return Err(NetnsError::NotNamespace {
            path: path.to_owned(),
            source: io::Error::last_os_error(),
        });
    }
    if kind != libc::CLONE_NEWNET {
        let kind = match kind {
            libc::CLONE_NEWNS => "mount",
            libc::CLONE_NEWUTS => "UTS",
            libc::CLONE_NEWIPC => "IPC",
            libc::CLONE_NEWUSER => "user",
            libc::CLONE_NEWPID => "PID",
            libc::CLONE_NEWCGROUP => "cgroup",
            libc::CLONE_NEWTIME => "time",
            _ => "non-network",
        };
        return Err(NetnsError::NotNetwork {
            path: path.to_owned(),
            kind,
        });
    }
    inum_of(file).map_err(|source| NetnsError::Open {
        path: path.to_owned(),
        source,
    })
}

/// One namespace's sockets.
#[derive(Debug)]
pub struct NamespaceDump {
    pub netns: u32,
    pub sockets: Vec<DiagSocket>,
    /// The namespace's own `net.ipv4.ip_local_port_range`; `None` when unreadable.
    pub port_range: Option<PortRange>,
    /// The namespace's listen counters (its `netstat` file, read from inside it);
    /// `None` when unreadable.
    pub listen_counters: Option<ListenCounters>,
}

#[derive(Debug, Default)]
pub struct NamespacesDump {
    /// In the order the namespaces were given.
    pub dumps: Vec<NamespaceDump>,
    /// namespaces that exist but could not be dumped ([`DiagError::namespace_gone`]
    /// tells those that vanished meanwhile)
    pub failed: Vec<(u32, DiagError)>,
}

/// Dumps TCP sockets in `states` in each namespace, each from a netlink socket created
/// inside it. Runs on a thread of its own, started for this call and gone after it
/// (never a pool thread: the namespace it visits must not leak into other work); it
/// starts in the calling thread's namespace, which needs no `setns`. A namespace whose
/// path vanished, or now names another namespace, ends in `failed`.
pub fn dump_namespaces(namespaces: &[Namespace], states: &[TcpState]) -> NamespacesDump {
    let inums: Vec<u32> = namespaces.iter().map(|ns| ns.inum).collect();
    let (namespaces, states) = (namespaces.to_vec(), states.to_vec());
    let outcome = std::thread::Builder::new()
        .name("tcptrace-netns".into())
        .spawn(move || {
            let home = File::open(THREAD_NETNS).and_then(|file| {
                let inum = inum_of(&file)?;
                Ok((file, inum))
            });
            dump_each(home, &namespaces, &states)
        })
        .map_err(|e| format!("cannot start it: {e}"))
        .and_then(|thread| thread.join().map_err(|_| "it panicked".to_owned()));
    outcome.unwrap_or_else(|why| NamespacesDump {
        dumps: Vec::new(),
        failed: inums
            .into_iter()
            .map(|inum| (inum, DiagError::Thread(why.clone())))
            .collect(),
    })
}

/// What went wrong on the way into a namespace.
enum Visit {
    /// This namespace cannot be dumped; the thread is home, the next one can.
    Failed(DiagError),
    /// The thread could not return home: it must not go on.
    Stranded(io::Error),
}

/// The body of the dump thread. `home` is its own namespace (a file and its inum),
/// opened before it leaves.
fn dump_each(
    home: io::Result<(File, u32)>,
    namespaces: &[Namespace],
    states: &[TcpState],
) -> NamespacesDump {
    let mut out = NamespacesDump::default();
    let home = match home {
        Ok(home) => home,
        Err(e) => {
            out.failed = namespaces
                .iter()
                .map(|ns| (ns.inum, DiagError::NoWayBack(copy(&e))))
                .collect();
            return out;
        }
    };
    for (i, ns) in namespaces.iter().enumerate() {
        let visit = if ns.inum == home.1 {
            socket_here().map_err(Visit::Failed)
        } else {
            socket_inside(ns, &home.0)
        };
        match visit {
            Ok(inside) => match dump_tcp_on(&inside.socket, states) {
                Ok(sockets) => out.dumps.push(NamespaceDump {
                    netns: ns.inum,
                    sockets,
                    port_range: inside.port_range,
                    listen_counters: inside.listen_counters,
                }),
                Err(e) => out.failed.push((ns.inum, e)),
            },
            Err(Visit::Failed(e)) => out.failed.push((ns.inum, e)),
            Err(Visit::Stranded(e)) => {
                out.failed.extend(
                    namespaces[i..]
                        .iter()
                        .map(|ns| (ns.inum, DiagError::Stranded(copy(&e)))),
                );
                return out;
            }
        }
    }
    out
}

/// What the dump thread takes from a namespace while inside it.
struct Inside {
    socket: Socket,
    port_range: Option<PortRange>,
    listen_counters: Option<ListenCounters>,
}

/// A netlink socket, the port range and the listen counters of the thread's current
/// namespace.
fn socket_here() -> Result<Inside, DiagError> {
    Ok(Inside {
        socket: open_socket()?,
        port_range: PortRange::read(Path::new(PORT_RANGE_SYSCTL)),
        listen_counters: ListenCounters::read(Path::new(THREAD_NETSTAT)),
    })
}

/// Enters `ns`, makes its socket and reads its port range and counters there, and
/// returns `home`.
fn socket_inside(ns: &Namespace, home: &File) -> Result<Inside, Visit> {
    let enter_error = |source| {
        Visit::Failed(DiagError::Enter {
            inum: ns.inum,
            path: ns.path.clone(),
            source,
        })
    };
    let file = File::open(&ns.path).map_err(enter_error)?;
    // A pid or a name can be reused for another namespace after it was found.
    let found = inum_of(&file).map_err(enter_error)?;
    if found != ns.inum {
        return Err(Visit::Failed(DiagError::Replaced {
            expected: ns.inum,
            found,
            path: ns.path.clone(),
        }));
    }
    setns(&file).map_err(enter_error)?;
    let made = socket_here();
    setns(home).map_err(Visit::Stranded)?;
    made.map_err(Visit::Failed)
}

fn setns(file: &File) -> io::Result<()> {
    // SAFETY: a valid descriptor; setns changes only the calling thread, which is the
    // dump thread, and it fails without changing anything (EINVAL) when the file is not
    // a network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `io::Error` is not `Clone`: the same error again, for each namespace it stopped.
fn copy(e: &io::Error) -> io::Error {
    e.raw_os_error().map_or_else(
        || io::Error::new(e.kind(), e.to_string()),
        io::Error::from_raw_os_error,
    )
}

#[cfg(test)]
mod tests;
