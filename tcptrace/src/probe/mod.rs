//! The kernel-facing part: load and attach the programs, read the ring buffer, decode.
//!
//! Kept thin on purpose; everything after decoding is pure code fed over a channel.

mod btf;
mod config;
mod loader;
mod misses;
mod privileges;
mod reader;
#[cfg(test)]
mod test_btf;
pub mod tracepoints;

use aya::{maps::MapError, programs::ProgramError, EbpfError};
pub use btf::{
    describe_offsets, kernel_btf, kernel_offsets, resolve_offsets, BtfError, FieldError,
    VMLINUX_BTF,
};
pub use config::{Family, FilterError, KernelFilter, ProbeConfig, DEFAULT_RING_BUFFER_BYTES};
pub use loader::{KernelCounterReader, KernelCounters, Probe, TracepointSpec, PROGRAMS};
pub use privileges::{effective_capabilities, missing_capabilities};
pub use reader::{spawn_reader, EventBatch, PipelineStats, DRAIN_EVERY};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "this binary was built with AYA_BUILD_SKIP=1 and holds no eBPF object; build it \
         with the eBPF toolchain (`cargo xtask setup`, then `cargo build --release`)"
    )]
    NoObject,
    #[error(
        "missing capabilities {missing}: run as root (`sudo tcptrace …`) or grant them \
         (`setcap cap_bpf,cap_perfmon,cap_sys_resource+ep tcptrace`)"
    )]
    Privileges { missing: String },
    #[error(transparent)]
    MissingTracepoint(#[from] tracepoints::MissingTracepoint),
    #[error("reading the kernel's BTF for the programs' tracepoints: {0}")]
    KernelBtf(#[from] aya::BtfError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(
        "ring buffer size {0} bytes is not a power-of-two multiple of the page size \
         (e.g. 262144, 4194304)"
    )]
    RingBufferSize(u32),
    #[error("loading the eBPF object into the kernel: {0}")]
    Ebpf(#[from] EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("the eBPF object has no {0}: it does not match this daemon, rebuild both")]
    MissingInObject(&'static str),
    #[error("reading the ring buffer: {0}")]
    Io(#[from] std::io::Error),
}
