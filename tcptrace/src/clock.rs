//! Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time for display.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The offset between CLOCK_REALTIME and CLOCK_MONOTONIC, read once.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    realtime_minus_monotonic_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid out pointer.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_MONOTONIC now, in the kernel programs' time base.
pub fn monotonic_now_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC) as u64
}

impl WallClock {
    pub fn new() -> Self {
        let monotonic = now_ns(libc::CLOCK_MONOTONIC);
        let realtime = now_ns(libc::CLOCK_REALTIME);
        Self {
            realtime_minus_monotonic_ns: realtime - monotonic,
        }
    }

    pub fn to_system_time(self, monotonic_ns: u64) -> SystemTime {
        let ns = i128::from(monotonic_ns) + self.realtime_minus_monotonic_ns;
        UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
    }

    /// `HH:MM:SS.micros` in local time, as bcc's tools print it.
    pub fn local_time_of_day(self, monotonic_ns: u64) -> String {
        let since_epoch = self
            .to_system_time(monotonic_ns)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let secs = since_epoch.as_secs() as libc::time_t;
        // SAFETY: zeroed `tm` is a valid out value; localtime_r is thread-safe.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        unsafe { libc::localtime_r(&secs, &mut tm) };
        format!(
            "{:02}:{:02}:{:02}.{:06}",
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec,
            since_epoch.subsec_micros()
        )
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}

/// A duration for people: `0.08ms`, `2.1s`, `3m12s`.
pub fn human_duration(ns: u64) -> String {
    match ns {
        0..1_000_000 => format!("{:.3}ms", ns as f64 / 1e6),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        1_000_000_000..60_000_000_000 => format!("{:.2}s", ns as f64 / 1e9),
        _ => {
            let secs = ns / 1_000_000_000;
            format!("{}m{:02}s", secs / 60, secs % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_maps_now_to_now() {
        let clock = WallClock::new();
        let mapped = clock.to_system_time(monotonic_now_ns());
        let skew = SystemTime::now()
            .duration_since(mapped)
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(1), "skew {skew:?}");
        assert_eq!(clock.local_time_of_day(monotonic_now_ns()).len(), 15);
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_duration(80_000), "0.080ms");
        assert_eq!(human_duration(12_340_000), "12.34ms");
        assert_eq!(human_duration(2_100_000_000), "2.10s");
        assert_eq!(human_duration(192_000_000_000), "3m12s");
    }
}

/// `2026-11-22T03:23:24.123456Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs() as libc::time_t;
    // SAFETY: zeroed `tm` is a valid out value; gmtime_r is thread-safe.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::gmtime_r(&secs, &mut tm) };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        since_epoch.subsec_micros()
    )
}

#[cfg(test)]
mod rfc3339_tests {
    use super::*;

    #[test]
    fn formats_utc() {
        let t = UNIX_EPOCH + Duration::from_micros(1_795_318_204_123_456);
        assert_eq!(rfc3339(t), "2026-11-22T03:30:04.123456Z");
    }
}
