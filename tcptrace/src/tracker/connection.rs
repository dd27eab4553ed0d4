//! One connection's identity and story.

use std::{fmt, net::SocketAddr, sync::Arc};

use serde::Serialize;

use super::{
    packed::{families, PackedAddr, PackedKey, LOCAL_V6, REMOTE_V6},
    steps::{InlineSteps, Steps},
    CloseStats,
};
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
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
pub(crate) const MAX_STEPS: usize = 16;

/// The tracker's record of one connection. Outputs use views of it (`timeline`,
/// `api`), never this struct: it holds the kernel's address.
///
/// Compact (136 bytes; DESIGN.md §3, BENCHMARKS.md): addresses packed, steps inline,
/// the owner shared, and what few connections have (marks, illegal transitions, steps
/// that do not fit inline, what a finished one carried) in one optional box.
#[derive(Clone)]
pub struct Connection {
    pub id: ConnId,
    /// The socket's network namespace (inode number; 0 when the kernel side could not
    /// read it).
    pub netns: u32,
    /// The socket's own cgroup v2 id (the creating process's cgroup, right even for
    /// transitions made in softirq); 0 when unknown.
    pub cgroup_id: u64,
    local: PackedAddr,
    remote: PackedAddr,
    /// `LOCAL_V6` | `REMOTE_V6`.
    families: u8,
    pub direction: Direction,
    /// Shared with the other connections of the same owner (`Tracker::owners`).
    owner: Option<Arc<Owner>>,
    /// Every state entered, in order, starting with the state it was first seen in;
    /// empty when they are in `rare.steps`.
    steps: InlineSteps,
    /// The connection was first seen mid-life; its first step's time is when it was seen.
    pub seen_since_start: bool,
    /// Its →CLOSE was never seen: a sock_diag reconcile found it gone.
    pub vanished: bool,
    pub last_activity_ns: u64,
    rare: Option<Box<Rare>>,
}

/// What few connections have, out of line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Rare {
    /// All the steps, once they do not fit inline (`steps.rs`).
    steps: Vec<Step>,
    marks: Vec<Mark>,
    retransmits: u32,
    /// Transitions RFC 793's state machine does not allow, as seen.
    illegal: Vec<(TcpState, TcpState)>,
    /// What it carried and the error it ended with, read by the kernel at →CLOSE.
    /// Boxed again: only finished connections have it, and few of them are live.
    closed_with: Option<Box<CloseStats>>,
}

impl Connection {
    /// A connection first seen in `first` at `at_ns`, with nothing else known yet.
    pub(crate) fn new(
        id: ConnId,
        key: SocketKey,
        direction: Direction,
        first: TcpState,
        at_ns: u64,
    ) -> Self {
        let packed = PackedKey::of(&key);
        Self {
            id,
            netns: key.netns,
            cgroup_id: 0,
            local: packed.local,
            remote: packed.remote,
            families: packed.v6,
            direction,
            owner: None,
            steps: InlineSteps::new(first, at_ns),
            seen_since_start: false,
            vanished: false,
            last_activity_ns: at_ns,
            rare: None,
        }
    }

    /// Its namespace and 4-tuple.
    pub fn key(&self) -> SocketKey {
        self.packed_key().unpack()
    }

