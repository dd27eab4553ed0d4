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
    /// cannot be resolved) does not. Only a resolved cgroup's verdict is kept: a lookup
    /// that failed is asked again (the resolver itself remembers the cgroups that are
    /// gone for good).
    pub fn admits(&mut self, id: u64, resolver: &mut CgroupResolver) -> bool {
        if id == 0 {
            return false;
        }
        if let Some(&verdict) = self.verdicts.get(&id) {
            return verdict;
        }
        let Some(workload) = resolver.resolve(id) else {
            return false;
        };
        let verdict = workload.cgroup.starts_with(&self.prefix);
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
    /// The same filter for a namespace's listen overflow: the fullest listener's owner,
    /// and LISTEN among the states.
    pub fn matches_overflow(&self, overflow: &crate::detect::ListenOverflow) -> bool {
        let owner = overflow.fullest.as_ref().and_then(|l| l.owner.as_ref());
        self.pid
            .is_none_or(|pid| owner.is_some_and(|o| o.pid == pid))
            && (self.states.is_empty() || self.states.contains(&TcpState::Listen))
    }

    /// The same filter for a whole connection (`--timelines`): its owner, and any state
    /// it went through.
    pub fn matches_connection(&self, conn: &crate::tracker::Connection) -> bool {
        self.pid
            .is_none_or(|pid| conn.owner().is_some_and(|o| o.pid == pid))
            && (self.states.is_empty()
                || conn.steps().iter().any(|s| self.states.contains(&s.state)))
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

#[cfg(test)]
mod cgroup_tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn the_cgroup_prefix_keeps_only_sockets_below_it_and_retries_what_it_cannot_resolve() {
        // A tree laid out like a cgroup v2 mount; outside cgroupfs the resolver finds
        // ids by directory inode.
        let root = std::env::temp_dir().join(format!("tcptrace-cgfilter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let pod = root.join("kubepods.slice/pod-a");
        let service = root.join("system.slice/nginx.service");
        std::fs::create_dir_all(&pod).unwrap();
        std::fs::create_dir_all(&service).unwrap();
        let id = |dir: &std::path::Path| std::fs::metadata(dir).unwrap().ino();
        let mut resolver = CgroupResolver::new(root.clone(), 16);
        let mut filter = CgroupFilter::new("/kubepods.slice".into());
        assert!(filter.admits(id(&pod), &mut resolver));
        assert!(!filter.admits(id(&service), &mut resolver));
        assert!(!filter.admits(0, &mut resolver), "unknown cgroup");
        // A failed lookup leaves no verdict: it is asked again next time.
        let missing = u64::from(u32::MAX) + 7;
        assert!(!filter.admits(missing, &mut resolver));
        assert!(!filter.verdicts.contains_key(&missing));
        assert_eq!(filter.verdicts.len(), 2);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
