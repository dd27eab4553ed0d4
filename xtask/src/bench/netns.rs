//! The network namespaces a benchmark runs in, so that no other traffic on the host
//! counts.

use anyhow::Context as _;
use netns_guard::Netns;

use crate::cmd;

/// A named namespace `tcptrace-<tag>-<pid>` with loopback up, deleted on drop through
/// the guard the tests use too (`netns-guard`). Delete it with
/// [`netns_guard::Netns::delete`] where a failure should fail the run as an error;
/// dropping it is the backstop, and panics on a failed deletion unless already
/// panicking.
pub(super) fn create(tag: &str) -> anyhow::Result<Netns> {
    let name = format!("tcptrace-{tag}-{}", std::process::id());
    Netns::add(&name).with_context(|| format!("creating network namespace {name}"))
}

/// Moves the calling thread, and what it starts from now on (threads, processes), into
/// a new network namespace with loopback up. The previous one, and the TIME_WAIT
/// sockets a run left in it, go away once nothing uses it: each run starts from the
/// same clean state instead of paying for the last run's 60 s of TIME_WAIT.
pub(super) fn enter_fresh() -> anyhow::Result<()> {
    // SAFETY: unshare(2) with a flag; affects only the calling thread.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNET)");
    }
    // Children fork from this thread, so they are in the new namespace too.
    cmd::run("ip", &["link", "set", "lo", "up"])?;
    // /proc/sys/net is the namespace of the task that opens it: this thread's.
    for (setting, value) in [
        ("net/ipv4/ip_local_port_range", "1024 65535"),
        ("net/core/somaxconn", "4096"),
    ] {
        std::fs::write(format!("/proc/sys/{setting}"), value)
            .with_context(|| format!("setting {setting}"))?;
    }
    Ok(())
}
