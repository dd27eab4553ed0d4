//! `cargo xtask setup`: everything a new machine lacks, installed by the project.
//! Each step checks first and does nothing when its result is already there.

use std::{ffi::OsStr, path::PathBuf};

use anyhow::{bail, Context as _};

use crate::cmd;

/// The bpf-linker release that matches aya 0.14 and LLVM 22 (DESIGN.md, Toolchain).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests use: `nft` drops packets, `ethtool` turns GSO/TSO off,
/// `ip` makes namespaces and veths, `ss`/`nstat` give the kernel's own counts,
/// `prometheus` scrapes the daemon and brings `promtool` (rules, metrics lint),
/// `systemd-analyze` checks the unit file; `bpftool` lists programs (run time per
/// program in the benchmark) and `bpftrace` is the benchmark's peer; `python3-venv`
/// makes the virtualenv below when `python3` is Debian's (and brings Debian's
/// `/usr/bin/python3`). `podman` and `runc` run a real container in
/// `tcptrace/tests/podman.rs` (the Podman attribution test); listing `runc` makes it what
/// satisfies Podman's `crun | runc` dependency, because crun fails on hybrid cgroups and
/// under a low RLIMIT_NOFILE hard limit. As root and with `--network none` nothing more is
/// needed (`uidmap`, `slirp4netns`, `fuse-overlayfs` are for rootless Podman), and the
/// container runs the host's `/usr/bin/python3` from a read-only `/usr`: no image.
/// `openssl` makes the CA and certificates of `tcptrace/tests/web.rs` and `curl` is its
/// TLS client. `chromium` renders the web view headless in `tcptrace/tests/web_view.rs`.
const DEBIAN_PACKAGES: &[&str] = &[
    "nftables",
    "ethtool",
    "iproute2",
    "prometheus",
    "systemd",
    "bpftool",
    "bpftrace",
    "python3-venv",
    "podman",
    "runc",
    "openssl",
    "curl",
    "chromium",
];

/// kubernetes-validate (PyPI) bundles the Kubernetes API's JSON schemas, 1.32 to 1.37 in
/// this release, and checks `deploy/kubernetes/` against them offline.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// Its virtualenv, inside the workspace whatever `CARGO_TARGET_DIR` says;
/// `tcptrace/tests/deploy.rs` runs `bin/kubernetes-validate` from here. `cargo clean`
/// removes it; the next set-up puts it back.
const KUBERNETES_VALIDATE_VENV: &str = "target/kubernetes-validate";

pub(crate) fn run() -> anyhow::Result<()> {
    rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    kubernetes_validate()?;
    Ok(())
}

fn nightly_sysroot() -> anyhow::Result<PathBuf> {
    let sysroot = cmd::output("rustc", &["+nightly", "--print", "sysroot"]).context(
        "no nightly toolchain: install it with `rustup toolchain install nightly` \
         (the eBPF crate builds with it)",
    )?;
    Ok(PathBuf::from(sysroot.trim()))
}

/// `-Z build-std=core` needs the standard library's source.
fn rust_src() -> anyhow::Result<()> {
    let core = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        return Ok(());
    }
    eprintln!("setup: installing rust-src for the nightly toolchain");
    cmd::run(
        "rustup",
        &["component", "add", "rust-src", "--toolchain", "nightly"],
    )
    .context("installing rust-src (needs the network to reach the Rust component server)")
}

/// `rustup run nightly` puts the nightly's lib/ (and its libLLVM) on the library path,
/// as aya-build does when it links.
fn bpf_linker_version() -> Option<String> {
    cmd::output("rustup", &["run", "nightly", "bpf-linker", "--version"])
}

