//! The overview page's one answer (`/api/overview`): the detectors' last pass and
//! tcptrace's health, cut to what a page shows, so that a poll stays small however many
//! connections leak or listen.

use std::collections::HashMap;

use serde::Serialize;

use super::health::Health;
use crate::detect::{CloseWaitLeak, HalfOpenReport, LeakReport, ListenerReport, TimeWaitReport};

/// How many leaking processes, oldest leaks, suspects and listeners the page lists.
pub const LISTED: usize = 10;

/// The stuck CLOSE_WAIT sockets of one process (in one container or pod).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeakingProcess {
    /// `None`: no process found for them.
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// The container's short id, as `docker ps` shows it.
    pub container: Option<String>,
    pub pod_uid: Option<String>,
    pub leaks: usize,
    pub oldest_age_seconds: f64,
    /// The network namespace of its first leak (a process's sockets share one, mostly).
    pub netns: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CloseWaitOverview {
    pub threshold_seconds: f64,
    /// Every stuck socket, listed or not.
    pub stuck: usize,
    pub oldest_age_seconds: f64,
    pub unread_bytes: u64,
    /// Most leaks first, at most [`LISTED`].
    pub by_process: Vec<LeakingProcess>,
    /// Leaks of processes not listed in `by_process`.
    pub other_leaks: usize,
    /// The oldest leaks, at most [`LISTED`].
    pub oldest: Vec<CloseWaitLeak>,
}

/// What `/api/overview` answers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Overview {
    /// When the detectors last ran (RFC 3339); `None` until the first reconcile.
    pub checked_at: Option<String>,
    pub health: Health,
    pub close_wait: CloseWaitOverview,
    pub half_open: HalfOpenReport,
    /// Fullest accept queue first.
    pub listeners: ListenerReport,
    pub time_wait: TimeWaitReport,
}

/// Leaks grouped by namespace, process, container and pod: most leaks first, then the
/// oldest, then by pid; unknown owners last among equals. The namespace is part of the
/// key: leaks of unknown owners in two namespaces are two rows, each with its own.
pub fn by_process(leaks: &[CloseWaitLeak]) -> Vec<LeakingProcess> {
    type Key = (
        u32,
        Option<u32>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let mut groups: HashMap<Key, LeakingProcess> = HashMap::new();
    for leak in leaks {
        let workload = leak.workload.as_ref();
        let container = workload
            .and_then(|w| w.container.as_ref())
            .map(|c| c.short_id().to_owned());
        let pod_uid = workload.and_then(|w| w.pod_uid.clone());
        let pid = leak.owner.as_ref().map(|o| o.pid);
        let comm = leak.owner.as_ref().map(|o| o.comm.clone());
        let group = groups
            .entry((
                leak.netns,
                pid,
                comm.clone(),
                container.clone(),
                pod_uid.clone(),
            ))
            .or_insert_with(|| LeakingProcess {
                pid,
                comm,
                container,
                pod_uid,
                leaks: 0,
                oldest_age_seconds: 0.0,
                netns: leak.netns,
            });
        group.leaks += 1;
        group.oldest_age_seconds = group.oldest_age_seconds.max(leak.age_seconds);
    }
    let mut ranked: Vec<LeakingProcess> = groups.into_values().collect();
    ranked.sort_by(|a, b| {
        b.leaks
            .cmp(&a.leaks)
            .then(b.oldest_age_seconds.total_cmp(&a.oldest_age_seconds))
            .then(a.pid.is_none().cmp(&b.pid.is_none()))
            .then(a.pid.cmp(&b.pid))
            .then(a.container.cmp(&b.container))
            .then(a.netns.cmp(&b.netns))
    });
    ranked
}

impl Overview {
    pub fn new(leaks: &LeakReport, listeners: &ListenerReport, health: Health) -> Overview {
        let cw = &leaks.close_wait;
        let mut processes = by_process(&cw.leaks);
        let other_leaks = processes.iter().skip(LISTED).map(|p| p.leaks).sum();
        processes.truncate(LISTED);
        Overview {
            checked_at: leaks.checked_at.clone(),
            health,
            close_wait: CloseWaitOverview {
                threshold_seconds: cw.threshold_seconds,
                stuck: cw.stuck,
                oldest_age_seconds: cw.oldest_age_seconds,
                unread_bytes: cw.unread_bytes,
                by_process: processes,
                other_leaks,
                oldest: cw.leaks.iter().take(LISTED).cloned().collect(),
            },
            half_open: leaks.half_open.limited(LISTED),
            listeners: listeners.limited(LISTED, None),
            time_wait: leaks.time_wait.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        detect::{close_wait::LeakOwner, OwnerSource},
        diag::cgroup::parse_cgroup_path,
    };

    fn leak(id: u64, pid: Option<u32>, cgroup: Option<&str>, age: f64) -> CloseWaitLeak {
        CloseWaitLeak {
            id,
            netns: 4026531840,
            workload: cgroup.map(parse_cgroup_path),
            local: "127.0.0.1:8080".parse().unwrap(),
            remote: format!("127.0.0.1:{}", 40000 + id).parse().unwrap(),
            since: String::new(),
            age_seconds: age,
            age_is_lower_bound: false,
            unread_bytes: 0,
            eof_read: true,
            owner: pid.map(|pid| LeakOwner {
                pid,
                comm: format!("srv{pid}"),
                cgroup: None,
                source: OwnerSource::Proc,
            }),
        }
    }

    const DOCKER: &str = "/system.slice/docker-\
        0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";

    #[test]
    fn leaks_group_by_process_and_container_most_first() {
        let leaks = [
            leak(1, Some(7), None, 5.0),
            leak(2, Some(9), Some(DOCKER), 30.0),
            leak(3, Some(7), None, 12.0),
            leak(4, None, None, 99.0),
            leak(5, Some(9), Some(DOCKER), 2.0),
            leak(6, Some(7), Some(DOCKER), 1.0),
            leak(7, Some(3), None, 40.0),
        ];
        let rows: Vec<_> = by_process(&leaks)
            .into_iter()
            .map(|p| (p.pid, p.container, p.leaks, p.oldest_age_seconds))
            .collect();
        let docker = Some("0123456789ab".to_owned());
        assert_eq!(
            rows,
            [
                (Some(9), docker.clone(), 2, 30.0),
                (Some(7), None, 2, 12.0),
                (None, None, 1, 99.0),
                (Some(3), None, 1, 40.0),
                (Some(7), docker, 1, 1.0),
            ]
        );
    }

    #[test]
    fn the_overview_lists_a_page_and_counts_the_rest() {
        let mut report = LeakReport::default();
        report.close_wait.stuck = 13;
        report.close_wait.leaks = (0..13u32)
            .map(|i| leak(u64::from(i), Some(100 + i), None, 100.0 - f64::from(i)))
            .collect();
        let overview = Overview::new(&report, &ListenerReport::default(), Health::default());
        let cw = &overview.close_wait;
        assert_eq!((cw.stuck, cw.by_process.len(), cw.other_leaks), (13, 10, 3));
        assert_eq!(cw.by_process[0].pid, Some(100));
        assert_eq!(cw.by_process[9].pid, Some(109));
        assert_eq!(
            cw.oldest.iter().map(|l| l.id).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
    }
}
