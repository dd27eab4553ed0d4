//! Socket owners from `/proc`, found the way `ss -p` finds them: a process owns a socket
//! when one of its `/proc/<pid>/fd/<n>` links reads `socket:[<inode>]`.
//!
//! Needed because the events cannot say: a socket enters CLOSE_WAIT in softirq, while
//! whatever task happened to be on the CPU runs (DESIGN.md §2). Scanning every process's
//! descriptors is expensive, so it runs only for sockets being reported, and its answers
//! are cached for as long as those sockets stay reported.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::Path,
};

use serde::Serialize;

/// A process holding a socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProcessOwner {
    pub pid: u32,
    pub comm: String,
    /// The cgroup v2 path (`/system.slice/nginx.service`), when readable.
    pub cgroup: Option<String>,
}

/// The inode of a `/proc/<pid>/fd/<n>` link target `socket:[<inode>]`.
pub fn parse_socket_link(target: &str) -> Option<u32> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The cgroup path in a `/proc/<pid>/cgroup` file: the unified (v2) hierarchy's line
/// `0::<path>`, else the first v1 line's path.
pub fn parse_cgroup(text: &str) -> Option<String> {
    let path_of = |line: &str| line.splitn(3, ':').nth(2).map(str::to_owned);
    text.lines()
        .find(|l| l.starts_with("0::"))
        .or_else(|| text.lines().next())
        .and_then(path_of)
        .filter(|p| !p.is_empty())
}

/// Scans `proc_root` (normally `/proc`) for the processes holding `inodes`. Each inode
/// gets the lowest pid that holds it (after fork both hold it; the parent is usually the
/// one that made it). Processes that vanish or cannot be read are skipped.
pub fn find_owners(proc_root: &Path, inodes: &HashSet<u32>) -> HashMap<u32, ProcessOwner> {
    let mut found = HashMap::new();
    if inodes.is_empty() {
        return found;
    }
    let Ok(entries) = fs::read_dir(proc_root) else {
        return found;
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let dir = proc_root.join(pid.to_string());
        let Ok(fds) = fs::read_dir(dir.join("fd")) else {
            continue; // gone, or not ours to read
        };
        for fd in fds.filter_map(Result::ok) {
            let Some(inode) = fs::read_link(fd.path())
                .ok()
                .and_then(|t| t.to_str().and_then(parse_socket_link))
            else {
                continue;
            };
            if inodes.contains(&inode) && !found.contains_key(&inode) {
                let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
                let cgroup = fs::read_to_string(dir.join("cgroup"))
                    .ok()
                    .and_then(|t| parse_cgroup(&t));
                found.insert(
                    inode,
                    ProcessOwner {
                        pid,
                        comm: comm.trim_end().to_owned(),
                        cgroup,
                    },
                );
            }
        }
        if found.len() == inodes.len() {
            break;
        }
    }
    found
}

/// Owners by inode, kept only for the inodes still asked about.
#[derive(Debug, Default)]
pub struct OwnerCache {
    /// `None`: looked for and not found (e.g. a socket not yet accepted).
    by_inode: HashMap<u32, Option<ProcessOwner>>,
}

impl OwnerCache {
    /// Forgets every inode not in `wanted`, and returns the ones never looked up.
    pub fn retain_and_misses(&mut self, wanted: &HashSet<u32>) -> HashSet<u32> {
        self.by_inode.retain(|inode, _| wanted.contains(inode));
        wanted
            .iter()
            .copied()
            .filter(|inode| *inode != 0 && !self.by_inode.contains_key(inode))
            .collect()
    }

    /// Records a scan for `looked_up`: what it found, and that the rest have no owner.
    pub fn insert(&mut self, looked_up: &HashSet<u32>, mut found: HashMap<u32, ProcessOwner>) {
        for &inode in looked_up {
            self.by_inode.insert(inode, found.remove(&inode));
        }
    }

    pub fn get(&self, inode: u32) -> Option<&ProcessOwner> {
        self.by_inode.get(&inode)?.as_ref()
    }

    pub fn len(&self) -> usize {
        self.by_inode.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_inode.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn parses_socket_links_and_nothing_else() {
        assert_eq!(parse_socket_link("socket:[12345]"), Some(12345));
        assert_eq!(parse_socket_link("socket:[]"), None);
        assert_eq!(parse_socket_link("socket:[99999999999]"), None);
        assert_eq!(parse_socket_link("pipe:[12345]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
        assert_eq!(parse_socket_link("socket:[12"), None);
    }

    #[test]
    fn parses_cgroup_files() {
        assert_eq!(
            parse_cgroup("0::/system.slice/nginx.service\n").as_deref(),
            Some("/system.slice/nginx.service")
        );
        let hybrid =
            "12:pids:/user.slice\n1:name=systemd:/user.slice/x.scope\n0::/user.slice/x.scope\n";
        assert_eq!(parse_cgroup(hybrid).as_deref(), Some("/user.slice/x.scope"));
        assert_eq!(
            parse_cgroup("4:cpu,cpuacct:/docker/abc\n").as_deref(),
            Some("/docker/abc")
        );
        assert_eq!(parse_cgroup(""), None);
        assert_eq!(parse_cgroup("garbage"), None);
    }

    /// A directory laid out like /proc: `<pid>/fd/<n>` links, `comm`, `cgroup`.
    fn fake_proc(processes: &[(u32, &str, &[&str])]) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!(
            "tcptrace-owners-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&root);
        for &(pid, comm, links) in processes {
            let dir = root.join(pid.to_string());
            fs::create_dir_all(dir.join("fd")).unwrap();
            fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
            fs::write(dir.join("cgroup"), format!("0::/test/{comm}\n")).unwrap();
            for (n, target) in links.iter().enumerate() {
                symlink(target, dir.join("fd").join(n.to_string())).unwrap();
            }
        }
        fs::create_dir_all(root.join("self")).unwrap();
        root
    }

    #[test]
    fn finds_the_lowest_pid_holding_each_inode() {
        let root = fake_proc(&[
            (300, "worker", &["socket:[7]", "socket:[8]"]),
            (20, "server", &["pipe:[1]", "socket:[7]", "/dev/null"]),
            (4000, "other", &["socket:[9]"]),
        ]);
        // A process without a readable fd directory is skipped, not an error.
        fs::create_dir_all(root.join("55")).unwrap();
        let wanted = HashSet::from([7, 8, 10]);
        let found = find_owners(&root, &wanted);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[&7],
            ProcessOwner {
                pid: 20,
                comm: "server".into(),
                cgroup: Some("/test/server".into())
            }
        );
        assert_eq!(found[&8].pid, 300);
        assert!(find_owners(&root.join("missing"), &wanted).is_empty());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_cache_looks_up_each_inode_once_and_forgets_what_is_no_longer_asked() {
        let mut cache = OwnerCache::default();
        let wanted = HashSet::from([0, 7, 8]);
        let misses = cache.retain_and_misses(&wanted);
        assert_eq!(
            misses,
            HashSet::from([7, 8]),
            "inode 0 (no socket file) is never looked up"
        );
        let owner = ProcessOwner {
            pid: 1,
            comm: "a".into(),
            cgroup: None,
        };
        cache.insert(&misses, HashMap::from([(7, owner.clone())]));
        assert_eq!(cache.get(7), Some(&owner));
        assert_eq!(cache.get(8), None);
        assert!(
            cache.retain_and_misses(&wanted).is_empty(),
            "8 was looked for already"
        );
        assert!(cache.retain_and_misses(&HashSet::from([8])).is_empty());
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(7), None, "7 is no longer asked about");
    }
}
