//! Slow work the loop hands off to blocking threads, so that events keep flowing while
//! it runs: sock_diag dumps and `/proc` owner scans. Results come back over a channel.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::Instant,
};

use tokio::sync::mpsc;

use crate::{
    clock::monotonic_now_ns,
    diag::{
        dump_tcp,
        owners::{find_owners, ProcessOwner},
        DiagError, DiagSocket,
    },
    probe::KernelFilter,
    state::TcpState,
};

pub enum Done {
    Dump(Result<Dump, DiagError>),
    Owners {
        looked_up: HashSet<u32>,
        found: HashMap<u32, ProcessOwner>,
    },
}

pub struct Dump {
    /// The sockets the filters keep.
    pub sockets: Vec<DiagSocket>,
    /// When the dump began (CLOCK_MONOTONIC): events after it are newer than it.
    pub started_ns: u64,
    pub took: std::time::Duration,
}

/// Every TCP socket the probe's filters would keep, in this network namespace.
pub fn dump(filter: &KernelFilter) -> Result<Dump, DiagError> {
    let started_ns = monotonic_now_ns();
    let clock = Instant::now();
    let mut sockets = dump_tcp(&TcpState::ALL)?;
    sockets.retain(|s| filter.matches(s.local, s.remote));
    Ok(Dump {
        sockets,
        started_ns,
        took: clock.elapsed(),
    })
}

/// Dumps in a blocking thread and sends the result back.
pub fn spawn_dump(filter: KernelFilter, done: mpsc::Sender<Done>) {
    tokio::task::spawn_blocking(move || {
        let _ = done.blocking_send(Done::Dump(dump(&filter)));
    });
}

/// Scans `/proc` for the owners of `inodes` in a blocking thread.
pub fn spawn_owner_scan(inodes: HashSet<u32>, done: mpsc::Sender<Done>) {
    tokio::task::spawn_blocking(move || {
        let found = find_owners(Path::new("/proc"), &inodes);
        let _ = done.blocking_send(Done::Owners {
            looked_up: inodes,
            found,
        });
    });
}
