//! Loading the embedded object, setting its filters, attaching its programs.

use std::{os::fd::AsFd as _, sync::Arc};

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{BtfTracePoint, ProgramFd},
    Btf, Ebpf, EbpfLoader,
};
use tcptrace_common::counter;

use super::{
    privileges,
    tracepoints::{self, MissingTracepoint},
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
    counters: KernelCounterReader,
    attached: Vec<&'static str>,
}

/// Reads the kernel side's per-CPU counters: shared with the metrics, which read them
/// at each scrape.
#[derive(Clone)]
pub struct KernelCounterReader {
    counters: Arc<PerCpuArray<MapData, u64>>,
    /// The attached programs, for their kernel-kept count of skipped runs.
    programs: Arc<Vec<ProgramFd>>,
}

impl KernelCounterReader {
    /// Sums the kernel's per-CPU counters.
    pub fn read(&self) -> Result<KernelCounters, ProbeError> {
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
        let mut missed = 0;
        for program in self.programs.iter() {
            missed += super::misses::recursion_misses(program.as_fd()).map_err(ProbeError::Io)?;
        }
        Ok(KernelCounters {
            lost: sum(counter::LOST)?,
            read_errors: sum(counter::READ_ERRORS)?,
            missed,
        })
    }
}

/// Totals of the kernel side's per-CPU counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    /// Events that did not fit in the ring buffer.
    pub lost: u64,
    /// Tracepoint records that could not be read.
    pub read_errors: u64,
    /// Tracepoint hits the kernel ran no program for (another BPF program was running on
    /// that CPU): events lost before a program could count them, for any port.
    pub missed: u64,
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

        let (ports, port_count) = config.filter.port_globals();
        let family = config.filter.family_global();
        let netns = config.filter.netns_global();
        let kernel_btf = super::btf::kernel_btf()?;
        let offsets = super::btf::resolve_offsets(&kernel_btf)?;
        let mut ebpf = EbpfLoader::new()
            .override_global("FILTER_PORTS", &ports, true)
            .override_global("FILTER_PORT_COUNT", &port_count, true)
            .override_global("FILTER_FAMILY", &family, true)
            .override_global("FILTER_NETNS", &netns, true)
            .override_global("KERNEL_OFFSETS", &offsets, true)
            .override_global("WAKEUP_EVERY", &config.wakeup_every(), true)
            .override_global("KERNEL_READS", &config.kernel_reads, true)
            .map_max_entries("EVENTS", config.ring_buffer_bytes)
            .load(OBJECT)?;

        let (plan, missing) = attach_plan(&PROGRAMS, |spec| {
            tracepoints::check_tracepoint(&kernel_btf, spec.category, spec.name)
        })?;
        drop(kernel_btf);
        for err in missing {
            log::warn!("{err}; running without those events");
        }
        // aya resolves each program's attach point in its own parse of the same BTF.
        let btf = Btf::from_sys_fs()?;
        let mut attached = Vec::new();
        for spec in plan {
            match attach(&mut ebpf, &btf, spec) {
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
        let mut program_fds = Vec::new();
        for (name, program) in ebpf.programs() {
            if attached.contains(&name) {
                if let Ok(fd) = program.fd() {
                    program_fds.push(fd.try_clone().map_err(ProbeError::Io)?);
                }
            }
        }
        Ok((
            Probe {
                _ebpf: ebpf,
                counters: KernelCounterReader {
                    counters: Arc::new(counters),
                    programs: Arc::new(program_fds),
                },
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
        self.counters.read()
    }

    /// A reader of the same counters, for the metrics.
    pub fn counter_reader(&self) -> KernelCounterReader {
        self.counters.clone()
    }
}

/// The programs to attach, given which tracepoints this kernel has: a missing optional
/// one is left out (and returned, to be warned about); a missing required one is an
/// error that names it.
pub(super) fn attach_plan(
    specs: &[TracepointSpec],
    exists: impl Fn(&TracepointSpec) -> Result<(), MissingTracepoint>,
) -> Result<(Vec<TracepointSpec>, Vec<MissingTracepoint>), ProbeError> {
    let mut plan = Vec::new();
    let mut missing = Vec::new();
    for spec in specs {
        match exists(spec) {
            Ok(()) => plan.push(*spec),
            Err(err) if !spec.required => missing.push(err),
            Err(err) => return Err(err.into()),
        }
    }
    Ok((plan, missing))
}

fn attach(ebpf: &mut Ebpf, btf: &Btf, spec: TracepointSpec) -> Result<(), ProbeError> {
    let program: &mut BtfTracePoint = ebpf
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
    program.load(spec.name, btf).map_err(program_error)?;
    program.attach().map_err(program_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_without_an_optional_tracepoint_runs_without_it() {
        let btf = tracepoints::btf_with(&[
            "inet_sock_set_state",
            "tcp_retransmit_skb",
            "tcp_retransmit_synack",
        ]);
        let (plan, missing) = attach_plan(&PROGRAMS, |s| {
            tracepoints::check_tracepoint(&btf, s.category, s.name)
        })
        .unwrap();
        let planned: Vec<_> = plan.iter().map(|s| s.program).collect();
        assert_eq!(
            planned,
            [
                "inet_sock_set_state",
                "tcp_retransmit_skb",
                "tcp_retransmit_synack"
            ]
        );
        let warnings: Vec<String> = missing.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].contains("tcp:tcp_send_reset"), "{warnings:?}");
        assert!(
            warnings[1].contains("tcp:tcp_receive_reset"),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_kernel_without_inet_sock_set_state_is_refused_by_name() {
        let btf = tracepoints::btf_with(&["tcp_retransmit_skb"]);
        let err = attach_plan(&PROGRAMS, |s| {
            tracepoints::check_tracepoint(&btf, s.category, s.name)
        })
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("sock:inet_sock_set_state"), "{message}");
        assert!(
            message.contains("btf_trace_inet_sock_set_state"),
            "{message}"
        );
    }
}
