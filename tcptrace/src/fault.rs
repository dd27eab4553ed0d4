//! Test hooks, only in a build with the `fault-injection` feature (the tests' build:
//! `cargo xtask test`): `TCPTRACE_INJECT_PANIC=<point>` makes the named part of the
//! daemon panic, and `TCPTRACE_INJECT_STALL=engine` makes the loop that owns the table
//! stop answering for a while, so that the tests can check what a real bug would do
//! (exit non-zero, leave nothing attached, time requests out). Unset, they cost one
//! environment lookup each, once.
//!
//! Without the feature (a release build) the functions are empty and inlined: the call
//! sites compile to nothing and the binary does not read those variables at all.

/// Where a panic can be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// The HTTP handler of `/healthz`.
    Http,
    /// The loop that owns the table, at its first tick.
    Engine,
}

#[cfg(feature = "fault-injection")]
mod hooks {
    use std::sync::OnceLock;

    use super::Point;

    /// How long an injected stall lasts: longer than the HTTP request timeout.
    const STALL: std::time::Duration = std::time::Duration::from_secs(15);

    fn injected() -> Option<&'static str> {
        static POINT: OnceLock<Option<String>> = OnceLock::new();
        POINT
            .get_or_init(|| std::env::var("TCPTRACE_INJECT_PANIC").ok())
            .as_deref()
    }

    pub(super) fn maybe_stall() {
        static STALLING: OnceLock<bool> = OnceLock::new();
        let stalling = *STALLING.get_or_init(|| {
            std::env::var("TCPTRACE_INJECT_STALL").is_ok_and(|point| point == "engine")
        });
        if stalling {
            std::thread::sleep(STALL);
        }
    }

    pub(super) fn maybe_panic(point: Point) {
        let name = match point {
            Point::Http => "http",
            Point::Engine => "engine",
        };
        if injected() == Some(name) {
            panic!("injected panic at {name} (TCPTRACE_INJECT_PANIC)");
        }
    }
}

/// Blocks the calling thread for longer than the HTTP request timeout (15 s) if the
/// environment asks for a stall.
#[inline]
pub fn maybe_stall() {
    #[cfg(feature = "fault-injection")]
    hooks::maybe_stall();
}

/// Panics if the environment asks for a panic at `point`.
#[inline]
pub fn maybe_panic(point: Point) {
    #[cfg(feature = "fault-injection")]
    hooks::maybe_panic(point);
    #[cfg(not(feature = "fault-injection"))]
    let _ = point;
}
