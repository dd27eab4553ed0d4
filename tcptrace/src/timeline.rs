//! How `watch --timelines` prints a finished connection: its story on one line, and for
//! two ends on this host, the textbook sequence diagram.

use std::net::SocketAddr;

use serde::Serialize;

use crate::{
    api::OwnerView,
    clock::human_duration,
    state::TcpState::{self, *},
    tracker::{
        classify, close_shape, CloseKind,
        CloseKind::{KeepaliveTimeout, SynTimeout, TimedOut, Unreachable},
        CloseShape, CloseStats, Connection, Direction, Lifecycle, Mark, MarkKind, Step,
    },
};

fn owner_text(conn: &Connection) -> String {
    conn.owner().map_or("owner unknown".to_owned(), |o| {
        format!("pid {} {}", o.pid, o.comm.as_str())
    })
}

/// `SYN_SENT 0.08ms → ESTABLISHED 2.1s → FIN_WAIT1 0.03ms → FIN_WAIT2 0.01ms → TIME_WAIT`
pub fn steps_text(conn: &Connection, life: &Lifecycle) -> String {
    let mut parts = Vec::new();
    for (i, (step, duration)) in conn.durations().enumerate() {
        // The state before connect()/accept is not part of the story.
        if i == 0 && !conn.seen_since_start && matches!(step.state, Close | Listen) {
            continue;
        }
        let name = if step.state == Close && life.time_wait {
            "TIME_WAIT".to_owned()
        } else {
            step.state.to_string()
        };
        let at_least = if i == 0 && conn.seen_since_start {
            "≥"
        } else {
            ""
        };
        parts.push(match duration {
            Some(ns) => format!("{name} {at_least}{}", human_duration(ns)),
            None => name,
        });
    }
    parts.join(" → ")
}

/// The serde name of a unit variant, in words: `active_close` → `active close`.
pub fn words(value: impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name.replace('_', " "),
        _ => String::new(),
    }
}

fn close_text(life: &Lifecycle) -> String {
    let close = life.close.map_or("still open".to_owned(), words);
    let handshake = life
        .handshake_ns
        .map(|ns| format!(", handshake {}", human_duration(ns)))
        .unwrap_or_default();
    format!("{} open{handshake}, {close}", words(life.direction))
}

/// What a finished connection carried, as tcplife prints it (TX_KB RX_KB MS), with the
/// kernel's RTT, retransmits and the error it ended with: `tx 1000 B, rx 14.2 KiB,
/// 5.0ms, srtt 0.03ms, 2 retransmits, ETIMEDOUT`. Empty while it lives or when the kernel did not say.
pub fn carried_text(conn: &Connection) -> String {
    let Some(stats) = conn.closed_with() else {
        return String::new();
    };
    let life = conn
        .lifetime_ns()
        .map(|ns| format!(", {}", human_duration(ns)))
        .unwrap_or_default();
    let mut text = format!(
        "tx {}, rx {}{life}",
        human_bytes(stats.bytes_sent),
        human_bytes(stats.bytes_received)
    );
    if stats.unacked_bytes > 0 {
        text += &format!(
            ", {} never acknowledged",
            human_bytes(stats.unacked_bytes.into())
        );
    }
    if stats.srtt_us > 0 {
        text += &format!(
            ", srtt {}",
            human_duration(u64::from(stats.srtt_us) * 1_000)
        );
    }
    if stats.total_retransmits > 0 {
        text += &format!(", {} retransmits", stats.total_retransmits);
    }
    if let Some(error) = stats.error_name() {
        text += &format!(", {error}");
    }
    text
}

/// Exact bytes up to 10 KiB, then KiB/MiB/GiB with one decimal.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes < 10 * 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Two lines (three when the kernel said what it carried): the 4-tuple, owner and
/// classification, then the states, then what it carried.
pub fn human(conn: &Connection) -> String {
    let life = classify(conn);
    let since = if conn.seen_since_start {
        " (seen since start)"
    } else {
        ""
    };
    let carried = carried_text(conn);
    let carried = if carried.is_empty() {
        carried
    } else {
        format!("\n    {carried}")
    };
    format!(
        "{} → {}  netns {}  {}  {}{since}\n    {}{carried}",
        conn.local(),
        conn.remote(),
        conn.netns,
        owner_text(conn),
        close_text(&life),
        steps_text(conn, &life)
    )
}

