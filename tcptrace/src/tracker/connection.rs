//! One connection's identity and story.

use std::net::SocketAddr;

use serde::Serialize;

use super::CloseStats;
use crate::{
    event::{Comm, Task},
    state::TcpState,
};

/// Where a socket is: its network namespace (inode number, as `/proc/PID/ns/net` shows
/// it) and its 4-tuple. Two namespaces can hold the same 4-tuple at once (127.0.0.1:8080
/// in every pod), so every index of sockets is keyed by all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct SocketKey {
    pub netns: u32,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl SocketKey {
    /// The other end's key when it is in namespace `netns`.
    pub fn reversed_in(&self, netns: u32) -> SocketKey {
        SocketKey {
            netns,
            local: self.remote,
            remote: self.local,
        }
    }
}

/// A connection's identity: the socket address plus a generation number unique in this
/// daemon's lifetime, so that a reused skaddr starts a new connection. Internal: outputs
/// name a connection by its generation alone (the kernel's address never leaves the
/// process), so this does not serialize.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub skaddr: u64,
    pub generation: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// This end called connect(): CLOSE→SYN_SENT.
    Active,
    /// This end was accepted by a listener: LISTEN→SYN_RECV.
    Passive,
    /// Seen mid-life (existed before tcptrace, or its opening event was lost).
    Unknown,
}

impl Direction {
    /// The name in JSON and metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Passive => "passive",
            Self::Unknown => "unknown",
        }
    }
}

/// The process that owns the socket, taken only from process-context transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Owner {
    pub pid: u32,
    pub comm: Comm,
    pub cgroup_id: u64,
}

impl From<Task> for Owner {
    fn from(task: Task) -> Self {
        Self {
            pid: task.pid,
            comm: task.comm,
            cgroup_id: task.cgroup_id,
        }
    }
}

/// A state the connection entered, and when (CLOCK_MONOTONIC ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    pub state: TcpState,
    pub entered_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkKind {
    Retransmit,
    RetransmitFailed,
    RetransmitSynack,
    ResetSent,
    ResetReceived,
}

/// Something that happened to the connection without a state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Mark {
    pub kind: MarkKind,
    pub at_ns: u64,
    /// The state it happened in.
    pub state: Option<TcpState>,
}

/// Timelines keep at most this many marks; beyond it only the counts grow.
pub(super) const MAX_MARKS: usize = 16;
/// Timelines keep at most this many steps; a legal TCP life has at most 7.
pub(super) const MAX_STEPS: usize = 16;

/// The tracker's record of one connection. Outputs use views of it (`timeline`,
/// `api`), never this struct: it holds the kernel's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub id: ConnId,
    /// The socket's network namespace (inode number; 0 when the kernel side could not
    /// read it).
    pub netns: u32,
    /// The socket's own cgroup v2 id (the creating process's cgroup, right even for
    /// transitions made in softirq); 0 when unknown.
    pub cgroup_id: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub direction: Direction,
    pub owner: Option<Owner>,
    /// Every state entered, in order, starting with the state it was first seen in.
    pub steps: Vec<Step>,
    pub marks: Vec<Mark>,
    pub retransmits: u32,
    /// The connection was first seen mid-life; its first step's time is when it was seen.
    pub seen_since_start: bool,
    /// Its →CLOSE was never seen: a sock_diag reconcile found it gone.
    pub vanished: bool,
    /// Transitions RFC 793's state machine does not allow, as seen.
    pub illegal: Vec<(TcpState, TcpState)>,
    pub last_activity_ns: u64,
    /// What it carried and the error it ended with, read by the kernel at →CLOSE.
    /// Boxed: only finished connections have it, and live ones are most of the table.
    pub closed_with: Option<Box<CloseStats>>,
}

impl Connection {
    /// Its namespace and 4-tuple.
    pub fn key(&self) -> SocketKey {
        SocketKey {
            netns: self.netns,
            local: self.local,
            remote: self.remote,
        }
    }

    pub fn state(&self) -> TcpState {
        self.steps.last().map_or(TcpState::Close, |s| s.state)
    }

    pub fn state_since_ns(&self) -> u64 {
        self.steps.last().map_or(0, |s| s.entered_ns)
    }

    pub fn is_finished(&self) -> bool {
        self.state() == TcpState::Close
    }

    pub(crate) fn push_step(&mut self, state: TcpState, at_ns: u64) {
        if self.steps.len() < MAX_STEPS {
            self.steps.push(Step {
                state,
                entered_ns: at_ns,
            });
        } else if let Some(last) = self.steps.last_mut() {
            // Keep the current state right even when the story is too long to keep.
            *last = Step {
                state,
                entered_ns: at_ns,
            };
        }
        self.last_activity_ns = at_ns;
    }

    pub(crate) fn push_mark(&mut self, mark: Mark) {
        if matches!(mark.kind, MarkKind::Retransmit | MarkKind::RetransmitSynack) {
            self.retransmits = self.retransmits.saturating_add(1);
        }
        if self.marks.len() < MAX_MARKS {
            self.marks.push(mark);
        }
        self.last_activity_ns = mark.at_ns;
    }

    /// From its open (connect or accept) to its last step, when both were seen: `None`
    /// for one first seen mid-life, or whose →CLOSE was lost (the reconcile's time is
    /// not its end).
    pub fn lifetime_ns(&self) -> Option<u64> {
        if self.seen_since_start || self.vanished {
            return None;
        }
        let (first, last) = (self.steps.first()?, self.steps.last()?);
        Some(last.entered_ns.saturating_sub(first.entered_ns))
    }

    /// How long each step lasted; the last one is open (None) unless finished.
    pub fn durations(&self) -> impl Iterator<Item = (Step, Option<u64>)> + '_ {
        self.steps.iter().enumerate().map(|(i, step)| {
            let end = self.steps.get(i + 1).map(|next| next.entered_ns);
            (*step, end.map(|end| end.saturating_sub(step.entered_ns)))
        })
    }
}