    pub(super) fn packed_key(&self) -> PackedKey {
        PackedKey {
            netns: self.netns,
            local: self.local,
            remote: self.remote,
            v6: self.families,
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.local.unpack(self.families & LOCAL_V6 != 0)
    }

    pub fn remote(&self) -> SocketAddr {
        self.remote.unpack(self.families & REMOTE_V6 != 0)
    }

    pub(crate) fn local_port(&self) -> u16 {
        self.local.port
    }

    /// Completes or corrects the local address (its port chosen after connect()).
    /// Changes the key: the table's indexes must follow (`LiveTable::set_local`).
    pub(super) fn set_local(&mut self, local: SocketAddr) {
        let (packed, v6) = PackedAddr::pack(local);
        self.local = packed;
        self.families = families(v6, self.families & REMOTE_V6 != 0);
    }

    pub fn owner(&self) -> Option<Owner> {
        self.owner.as_deref().copied()
    }

    /// Sets the owner to a copy of its own (tests: the tracker shares them).
    #[cfg(test)]
    pub(crate) fn set_owner(&mut self, owner: Option<Owner>) {
        self.owner = owner.map(Arc::new);
    }

    /// Sets the owner to a copy shared with other connections.
    pub(super) fn share_owner(&mut self, owner: Option<Arc<Owner>>) {
        self.owner = owner;
    }

    /// Whether both hold the same shared copy of their owner.
    #[cfg(test)]
    pub(super) fn shares_owner_with(&self, other: &Connection) -> bool {
        match (&self.owner, &other.owner) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    /// Every state entered, in order, starting with the state it was first seen in.
    pub fn steps(&self) -> Steps {
        match self.rare.as_deref() {
            Some(rare) if self.steps.len() == 0 => {
                Steps::from_fn(rare.steps.len(), |i| rare.steps[i])
            }
            _ => Steps::from_fn(self.steps.len(), |i| self.steps.get(i)),
        }
    }

    fn last_step(&self) -> Option<Step> {
        match self.rare.as_deref() {
            Some(rare) if self.steps.len() == 0 => rare.steps.last().copied(),
            _ => self.steps.last(),
        }
    }

    fn first_step(&self) -> Option<Step> {
        match self.rare.as_deref() {
            Some(rare) if self.steps.len() == 0 => rare.steps.first().copied(),
            _ => (self.steps.len() > 0).then(|| self.steps.get(0)),
        }
    }

    pub fn marks(&self) -> &[Mark] {
        self.rare.as_deref().map_or(&[], |r| &r.marks)
    }

    pub fn retransmits(&self) -> u32 {
        self.rare.as_deref().map_or(0, |r| r.retransmits)
    }

    /// Transitions RFC 793's state machine does not allow, as seen.
    pub fn illegal(&self) -> &[(TcpState, TcpState)] {
        self.rare.as_deref().map_or(&[], |r| &r.illegal)
    }

    pub(super) fn push_illegal(&mut self, old: TcpState, new: TcpState) {
        push_small(&mut self.rare_mut().illegal, (old, new));
    }

    /// What it carried and the error it ended with, read by the kernel at →CLOSE.
    pub fn closed_with(&self) -> Option<&CloseStats> {
        self.rare.as_deref()?.closed_with.as_deref()
    }

    pub(super) fn set_closed_with(&mut self, stats: CloseStats) {
        self.rare_mut().closed_with = Some(Box::new(stats));
    }

    pub fn state(&self) -> TcpState {
        match self.rare.as_deref() {
            Some(rare) if self.steps.len() == 0 => rare.steps.last().map(|s| s.state),
            _ => self.steps.last_state(),
        }
        .unwrap_or(TcpState::Close)
    }

    pub fn state_since_ns(&self) -> u64 {
        self.last_step().map_or(0, |s| s.entered_ns)
    }

    pub fn is_finished(&self) -> bool {
        self.state() == TcpState::Close
    }

    pub(crate) fn push_step(&mut self, state: TcpState, at_ns: u64) {
        self.last_activity_ns = at_ns;
        if self.steps.push(state, at_ns) {
            return;
        }
        // Out of line from now on, every step whole.
        let inline = std::mem::replace(&mut self.steps, InlineSteps::empty());
        let rare = self.rare.get_or_insert_default();
        rare.steps.reserve_exact(inline.len() + 1);
        rare.steps.extend((0..inline.len()).map(|i| inline.get(i)));
        let step = Step {
            state,
            entered_ns: at_ns,
        };
        if rare.steps.len() < MAX_STEPS {
            rare.steps.push(step);
        } else if let Some(last) = rare.steps.last_mut() {
            // Keep the current state right even when the story is too long to keep.
            *last = step;
        }
    }

    pub(crate) fn push_mark(&mut self, mark: Mark) {
        let rare = self.rare_mut();
        if matches!(mark.kind, MarkKind::Retransmit | MarkKind::RetransmitSynack) {
            rare.retransmits = rare.retransmits.saturating_add(1);
        }
        if rare.marks.len() < MAX_MARKS {
            push_small(&mut rare.marks, mark);
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
        // Two steps read where they are, not all of them copied out (every close asks).
        let (first, last) = (self.first_step()?, self.last_step()?);
        Some(last.entered_ns.saturating_sub(first.entered_ns))
    }

    /// How long each step lasted; the last one is open (None) unless finished.
    pub fn durations(&self) -> impl Iterator<Item = (Step, Option<u64>)> {
        let steps = self.steps();
        (0..steps.len()).map(move |i| {
            let (step, end) = (steps[i], steps.get(i + 1).map(|next| next.entered_ns));
            (step, end.map(|end| end.saturating_sub(step.entered_ns)))
        })
    }
}

/// Pushes onto a list that is usually one or two long: its first allocation holds one,
/// not the four a `Vec` starts with.
fn push_small<T>(list: &mut Vec<T>, item: T) {
    if list.capacity() == 0 {
        list.reserve_exact(1);
    }
    list.push(item);
}

/// Compares what the connection says, not how it is stored.
impl PartialEq for Connection {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
            && self.netns == other.netns
            && self.cgroup_id == other.cgroup_id
            && self.key() == other.key()
            && self.direction == other.direction
            && self.owner() == other.owner()
            && self.steps() == other.steps()
            && self.marks() == other.marks()
            && self.retransmits() == other.retransmits()
            && self.seen_since_start == other.seen_since_start
            && self.vanished == other.vanished
            && self.illegal() == other.illegal()
            && self.last_activity_ns == other.last_activity_ns
            && self.closed_with() == other.closed_with()
    }
}

impl Eq for Connection {}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.id)
            .field("netns", &self.netns)
            .field("cgroup_id", &self.cgroup_id)
            .field("local", &self.local())
            .field("remote", &self.remote())
            .field("direction", &self.direction)
            .field("owner", &self.owner())
            .field("steps", &self.steps())
            .field("marks", &self.marks())
            .field("retransmits", &self.retransmits())
            .field("seen_since_start", &self.seen_since_start)
            .field("vanished", &self.vanished)
            .field("illegal", &self.illegal())
            .field("last_activity_ns", &self.last_activity_ns)
            .field("closed_with", &self.closed_with())
            .finish()
    }
}
