//! Privileged: however the daemon ends (SIGTERM, SIGINT, a panic in the HTTP side or in
//! the loop that owns the table) it exits promptly, with a status that says which, and
//! the kernel's lists (bpftool) hold none of its programs and maps afterwards. A restart
//! right after works. One test, so that no other test's programs come and go meanwhile.
//! The panics come from the test hooks, so it needs the `fault-injection` build too
//! (`cargo xtask test` makes it).

mod common;

use std::{collections::HashSet, time::Duration};

use common::{serve::*, *};

/// tcptrace's five programs.
const PROGRAMS: usize = 5;
/// Its maps: EVENTS, COUNTERS, and the globals' .rodata (at least).
const MIN_MAPS: usize = 3;

/// What one daemon loaded: its programs' and maps' ids.
struct Loaded {
    programs: HashSet<u64>,
    maps: HashSet<u64>,
}

const EXIT: Duration = Duration::from_secs(10);

/// Starts `serve` and returns it with what it loaded.
fn start(env: &[(&str, &str)]) -> (Serve, Loaded) {
    let (programs, maps) = (loaded_program_ids(), loaded_map_ids());
    let serve = Serve::run_with_env("serve", &["-P", "26001"], env);
    let ours = Loaded {
        programs: loaded_program_ids()
            .difference(&programs)
            .copied()
            .collect(),
        maps: loaded_map_ids().difference(&maps).copied().collect(),
    };
    assert_eq!(
        ours.programs.len(),
        PROGRAMS,
        "its programs are in the kernel"
    );
    assert!(
        ours.maps.len() >= MIN_MAPS,
        "its maps are in the kernel: {:?}",
        ours.maps
    );
    (serve, ours)
}

fn assert_detached(ours: &Loaded, how: &str) {
    // The kernel frees a BTF tracepoint's program after its link's release has waited
    // out the tracepoint's RCU readers (kernel/bpf/syscall.c: bpf_link_free), and the
    // programs hold their maps until an RCU grace period after that
    // (__bpf_prog_put_noref): both go a moment after the process, not with it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let programs: Vec<_> = loaded_program_ids()
            .intersection(&ours.programs)
            .copied()
            .collect();
        let maps: Vec<_> = loaded_map_ids().intersection(&ours.maps).copied().collect();
        if programs.is_empty() && maps.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "5 s after {how}, programs {programs:?} and maps {maps:?} still exist"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[cfg_attr(feature = "fault-injection", ignore = "needs root")]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs root and the fault-injection feature"
)]
fn every_way_out_detaches_every_program() {
    require_root();
    require_fault_injection();
    for (signal, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        // Twice each: the second start comes right after the first exit.
        for _ in 0..2 {
            let (mut serve, ours) = start(&[]);
            serve.process.signal(signal);
            let status = serve.process.wait_exit(EXIT);
            assert_eq!(status.code(), Some(0), "{name}");
            assert_detached(&ours, name);
        }
    }

    // A panic on the HTTP side: the first request to /healthz panics.
    let (mut serve, ours) = start(&[("TCPTRACE_INJECT_PANIC", "http")]);
    let addr = serve.addr;
    // The connection dies with the process; the answer does not matter.
    let _ = std::panic::catch_unwind(|| http_get(addr, "/healthz"));
    let status = serve.process.wait_exit(EXIT);
    assert_eq!(status.code(), Some(70), "a panic exits with EX_SOFTWARE");
    assert_detached(&ours, "a panic in an HTTP handler");

    // A panic in the loop that owns the table (at its first tick, within a second).
    let (mut serve, ours) = start(&[("TCPTRACE_INJECT_PANIC", "engine")]);
    let status = serve.process.wait_exit(EXIT);
    assert_eq!(status.code(), Some(70));
    assert_detached(&ours, "a panic in the event loop");
    let log: Vec<String> = serve.log.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("injected panic at engine")),
        "the panic is reported: {log:?}"
    );
}
