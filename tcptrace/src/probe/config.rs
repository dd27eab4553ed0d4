//! What the kernel side is told at load time.

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

    /// The value of the eBPF global `FILTER_FAMILY`.
    pub fn family_global(&self) -> u16 {
        self.family.map_or(0, Family::kernel_value)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeConfig {
    pub filter: KernelFilter,
    /// Size of the `EVENTS` ring buffer in bytes: a power of two, at least a page.
    pub ring_buffer_bytes: u32,
}

/// 4 MiB: about 40k events, over 100 ms of peak loopback churn.
pub const DEFAULT_RING_BUFFER_BYTES: u32 = 4 << 20;

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            filter: KernelFilter::default(),
            ring_buffer_bytes: DEFAULT_RING_BUFFER_BYTES,
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
        };
        assert_eq!(filter.validate(), Err(FilterError::TooManyPorts(9)));
        let filter = KernelFilter {
            ports: (1..=8).collect(),
            family: None,
        };
        assert_eq!(filter.validate(), Ok(()));
    }
}
