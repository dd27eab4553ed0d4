//! Test hooks: `TCPTRACE_INJECT_PANIC=<point>` makes the named part of the daemon panic,
//! and `TCPTRACE_INJECT_STALL=engine` makes the loop that owns the table stop answering
//! for a while, so that the tests can check what a real bug would do (exit non-zero,
//! leave nothing attached, time requests out). Unset, they cost one environment lookup
//! each, once.

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

/// How long an injected stall lasts: longer than the HTTP request timeout.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(15);

/// Blocks the calling thread for [`STALL`] if the environment asks for a stall.
pub fn maybe_stall() {
    static STALLING: OnceLock<bool> = OnceLock::new();
    let stalling = *STALLING.get_or_init(|| {
        std::env::var("TCPTRACE_INJECT_STALL").is_ok_and(|point| point == "engine")
    });
    if stalling {
        std::thread::sleep(STALL);
    }
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
