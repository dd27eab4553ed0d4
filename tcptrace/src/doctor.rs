//! `tcptrace doctor`: everything tracing needs, checked without loading anything, with
//! what to do about each failure.

use std::{fmt, net::SocketAddr, path::Path};

use btf_rs::Btf;

use crate::{
    diag::dump_tcp,
    probe::{
        describe_offsets, effective_capabilities, kernel_btf, missing_capabilities,
        resolve_offsets, tracepoints, BtfError, Probe, PROGRAMS, VMLINUX_BTF,
    },
    state::TcpState,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// tcptrace works, with less.
    Warn,
    /// tcptrace will not start.
    Fail,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Outcome::Ok => "ok",
            Outcome::Warn => "WARN",
            Outcome::Fail => "FAIL",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
    /// What to do, for a warning or a failure.
    pub fix: Option<String>,
}

fn ok(name: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        outcome: Outcome::Ok,
        detail: detail.into(),
        fix: None,
    }
}

fn not_ok(
    outcome: Outcome,
    name: impl Into<String>,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        name: name.into(),
        outcome,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

fn object() -> Check {
    if Probe::has_object() {
        ok("eBPF object", "embedded in this binary")
    } else {
        not_ok(
            Outcome::Fail,
            "eBPF object",
            "this binary was built with AYA_BUILD_SKIP=1",
            "build it with the eBPF toolchain: `cargo xtask setup`, then `cargo build --release`",
        )
    }
}

fn privileges() -> Check {
    let Some(effective) = effective_capabilities() else {
        return not_ok(
            Outcome::Warn,
            "privileges",
            "cannot read CapEff from /proc/self/status",
            "run as root, or with CAP_BPF and CAP_PERFMON",
        );
    };
    let missing = missing_capabilities(effective);
    if missing.is_empty() {
        ok("privileges", "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)")
    } else {
        not_ok(
            Outcome::Fail,
            "privileges",
            format!("missing {}", missing.join(" and ")),
            "run as root (`sudo tcptrace …`) or grant them: \
             `setcap cap_bpf,cap_perfmon,cap_sys_resource+ep tcptrace`",
        )
    }
}

/// Every tracepoint the programs attach to, looked up in the kernel's BTF (they are BTF
/// tracepoints: tracefs plays no part).
fn tracepoints(kernel_btf: &Result<Btf, BtfError>) -> Vec<Check> {
    let btf = match kernel_btf {
        Ok(btf) => btf,
        Err(err) => {
            return vec![not_ok(
                Outcome::Fail,
                "tracepoints",
                err.to_string(),
                "tcptrace attaches to tracepoints by their BTF ids: use a kernel built with \
                 CONFIG_DEBUG_INFO_BTF=y",
            )]
        }
    };
    PROGRAMS
        .iter()
        .map(|spec| {
            let name = format!("tracepoint {}:{}", spec.category, spec.name);
            match tracepoints::check_tracepoint(btf, spec.category, spec.name) {
                Ok(()) => ok(name, "present"),
                Err(err) if spec.required => not_ok(
                    Outcome::Fail,
                    name,
                    err.to_string(),
                    "tcptrace needs it: use Linux 6.10+ with CONFIG_DEBUG_INFO_BTF",
                ),
                Err(err) => not_ok(
                    Outcome::Warn,
                    name,
                    err.to_string(),
                    "tcptrace runs without these events (retransmits or resets go unseen)",
                ),
            }
        })
        .collect()
}

fn btf() -> Check {
    if Path::new(VMLINUX_BTF).is_file() {
        ok("BTF", VMLINUX_BTF)
    } else {
        not_ok(
            Outcome::Fail,
            "BTF",
            format!("{VMLINUX_BTF} is missing"),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y: tcptrace finds the kernel's \
             struct layouts there",
        )
    }
}

/// The `struct sock` (and related) field offsets the kernel programs read, from BTF.
fn btf_fields(kernel_btf: &Result<Btf, BtfError>) -> Check {
    match kernel_btf
        .as_ref()
        .map_err(ToString::to_string)
        .and_then(|btf| resolve_offsets(btf).map_err(|err| err.to_string()))
    {
        Ok(offsets) => ok("kernel BTF fields", describe_offsets(&offsets)),
        Err(err) => not_ok(
            Outcome::Fail,
            "kernel BTF fields",
            err,
            "tcptrace reads each socket's state, network namespace and cgroup through these \
             fields: use a kernel that has them (Linux 5.15+ with CONFIG_DEBUG_INFO_BTF, \
             CONFIG_NET_NS, CONFIG_SOCK_CGROUP_DATA)",
        ),
    }
}

/// "6.18.4-foo" → (6, 18).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn ring_buffer() -> Check {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match kernel_version(release.trim()) {
        Some(version) if version >= (5, 8) => ok(
            "BPF ring buffer",
            format!("Linux {} (ring buffers since 5.8)", release.trim()),
        ),
        Some(_) => not_ok(
            Outcome::Fail,
            "BPF ring buffer",
            format!("Linux {} has no BPF ring buffer", release.trim()),
            "tcptrace needs Linux 5.8 or later",
        ),
        None => not_ok(
            Outcome::Warn,
            "BPF ring buffer",
            format!("cannot tell the kernel version from {:?}", release.trim()),
            "tcptrace needs Linux 5.8 or later",
        ),
    }
}

