//! What the kernel side is told at load time.

use std::net::SocketAddr;

use tcptrace_common::{AF_INET, AF_INET6, MAX_FILTER_PORTS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn kernel_value(self) -> u16 {
        match self {
            Self::V4 => AF_INET,
            Self::V6 => AF_INET6,
        }
    }
}

/// Filters applied in the kernel, before an event takes ring-buffer space.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelFilter {
    /// Keep events where either end's port is one of these (empty: all ports).
    pub ports: Vec<u16>,
    /// Keep only this family (None: both).
    pub family: Option<Family>,
    /// Keep only sockets in the network namespace with this inode number (None: all).
    pub netns: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("at most {MAX_FILTER_PORTS} ports can be filtered in the kernel, {0} were given")]
    TooManyPorts(usize),
}

impl KernelFilter {
    pub fn validate(&self) -> Result<(), FilterError> {
        if self.ports.len() > MAX_FILTER_PORTS {
            return Err(FilterError::TooManyPorts(self.ports.len()));
        }
        Ok(())
    }

    /// The values of the eBPF globals `FILTER_PORTS` and `FILTER_PORT_COUNT`.
    pub fn port_globals(&self) -> ([u16; MAX_FILTER_PORTS], u32) {
        let mut ports = [0; MAX_FILTER_PORTS];
        let count = self.ports.len().min(MAX_FILTER_PORTS);
        ports[..count].copy_from_slice(&self.ports[..count]);
        (ports, count as u32)
    }

    /// The same filter in userspace, for sockets from a sock_diag dump (which lists
    /// every socket on the host).
    pub fn matches(&self, local: SocketAddr, remote: SocketAddr) -> bool {
        let family_ok = match self.family {
            None => true,
            Some(Family::V4) => local.is_ipv4(),
            Some(Family::V6) => local.is_ipv6(),
        };
        let port_ok = self.ports.is_empty()
            || self.ports.contains(&local.port())
            || self.ports.contains(&remote.port());
        family_ok && port_ok
    }

    /// The value of the eBPF global `FILTER_FAMILY`.
    pub fn family_global(&self) -> u16 {
        self.family.map_or(0, Family::kernel_value)
    }

    /// The value of the eBPF global `FILTER_NETNS` (0: every namespace).
    pub fn netns_global(&self) -> u32 {
        self.netns.unwrap_or(0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    pub filter: KernelFilter,
    /// Size of the `EVENTS` ring buffer in bytes: a power of two, at least a page.
    pub ring_buffer_bytes: u32,
    /// The eBPF global `KERNEL_READS`: which optional reads the programs make
    /// (`tcptrace_common::reads`); all of them but in the benchmark.
    pub kernel_reads: u8,
}

/// What the ring buffer adds to each record (`BPF_RINGBUF_HDR_SZ`).
const RING_RECORD_HEADER: usize = 8;

/// 4 MiB: about 33k events (120 bytes each with the header, 176 at →CLOSE), over 100 ms
/// of peak loopback churn.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 4 << 20;

impl ProbeConfig {
    /// The eBPF global `WAKEUP_EVERY`: each CPU wakes the reader once per this many of
    /// its events, so that about an eighth of the ring buffer waits when the CPUs share
    /// the load, which leaves room for the several milliseconds a woken reader may take
    /// to run; below that, the reader's drain timer collects events.
    pub fn wakeup_every(&self) -> u64 {
        let cpus = aya::util::nr_cpus().map_or(1, |n| n.max(1)) as u64;
        let record = (tcptrace_common::EVENT_SIZE + RING_RECORD_HEADER) as u64;
        (u64::from(self.ring_buffer_bytes / 8) / record / cpus).max(1)
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            filter: KernelFilter::default(),
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
            kernel_reads: tcptrace_common::reads::ALL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_globals_hold_the_ports_and_their_count() {
        let filter = KernelFilter {
            ports: vec![80, 443],
            family: None,
            netns: None,
        };
        let (ports, count) = filter.port_globals();
        assert_eq!(count, 2);
        assert_eq!(ports, [80, 443, 0, 0, 0, 0, 0, 0]);
        assert_eq!(filter.family_global(), 0);
        assert_eq!(KernelFilter::default().port_globals(), ([0; 8], 0));
    }

    #[test]
    fn family_global_is_the_kernel_number() {
        let v6 = KernelFilter {
            ports: vec![],
            family: Some(Family::V6),
            netns: None,
        };
        assert_eq!(v6.family_global(), 10);
        assert_eq!(
            KernelFilter {
                family: Some(Family::V4),
                ..v6
            }
            .family_global(),
            2
        );
    }

    #[test]
    fn more_ports_than_the_kernel_holds_is_an_error() {
        let filter = KernelFilter {
            ports: (1..=9).collect(),
            family: None,
            netns: None,
        };
        assert_eq!(filter.validate(), Err(FilterError::TooManyPorts(9)));
        let filter = KernelFilter {
            ports: (1..=8).collect(),
            family: None,
            netns: None,
        };
        assert_eq!(filter.validate(), Ok(()));
    }

    #[test]
    fn the_userspace_filter_matches_what_the_kernel_keeps() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let filter = KernelFilter {
            ports: vec![8080],
            family: Some(Family::V4),
            netns: None,
        };
        assert!(filter.matches(a("127.0.0.1:8080"), a("127.0.0.1:50000")));
        assert!(filter.matches(a("127.0.0.1:50000"), a("10.0.0.1:8080")));
        assert!(!filter.matches(a("127.0.0.1:50000"), a("10.0.0.1:8081")));
        assert!(!filter.matches(a("[::1]:8080"), a("[::1]:50000")));
        assert!(KernelFilter::default().matches(a("[::1]:1"), a("[::1]:2")));
    }
}
