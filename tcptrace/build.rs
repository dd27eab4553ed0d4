use std::{env, fs, path::PathBuf};

use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

/// Builds the eBPF crate for the BPF target with the nightly toolchain and leaves the
/// object in `OUT_DIR/tcptrace`, where `probe::loader` embeds it.
fn main() -> anyhow::Result<()> {
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        // `include_bytes_aligned!` needs a file: an empty one, which the daemon
        // recognises and refuses to load with a clear message.
        let out = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
        fs::write(out.join("tcptrace"), []).context("writing the placeholder eBPF object")?;
    }
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?)
        .parent()
        .ok_or_else(|| anyhow!("tcptrace has no parent directory"))?
        .join("tcptrace-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {root:?}"))?;
    aya_build::build_ebpf(
        [Package {
            name: "tcptrace-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