/// The segment an end sends when it makes this transition (RFC 793 figure 6).
fn segment_sent(old: TcpState, new: TcpState, shape: Option<CloseShape>) -> Option<&'static str> {
    let three_way = shape == Some(CloseShape::ThreeWay);
    Some(match (old, new) {
        (Close, SynSent) => "SYN",
        (Listen, SynRecv) => "SYN+ACK",
        (SynSent, Established) => "ACK",
        (Established, FinWait1) => "FIN",
        (Established, CloseWait) if !three_way => "ACK",
        (CloseWait, LastAck) if three_way => "FIN+ACK",
        (CloseWait, LastAck) => "FIN",
        (FinWait1, Closing) | (FinWait2, Close) | (Closing, Close) => "ACK",
        _ => return None,
    })
}

const ARROW: usize = 26;

/// Which end of a pair a diagram row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum End {
    /// The active opener, drawn on the left.
    Client,
    /// The end a listener accepted, drawn on the right.
    Server,
}

/// One state change of one end, where the diagram draws it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagramStep {
    /// Where the row sorts (CLOCK_MONOTONIC ns): when the segment went out, which is not
    /// always when the state was entered (see [`SequenceDiagram::of`]).
    pub at_ns: u64,
    pub end: End,
    /// The state entered (TIME_WAIT for a close through it).
    pub state: TcpState,
    /// The segment this end sent as it entered `state`.
    pub segment: Option<&'static str>,
    /// How long the end stayed in `state`; `None` while it is still there, or for its
    /// last state.
    pub lasted_ns: Option<u64>,
}

/// A retransmit or reset of one end, where it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiagramMark {
    pub at_ns: u64,
    pub end: End,
    pub kind: MarkKind,
}

/// Two local ends of one connection, as the textbook draws them: the rows the text
/// diagram (`watch --timelines`) and the web view's SVG both draw. Plain data, with no
/// kernel address in it.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceDiagram {
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// In the order they happened (the client first on a tie).
    pub steps: Vec<DiagramStep>,
    /// In the order they happened.
    pub marks: Vec<DiagramMark>,
    pub shape: Option<CloseShape>,
    /// The ends the kernel gave up on, and why: tells more than the segments' shape.
    pub gave_up: Vec<(End, CloseKind)>,
}

impl SequenceDiagram {
    /// The diagram of two local ends, `client` the active opener.
    pub fn of(client: &Connection, server: &Connection) -> SequenceDiagram {
        let (active, passive) = if entered_first(client, server, FinWait1) {
            (client, server)
        } else {
            (server, client)
        };
        let shape = close_shape(active, passive);
        // Linux makes the child socket (LISTEN → SYN_RECV) only when the handshake's last
        // ACK arrives; until then the half-open connection is a request socket that
        // already sent the SYN+ACK. Draw that SYN+ACK where it was sent: right after the
        // SYN.
        let syn_sent = client
            .steps()
            .iter()
            .find(|s| s.state == SynSent)
            .map(|s| s.entered_ns);
        let mut steps = Vec::new();
        let mut marks = Vec::new();
        let mut gave_up = Vec::new();
        for (conn, end) in [(client, End::Client), (server, End::Server)] {
            let life = classify(conn);
            let conn_steps = conn.steps();
            for (i, pair) in conn_steps.windows(2).enumerate() {
                let (old, new) = (pair[0].state, pair[1].state);
                let shown = if new == Close && life.time_wait {
                    TimeWait
                } else {
                    new
                };
                let at_ns = match (old, new, syn_sent) {
                    (Listen, SynRecv, Some(syn)) => syn,
                    // An orphan hands over to its timewait socket before the peer's FIN;
                    // the ACK of that FIN comes later, from the timewait socket.
                    (FinWait2, Close, _) if shown == TimeWait => pair[1]
                        .entered_ns
                        .max(peer_fin(if end == End::Client { server } else { client }) + 1),
                    _ => pair[1].entered_ns,
                };
                let lasted_ns = conn_steps
                    .get(i + 2)
                    .map(|next| next.entered_ns.saturating_sub(pair[1].entered_ns));
                steps.push(DiagramStep {
                    at_ns,
                    end,
                    state: shown,
                    segment: segment_sent(old, new, shape),
                    lasted_ns,
                });
            }
            marks.extend(conn.marks().iter().map(|m| DiagramMark {
                at_ns: m.at_ns,
                end,
                kind: m.kind,
            }));
            if let Some(kind @ (SynTimeout | TimedOut | KeepaliveTimeout | Unreachable)) =
                life.close
            {
                gave_up.push((end, kind));
            }
        }
        steps.sort_by_key(|s| (s.at_ns, s.end == End::Server));
        marks.sort_by_key(|m| (m.at_ns, m.end == End::Server));
        SequenceDiagram {
            client: client.local(),
            server: server.local(),
            steps,
            marks,
            shape,
            gave_up,
        }
    }
}