fn bpf_linker() -> anyhow::Result<()> {
    let wanted = format!("bpf-linker {BPF_LINKER_VERSION}");
    if bpf_linker_version().is_some_and(|v| v.trim() == wanted) {
        return Ok(());
    }
    eprintln!("setup: building {wanted} against the nightly's own LLVM (about a minute)");
    let sysroot = nightly_sysroot()?;
    let llvm_major = llvm_major_version()?;
    // The nightly ships libLLVM.so.<major>.<minor>-rust-<version>-nightly; bpf-linker's
    // build looks for $LLVM_PREFIX/lib/libLLVM.so, and at run time for the soname.
    let lib = std::fs::read_dir(sysroot.join("lib"))
        .context("reading the nightly's lib directory")?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.ends_with("-nightly"))
        })
        .context("the nightly toolchain has no libLLVM.so.*-nightly to link bpf-linker with")?;
    let prefix = llvm_prefix()?;
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in [
        "libLLVM.so".into(),
        lib.file_name().expect("a file").to_owned(),
    ] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)
            .with_context(|| format!("linking {} to {}", link.display(), lib.display()))?;
    }
    let features = format!("llvm-{llvm_major}");
    cmd::run_with_env(
        &cmd::cargo_program(),
        &[
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &features,
            "--force",
        ],
        &[("LLVM_PREFIX", prefix.as_os_str())],
    )
    .with_context(|| {
        format!(
            "building bpf-linker (see its output above); it needs crates.io and the \
             nightly's libLLVM linked in {}",
            prefix_lib.display()
        )
    })?;
    match bpf_linker_version() {
        Some(v) if v.trim() == wanted => Ok(()),
        Some(v) => bail!(
            "installed bpf-linker reports {:?}, expected {wanted:?}",
            v.trim()
        ),
        None => bail!(
            "bpf-linker was installed but does not run under `rustup run nightly`; check \
             that {} resolves",
            prefix_lib.join("libLLVM.so").display()
        ),
    }
}

fn llvm_major_version() -> anyhow::Result<u32> {
    let verbose =
        cmd::output("rustc", &["+nightly", "-vV"]).context("running rustc +nightly -vV")?;
    verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.parse().ok())
        .context("rustc +nightly -vV does not say its LLVM version")
}

/// Where the libLLVM links live: beside cargo's own files, so that they survive
/// between sessions like the installed bpf-linker does.
fn llvm_prefix() -> anyhow::Result<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    Ok(cargo_home.join("tcptrace-llvm"))
}

fn debian_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            cmd::output("dpkg-query", &["-W", "-f=${db:Status-Status}", pkg])
                .is_none_or(|status| status.trim() != "installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "missing Debian packages {}: install them with `sudo apt-get install {}`",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("setup: installing Debian packages {}", missing.join(", "));
    cmd::run("apt-get", &["update", "-qq"]).context("apt-get update")?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    // No questions: CI has no terminal.
    let noninteractive = OsStr::new("noninteractive");
    cmd::run_with_env("apt-get", &args, &[("DEBIAN_FRONTEND", noninteractive)])
        .context("apt-get install")
}

/// In a virtualenv of its own: Debian's python3 refuses `pip install` outside one
/// (PEP 668, externally managed), and the system stays untouched either way.
fn kubernetes_validate() -> anyhow::Result<()> {
    let venv = cmd::workspace_root().join(KUBERNETES_VALIDATE_VENV);
    let validator = venv.join("bin/kubernetes-validate");
    let installed = || {
        validator
            .to_str()
            .and_then(|v| cmd::output(v, &["--version"]))
            .is_some_and(|v| v.trim() == KUBERNETES_VALIDATE_VERSION)
    };
    if installed() {
        return Ok(());
    }
    eprintln!(
        "setup: installing kubernetes-validate {KUBERNETES_VALIDATE_VERSION} in {}",
        venv.display()
    );
    let python = venv.join("bin/python3");
    if !python.exists() {
        let args = [OsStr::new("-m"), OsStr::new("venv"), venv.as_os_str()];
        cmd::run("python3", &args)
            .context("making a virtualenv (needs python3 with its venv module)")?;
    }
    let requirement = format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}");
    cmd::run(
        python.to_str().context("a UTF-8 workspace path")?,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &requirement,
        ],
    )
    .context("installing kubernetes-validate (needs PyPI)")?;
    if !installed() {
        bail!(
            "{} does not report version {KUBERNETES_VALIDATE_VERSION}",
            validator.display()
        );
    }
    Ok(())
}
