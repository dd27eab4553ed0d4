//! Slow work the loop hands off to blocking threads, so that events keep flowing while
//! it runs: sock_diag dumps of every network namespace and `/proc` owner scans. Results come back over a channel.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::Instant,
};

use tokio::sync::mpsc;

use crate::{
    clock::monotonic_now_ns,
    diag::{
        netns::{
            dump_namespaces, find_namespaces, locate, Namespace, NamespaceDump, NamespacesDump,
            PROC, RUN_NETNS,
        },
        owners::{find_owners, ProcessOwner},
        DiagError,
    },
    probe::KernelFilter,
    state::TcpState,
    tracker::{KernelSocket, Snapshot},
};

pub(super) enum Done {
    Dump(Dump),
    Owners {
        looked_up: HashSet<u32>,
        found: HashMap<u32, ProcessOwner>,
    },
}

/// One pass over every network namespace.
pub(super) struct Dump {
    /// Each namespace's sockets that the filters keep.
    pub namespaces: Vec<NamespaceDump>,
    /// Namespaces that exist but could not be dumped.
    pub failed: Vec<(u32, DiagError)>,
    /// When the pass began (CLOCK_MONOTONIC): events after it are newer than it.
    pub started_ns: u64,
    pub took: std::time::Duration,
}

/// Which namespaces to dump, and which sockets to keep.
#[derive(Clone, Debug)]
pub(super) struct DumpScope {
    pub filter: KernelFilter,
    /// `--netns`: only this one; else every namespace found.
    pub netns: Option<Namespace>,
}

/// Every TCP socket the probe's filters would keep, in every network namespace (each
/// dumped from inside itself: DESIGN.md §7).
pub(super) fn dump(scope: &DumpScope) -> Dump {
    let started_ns = monotonic_now_ns();
    let clock = Instant::now();
    let namespaces = match &scope.netns {
        // Found again each pass: the path it was named by may not name it any more.
        Some(only) => locate(only).into_iter().collect(),
        None => find_namespaces(Path::new(PROC), Path::new(RUN_NETNS)),
    };
    let NamespacesDump { mut dumps, failed } = dump_namespaces(&namespaces, &TcpState::ALL);
    for dump in &mut dumps {
        dump.sockets
            .retain(|s| scope.filter.matches(s.local, s.remote));
    }
    Dump {
        namespaces: dumps,
        failed,
        started_ns,
        took: clock.elapsed(),
    }
}

impl Dump {
    /// What the tracker needs of it.
    pub(super) fn snapshot(&self) -> Snapshot {
        let unreachable: Vec<u32> = self.failed.iter().map(|(netns, _)| *netns).collect();
        snapshot_of(&self.namespaces, &unreachable, self.started_ns)
    }
}

/// The tracker's view of namespaces' dumps: full sockets keyed by namespace, and which
/// namespaces the dumps speak for. Mini-sockets are not connections: a timewait socket
/// is what is left of one, a request socket (a listener's half-open handshake, listed
/// as SYN_RECV) is not one yet; the full socket appears, with its LISTEN→SYN_RECV
/// event, when the handshake completes. Listener health counts request sockets.
pub fn snapshot_of(dumps: &[NamespaceDump], unreachable: &[u32], started_ns: u64) -> Snapshot {
    let sockets = dumps
        .iter()
        .flat_map(|d| d.sockets.iter().map(move |s| (d.netns, s)))
        .filter(|(_, s)| s.is_full())
        .map(|(netns, s)| KernelSocket {
            key: s.key(netns),
            state: s.state,
            cgroup_id: s.cgroup_id.unwrap_or(0),
        })
        .collect();
    Snapshot {
        sockets,
        dumped: dumps.iter().map(|d| d.netns).collect(),
        unreachable: unreachable.iter().copied().collect(),
        started_ns,
    }
}

/// Dumps in a blocking thread and sends the result back.
pub(super) fn spawn_dump(scope: DumpScope, done: mpsc::Sender<Done>) {
    tokio::task::spawn_blocking(move || {
        let _ = done.blocking_send(Done::Dump(dump(&scope)));
    });
}

/// Scans `/proc` for the owners of `inodes` in a blocking thread.
pub(super) fn spawn_owner_scan(inodes: HashSet<u32>, done: mpsc::Sender<Done>) {
    tokio::task::spawn_blocking(move || {
        let found = find_owners(Path::new(PROC), &inodes);
        let _ = done.blocking_send(Done::Owners {
            looked_up: inodes,
            found,
        });
    });
}
