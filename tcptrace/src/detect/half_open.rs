//! Half-open suspects: connections whose peer has stopped answering. The kernel keeps
//! retransmitting (or probing) into silence until `tcp_retries2` gives up, about 15
//! minutes later by default; meanwhile the application waits on a peer that crashed,
//! was partitioned away, or lost its state (a rebooted host, a NAT or firewall that
//! forgot the flow). An idle connection without keepalive asks nothing, so it cannot be
//! told from a healthy one until it sends.
//!
//! **The rule.** A connection is a suspect when, in a synchronized state (ESTABLISHED,
//! CLOSE_WAIT, FIN_WAIT1, CLOSING, LAST_ACK: the handshake is done and something of
//! ours awaits the peer's answer):
//!
//! - the kernel is asking: `tcpi_retransmits > 0` (retransmission timeouts since the
//!   peer last acknowledged new data) or `tcpi_probes > 0` (zero-window or keepalive
//!   probes since the peer last answered), and
//! - it has been asking without an answer for at least the threshold
//!   (`--half-open-after`): `unanswered = min(silence, asking)`, where
//!   - `silence` is `tcpi_last_ack_recv`, the time since the peer's last acceptable
//!     ACK (any answer, a probe's included, resets it; net/ipv4/tcp_input.c:
//!     `tcp_ack()` sets `rcv_tstamp`), and
//!   - `asking` is how long the kernel has been retransmitting or probing: the longer
//!     of what tcptrace saw (since the first pass that found this socket, by its
//!     cookie, asking) and what the kernel's own numbers prove for the retransmission
//!     timer ([`proven_retransmitting_ms`]).
//!
//! `silence` alone would flag an idle connection at its first lost segment (its peer
//! had nothing to say for an hour, then one retransmission); `asking` alone would
//! ignore an answer that came between two passes. A suspect stops being one when the
//! peer answers (the counters drop to 0, or `silence` restarts), and when the
//! connection ends (it leaves the dump, or its →CLOSE event arrives first).
//!
//! Handshakes (SYN_SENT, SYN_RECV) are left out: a peer that never answered a SYN is
//! a refused or unreachable connect, not a half-open connection.

use std::{collections::HashMap, net::SocketAddr};

use serde::Serialize;

use super::{
    close_wait::{owner_of, workload_of, LeakOwner},
    time_wait::MAX_REPORTED_NAMESPACES,
};
use crate::{
    clock::{rfc3339, WallClock},
    diag::{
        cgroup::{Resolve, Workload},
        netns::NamespaceDump,
        owners::OwnerCache,
        tcp_info::{ArmedTimer, KernelView, TcpInfo, TimerKind},
    },
    state::TcpState,
    tracker::{Connection, Owner, SocketKey},
};

const MS: u64 = 1_000_000;

/// A connection the detector suspects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HalfOpenSuspect {
    /// The connection's id in `/api/connections/{id}`, when the table holds it.
    pub id: Option<u64>,
    pub netns: u32,
    /// The socket's cgroup v2 id (0: unknown).
    pub cgroup_id: u64,
    /// The kernel's socket cookie.
    pub cookie: u64,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: TcpState,
    /// 0 when no process holds a descriptor for it (an orphan after close()).
    pub inode: u32,
    pub timer: Option<ArmedTimer>,
    pub tcp_info: TcpInfo,
    /// How long it had been asking without an answer at the dump, as the rule
    /// estimates it.
    pub unanswered_ns: u64,
    /// When that began (CLOCK_MONOTONIC).
    pub since_ns: u64,
    /// What the events said: the task that connected, or the listener's owner.
    pub event_owner: Option<Owner>,
}

/// States in which the peer owes an answer once we send: past the handshake, and
/// something of ours (data or a FIN) can still be unacknowledged.
fn synchronized(state: TcpState) -> bool {
    matches!(
        state,
        TcpState::Established
            | TcpState::CloseWait
            | TcpState::FinWait1
            | TcpState::Closing
            | TcpState::LastAck
    )
}