fn sock_diag() -> Check {
    match dump_tcp(&[TcpState::Listen]) {
        Ok(sockets) => ok(
            "sock_diag",
            format!("dump works ({} listening sockets)", sockets.len()),
        ),
        Err(err) => not_ok(
            Outcome::Fail,
            "sock_diag",
            err.to_string(),
            "load the inet_diag and tcp_diag modules (`modprobe tcp_diag`)",
        ),
    }
}

fn listen(addr: SocketAddr) -> Check {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => ok(format!("listen {addr}"), "free"),
        Err(err) => not_ok(
            Outcome::Fail,
            format!("listen {addr}"),
            err.to_string(),
            "pick another address or port with --listen",
        ),
    }
}

/// `--web.config.file`, read and checked as `serve` reads it.
fn web_config(path: &std::path::Path) -> Check {
    let name = format!("web config {}", path.display());
    match crate::web::load(path) {
        Ok(config) => ok(
            name,
            format!(
                "TLS {}, basic auth {}",
                if config.tls.is_some() { "on" } else { "off" },
                config.auth.map_or("off".to_owned(), |a| format!(
                    "for {} user(s)",
                    a.users().len()
                ))
            ),
        ),
        Err(err) => not_ok(
            Outcome::Fail,
            name,
            err.to_string(),
            "fix the file (format: Prometheus exporter-toolkit web configuration)",
        ),
    }
}

/// Every check, in the order they matter.
pub fn run(listen_addr: SocketAddr, web_config_file: Option<&std::path::Path>) -> Vec<Check> {
    // Parsed once for the tracepoints and the fields (several MiB of it).
    let kernel_btf = kernel_btf();
    let mut checks = vec![object(), privileges()];
    checks.extend(tracepoints(&kernel_btf));
    checks.extend([
        btf(),
        btf_fields(&kernel_btf),
        ring_buffer(),
        sock_diag(),
        listen(listen_addr),
    ]);
    checks.extend(web_config_file.map(web_config));
    checks
}

/// The table, one line a check, and the fix under each warning or failure.
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for check in checks {
        out += &format!(
            "{:<width$}  {:<4}  {}\n",
            check.name, check.outcome, check.detail
        );
        if let Some(fix) = &check.fix {
            out += &format!("{:<width$}        → {fix}\n", "");
        }
    }
    out
}

pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.outcome != Outcome::Fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(kernel_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(kernel_version("5.8.0"), Some((5, 8)));
        assert_eq!(kernel_version("4.19"), Some((4, 19)));
        assert_eq!(kernel_version("weird"), None);
    }

    #[test]
    fn a_failure_fails_the_run_and_says_what_to_do() {
        let checks = vec![
            ok("privileges", "fine"),
            not_ok(Outcome::Warn, "BTF", "missing", "optional"),
        ];
        assert!(passed(&checks));
        let mut failing = checks.clone();
        failing.push(not_ok(
            Outcome::Fail,
            "listen 127.0.0.1:1",
            "in use",
            "pick another",
        ));
        assert!(!passed(&failing));
        let text = render(&failing);
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.contains("FAIL  in use"), "{text}");
        assert!(text.contains("→ pick another"), "{text}");
    }

    #[test]
    fn a_taken_address_fails_the_listen_check() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let check = listen(taken.local_addr().unwrap());
        assert_eq!(check.outcome, Outcome::Fail);
        drop(taken);
    }
}
