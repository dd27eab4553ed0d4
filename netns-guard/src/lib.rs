//! A named network namespace (`ip netns add`) that is always removed, after aya's
//! `NetNsGuard` (test/integration-test/src/utils.rs). One guard for tcptrace's
//! privileged tests (`tcptrace/tests/common/netns.rs`) and for the benchmark
//! (`xtask/src/bench`).
//!
//! Dropping a [`Netns`] deletes the namespace, and with it its veth ends and nftables
//! tables. A deletion that fails panics, so that nothing leaves namespaces behind
//! unnoticed, unless the thread is already panicking: a second panic would abort the
//! process and hide the first, so then it only says so on stderr. A caller that would
//! rather report the failure as an error (the benchmark, which should not lose a run's
//! results to a panic) deletes the namespace with [`Netns::delete`] instead; dropping
//! stays the backstop for early returns.
//!
//! Needs what `ip netns` needs: root, or CAP_SYS_ADMIN.

use std::{
    io,
    path::{Path, PathBuf},
    process::Command,
};

/// Where `ip netns add` binds the namespaces it names.
const RUN_DIR: &str = "/run/netns";

/// A network namespace named `name` by `ip netns add`, deleted on drop.
#[derive(Debug)]
#[must_use = "the namespace is deleted when the guard is dropped"]
pub struct Netns {
    name: String,
    deleted: bool,
}

impl Netns {
    /// `ip netns add <name>`, with loopback up. A namespace of that name left by an
    /// earlier run, killed before its cleanup, is deleted first.
    pub fn add(name: impl Into<String>) -> io::Result<Netns> {
        let name = name.into();
        if Path::new(RUN_DIR).join(&name).exists() {
            ip(&["netns", "del", &name])?;
        }
        ip(&["netns", "add", &name])?;
        // From here on, dropping it deletes it.
        let netns = Netns {
            name,
            deleted: false,
        };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The name `ip netns` knows it by (`ip -n <name>`, `ip netns exec <name>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, the bind mount `ip netns add` made: open it for `setns(2)`.
    pub fn path(&self) -> PathBuf {
        Path::new(RUN_DIR).join(&self.name)
    }

    /// Deletes it now (`ip netns del`), returning a failure instead of panicking.
    pub fn delete(mut self) -> io::Result<()> {
        self.deleted = true;
        ip(&["netns", "del", &self.name])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if std::mem::replace(&mut self.deleted, true) {
            return;
        }
        if let Err(err) = ip(&["netns", "del", &self.name]) {
            let message = format!("removing network namespace {}: {err}", self.name);
            if std::thread::panicking() {
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

/// `ip args…`, failing with its stderr.
fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|err| {
        io::Error::new(
            err.kind(),
            format!("cannot run ip (Debian package iproute2): {err}"),
        )
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "`ip {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use super::*;

    fn require_root() {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "makes network namespaces, needs root: run `sudo -E cargo xtask test`"
        );
    }

    fn name(tag: &str) -> String {
        format!("netns-guard-{tag}-{}", std::process::id())
    }

    #[test]
    #[ignore = "needs root"]
    fn dropping_it_deletes_it() {
        require_root();
        let netns = Netns::add(name("drop")).unwrap();
        let path = netns.path();
        assert!(path.exists(), "{} exists", path.display());
        drop(netns);
        assert!(!path.exists(), "{} is gone", path.display());
    }

    #[test]
    #[ignore = "needs root"]
    fn one_left_by_a_killed_run_is_replaced() {
        require_root();
        // A run killed before its cleanup: the guard never drops.
        std::mem::forget(Netns::add(name("stale")).unwrap());
        let netns = Netns::add(name("stale")).unwrap();
        netns.delete().unwrap();
    }

    #[test]
    #[ignore = "needs root"]
    fn a_failed_deletion_is_an_error_or_a_panic() {
        require_root();
        let netns = Netns::add(name("gone")).unwrap();
        ip(&["netns", "del", netns.name()]).unwrap();
        let err = netns.delete().unwrap_err();
        assert!(err.to_string().contains("netns del"), "{err}");

        let netns = Netns::add(name("gone")).unwrap();
        ip(&["netns", "del", netns.name()]).unwrap();
        let panic = catch_unwind(AssertUnwindSafe(|| drop(netns))).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(
            message.starts_with("removing network namespace netns-guard-gone-"),
            "{message}"
        );
    }

    #[test]
    #[ignore = "needs root"]
    fn a_failed_deletion_while_panicking_keeps_the_first_panic() {
        require_root();
        let thread = std::thread::spawn(|| {
            let netns = Netns::add(name("unwinding")).unwrap();
            ip(&["netns", "del", netns.name()]).unwrap();
            panic!("the test's own panic");
        });
        // A second panic in drop would have aborted the whole process.
        let panic = thread.join().unwrap_err();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"the test's own panic"));
    }
}