/// How long the kernel has certainly been retransmitting without an answer, from the
/// retransmission timer alone (ms; 0 for any other timer).
///
/// Each timeout doubles the RTO (`icsk_rto`, capped at `TCP_RTO_MAX`) and counts one
/// more in `tcpi_retransmits` (net/ipv4/tcp_timer.c: `tcp_retransmit_timer()`). After
/// n timeouts with the current RTO `rto`, the timer was armed `rto - expires` ago, the
/// n timeouts before it took at least `rto/2 + rto/4 + … + rto/2^n` (more where the
/// cap held the RTO still), and the first was armed when the oldest unacknowledged
/// segment went out. So the segment has been waiting at least
/// `rto · (2 - 2^-n) - expires`.
pub fn proven_retransmitting_ms(timer: Option<ArmedTimer>, info: &TcpInfo) -> u64 {
    match timer {
        Some(ArmedTimer {
            kind: TimerKind::Retransmit,
            expires_ms,
        }) if info.retransmits > 0 => {
            let rto_ms = f64::from(info.rto_us) / 1000.0;
            let halvings = 0.5f64.powi(i32::from(info.retransmits.min(64)));
            let waited = rto_ms * (2.0 - halvings) - f64::from(expires_ms);
            // f64 → u64 saturates; a negative difference (a clamped timer) is 0.
            waited.max(0.0) as u64
        }
        _ => 0,
    }
}

/// The detector's memory between passes: when each asking socket was first seen
/// asking. It holds only the sockets asking at the last pass.
#[derive(Debug, Default)]
pub struct HalfOpenDetector {
    asking_since: HashMap<(SocketKey, u64), u64>,
}

impl HalfOpenDetector {
    /// How many sockets it remembers (those asking at the last pass).
    pub fn remembered(&self) -> usize {
        self.asking_since.len()
    }

    /// One pass over the namespaces' `dumps` begun at `now_ns` (CLOCK_MONOTONIC): the
    /// suspects, longest unanswered first. `connections` (the table) give each its id
    /// and the owner the events named.
    pub fn pass<'a>(
        &mut self,
        connections: impl Iterator<Item = &'a Connection>,
        dumps: &[NamespaceDump],
        now_ns: u64,
        threshold_ns: u64,
    ) -> Vec<HalfOpenSuspect> {
        let mut asking_since = HashMap::new();
        let mut suspects = Vec::new();
        for dump in dumps {
            for socket in &dump.sockets {
                let Some(info) = socket.tcp_info else {
                    continue; // a timewait or request mini-socket
                };
                if !synchronized(socket.state) || (info.retransmits == 0 && info.probes == 0) {
                    continue;
                }
                let key = (socket.key(dump.netns), socket.cookie);
                let first = *self.asking_since.get(&key).unwrap_or(&now_ns);
                asking_since.insert(key, first);
                let seen = now_ns.saturating_sub(first);
                let proven = proven_retransmitting_ms(socket.timer, &info).saturating_mul(MS);
                let silence = u64::from(info.last_ack_recv_ms) * MS;
                let unanswered = seen.max(proven).min(silence);
                if unanswered < threshold_ns {
                    continue;
                }
                suspects.push(HalfOpenSuspect {
                    id: None,
                    netns: dump.netns,
                    cgroup_id: socket.cgroup_id.unwrap_or(0),
                    cookie: socket.cookie,
                    local: socket.local,
                    remote: socket.remote,
                    state: socket.state,
                    inode: socket.inode,
                    timer: socket.timer,
                    tcp_info: info,
                    unanswered_ns: unanswered,
                    since_ns: now_ns.saturating_sub(unanswered),
                    event_owner: None,
                });
            }
        }
        self.asking_since = asking_since;
        if !suspects.is_empty() {
            let tracked: HashMap<SocketKey, &Connection> =
                connections.map(|c| (c.key(), c)).collect();
            for suspect in &mut suspects {
                let key = SocketKey {
                    netns: suspect.netns,
                    local: suspect.local,
                    remote: suspect.remote,
                };
                if let Some(conn) = tracked.get(&key) {
                    suspect.id = Some(conn.id.generation);
                    suspect.event_owner = conn.owner();
                    if suspect.cgroup_id == 0 {
                        suspect.cgroup_id = conn.cgroup_id;
                    }
                }
            }
        }
        suspects.sort_by(|a, b| {
            b.unanswered_ns
                .cmp(&a.unanswered_ns)
                .then_with(|| (a.netns, a.local, a.remote).cmp(&(b.netns, b.local, b.remote)))
        });
        suspects
    }
}

