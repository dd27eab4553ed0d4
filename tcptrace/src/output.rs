//! How `watch` prints events: a table for people, JSON lines for programs.

use serde::Serialize;

use crate::{
    clock::{human_duration, WallClock},
    detect::{ListenOverflow, ListenerHealth},
    diag::netstat::ListenCounters,
    event::{Comm, EventKind, TcpEvent},
    state::TcpState,
    tracker::{Applied, Owner},
};

/// The column header of the human table.
pub const HEADER: &str = "TIME            PID     COMM             LOCAL                                  \
                          REMOTE                                 EVENT                      IN OLD STATE";

/// Who to show for an event: the connection's owner when known; otherwise the task on
/// the CPU, which is only trustworthy for process-context transitions.
fn who(event: &TcpEvent, owner: Option<Owner>) -> (u32, Comm, u64, bool) {
    match owner {
        Some(o) => (o.pid, o.comm, o.cgroup_id, true),
        None => (
            event.task.pid,
            event.task.comm,
            event.task.cgroup_id,
            event.task_is_owner(),
        ),
    }
}

/// What happened, e.g. `SYN_SENT → ESTABLISHED` or `RST received in SYN_SENT`.
pub fn describe(kind: &EventKind) -> String {
    let state = |s: Option<TcpState>| s.map_or("no socket".to_owned(), |s| format!("in {s}"));
    match kind {
        EventKind::StateChange { old, new } => format!("{old} → {new}"),
        EventKind::Retransmit { state, err: 0 } => format!("retransmit in {state}"),
        EventKind::Retransmit { state, err } => format!("retransmit failed ({err}) in {state}"),
        EventKind::RetransmitSynack => "SYN-ACK retransmit".to_owned(),
        EventKind::SendReset { state: s } => format!("RST sent {}", state(*s)),
        EventKind::ReceiveReset { state: s } => format!("RST received {}", state(*s)),
    }
}

/// One table line. An unreliable pid/comm (the task on the CPU during a softirq
/// transition of a socket whose owner is unknown) is marked with `*`.
pub fn human_line(
    clock: WallClock,
    event: &TcpEvent,
    owner: Option<Owner>,
    time_in_old_state_ns: Option<u64>,
) -> String {
    let (pid, comm, _, reliable) = who(event, owner);
    let pid = format!("{pid}{}", if reliable { "" } else { "*" });
    format!(
        "{} {:<7} {:<16} {:<38} {:<38} {:<26} {}",
        clock.local_time_of_day(event.ts_ns),
        pid,
        comm.as_str(),
        event.local.to_string(),
        event.remote.to_string(),
        describe(&event.kind),
        time_in_old_state_ns.map(human_duration).unwrap_or_default()
    )
    .trim_end()
    .to_owned()
}

/// The note printed under the header, explaining `*`.
pub const LEGEND: &str = "(* pid/comm is the task that was on the CPU, often a softirq, \
                          not the socket's owner)";

#[derive(Serialize)]
struct JsonEvent<'a> {
    time: String,
    ts_ns: u64,
    event: &'static str,
    family: &'static str,
    local: String,
    remote: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_state: Option<TcpState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_state: Option<TcpState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<TcpState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    err: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_in_old_state_ns: Option<u64>,
    pid: u32,
    comm: &'a Comm,
    cgroup_id: u64,
    /// false: pid/comm are the task on the CPU, not the owner.
    pid_reliable: bool,
    /// The socket's network namespace (inode number; 0: unknown).
    netns: u32,
    /// The socket's own cgroup v2 id (its creator's, whatever task was on the CPU).
    sock_cgroup_id: u64,
    /// The connection it belongs to (`/api/connections/{id}`); none for a listener's
    /// or a RST sent without a socket. The kernel's socket address never leaves the
    /// process: it would defeat KASLR.
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<u64>,
}

