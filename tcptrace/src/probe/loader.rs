//! Loading the embedded object, setting its filters, attaching its programs.

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use tcptrace_common::counter;

use super::{
    privileges,
    tracefs::{self, TracefsError},
    ProbeConfig, ProbeError,
};

/// The object aya-build produced from `tcptrace-ebpf` (empty under `AYA_BUILD_SKIP`).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcptrace"));

/// A program of the object and the tracepoint it goes on.
#[derive(Clone, Copy, Debug)]
pub struct TracepointSpec {
    pub program: &'static str,
    pub category: &'static str,
    pub name: &'static str,
    /// Without it tcptrace is pointless; the others degrade to a warning.
    pub required: bool,
}

pub const PROGRAMS: [TracepointSpec; 5] = [
    TracepointSpec {
        program: "inet_sock_set_state",
        category: "sock",
        name: "inet_sock_set_state",
        required: true,
    },
    TracepointSpec {
        program: "tcp_retransmit_skb",
        category: "tcp",
        name: "tcp_retransmit_skb",
        required: false,
    },
    TracepointSpec {
        program: "tcp_retransmit_synack",
        category: "tcp",
        name: "tcp_retransmit_synack",
        required: false,
    },
    TracepointSpec {
        program: "tcp_send_reset",
        category: "tcp",
        name: "tcp_send_reset",
        required: false,
    },
    TracepointSpec {
        program: "tcp_receive_reset",
        category: "tcp",
        name: "tcp_receive_reset",
        required: false,
    },
];

/// The loaded programs. Dropping it detaches every program and frees every map
/// (aya closes the link and program file descriptors).
pub struct Probe {
    _ebpf: Ebpf,
    counters: PerCpuArray<MapData, u64>,
    attached: Vec<&'static str>,
}

/// Totals of the kernel side's per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Events that did not fit in the ring buffer.
    pub lost: u64,
    /// Tracepoint records that could not be read.
    pub read_errors: u64,
}

/// Raising RLIMIT_MEMLOCK fails without CAP_SYS_RESOURCE; since 5.11 the kernel charges
/// BPF memory to the cgroup instead, so that failure is only worth a debug line.
fn raise_memlock_rlimit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit value.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "setrlimit(RLIMIT_MEMLOCK) failed ({}); continuing, the kernel accounts BPF \
             memory to the cgroup",
            std::io::Error::last_os_error()
        );
    }
}

fn valid_ring_buffer_size(bytes: u32) -> bool {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u32;
    bytes >= page && bytes.is_power_of_two()
}

impl Probe {
    /// Whether this binary carries the eBPF object (it does not when built with
    /// `AYA_BUILD_SKIP=1`).
    pub fn has_object() -> bool {
        !OBJECT.is_empty()
    }

    /// Loads the programs with `config`'s filters and attaches them. Returns the probe
    /// and the ring buffer to hand to [`super::spawn_reader`].
    pub fn load(config: &ProbeConfig) -> Result<(Probe, RingBuf<MapData>), ProbeError> {
        if OBJECT.is_empty() {
            return Err(ProbeError::NoObject);
        }
        config.filter.validate()?;
        if !valid_ring_buffer_size(config.ring_buffer_bytes) {
            return Err(ProbeError::RingBufferSize(config.ring_buffer_bytes));
        }
        if let Some(effective) = privileges::effective_capabilities() {
            let missing = privileges::missing_capabilities(effective);
            if !missing.is_empty() {
                return Err(ProbeError::Privileges {
                    missing: missing.join(" and "),
                });
            }
        }
        raise_memlock_rlimit();
        let tracefs_path = tracefs::ensure_mounted()?;

        let (ports, port_count) = config.filter.port_globals();
        let family = config.filter.family_global();
        let mut ebpf = EbpfLoader::new()
            .override_global("FILTER_PORTS", &ports, true)
            .override_global("FILTER_PORT_COUNT", &port_count, true)
            .override_global("FILTER_FAMILY", &family, true)
            .override_global("WAKEUP_BYTES", &config.wakeup_bytes(), true)
            .map_max_entries("EVENTS", config.ring_buffer_bytes)
            .load(OBJECT)?;

        let mut attached = Vec::new();
        for spec in PROGRAMS {
            match attach(&mut ebpf, &tracefs_path, spec) {
                Ok(()) => attached.push(spec.program),
                Err(err) if !spec.required => log::warn!(
                    "{}:{} not attached, its events will be missing: {err}",
                    spec.category,
                    spec.name
                ),
                Err(err) => return Err(err),
            }
        }

        let ring = ebpf
            .take_map("EVENTS")
            .ok_or(ProbeError::MissingInObject("map EVENTS"))?;
        let ring = RingBuf::try_from(ring).map_err(|source| ProbeError::Map {
            name: "EVENTS",
            source,
        })?;
        let counters = ebpf
            .take_map("COUNTERS")
            .ok_or(ProbeError::MissingInObject("map COUNTERS"))?;
        let counters = PerCpuArray::try_from(counters).map_err(|source| ProbeError::Map {
            name: "COUNTERS",
            source,
        })?;
        Ok((
            Probe {
                _ebpf: ebpf,
                counters,
                attached,
            },
            ring,
        ))
    }

    /// The programs attached, by name.
    pub fn attached(&self) -> &[&'static str] {
        &self.attached
    }

    /// Sums the kernel's per-CPU counters.
    pub fn kernel_counters(&self) -> Result<KernelCounters, ProbeError> {
        let sum = |index: u32| -> Result<u64, ProbeError> {
            let values = self
                .counters
                .get(&index, 0)
                .map_err(|source| ProbeError::Map {
                    name: "COUNTERS",
                    source,
                })?;
            Ok(values.iter().sum())
        };
        Ok(KernelCounters {
            lost: sum(counter::LOST)?,
            read_errors: sum(counter::READ_ERRORS)?,
        })
    }
}

fn attach(
    ebpf: &mut Ebpf,
    tracefs_path: &std::path::Path,
    spec: TracepointSpec,
) -> Result<(), ProbeError> {
    tracefs::check_tracepoint(tracefs_path, spec.category, spec.name)
        .map_err(|e: TracefsError| ProbeError::Tracefs(e))?;
    let program: &mut TracePoint = ebpf
        .program_mut(spec.program)
        .ok_or(ProbeError::MissingInObject("a tracepoint program"))?
        .try_into()
        .map_err(|source| ProbeError::Program {
            name: spec.program,
            source,
        })?;
    let program_error = |source| ProbeError::Program {
        name: spec.program,
        source,
    };
    program.load().map_err(program_error)?;
    program
        .attach(spec.category, spec.name)
        .map_err(program_error)?;
    Ok(())
}
