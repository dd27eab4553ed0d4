use which::which;

/// Rebuild when bpf-linker changes: cargo does not track it otherwise. Without it (e.g.
/// `AYA_BUILD_SKIP=1 cargo check` on a machine without the eBPF toolchain) there is
/// nothing to track.
fn main() {
    if let Ok(bpf_linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
