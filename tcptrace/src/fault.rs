//! A test hook: `TCPTRACE_INJECT_PANIC=<point>` makes the named part of the daemon panic,
//! so that the tests can check what a real bug would do (exit non-zero, leave nothing
//! attached). Unset, it costs one environment lookup per call site at start.

use std::sync::OnceLock;

/// Where a panic can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// The HTTP handler of `/healthz`.
    Http,
    /// The loop that owns the table, at its first tick.
    Engine,
}

fn injected() -> Option<&'static str> {
    static POINT: OnceLock<Option<String>> = OnceLock::new();
    POINT
        .get_or_init(|| std::env::var("TCPTRACE_INJECT_PANIC").ok())
        .as_deref()
}

/// Panics if the environment asks for a panic at `point`.
pub fn maybe_panic(point: Point) {
    let name = match point {
        Point::Http => "http",
        Point::Engine => "engine",
    };
    if injected() == Some(name) {
        panic!("injected panic at {name} (TCPTRACE_INJECT_PANIC)");
    }
}