pub fn json_line(clock: WallClock, event: &TcpEvent, applied: &Applied) -> String {
    let (owner, time_in_old_state_ns) = (applied.owner, applied.time_in_old_state_ns);
    let (pid, comm, cgroup_id, reliable) = who(event, owner);
    let (old_state, new_state, state, err) = match event.kind {
        EventKind::StateChange { old, new } => (Some(old), Some(new), None, None),
        EventKind::Retransmit { state, err } => (None, None, Some(state), Some(err)),
        EventKind::RetransmitSynack => (None, None, Some(TcpState::NewSynRecv), None),
        EventKind::SendReset { state } | EventKind::ReceiveReset { state } => {
            (None, None, state, None)
        }
    };
    let line = JsonEvent {
        time: crate::clock::rfc3339(clock.to_system_time(event.ts_ns)),
        ts_ns: event.ts_ns,
        event: event.kind.name(),
        family: if event.local.is_ipv4() {
            "ipv4"
        } else {
            "ipv6"
        },
        local: event.local.to_string(),
        remote: event.remote.to_string(),
        old_state,
        new_state,
        state,
        err,
        time_in_old_state_ns,
        pid,
        comm: &comm,
        cgroup_id,
        pid_reliable: reliable,
        netns: event.netns,
        sock_cgroup_id: event.sock_cgroup_id,
        connection: applied.conn.map(|id| id.generation),
    };
    serde_json::to_string(&line).expect("plain data serializes")
}

/// A namespace's listen overflow, for people: what the counters gained since the
/// previous reconcile and the fullest listener then.
pub fn overflow_human_line(clock: WallClock, at_ns: u64, overflow: &ListenOverflow) -> String {
    let i = &overflow.increase;
    let mut line = format!(
        "{} LISTEN OVERFLOW  netns {}: {} connection attempts dropped on a full accept queue \
         (ListenOverflows +{}, ListenDrops +{}",
        clock.local_time_of_day(at_ns),
        overflow.netns,
        i.listen_overflows,
        i.listen_overflows,
        i.listen_drops
    );
    if i.syncookies_sent > 0 {
        line.push_str(&format!(", SyncookiesSent +{}", i.syncookies_sent));
    }
    line.push(')');
    if let Some(l) = &overflow.fullest {
        line.push_str(&format!(
            "; fullest listener {} queue {}/{}",
            l.local, l.accept_queue, l.accept_queue_limit
        ));
        if let Some(owner) = &l.owner {
            line.push_str(&format!(" pid {} {}", owner.pid, owner.comm));
        }
        if let Some(container) = l.workload.as_ref().and_then(|w| w.container.as_ref()) {
            line.push_str(&format!(" container {}", container.short_id()));
        }
    }
    line
}

#[derive(Serialize)]
struct JsonOverflow<'a> {
    time: String,
    ts_ns: u64,
    event: &'static str,
    netns: u32,
    #[serde(flatten)]
    increase: &'a ListenCounters,
    #[serde(skip_serializing_if = "Option::is_none")]
    fullest: Option<&'a ListenerHealth>,
}

/// A namespace's listen overflow as one JSON object (`"event": "listen_overflow"`),
/// with the counters' increases and the fullest listener.
pub fn overflow_json_line(clock: WallClock, at_ns: u64, overflow: &ListenOverflow) -> String {
    let line = JsonOverflow {
        time: crate::clock::rfc3339(clock.to_system_time(at_ns)),
        ts_ns: at_ns,
        event: "listen_overflow",
        netns: overflow.netns,
        increase: &overflow.increase,
        fullest: overflow.fullest.as_ref(),
    };
    serde_json::to_string(&line).expect("plain data serializes")
}

#[cfg(test)]
mod tests {
    use tcptrace_common::kind;

    use super::*;
    use crate::{
        decode::{decode_event, testing::raw_v4},
        tracker::ConnId,
    };

    fn event(kind: u8, old: u8, new: u8) -> TcpEvent {
        decode_event(&raw_v4(kind, old, new)).unwrap()
    }

    #[test]
    fn describes_every_kind() {
        assert_eq!(
            describe(&event(kind::STATE_CHANGE, 2, 1).kind),
            "SYN_SENT → ESTABLISHED"
        );
        assert_eq!(
            describe(&event(kind::RETRANSMIT, 1, 1).kind),
            "retransmit in ESTABLISHED"
        );
        assert_eq!(
            describe(&event(kind::SEND_RESET, 0, 0).kind),
            "RST sent no socket"
        );
        assert_eq!(
            describe(&event(kind::RECEIVE_RESET, 2, 2).kind),
            "RST received in SYN_SENT"
        );
        assert_eq!(
            describe(&event(kind::RETRANSMIT_SYNACK, 12, 12).kind),
            "SYN-ACK retransmit"
        );
    }