/// The sequence diagram of two local ends, client (active opener) on the left.
pub fn sequence_diagram(client: &Connection, server: &Connection) -> String {
    let diagram = SequenceDiagram::of(client, server);
    let client_title = format!("client {}", diagram.client);
    let mut out = format!(
        "{client_title:<14}{:^width$}server {}\n",
        "",
        diagram.server,
        width = ARROW + 4
    );
    for step in &diagram.steps {
        let left = step.end == End::Client;
        let arrow = match (step.segment, left) {
            // Every arrow is ARROW characters wide: 2 + segment + dashes + 1.
            (Some(seg), true) => format!("──{seg}{}▶", "─".repeat(ARROW - seg.len() - 3)),
            (Some(seg), false) => format!("◀{}{seg}──", "─".repeat(ARROW - seg.len() - 3)),
            (None, _) => " ".repeat(ARROW),
        };
        let (l, r) = if left {
            (step.state.to_string(), String::new())
        } else {
            (String::new(), step.state.to_string())
        };
        out.push_str(format!("  {l:<14}{arrow}  {r}").trim_end());
        out.push('\n');
    }
    if let Some(shape) = diagram.shape {
        out.push_str(&format!("  close: {}\n", words(shape)));
    }
    for (end, kind) in &diagram.gave_up {
        out.push_str(&format!("  {}: {}\n", words(end), words(kind)));
    }
    out
}

/// When `conn` sent its FIN as the passive closer (0 if it did not).
fn peer_fin(conn: &Connection) -> u64 {
    conn.steps()
        .iter()
        .find(|s| s.state == LastAck)
        .map_or(0, |s| s.entered_ns)
}

fn entered_first(a: &Connection, b: &Connection, state: TcpState) -> bool {
    let at = |c: &Connection| {
        c.steps()
            .iter()
            .find(|s| s.state == state)
            .map(|s| s.entered_ns)
    };
    match (at(a), at(b)) {
        (Some(x), Some(y)) => x <= y,
        (Some(_), None) => true,
        _ => false,
    }
}

/// A connection's timeline as JSON shows it: a view, not the tracker's struct, so that
/// nothing internal leaves the process (the kernel's socket address least of all: it
/// would defeat KASLR). Connections are named by their opaque id.
#[derive(Serialize)]
struct JsonTimeline<'a> {
    /// For `/api/connections/{id}`: unique for the daemon's life.
    id: u64,
    netns: u32,
    cgroup_id: u64,
    local: SocketAddr,
    remote: SocketAddr,
    direction: Direction,
    owner: Option<OwnerView>,
    steps: &'a [Step],
    marks: &'a [Mark],
    retransmits: u32,
    seen_since_start: bool,
    vanished: bool,
    illegal: &'a [(TcpState, TcpState)],
    closed_with: Option<&'a CloseStats>,
    lifecycle: Lifecycle,
    /// The other end's id, when it is on this host too.
    #[serde(skip_serializing_if = "Option::is_none")]
    peer: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_shape: Option<CloseShape>,
}

/// One line of JSON: [`json_value`] as text.
pub fn json(conn: &Connection, partner: Option<&Connection>) -> String {
    json_value(conn, partner).to_string()
}