/// The inodes whose owners a report on `suspects` needs.
pub fn inodes(suspects: &[HalfOpenSuspect]) -> impl Iterator<Item = u32> + '_ {
    suspects.iter().map(|s| s.inode).filter(|&i| i != 0)
}

/// One suspect, as `/api/half-open` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HalfOpenConnection {
    /// For `/api/connections/{id}`; `null` when the table does not hold it.
    pub id: Option<u64>,
    /// The socket's network namespace (inode number, as `/proc/PID/ns/net` shows it).
    pub netns: u32,
    /// The socket's cgroup v2 path and the container and pod it names, when known.
    #[serde(flatten)]
    pub workload: Option<Workload>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: TcpState,
    /// How long the kernel has been retransmitting or probing without an answer.
    pub unanswered_seconds: f64,
    /// When that began (RFC 3339).
    pub since: String,
    /// The timer and the `tcp_info` fields at the pass that flagged it.
    #[serde(flatten)]
    pub kernel: KernelView,
    pub owner: Option<LeakOwner>,
}

/// Suspects in one network namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NamespaceSuspects {
    pub netns: u32,
    pub suspects: u64,
}

/// The half-open detector's last pass, for `/api/half-open` and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct HalfOpenReport {
    pub threshold_seconds: f64,
    /// Every suspect, listed or not.
    pub count: usize,
    pub oldest_unanswered_seconds: f64,
    /// Namespaces with suspects, most first (at most `MAX_REPORTED_NAMESPACES`).
    pub namespaces: Vec<NamespaceSuspects>,
    /// Longest unanswered first.
    pub suspects: Vec<HalfOpenConnection>,
}

impl HalfOpenReport {
    /// `resolve` maps a cgroup id to the container and pod it belongs to.
    pub fn new(
        suspects: &[HalfOpenSuspect],
        owners: &OwnerCache,
        resolve: Resolve<'_>,
        threshold_seconds: f64,
        clock: WallClock,
    ) -> Self {
        let mut by_netns: HashMap<u32, u64> = HashMap::new();
        for s in suspects {
            *by_netns.entry(s.netns).or_default() += 1;
        }
        let mut namespaces: Vec<NamespaceSuspects> = by_netns
            .into_iter()
            .map(|(netns, suspects)| NamespaceSuspects { netns, suspects })
            .collect();
        namespaces.sort_by(|a, b| b.suspects.cmp(&a.suspects).then(a.netns.cmp(&b.netns)));
        namespaces.truncate(MAX_REPORTED_NAMESPACES);
        HalfOpenReport {
            threshold_seconds,
            count: suspects.len(),
            oldest_unanswered_seconds: suspects
                .iter()
                .map(|s| s.unanswered_ns)
                .max()
                .map_or(0.0, |ns| ns as f64 / 1e9),
            namespaces,
            suspects: suspects
                .iter()
                .map(|s| {
                    let owner = owner_of(s.inode, s.event_owner, owners);
                    let workload = workload_of(s.cgroup_id, owner.as_ref(), resolve);
                    HalfOpenConnection {
                        id: s.id,
                        netns: s.netns,
                        workload: workload.as_deref().cloned(),
                        local: s.local,
                        remote: s.remote,
                        state: s.state,
                        unanswered_seconds: s.unanswered_ns as f64 / 1e9,
                        since: rfc3339(clock.to_system_time(s.since_ns)),
                        kernel: KernelView {
                            timer: s.timer,
                            tcp_info: Some(s.tcp_info),
                        },
                        owner,
                    }
                })
                .collect(),
        }
    }

