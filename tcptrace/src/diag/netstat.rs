//! A network namespace's listen counters, from its `/proc/.../net/netstat` (what `nstat`
//! and `netstat -s` read): how many connection attempts its listeners dropped.
//!
//! The file belongs to a namespace: `/proc/PID/net` shows the namespace of task PID
//! (`get_proc_task_net()`, fs/proc/proc_net.c, looks it up when the directory is
//! opened). So the dump thread reads `/proc/thread-self/net/netstat` while it is inside
//! each namespace; `/proc/self/net` (and `/proc/net`) would show the main thread's
//! namespace, which a thread's `setns` does not change (measured: inside a namespace
//! whose ListenOverflows was 75, the thread read 75 there and 0 through
//! `/proc/self/net/netstat`).

use std::{collections::HashMap, path::Path};

use serde::Serialize;

/// The calling thread's namespace's counters.
pub const THREAD_NETSTAT: &str = "/proc/thread-self/net/netstat";

/// The `TcpExt` counters about listeners, as the kernel keeps them per namespace
/// (include/uapi/linux/snmp.h; incremented in net/ipv4/tcp_ipv4.c and tcp_input.c).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ListenCounters {
    /// `ListenOverflows`: a SYN or a handshake's last ACK arrived while the listener's
    /// accept queue was full (`sk_acceptq_is_full()`), and was dropped.
    pub listen_overflows: u64,
    /// `ListenDrops`: every connection attempt a listener dropped, the overflows
    /// included (`tcp_listendrop()`).
    pub listen_drops: u64,
    /// `SyncookiesSent`: SYN-ACKs sent with a SYN cookie because the SYN queue was full
    /// (or `tcp_syncookies=2`).
    pub syncookies_sent: u64,
    /// `SyncookiesRecv`: ACKs that carried a valid cookie.
    pub syncookies_recv: u64,
    /// `SyncookiesFailed`: ACKs whose cookie did not check out.
    pub syncookies_failed: u64,
}

impl ListenCounters {
    /// Parses the file's text: pairs of lines, `TcpExt: Name1 Name2 …` then
    /// `TcpExt: 1 2 …`. `None` unless every counter above is there and a number.
    pub fn parse(text: &str) -> Option<ListenCounters> {
        let mut values: HashMap<&str, u64> = HashMap::new();
        let lines: Vec<&str> = text.lines().collect();
        for pair in lines.chunks_exact(2) {
            let (Some(("TcpExt", names)), Some(("TcpExt", numbers))) =
                (pair[0].split_once(':'), pair[1].split_once(':'))
            else {
                continue;
            };
            let (names, numbers): (Vec<&str>, Vec<&str>) = (
                names.split_whitespace().collect(),
                numbers.split_whitespace().collect(),
            );
            if names.len() != numbers.len() {
                return None;
            }
            for (name, number) in names.into_iter().zip(numbers) {
                values.insert(name, number.parse().ok()?);
            }
        }
        Some(ListenCounters {
            listen_overflows: *values.get("ListenOverflows")?,
            listen_drops: *values.get("ListenDrops")?,
            syncookies_sent: *values.get("SyncookiesSent")?,
            syncookies_recv: *values.get("SyncookiesRecv")?,
            syncookies_failed: *values.get("SyncookiesFailed")?,
        })
    }

    /// The counters of `path`; `None` when it cannot be read or parsed.
    pub fn read(path: &Path) -> Option<ListenCounters> {
        Self::parse(&std::fs::read_to_string(path).ok()?)
    }

    /// What each counter gained since `earlier`; `None` if any went down (then these
    /// are another namespace's: a namespace's inode number is reused once it is gone).
    pub fn since(&self, earlier: &ListenCounters) -> Option<ListenCounters> {
        Some(ListenCounters {
            listen_overflows: self
                .listen_overflows
                .checked_sub(earlier.listen_overflows)?,
            listen_drops: self.listen_drops.checked_sub(earlier.listen_drops)?,
            syncookies_sent: self.syncookies_sent.checked_sub(earlier.syncookies_sent)?,
            syncookies_recv: self.syncookies_recv.checked_sub(earlier.syncookies_recv)?,
            syncookies_failed: self
                .syncookies_failed
                .checked_sub(earlier.syncookies_failed)?,
        })
    }

    pub fn is_zero(&self) -> bool {
        *self == ListenCounters::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of a 6.x kernel's file, shortened.
    const NETSTAT: &str = "\
TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts ListenOverflows ListenDrops TCPSynRetrans
TcpExt: 3 2 1 0 15 17 4
IpExt: InNoRoutes InTruncatedPkts ListenOverflows
IpExt: 0 0 999
MPTcpExt: MPCapableSYNRX
MPTcpExt: 0
";

    #[test]
    fn reads_the_listen_counters_of_the_tcpext_lines_only() {
        assert_eq!(
            ListenCounters::parse(NETSTAT),
            Some(ListenCounters {
                listen_overflows: 15,
                listen_drops: 17,
                syncookies_sent: 3,
                syncookies_recv: 2,
                syncookies_failed: 1,
            })
        );
    }

    #[test]
    fn refuses_what_is_not_the_file() {
        for bad in [
            "",
            "TcpExt: ListenOverflows\n",
            "TcpExt: ListenOverflows ListenDrops\nTcpExt: 1\n",
            "TcpExt: SyncookiesSent SyncookiesRecv SyncookiesFailed ListenOverflows ListenDrops\n\
             TcpExt: 1 2 3 x 5\n",
            // A counter missing.
            "TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops\nTcpExt: 1 2 3 4\n",
        ] {
            assert_eq!(ListenCounters::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn increases_are_per_counter_and_a_decrease_is_another_namespace() {
        let before = ListenCounters::parse(NETSTAT).unwrap();
        let after = ListenCounters {
            listen_overflows: 20,
            listen_drops: 22,
            ..before
        };
        let gained = after.since(&before).unwrap();
        assert_eq!((gained.listen_overflows, gained.listen_drops), (5, 5));
        assert_eq!(gained.syncookies_sent, 0);
        assert!(!gained.is_zero());
        assert!(before.since(&before).unwrap().is_zero());
        assert_eq!(before.since(&after), None);
    }
}