/// The connection with its lifecycle, its peer's id and the close's shape when the
/// peer is on this host too.
pub fn json_value(conn: &Connection, partner: Option<&Connection>) -> serde_json::Value {
    let close_shape = partner.and_then(|p| {
        if entered_first(conn, p, FinWait1) {
            close_shape(conn, p)
        } else {
            close_shape(p, conn)
        }
    });
    serde_json::to_value(JsonTimeline {
        id: conn.id.generation,
        netns: conn.netns,
        cgroup_id: conn.cgroup_id,
        local: conn.local(),
        remote: conn.remote(),
        direction: conn.direction,
        owner: conn.owner().map(OwnerView::from),
        steps: &conn.steps(),
        marks: conn.marks(),
        retransmits: conn.retransmits(),
        seen_since_start: conn.seen_since_start,
        vanished: conn.vanished,
        illegal: conn.illegal(),
        closed_with: conn.closed_with(),
        lifecycle: classify(conn),
        peer: partner.map(|p| p.id.generation),
        close_shape,
    })
    .expect("plain data serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(skaddr: u64, local: &str, remote: &str, steps: &[(TcpState, u64)]) -> Connection {
        crate::testing::connection_through(skaddr, (local, remote), steps, 1_000_000)
    }

    fn pair() -> (Connection, Connection) {
        let client = conn(
            1,
            "127.0.0.1:40000",
            "127.0.0.1:80",
            &[
                (Close, 0),
                (SynSent, 0),
                (Established, 2),
                (FinWait1, 10),
                (FinWait2, 11),
                (Close, 11),
            ],
        );
        let server = conn(
            2,
            "127.0.0.1:80",
            "127.0.0.1:40000",
            &[
                (Listen, 0),
                (SynRecv, 1),
                (Established, 3),
                (CloseWait, 10),
                (LastAck, 20),
                (Close, 21),
            ],
        );
        (client, server)
    }

    #[test]
    fn one_connection_reads_as_a_story() {
        let (client, _) = pair();
        let text = human(&client);
        assert_eq!(
            text,
            "127.0.0.1:40000 → 127.0.0.1:80  netns 4026531840  owner unknown  active open, handshake 2.00ms, \
             active close\n    SYN_SENT 2.00ms → ESTABLISHED 8.00ms → FIN_WAIT1 1.00ms → \
             FIN_WAIT2 0.000ms → TIME_WAIT"
        );
    }

    #[test]
    fn two_local_ends_draw_the_textbook_diagram() {
        let (client, server) = pair();
        let diagram = sequence_diagram(&client, &server);
        let lines: Vec<&str> = diagram.lines().map(str::trim_end).collect();
        let expected = [
            "  SYN_SENT      ──SYN────────────────────▶",
            "                ◀────────────────SYN+ACK──  SYN_RECV",
            "  ESTABLISHED   ──ACK────────────────────▶",
            "                                            ESTABLISHED",
            "  FIN_WAIT1     ──FIN────────────────────▶",
            "                ◀────────────────────ACK──  CLOSE_WAIT",
            "  FIN_WAIT2",
            "                ◀────────────────────FIN──  LAST_ACK",
            "  TIME_WAIT     ──ACK────────────────────▶",
            "                                            CLOSE",
            "  close: four way",
        ];
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["client", "127.0.0.1:40000", "server", "127.0.0.1:80"]
        );
        assert_eq!(&lines[1..], expected, "\n{diagram}");
    }

    #[test]
    fn each_diagram_step_says_how_long_its_end_stayed() {
        let (client, server) = pair();
        let diagram = SequenceDiagram::of(&client, &server);
        let ms = |ns: Option<u64>| ns.map(|ns| ns / 1_000_000);
        assert_eq!(
            diagram
                .steps
                .iter()
                .map(|s| (s.end, s.state, ms(s.lasted_ns)))
                .collect::<Vec<_>>(),
            [
                (End::Client, SynSent, Some(2)),
                (End::Server, SynRecv, Some(2)),
                (End::Client, Established, Some(8)),
                (End::Server, Established, Some(7)),
                (End::Client, FinWait1, Some(1)),
                (End::Server, CloseWait, Some(10)),
                (End::Client, FinWait2, Some(0)),
                (End::Server, LastAck, Some(1)),
                (End::Client, TimeWait, None),
                (End::Server, Close, None),
            ]
        );
        assert_eq!(diagram.shape, Some(CloseShape::FourWay));
        assert_eq!(diagram.gave_up, []);
    }

    #[test]
    fn json_carries_the_classification_and_the_peer() {
        let (client, server) = pair();
        let value: serde_json::Value = serde_json::from_str(&json(&client, Some(&server))).unwrap();
        assert_eq!(value["lifecycle"]["close"], "active_close");
        assert_eq!(value["lifecycle"]["time_wait"], true);
        assert_eq!(value["lifecycle"]["direction"], "active");
        assert_eq!(value["close_shape"], "four_way");
        assert_eq!(value["peer"], 2);
        assert!(value.get("skaddr").is_none() && value["id"].is_u64());
        assert_eq!(value["steps"][1]["state"], "SYN_SENT");
    }
}
