//! Filters applied in userspace: by owning process, by state and by cgroup. (Port,
//! family and namespace filters run in the kernel: see `probe::KernelFilter`.)

use std::collections::HashMap;

use crate::{diag::cgroup::CgroupResolver, event::TcpEvent, state::TcpState, tracker::Owner};

/// cgroup ids whose `--cgroup` verdict is remembered.
const MAX_CGROUP_VERDICTS: usize = 16_384;

/// `--cgroup PREFIX`: keeps the sockets whose own cgroup v2 path starts with the prefix.
/// The kernel cannot match a path, so this runs first thing in userspace, once per
/// cgroup id (ids are never reused, so a verdict stays right), from a bounded cache.
#[derive(Debug)]
pub struct CgroupFilter {
    prefix: String,
    verdicts: HashMap<u64, bool>,
}

impl CgroupFilter {
    pub fn new(prefix: String) -> Self {
        Self {
            prefix,
            verdicts: HashMap::new(),
        }
    }

    /// Whether sockets of cgroup `id` pass; an unknown cgroup (id 0, or one that
    /// cannot be resolved) does not.
    pub fn admits(&mut self, id: u64, resolver: Option<&mut CgroupResolver>) -> bool {
        if id == 0 {
            return false;
        }
        if let Some(&verdict) = self.verdicts.get(&id) {
            return verdict;
        }
        let verdict = resolver
            .and_then(|r| r.resolve(id))
            .is_some_and(|w| w.cgroup.starts_with(&self.prefix));
        if self.verdicts.len() >= MAX_CGROUP_VERDICTS {
            self.verdicts.clear();
        }
        self.verdicts.insert(id, verdict);
        verdict
    }
}

#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pid: Option<u32>,
    states: Vec<TcpState>,
}

impl EventFilter {
    pub fn new(pid: Option<u32>, states: Vec<TcpState>) -> Self {
        Self { pid, states }
    }

    /// `owner` is the connection's owner as the tracker knows it. A process's events are
    /// those of the sockets it owns, most of which fire while another task (or softirq)
    /// is on the CPU: the on-CPU task alone would miss them.
    pub fn matches(&self, event: &TcpEvent, owner: Option<Owner>) -> bool {
        let pid_ok = self.pid.is_none_or(|pid| {
            owner.is_some_and(|o| o.pid == pid) || (event.task_is_owner() && event.task.pid == pid)
        });
        let state_ok = self.states.is_empty()
            || event
                .states()
                .into_iter()
                .flatten()
                .any(|s| self.states.contains(&s));
        pid_ok && state_ok
    }
}

impl EventFilter {
    /// The same filter for a whole connection (`--timelines`): its owner, and any state
    /// it went through.
    pub fn matches_connection(&self, conn: &crate::tracker::Connection) -> bool {
        self.pid
            .is_none_or(|pid| conn.owner.is_some_and(|o| o.pid == pid))
            && (self.states.is_empty() || conn.steps.iter().any(|s| self.states.contains(&s.state)))
    }
}

#[cfg(test)]
mod tests {
    use tcptrace_common::kind;

    use super::*;
    use crate::{
        decode::{decode_event, testing::raw_v4},
        event::Comm,
    };

    fn event(kind: u8, old: u8, new: u8, pid: u32) -> TcpEvent {
        let mut raw = raw_v4(kind, old, new);
        raw.tgid = pid;
        decode_event(&raw).unwrap()
    }

    fn owner(pid: u32) -> Option<Owner> {
        Some(Owner {
            pid,
            comm: Comm::default(),
            cgroup_id: 0,
        })
    }

    #[test]
    fn no_filter_passes_everything() {
        let filter = EventFilter::default();
        assert!(filter.matches(&event(kind::STATE_CHANGE, 1, 4, 0), None));
        assert!(filter.matches(&event(kind::SEND_RESET, 0, 0, 0), None));
    }

    #[test]
    fn pid_matches_the_owner_not_the_task_on_the_cpu() {
        let filter = EventFilter::new(Some(4242), vec![]);
        // connect() by the process itself.
        assert!(filter.matches(&event(kind::STATE_CHANGE, 7, 2, 4242), None));
        // SYN_SENT→ESTABLISHED runs in softirq under another task: owner decides.
        assert!(filter.matches(&event(kind::STATE_CHANGE, 2, 1, 0), owner(4242)));
        assert!(!filter.matches(&event(kind::STATE_CHANGE, 2, 1, 4242), None));
        assert!(!filter.matches(&event(kind::STATE_CHANGE, 2, 1, 0), owner(1)));
        // An unrelated process's connect.
        assert!(!filter.matches(&event(kind::STATE_CHANGE, 7, 2, 1), None));
    }

    #[test]
    fn state_matches_either_end_of_a_transition_or_the_state_of_a_mark() {
        let filter = EventFilter::new(None, vec![TcpState::CloseWait]);
        assert!(filter.matches(&event(kind::STATE_CHANGE, 1, 8, 0), None));
        assert!(filter.matches(&event(kind::STATE_CHANGE, 8, 9, 0), None));
        assert!(!filter.matches(&event(kind::STATE_CHANGE, 1, 4, 0), None));
        assert!(filter.matches(&event(kind::RETRANSMIT, 8, 8, 0), None));
        assert!(!filter.matches(&event(kind::SEND_RESET, 0, 0, 0), None));
    }

    #[test]
    fn pid_and_state_must_both_match() {
        let filter = EventFilter::new(Some(7), vec![TcpState::SynSent]);
        assert!(filter.matches(&event(kind::STATE_CHANGE, 7, 2, 7), None));
        assert!(!filter.matches(&event(kind::STATE_CHANGE, 7, 2, 8), None));
        assert!(!filter.matches(&event(kind::STATE_CHANGE, 1, 4, 7), None));
    }
}
