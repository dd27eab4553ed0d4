//! The sequence diagram of two local ends as SVG, laid out here (not in the browser) so
//! that the layout is plain data a unit test can check: the client's lifeline on the
//! left, the server's on the right, one row per state change or mark in the order they
//! happened, each state beside the arrow of the segment its end sent, with how long the
//! end stayed there; retransmits and resets marked on the lifeline of the end they
//! happened to.

use std::fmt::Write as _;

use crate::{
    clock::human_duration,
    timeline::{words, DiagramMark, DiagramStep, End, SequenceDiagram},
    tracker::MarkKind,
};

pub const WIDTH: i32 = 760;
const CLIENT_X: i32 = 250;
const SERVER_X: i32 = 550;
/// Where a state's name stands off its lifeline.
const LABEL_GAP: i32 = 12;
const TIME_X: i32 = 8;
const TITLE_Y: i32 = 22;
const FIRST_ROW_Y: i32 = 62;
const ROW: i32 = 36;
/// How far an arrow drops from its sender to its receiver: the time a segment travels.
const ARROW_DROP: i32 = 14;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// One thing drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    Text {
        x: i32,
        y: i32,
        anchor: Anchor,
        /// `state`, `duration`, `segment`, `mark`, `time`, `title`, `note`.
        class: &'static str,
        /// The end it belongs to, for states and marks.
        end: Option<End>,
        text: String,
    },
    /// A lifeline.
    Line { x: i32, y1: i32, y2: i32 },
    /// A segment on the wire; `reset` draws it dashed, in the reset colour.
    Arrow {
        x1: i32,
        y1: i32,
        x2: i32,
        y2: i32,
        reset: bool,
    },
    /// A mark on a lifeline.
    Dot { x: i32, y: i32, class: &'static str },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub width: i32,
    pub height: i32,
    pub title: String,
    pub shapes: Vec<Shape>,
}

/// A row: a state change or a mark.
#[derive(Clone, Copy)]
enum Row {
    Step(DiagramStep),
    Mark(DiagramMark),
}

impl Row {
    fn order(&self) -> (u64, bool, bool) {
        match self {
            Row::Step(s) => (s.at_ns, s.end == End::Server, false),
            Row::Mark(m) => (m.at_ns, m.end == End::Server, true),
        }
    }
}

fn lifeline_x(end: End) -> i32 {
    match end {
        End::Client => CLIENT_X,
        End::Server => SERVER_X,
    }
}

/// Where an end's labels stand: outside its lifeline, away from the arrows.
fn label_at(end: End) -> (i32, Anchor) {
    match end {
        End::Client => (CLIENT_X - LABEL_GAP, Anchor::End),
        End::Server => (SERVER_X + LABEL_GAP, Anchor::Start),
    }
}

fn other(end: End) -> End {
    match end {
        End::Client => End::Server,
        End::Server => End::Client,
    }
}

fn text(
    x: i32,
    y: i32,
    anchor: Anchor,
    class: &'static str,
    end: Option<End>,
    text: String,
) -> Shape {
    Shape::Text {
        x,
        y,
        anchor,
        class,
        end,
        text,
    }
}

fn mark_label(kind: MarkKind) -> &'static str {
    match kind {
        MarkKind::Retransmit => "retransmit",
        MarkKind::RetransmitFailed => "retransmit failed",
        MarkKind::RetransmitSynack => "SYN+ACK retransmit",
        MarkKind::ResetSent => "RST sent",
        MarkKind::ResetReceived => "RST received",
    }
}