    /// A copy listing at most `limit` suspects; the counts stay whole.
    pub fn limited(&self, limit: usize) -> HalfOpenReport {
        HalfOpenReport {
            threshold_seconds: self.threshold_seconds,
            count: self.count,
            oldest_unanswered_seconds: self.oldest_unanswered_seconds,
            namespaces: self.namespaces.clone(),
            suspects: self.suspects.iter().take(limit).cloned().collect(),
        }
    }
}

/// Drops the suspects whose connection just ended (its →CLOSE arrived before the next
/// pass); true if any was.
pub fn forget_ended(suspects: &mut Vec<HalfOpenSuspect>, ended: &[SocketKey]) -> bool {
    if ended.is_empty() {
        return false;
    }
    let ended: std::collections::HashSet<&SocketKey> = ended.iter().collect();
    let before = suspects.len();
    suspects.retain(|s| {
        !ended.contains(&SocketKey {
            netns: s.netns,
            local: s.local,
            remote: s.remote,
        })
    });
    suspects.len() != before
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::{
        diag::{owners::ProcessOwner, DiagSocket},
        event::Comm,
        state::TcpState::*,
        testing::{addr, connection_through, NETNS},
    };

    const SECOND: u64 = 1_000_000_000;
    const CLIENT: &str = "10.0.0.1:40000";
    const SERVER: &str = "10.0.0.2:8080";

    /// A full socket with `tcp_info`: `retransmits` timeouts and `probes` probes out,
    /// the peer silent for `silent_ms`, and the timer `timer` armed.
    fn socket(
        state: TcpState,
        cookie: u64,
        (retransmits, probes): (u8, u8),
        silent_ms: u32,
        timer: Option<(TimerKind, u32)>,
    ) -> DiagSocket {
        DiagSocket {
            state,
            local: addr(CLIENT),
            remote: addr(SERVER),
            inode: 500 + cookie as u32,
            uid: 0,
            recv_queue: 0,
            send_queue: 0,
            request: false,
            timewait: false,
            cgroup_id: Some(9),
            cookie,
            timer: timer.map(|(kind, expires_ms)| ArmedTimer { kind, expires_ms }),
            tcp_info: Some(TcpInfo {
                retransmits,
                probes,
                backoff: retransmits,
                // 200 ms doubled at each timeout.
                rto_us: 200_000 << retransmits,
                unacked: u32::from(retransmits > 0),
                last_data_sent_ms: 0,
                last_data_recv_ms: silent_ms,
                last_ack_recv_ms: silent_ms,
                total_retrans: u32::from(retransmits),
            }),
        }
    }

    fn dump(netns: u32, sockets: &[DiagSocket]) -> NamespaceDump {
        NamespaceDump {
            netns,
            sockets: sockets.to_vec(),
            port_range: None,
            listen_counters: None,
        }
    }

    fn pass(
        detector: &mut HalfOpenDetector,
        sockets: &[DiagSocket],
        now_s: u64,
        threshold_s: u64,
    ) -> Vec<HalfOpenSuspect> {
        detector.pass(
            std::iter::empty(),
            &[dump(NETNS, sockets)],
            now_s * SECOND,
            threshold_s * SECOND,
        )
    }

    #[test]
    fn the_retransmission_timer_proves_how_long_the_oldest_segment_has_waited() {
        let info = |retransmits: u8, rto_ms: u32| TcpInfo {
            retransmits,
            rto_us: rto_ms * 1000,
            ..TcpInfo::default()
        };
        let rtx = |expires_ms| {
            Some(ArmedTimer {
                kind: TimerKind::Retransmit,
                expires_ms,
            })
        };
        // 200 ms RTO; sent at 0, timeouts at 0.2, 0.6, 1.4 s; now 2.0 s: the timer
        // (1.6 s) fires at 3.0 s.
        assert_eq!(proven_retransmitting_ms(rtx(1000), &info(3, 1600)), 2000);
        // Just after the first timeout: rearmed with 400 ms, 200 ms after the send.
        assert_eq!(proven_retransmitting_ms(rtx(400), &info(1, 400)), 200);
        // At the cap, the halvings are a lower bound: 15 timeouts took 804.6 s, and
        // 240 s is proven.
        assert_eq!(
            proven_retransmitting_ms(rtx(0), &info(15, 120_000)),
            239_996
        );
        // Nothing proven by another timer, without a timeout, or from a clamped timer.
        let keepalive = Some(ArmedTimer {
            kind: TimerKind::Keepalive,
            expires_ms: 0,
        });
        assert_eq!(proven_retransmitting_ms(keepalive, &info(3, 1600)), 0);
        assert_eq!(proven_retransmitting_ms(rtx(0), &info(0, 1600)), 0);
        assert_eq!(proven_retransmitting_ms(None, &info(3, 1600)), 0);
        assert_eq!(proven_retransmitting_ms(rtx(5000), &info(1, 400)), 0);
        let extreme = TcpInfo {
            retransmits: 255,
            rto_us: u32::MAX,
            ..TcpInfo::default()
        };
        assert_eq!(proven_retransmitting_ms(rtx(0), &extreme), 8_589_934);
    }

    #[test]
    fn a_retransmitting_connection_is_a_suspect_from_the_threshold_on() {
        let mut detector = HalfOpenDetector::default();
        // 3 timeouts, the timer fires in 1 s: proven 2.0 s; the peer silent 2.1 s.
        let rtx = |silent_ms, expires_ms| {
            socket(
                Established,
                1,
                (3, 0),
                silent_ms,
                Some((TimerKind::Retransmit, expires_ms)),
            )
        };
        assert!(pass(&mut detector, &[rtx(2100, 1001)], 100, 2).is_empty());
        let suspects = pass(&mut detector, &[rtx(2100, 1000)], 100, 2);
        assert_eq!(
            suspects,
            [HalfOpenSuspect {
                id: None,
                netns: NETNS,
                cgroup_id: 9,
                cookie: 1,
                local: addr(CLIENT),
                remote: addr(SERVER),
                state: Established,
                inode: 501,
                timer: Some(ArmedTimer {
                    kind: TimerKind::Retransmit,
                    expires_ms: 1000
                }),
                tcp_info: rtx(2100, 1000).tcp_info.unwrap(),
                unanswered_ns: 2 * SECOND,
                since_ns: 98 * SECOND,
                event_owner: None,
            }]
        );
        // The peer's silence caps it: an answer 1.5 s ago (a duplicate ACK).
        assert!(pass(&mut detector, &[rtx(1500, 1000)], 101, 2).is_empty());
    }

    #[test]
    fn an_idle_connections_first_lost_segment_is_not_a_suspect() {
        let mut detector = HalfOpenDetector::default();
        // Silent for an hour (nothing to answer), then one timeout 200 ms after a send.
        let idle = socket(
            Established,
            1,
            (1, 0),
            3_600_000,
            Some((TimerKind::Retransmit, 400)),
        );
        assert!(pass(&mut detector, &[idle], 100, 2).is_empty());
        // Still retransmitting at the next passes: what tcptrace saw counts.
        assert!(pass(&mut detector, &[idle], 101, 2).is_empty());
        let suspects = pass(&mut detector, &[idle], 102, 2);
        assert_eq!(suspects.len(), 1);
        assert_eq!(suspects[0].unanswered_ns, 2 * SECOND);
    }

    #[test]
    fn keepalive_and_window_probes_count_from_the_first_pass_that_saw_them() {
        let mut detector = HalfOpenDetector::default();
        let keepalive = socket(
            Established,
            1,
            (0, 2),
            7_300_000,
            Some((TimerKind::Keepalive, 75_000)),
        );
        let persist = socket(
            CloseWait,
            2,
            (0, 1),
            4_000,
            Some((TimerKind::Persist, 3_000)),
        );
        assert!(pass(&mut detector, &[keepalive, persist], 10, 5).is_empty());
        assert_eq!(detector.remembered(), 2);
        let suspects = pass(&mut detector, &[keepalive, persist], 15, 5);
        assert_eq!(
            suspects
                .iter()
                .map(|s| (s.cookie, s.unanswered_ns / SECOND))
                .collect::<Vec<_>>(),
            [(1, 5)],
            "the window probe's peer answered 4 s ago"
        );
        // The probe was answered: the counter is 0 again and the socket forgotten.
        let answered = socket(
            Established,
            1,
            (0, 0),
            10,
            Some((TimerKind::Keepalive, 7_200_000)),
        );
        assert!(pass(&mut detector, &[answered, persist], 20, 5).is_empty());
        assert_eq!(detector.remembered(), 1);
        // Probing again later starts over.
        assert!(pass(&mut detector, &[keepalive], 30, 5).is_empty());
    }

    #[test]
    fn only_synchronized_full_sockets_that_ask_are_suspects() {
        let mut detector = HalfOpenDetector::default();
        let rtx = Some((TimerKind::Retransmit, 0));
        for state in [Established, CloseWait, FinWait1, Closing, LastAck] {
            let asking = socket(state, 1, (6, 0), 60_000, rtx);
            assert_eq!(pass(&mut detector, &[asking], 100, 2).len(), 1, "{state:?}");
        }
        for state in [SynSent, SynRecv, FinWait2, Listen, TimeWait] {
            let asking = socket(state, 1, (6, 0), 60_000, rtx);
            assert!(
                pass(&mut detector, &[asking], 100, 2).is_empty(),
                "{state:?}"
            );
        }
        let mut mini = socket(Established, 1, (6, 0), 60_000, rtx);
        mini.tcp_info = None;
        assert!(pass(&mut detector, &[mini], 100, 2).is_empty());
        let quiet = socket(Established, 1, (0, 0), 60_000, None);
        assert!(pass(&mut detector, &[quiet], 100, 2).is_empty());
        assert_eq!(detector.remembered(), 0);
    }

    #[test]
    fn a_new_socket_on_the_same_tuple_starts_over() {
        let mut detector = HalfOpenDetector::default();
        let probing = |cookie| socket(Established, cookie, (0, 1), 9_000_000, None);
        assert!(pass(&mut detector, &[probing(1)], 0, 5).is_empty());
        assert_eq!(pass(&mut detector, &[probing(1)], 5, 5).len(), 1);
        assert!(
            pass(&mut detector, &[probing(2)], 6, 5).is_empty(),
            "another cookie"
        );
    }

    #[test]
    fn suspects_get_their_table_id_and_owner_per_namespace_longest_first() {
        let mut detector = HalfOpenDetector::default();
        let mut conn = connection_through(7, (CLIENT, SERVER), &[(Established, 1)], SECOND);
        conn.netns = NETNS + 1;
        conn.cgroup_id = 33;
        conn.set_owner(Some(Owner {
            pid: 4242,
            comm: Comm(*b"client\0\0\0\0\0\0\0\0\0\0"),
            cgroup_id: 33,
        }));
        let rtx = |retransmits, expires_ms| {
            let mut s = socket(
                Established,
                u64::from(retransmits),
                (retransmits, 0),
                60_000,
                Some((TimerKind::Retransmit, expires_ms)),
            );
            s.cgroup_id = None;
            s
        };
        // The same tuple in two namespaces: the table holds the second one's.
        let dumps = [dump(NETNS, &[rtx(4, 0)]), dump(NETNS + 1, &[rtx(5, 0)])];
        let suspects = detector.pass([&conn].into_iter(), &dumps, 100 * SECOND, SECOND);
        let seen: Vec<_> = suspects
            .iter()
            .map(|s| (s.netns, s.id, s.event_owner.map(|o| o.pid), s.cgroup_id))
            .collect();
        assert_eq!(
            seen,
            [(NETNS + 1, Some(7), Some(4242), 33), (NETNS, None, None, 0)]
        );
        assert_eq!(
            suspects
                .iter()
                .map(|s| s.unanswered_ns / 1_000_000)
                .collect::<Vec<_>>(),
            [12_600, 6_200],
            "rto 6.4 s after 5 timeouts, 3.2 s after 4, both due now"
        );
        assert_eq!(
            inodes(&suspects).collect::<HashSet<_>>(),
            HashSet::from([505, 504])
        );
    }

    #[test]
    fn the_report_lists_owners_counts_per_namespace_and_limits() {
        let mut detector = HalfOpenDetector::default();
        let rtx = |cookie, netns| {
            let mut s = socket(
                FinWait1,
                cookie,
                (4, 0),
                60_000,
                Some((TimerKind::Retransmit, 1_200)),
            );
            s.local = addr(&format!("10.0.0.1:{}", 40000 + cookie));
            (netns, s)
        };
        let sockets = [rtx(1, NETNS), rtx(2, NETNS + 1), rtx(3, NETNS + 1)];
        let dumps: Vec<NamespaceDump> = [NETNS, NETNS + 1]
            .iter()
            .map(|&n| {
                let mine: Vec<DiagSocket> = sockets
                    .iter()
                    .filter(|(ns, _)| *ns == n)
                    .map(|(_, s)| *s)
                    .collect();
                dump(n, &mine)
            })
            .collect();
        let suspects = detector.pass(std::iter::empty(), &dumps, 100 * SECOND, SECOND);
        let mut owners = OwnerCache::default();
        owners.insert(
            &HashSet::from([502]),
            HashMap::from([(
                502,
                ProcessOwner {
                    pid: 77,
                    comm: "curl".into(),
                    cgroup: Some(format!("/system.slice/docker-{}.scope", "ab".repeat(32))),
                },
            )]),
        );
        let clock = WallClock::new();
        let report = HalfOpenReport::new(&suspects, &owners, &mut |_| None, 2.0, clock);
        assert_eq!((report.count, report.threshold_seconds), (3, 2.0));
        // rto 3.2 s after 4 timeouts, due in 1.2 s: 3.2 · (2 - 1/16) - 1.2.
        assert_eq!(report.oldest_unanswered_seconds, 5.0);
        assert_eq!(
            report.namespaces,
            [
                NamespaceSuspects {
                    netns: NETNS + 1,
                    suspects: 2
                },
                NamespaceSuspects {
                    netns: NETNS,
                    suspects: 1
                }
            ]
        );
        let json = serde_json::to_value(&report.suspects[1]).unwrap();
        assert_eq!(json["local"], "10.0.0.1:40002");
        assert_eq!(json["state"], "FIN_WAIT1");
        assert_eq!(json["unanswered_seconds"], 5.0);
        assert_eq!(json["owner"]["pid"], 77);
        assert_eq!(json["owner"]["source"], "proc");
        assert_eq!(json["container"]["id"], "ab".repeat(32));
        assert_eq!(json["container"]["runtime"], "docker");
        assert_eq!(json["timer"]["kind"], "retransmit");
        assert_eq!(json["retransmits"], 4);
        assert_eq!(json["rto_ms"], 3200.0);
        assert!(json["owner"].is_object() && report.suspects[0].owner.is_none());
        let one = report.limited(1);
        assert_eq!((one.count, one.suspects.len()), (3, 1));
        assert_eq!(report.limited(10), report);
        assert_eq!(
            HalfOpenReport::new(&[], &owners, &mut |_| None, 2.0, clock).count,
            0
        );
    }

    #[test]
    fn an_ended_connection_is_dropped_at_once() {
        let mut detector = HalfOpenDetector::default();
        let rtx = socket(
            Established,
            1,
            (6, 0),
            60_000,
            Some((TimerKind::Retransmit, 0)),
        );
        let mut suspects = pass(&mut detector, &[rtx], 100, 2);
        let other = SocketKey {
            netns: NETNS + 1,
            local: addr(CLIENT),
            remote: addr(SERVER),
        };
        assert!(
            !forget_ended(&mut suspects, &[other]),
            "another namespace's"
        );
        assert!(forget_ended(
            &mut suspects,
            &[SocketKey {
                netns: NETNS,
                ..other
            }]
        ));
        assert!(suspects.is_empty());
        assert!(!forget_ended(&mut suspects, &[]));
    }
}