    #[test]
    fn human_line_marks_an_on_cpu_task_and_shows_time_in_old_state() {
        let clock = WallClock::new();
        let line = human_line(clock, &event(kind::STATE_CHANGE, 2, 1), None, Some(81_000));
        assert!(line.contains(" 4242*   curl "), "{line}");
        assert!(line.contains("127.0.0.1:50312"), "{line}");
        assert!(line.contains("127.0.0.2:8080"), "{line}");
        assert!(line.contains("SYN_SENT → ESTABLISHED"), "{line}");
        assert!(line.ends_with("0.081ms"), "{line}");
        // connect() runs in the owner's context: no mark.
        let line = human_line(clock, &event(kind::STATE_CHANGE, 7, 2), None, None);
        assert!(line.contains(" 4242    curl "), "{line}");
    }

    #[test]
    fn json_line_has_the_fields_programs_need() {
        let clock = WallClock::new();
        let owner = Owner {
            pid: 99,
            comm: Comm(*b"server\0\0\0\0\0\0\0\0\0\0"),
            cgroup_id: 3,
        };
        let applied = Applied {
            conn: Some(ConnId {
                skaddr: 0xffff_8880_1234_5678,
                generation: 17,
            }),
            owner: Some(owner),
            time_in_old_state_ns: Some(5),
            ..Applied::default()
        };
        let line = json_line(clock, &event(kind::STATE_CHANGE, 1, 8), &applied);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], "state_change");
        assert_eq!(value["old_state"], "ESTABLISHED");
        assert_eq!(value["new_state"], "CLOSE_WAIT");
        assert_eq!(value["local"], "127.0.0.1:50312");
        assert_eq!(value["remote"], "127.0.0.2:8080");
        assert_eq!(value["family"], "ipv4");
        assert_eq!(value["pid"], 99);
        assert_eq!(value["comm"], "server");
        assert_eq!(value["pid_reliable"], true);
        assert_eq!(value["netns"], 4_026_531_993_u32);
        assert_eq!(value["sock_cgroup_id"], 8);
        assert_eq!(value["time_in_old_state_ns"], 5);
        assert!(value["time"].as_str().unwrap().ends_with('Z'));
        assert!(value.get("err").is_none());
        // The connection by its opaque id; the kernel's address nowhere.
        assert_eq!(value["connection"], 17);
        assert!(value.get("skaddr").is_none());
        assert!(
            !line.contains("ffff8880") && !line.contains(&0xffff_8880_1234_5678_u64.to_string())
        );
    }

    #[test]
    fn a_listen_overflow_names_the_counters_and_the_fullest_listener() {
        use crate::detect::{LeakOwner, OwnerSource};
        let clock = WallClock::new();
        let mut overflow = ListenOverflow {
            netns: 4_026_532_881,
            increase: ListenCounters {
                listen_overflows: 15,
                listen_drops: 16,
                ..ListenCounters::default()
            },
            fullest: Some(ListenerHealth {
                netns: 4_026_532_881,
                workload: None,
                local: "127.0.0.1:5555".parse().unwrap(),
                inode: 7,
                accept_queue: 5,
                accept_queue_limit: 4,
                fill_ratio: 1.0,
                syn_recv: 0,
                synack_retransmits: 0,
                owner: Some(LeakOwner {
                    pid: 99,
                    comm: "server".into(),
                    cgroup: None,
                    source: OwnerSource::Proc,
                }),
            }),
        };
        let line = overflow_human_line(clock, 5, &overflow);
        assert!(
            line.ends_with(
                " LISTEN OVERFLOW  netns 4026532881: 15 connection attempts dropped on a full \
                 accept queue (ListenOverflows +15, ListenDrops +16); fullest listener \
                 127.0.0.1:5555 queue 5/4 pid 99 server"
            ),
            "{line}"
        );
        let value: serde_json::Value =
            serde_json::from_str(&overflow_json_line(clock, 5, &overflow)).unwrap();
        assert_eq!(value["event"], "listen_overflow");
        assert_eq!(value["netns"], 4_026_532_881_u32);
        assert_eq!(value["listen_overflows"], 15);
        assert_eq!(value["listen_drops"], 16);
        assert_eq!(value["fullest"]["local"], "127.0.0.1:5555");
        assert_eq!(value["fullest"]["accept_queue"], 5);
        assert_eq!(value["fullest"]["owner"]["pid"], 99);
        overflow.fullest = None;
        let line = overflow_human_line(clock, 5, &overflow);
        assert!(line.ends_with("ListenDrops +16)"), "{line}");
        let value: serde_json::Value =
            serde_json::from_str(&overflow_json_line(clock, 5, &overflow)).unwrap();
        assert!(value.get("fullest").is_none());
    }
}