/// Lays the diagram out.
pub fn layout(diagram: &SequenceDiagram) -> Layout {
    let mut rows: Vec<Row> = diagram.steps.iter().copied().map(Row::Step).collect();
    rows.extend(diagram.marks.iter().copied().map(Row::Mark));
    rows.sort_by_key(Row::order);
    let start_ns = rows.first().map_or(0, |r| r.order().0);
    let mut shapes = vec![
        text(
            CLIENT_X,
            TITLE_Y,
            Anchor::Middle,
            "title",
            Some(End::Client),
            format!("client {}", diagram.client),
        ),
        text(
            SERVER_X,
            TITLE_Y,
            Anchor::Middle,
            "title",
            Some(End::Server),
            format!("server {}", diagram.server),
        ),
    ];
    let mut y = FIRST_ROW_Y;
    for row in &rows {
        let at_ns = row.order().0;
        shapes.push(text(
            TIME_X,
            y,
            Anchor::Start,
            "time",
            None,
            format!("+{}", human_duration(at_ns.saturating_sub(start_ns))),
        ));
        match row {
            Row::Step(step) => step_shapes(step, y, &mut shapes),
            Row::Mark(mark) => mark_shapes(mark, y, &mut shapes),
        }
        y += ROW;
    }
    let lifelines_end = y - ROW / 2;
    shapes.push(Shape::Line {
        x: CLIENT_X,
        y1: TITLE_Y + 10,
        y2: lifelines_end,
    });
    shapes.push(Shape::Line {
        x: SERVER_X,
        y1: TITLE_Y + 10,
        y2: lifelines_end,
    });
    let mut notes = Vec::new();
    if let Some(shape) = diagram.shape {
        notes.push(format!("close: {}", words(shape)));
    }
    for (end, kind) in &diagram.gave_up {
        notes.push(format!("{}: {}", words(end), words(kind)));
    }
    for note in notes {
        shapes.push(text(TIME_X, y, Anchor::Start, "note", None, note));
        y += ROW / 2;
    }
    Layout {
        width: WIDTH,
        height: y,
        title: format!(
            "Sequence diagram of client {} and server {}",
            diagram.client, diagram.server
        ),
        shapes,
    }
}

fn step_shapes(step: &DiagramStep, y: i32, shapes: &mut Vec<Shape>) {
    let (x, anchor) = label_at(step.end);
    shapes.push(text(
        x,
        y,
        anchor,
        "state",
        Some(step.end),
        step.state.to_string(),
    ));
    if let Some(ns) = step.lasted_ns {
        shapes.push(text(
            x,
            y + 13,
            anchor,
            "duration",
            Some(step.end),
            format!("for {}", human_duration(ns)),
        ));
    }
    if let Some(segment) = step.segment {
        arrow(step.end, y, segment, false, shapes);
    }
}

fn mark_shapes(mark: &DiagramMark, y: i32, shapes: &mut Vec<Shape>) {
    let reset = matches!(mark.kind, MarkKind::ResetSent | MarkKind::ResetReceived);
    let class = if reset { "reset" } else { "retransmit" };
    shapes.push(Shape::Dot {
        x: lifeline_x(mark.end),
        y: y - 4,
        class,
    });
    let (x, anchor) = label_at(mark.end);
    shapes.push(text(
        x,
        y,
        anchor,
        "mark",
        Some(mark.end),
        mark_label(mark.kind).to_owned(),
    ));
    if mark.kind == MarkKind::ResetSent {
        arrow(mark.end, y, "RST", true, shapes);
    }
}

/// A segment from `from`'s lifeline to the other's, its name above the middle.
fn arrow(from: End, y: i32, segment: &str, reset: bool, shapes: &mut Vec<Shape>) {
    let (x1, x2) = (lifeline_x(from), lifeline_x(other(from)));
    shapes.push(Shape::Arrow {
        x1,
        y1: y - 4,
        x2,
        y2: y - 4 + ARROW_DROP,
        reset,
    });
    shapes.push(text(
        (x1 + x2) / 2,
        y - 2,
        Anchor::Middle,
        "segment",
        Some(from),
        segment.to_owned(),
    ));
}

/// Text as XML character data or an attribute value.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn end_name(end: End) -> &'static str {
    match end {
        End::Client => "client",
        End::Server => "server",
    }
}

