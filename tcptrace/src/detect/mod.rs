//! Detectors: stuck CLOSE_WAIT (a socket leak), TIME_WAIT buildup, listener health
//! (full accept queues, dropped connection attempts) and half-open suspects (a peer that
//! stopped answering). They run after each sock_diag reconcile, on the tracker's table
//! and that dump; pure code.

pub mod close_wait;
pub mod half_open;
pub mod listeners;
#[cfg(test)]
mod tests;
pub mod time_wait;

use std::time::Duration;

use serde::Serialize;

pub use self::{
    close_wait::{CloseWaitLeak, LeakOwner, OwnerSource, StuckCloseWait},
    half_open::{HalfOpenConnection, HalfOpenDetector, HalfOpenReport, HalfOpenSuspect},
    listeners::{ListenOverflow, ListenerHealth, ListenerReport, NamespaceListens},
    time_wait::{PortPressure, PortRange, RemoteTimeWait, TimeWaitReport},
};
use crate::{
    clock::{rfc3339, WallClock},
    diag::{cgroup::Resolve, owners::OwnerCache},
};

/// The detectors' settings (see `cli::DetectArgs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectConfig {
    pub close_wait_threshold: Duration,
    pub port_pressure_threshold: f64,
    pub top_remotes: usize,
    /// `--half-open-after`: how long a connection retransmits or probes without an
    /// answer before it is a half-open suspect.
    pub half_open_after: Duration,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CloseWaitReport {
    pub threshold_seconds: f64,
    pub stuck: usize,
    pub oldest_age_seconds: f64,
    pub unread_bytes: u64,
    /// Oldest first.
    pub leaks: Vec<CloseWaitLeak>,
}

/// What `/api/leaks` serves and the detector metrics show.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LeakReport {
    /// When the detectors last ran (RFC 3339); `None` until the first reconcile.
    pub checked_at: Option<String>,
    pub close_wait: CloseWaitReport,
    pub time_wait: TimeWaitReport,
    /// Connections whose peer stopped answering (also `/api/half-open`).
    pub half_open: HalfOpenReport,
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

impl LeakReport {
    /// A copy with at most `limit` leaks listed (oldest first); `stuck` keeps the full
    /// count. Copies only what it keeps.
    pub fn limited(&self, limit: usize) -> LeakReport {
        let cw = &self.close_wait;
        LeakReport {
            checked_at: self.checked_at.clone(),
            close_wait: CloseWaitReport {
                threshold_seconds: cw.threshold_seconds,
                stuck: cw.stuck,
                oldest_age_seconds: cw.oldest_age_seconds,
                unread_bytes: cw.unread_bytes,
                leaks: cw.leaks.iter().take(limit).cloned().collect(),
            },
            time_wait: self.time_wait.clone(),
            half_open: self.half_open.limited(limit),
        }
    }

    /// `resolve` maps a cgroup id to the container and pod it belongs to.
    pub fn new(
        stuck: &[StuckCloseWait],
        owners: &OwnerCache,
        resolve: Resolve<'_>,
        time_wait: TimeWaitReport,
        config: &DetectConfig,
        clock: WallClock,
        now_ns: u64,
    ) -> Self {
        let leaks: Vec<CloseWaitLeak> = stuck
            .iter()
            .map(|s| {
                let owner = close_wait::with_owner(s, owners);
                let workload = close_wait::workload(s, owner.as_ref(), resolve);
                CloseWaitLeak {
                    id: s.id,
                    netns: s.netns,
                    workload: workload.as_deref().cloned(),
                    local: s.local,
                    remote: s.remote,
                    since: rfc3339(clock.to_system_time(s.since_ns)),
                    age_seconds: seconds(s.age_ns),
                    age_is_lower_bound: s.age_is_lower_bound,
                    unread_bytes: s.unread_bytes,
                    eof_read: s.eof_read,
                    owner,
                }
            })
            .collect();
        LeakReport {
            checked_at: Some(rfc3339(clock.to_system_time(now_ns))),
            close_wait: CloseWaitReport {
                threshold_seconds: config.close_wait_threshold.as_secs_f64(),
                stuck: leaks.len(),
                oldest_age_seconds: stuck.first().map_or(0.0, |s| seconds(s.age_ns)),
                unread_bytes: stuck.iter().map(|s| u64::from(s.unread_bytes)).sum(),
                leaks,
            },
            time_wait,
            half_open: HalfOpenReport::default(),
        }
    }
}