/// The layout as an SVG document. Colours are presentation attributes, not `style`
/// attributes, which the web view's Content-Security-Policy would refuse; the page's
/// stylesheet refines them through the classes.
pub fn to_svg(layout: &Layout) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"sequence\" width=\"{w}\" \
         height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\
         <title>{title}</title>\
         <defs><marker id=\"arrowhead\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
         markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\">\
         <path d=\"M0,0 L10,5 L0,10 z\" fill=\"context-stroke\"/></marker></defs>",
        w = layout.width,
        h = layout.height,
        title = escape(&layout.title),
    );
    for shape in &layout.shapes {
        match shape {
            Shape::Text {
                x,
                y,
                anchor,
                class,
                end,
                text,
            } => {
                let anchor = match anchor {
                    Anchor::Start => "start",
                    Anchor::Middle => "middle",
                    Anchor::End => "end",
                };
                let end = end
                    .map(|e| format!(" data-end=\"{}\"", end_name(e)))
                    .unwrap_or_default();
                let _ = write!(
                    out,
                    "<text x=\"{x}\" y=\"{y}\" text-anchor=\"{anchor}\" class=\"{class}\"{end}>{}</text>",
                    escape(text)
                );
            }
            Shape::Line { x, y1, y2 } => {
                let _ = write!(
                    out,
                    "<line x1=\"{x}\" y1=\"{y1}\" x2=\"{x}\" y2=\"{y2}\" class=\"lifeline\" \
                     stroke=\"#888\" stroke-width=\"2\"/>"
                );
            }
            Shape::Arrow {
                x1,
                y1,
                x2,
                y2,
                reset,
            } => {
                let (class, colour, dash) = if *reset {
                    ("arrow reset", "#c0392b", " stroke-dasharray=\"5 3\"")
                } else {
                    ("arrow", "#2c3e50", "")
                };
                let _ = write!(
                    out,
                    "<line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" class=\"{class}\" \
                     stroke=\"{colour}\" stroke-width=\"1.5\"{dash} marker-end=\"url(#arrowhead)\"/>"
                );
            }
            Shape::Dot { x, y, class } => {
                let colour = if *class == "reset" {
                    "#c0392b"
                } else {
                    "#d68910"
                };
                let _ = write!(
                    out,
                    "<circle cx=\"{x}\" cy=\"{y}\" r=\"5\" class=\"dot {class}\" fill=\"{colour}\"/>"
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

/// The diagram as an SVG document.
pub fn render(diagram: &SequenceDiagram) -> String {
    to_svg(&layout(diagram))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{state::TcpState::*, tracker::CloseShape};

    const MS: u64 = 1_000_000;

    fn step(
        at_ms: u64,
        end: End,
        state: crate::state::TcpState,
        segment: Option<&'static str>,
        lasted_ms: Option<u64>,
    ) -> DiagramStep {
        DiagramStep {
            at_ns: at_ms * MS,
            end,
            state,
            segment,
            lasted_ns: lasted_ms.map(|ms| ms * MS),
        }
    }

    /// A synthetic pair: a handshake, one retransmit of the client, and a reset
    /// from the server.
    fn diagram() -> SequenceDiagram {
        SequenceDiagram {
            client: "127.0.0.1:40000".parse().unwrap(),
            server: "127.0.0.1:80".parse().unwrap(),
            steps: vec![
                step(0, End::Client, SynSent, Some("SYN"), Some(2)),
                step(0, End::Server, SynRecv, Some("SYN+ACK"), Some(3)),
                step(2, End::Client, Established, Some("ACK"), Some(8)),
                step(3, End::Server, Established, None, Some(7)),
                step(10, End::Server, Close, None, None),
                step(10, End::Client, Close, None, None),
            ],
            marks: vec![
                DiagramMark {
                    at_ns: 5 * MS,
                    end: End::Client,
                    kind: MarkKind::Retransmit,
                },
                DiagramMark {
                    at_ns: 10 * MS,
                    end: End::Server,
                    kind: MarkKind::ResetSent,
                },
            ],
            shape: Some(CloseShape::FourWay),
            gave_up: vec![],
        }
    }

    fn texts(layout: &Layout, class: &str) -> Vec<(Option<End>, i32, i32, String)> {
        layout
            .shapes
            .iter()
            .filter_map(|s| match s {
                Shape::Text {
                    x,
                    y,
                    class: c,
                    end,
                    text,
                    ..
                } if *c == class => Some((*end, *x, *y, text.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn states_stand_beside_their_ends_in_the_order_they_happened() {
        let layout = layout(&diagram());
        let (c, s) = (Some(End::Client), Some(End::Server));
        assert_eq!(
            texts(&layout, "state"),
            [
                (c, 238, 62, "SYN_SENT".into()),
                (s, 562, 98, "SYN_RECV".into()),
                (c, 238, 134, "ESTABLISHED".into()),
                (s, 562, 170, "ESTABLISHED".into()),
                (c, 238, 242, "CLOSE".into()),
                (s, 562, 278, "CLOSE".into()),
            ]
        );
        assert_eq!(
            texts(&layout, "duration"),
            [
                (c, 238, 75, "for 2.00ms".into()),
                (s, 562, 111, "for 3.00ms".into()),
                (c, 238, 147, "for 8.00ms".into()),
                (s, 562, 183, "for 7.00ms".into()),
            ]
        );
        // The retransmit between the handshake and the close; the reset last of the
        // rows at 10 ms (the client first on a tie, states before marks).
        assert_eq!(
            texts(&layout, "mark"),
            [
                (c, 238, 206, "retransmit".into()),
                (s, 562, 314, "RST sent".into()),
            ]
        );
        assert_eq!(
            texts(&layout, "time")
                .into_iter()
                .map(|t| t.3)
                .collect::<Vec<_>>(),
            [
                "+0.000ms", "+0.000ms", "+2.00ms", "+3.00ms", "+5.00ms", "+10.00ms", "+10.00ms",
                "+10.00ms"
            ]
        );
        assert_eq!(
            texts(&layout, "note"),
            [(None, 8, 350, "close: four way".into())]
        );
        assert_eq!((layout.width, layout.height), (760, 368));
    }

    #[test]
    fn arrows_run_from_the_sender_to_the_other_end() {
        let layout = layout(&diagram());
        let arrows: Vec<_> = layout
            .shapes
            .iter()
            .filter(|s| matches!(s, Shape::Arrow { .. }))
            .cloned()
            .collect();
        let arrow = |x1, y1, x2, reset| Shape::Arrow {
            x1,
            y1,
            x2,
            y2: y1 + 14,
            reset,
        };
        assert_eq!(
            arrows,
            [
                arrow(250, 58, 550, false),
                arrow(550, 94, 250, false),
                arrow(250, 130, 550, false),
                arrow(550, 310, 250, true),
            ]
        );
        assert_eq!(
            texts(&layout, "segment")
                .into_iter()
                .map(|t| (t.0, t.1, t.3))
                .collect::<Vec<_>>(),
            [
                (Some(End::Client), 400, "SYN".into()),
                (Some(End::Server), 400, "SYN+ACK".into()),
                (Some(End::Client), 400, "ACK".into()),
                (Some(End::Server), 400, "RST".into()),
            ]
        );
        let dots: Vec<_> = layout
            .shapes
            .iter()
            .filter(|s| matches!(s, Shape::Dot { .. }))
            .cloned()
            .collect();
        assert_eq!(
            dots,
            [
                Shape::Dot {
                    x: 250,
                    y: 202,
                    class: "retransmit"
                },
                Shape::Dot {
                    x: 550,
                    y: 310,
                    class: "reset"
                },
            ]
        );
    }

    #[test]
    fn the_document_escapes_text_and_names_each_end() {
        let mut diagram = diagram();
        diagram.steps.truncate(1);
        diagram.marks.clear();
        diagram.shape = None;
        diagram.client = "[::1]:40000".parse().unwrap();
        let svg = render(&diagram);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"sequence\" width=\"760\" height=\"98\""), "{svg}");
        assert!(svg.contains(
            "<title>Sequence diagram of client [::1]:40000 and server 127.0.0.1:80</title>"
        ));
        assert!(svg.contains(
            "<text x=\"238\" y=\"62\" text-anchor=\"end\" class=\"state\" data-end=\"client\">SYN_SENT</text>"
        ), "{svg}");
        assert!(svg.contains(
            "<text x=\"400\" y=\"60\" text-anchor=\"middle\" class=\"segment\" data-end=\"client\">SYN</text>"
        ), "{svg}");
        assert!(svg.ends_with("</svg>"));
        assert_eq!(
            escape("a<b & \"c\" 'd'>"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"
        );
    }
}
