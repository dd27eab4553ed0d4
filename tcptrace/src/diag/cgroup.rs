//! Containers and Kubernetes pods from cgroup v2 ids (DESIGN.md §8–§9).
//!
//! A socket's cgroup id (`sk_cgrp_data` → `cgroup.kn → kernfs_node.id`, right even in
//! softirq) names a directory of the cgroup v2 tree; the runtimes name those directories
//! after the container and the pod (`.../kubepods-burstable-pod<UID>.slice/
//! cri-containerd-<id>.scope`). [`CgroupResolver`] turns the id into the directory's path,
//! [`parse_cgroup_path`] the path into a [`Workload`].
//!
//! Kernel facts relied on (fs/kernfs/mount.c, include/linux/kernfs.h, kernel/cgroup/cgroup.c):
//! - a cgroup's id is its kernfs node id, which `name_to_handle_at` encodes as a handle of
//!   type `FILEID_KERNFS` (0xfe) whose 8 bytes are the id (`kernfs_encode_fh`), and
//!   `open_by_handle_at` decodes back (`kernfs_fh_to_dentry`; ESTALE when no node has it);
//! - on 64-bit kernels the directory's inode number is that id (`kernfs_id_ino`);
//! - ids only grow and are never reused, and v2 cgroups cannot be renamed (`cgroup_rename`
//!   refuses on the default hierarchy): an id's path never changes, so answers, positive or
//!   negative, can be cached for good.
//!
//! Measured here (kernel 6.18, hybrid cgroups): `name_to_handle_at` id == `stat -c %i` for
//! the v2 root (1) and new cgroups; `open_by_handle_at` works as root, gives EPERM without
//! CAP_DAC_READ_SEARCH and ESTALE for an unknown id.

use std::{
    collections::{HashMap, VecDeque},
    ffi::{CString, OsString},
    fs::{self, File},
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{
            ffi::{OsStrExt, OsStringExt},
            fs::{DirEntryExt, MetadataExt},
        },
    },
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;

/// The cgroup v2 mount point, from `/proc/self/mountinfo` text (fstype `cgroup2`); pure-v2
/// hosts mount it at /sys/fs/cgroup, hybrid ones at /sys/fs/cgroup/unified. Handles
/// mountinfo's octal escapes (`\040`).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    // `36 35 98:0 /root /mnt/point rw,noatime master:1 - cgroup2 cgroup2 rw`: the mount
    // point is field 5; optional fields end at `-`, then the fstype
    // (Documentation/filesystems/proc.rst, "/proc/<pid>/mountinfo").
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
        if fields.get(dash + 1) != Some(&"cgroup2") {
            return None;
        }
        fields.get(4).map(|point| unescape(point))
    })
}

/// Undoes mountinfo's escaping of space, tab, newline and backslash as `\ooo`
/// (fs/proc_namespace.c, `mangle`).
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    OsString::from_vec(out).into()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Container {
    /// 64 lowercase hex digits.
    pub id: String,
    /// `None` when the path does not say: the kubelet's cgroupfs driver names a
    /// container's cgroup by its bare id (`/kubepods/burstable/pod<UID>/<id>`) whatever
    /// the runtime.
    pub runtime: Option<Runtime>,
}

impl Container {
    /// The first 12 digits, as `docker ps` shows them.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// What a cgroup says about who runs in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// The path relative to the v2 root, starting with `/`.
    pub cgroup: String,
    pub container: Option<Container>,
    /// The pod's UID with dashes, as the API shows it.
    pub pod_uid: Option<String>,
    /// The pod's QoS class (set with `pod_uid`).
    pub qos: Option<QosClass>,
}

/// What one path component names.
enum Part {
    Pod(String, QosClass),
    Container(Container),
}

/// What a cgroup path says about the container and pod that own it.
///
/// Components are matched wherever they are (a kubelet `--cgroup-root`, or a node that is
/// itself a container, puts the runtimes' trees below the root), and the innermost match
/// wins: a pod below a container (Kubernetes in Docker) replaces it, and sub-cgroups of a
/// container (`.../crio-<id>.scope/container`, systemd inside it) still belong to it.
pub fn parse_cgroup_path(path: &str) -> Workload {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let mut workload = Workload {
        cgroup: path.to_owned(),
        container: None,
        pod_uid: None,
        qos: None,
    };
    for i in 0..parts.len() {
        match classify(&parts[..=i]) {
            Some(Part::Pod(uid, qos)) => {
                workload.pod_uid = Some(uid);
                workload.qos = Some(qos);
                workload.container = None;
            }
            Some(Part::Container(container)) => workload.container = Some(container),
            None => {}
        }
    }
    workload
}

/// The last component of `parts`, in the context of its parents.
fn classify(parts: &[&str]) -> Option<Part> {
    let (&name, parents) = parts.split_last()?;
    let parent = parents.last().copied();
    // systemd driver (kubelet `cgroupDriver: systemd`): the slice names the QoS class,
    // and systemd forbids `-` inside a unit name's parts, so the UID's dashes become `_`.
    if let Some(pod) = name.strip_suffix(".slice") {
        let (qos, uid) = if let Some(uid) = pod.strip_prefix("kubepods-burstable-pod") {
            (QosClass::Burstable, uid)
        } else if let Some(uid) = pod.strip_prefix("kubepods-besteffort-pod") {
            (QosClass::BestEffort, uid)
        } else {
            (QosClass::Guaranteed, pod.strip_prefix("kubepods-pod")?)
        };
        return pod_uid(uid).map(|uid| Part::Pod(uid, qos));
    }
    // cgroupfs driver: `kubepods/[burstable|besteffort/]pod<UID>/<id>`.
    if let Some(uid) = name.strip_prefix("pod") {
        let qos = match (parent, parents.iter().rev().nth(1).copied()) {
            (Some("kubepods"), _) => QosClass::Guaranteed,
            (Some("burstable"), Some("kubepods")) => QosClass::Burstable,
            (Some("besteffort"), Some("kubepods")) => QosClass::BestEffort,
            _ => return None,
        };
        return pod_uid(uid).map(|uid| Part::Pod(uid, qos));
    }
    // `<prefix><id>.scope` (systemd driver) or `<prefix><id>` (cgroupfs). The conmon
    // scopes (`libpod-conmon-<id>.scope`, `crio-conmon-<id>.scope`) hold the runtime's
    // monitor, not the container, and fail the hex test.
    let unit = name.strip_suffix(".scope").unwrap_or(name);
    const PREFIXES: [(&str, Runtime); 5] = [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
        ("libpod-", Runtime::Podman),
        ("nerdctl-", Runtime::Containerd),
    ];
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = unit.strip_prefix(prefix).filter(|id| is_container_id(id)) {
            return Some(container(id, Some(runtime)));
        }
    }
    // A bare id: Docker's cgroupfs driver (`/docker/<id>`), nerdctl's (`/<namespace>/<id>`,
    // `default` unless told otherwise), or a container of a cgroupfs pod.
    if !is_container_id(name) {
        return None;
    }
    let runtime = match parent {
        Some("docker") => Some(Runtime::Docker),
        Some("default") => Some(Runtime::Containerd),
        _ if matches!(classify(parents), Some(Part::Pod(..))) => None,
        _ => return None,
    };
    Some(container(name, runtime))
}

fn container(id: &str, runtime: Option<Runtime>) -> Part {
    Part::Container(Container {
        id: id.to_owned(),
        runtime,
    })
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A pod UID with dashes: a UUID for API pods, 32 hex digits for static pods (a hash of
/// the manifest).
fn pod_uid(raw: &str) -> Option<String> {
    let uid = raw.replace('_', "-");
    (!uid.is_empty() && uid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit())).then_some(uid)
}

/// `FILEID_KERNFS` (include/linux/exportfs.h): a handle holding a kernfs node id.
const FILEID_KERNFS: libc::c_int = 0xfe;

/// `struct file_handle` with room for exactly the 8 bytes of a kernfs handle.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    id: u64,
}

/// The cgroup v2 id of a cgroup directory (what the kernel reports for it:
/// `bpf_get_current_cgroup_id`, `sk_cgrp_data`), from its file handle.
pub fn cgroup_id(dir: &Path) -> io::Result<u64> {
    let path = CString::new(dir.as_os_str().as_bytes())?;
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: 0,
        id: 0,
    };
    let mut mount_id = 0;
    // SAFETY: a NUL-terminated path, and a file_handle whose handle_bytes (8) is the room
    // after its header; the kernel writes at most that (EOVERFLOW if it needs more).
    let rc = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            path.as_ptr(),
            (&raw mut handle).cast(),
            &mut mount_id,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if handle.handle_type != FILEID_KERNFS || handle.handle_bytes != 8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a cgroup (not on kernfs)", dir.display()),
        ));
    }
    Ok(handle.id)
}

/// At most this many directories are read by one fallback walk.
const WALK_LIMIT: usize = 100_000;

/// Maps a cgroup id to the container and pod it belongs to (`None`: unknown). The
/// daemon's is a [`CgroupResolver`]; tests pass a closure.
pub type Resolve<'a> = &'a mut dyn FnMut(u64) -> Option<Arc<Workload>>;

/// Maps cgroup v2 ids (what `bpf_get_current_cgroup_id` and `sk_cgrp_data` give) to
/// workloads. Bounded: at most `capacity` entries, the oldest dropped first. Negative
/// results are cached too: cgroup ids are 64-bit and never reused, so a deleted cgroup
/// stays unknown.
///
/// Lookups are blocking syscalls: call from a blocking context.
#[derive(Debug)]
pub struct CgroupResolver {
    /// The v2 mount, as the kernel prints paths under it.
    root: PathBuf,
    /// The mount, open, while `open_by_handle_at` can be used: it is a cgroup2 mount and
    /// the kernel has not refused (EPERM without CAP_DAC_READ_SEARCH).
    handles: Option<File>,
    capacity: usize,
    cache: HashMap<u64, Option<Arc<Workload>>>,
    /// Cached ids, oldest first.
    order: VecDeque<u64>,
}

impl CgroupResolver {
    /// A resolver for the v2 tree mounted at `root`. Anything else (a plain directory
    /// tree) is searched by inode number, never by file handle.
    pub fn new(root: PathBuf, capacity: usize) -> Self {
        let root = fs::canonicalize(&root).unwrap_or(root);
        let handles = File::open(&root).ok().filter(is_cgroup2);
        CgroupResolver {
            root,
            handles,
            capacity,
            cache: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Finds the v2 mount from `/proc/self/mountinfo`.
    pub fn from_host(capacity: usize) -> Option<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
        Some(Self::new(cgroup2_mount(&mountinfo)?, capacity))
    }

    /// The workload of cgroup `id`; `None` for an unknown id (deleted, or never a cgroup).
    /// Failures that may pass (out of descriptors) are not cached.
    pub fn resolve(&mut self, id: u64) -> Option<Arc<Workload>> {
        // 0: the kernel side could not read the socket's cgroup.
        if id == 0 {
            return None;
        }
        if let Some(known) = self.cache.get(&id) {
            return known.clone();
        }
        let found = match self.find_path(id) {
            Ok(path) => path.map(|p| Arc::new(parse_cgroup_path(&p))),
            Err(e) => {
                log::debug!("cgroup {id}: {e}");
                return None;
            }
        };
        self.remember(id, found.clone());
        found
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    fn remember(&mut self, id: u64, workload: Option<Arc<Workload>>) {
        if self.capacity == 0 {
            return;
        }
        while self.cache.len() >= self.capacity {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.cache.remove(&oldest);
        }
        self.cache.insert(id, workload);
        self.order.push_back(id);
    }

    /// The path of cgroup `id` relative to the root; `Ok(None)` when there is none.
    fn find_path(&mut self, id: u64) -> io::Result<Option<String>> {
        if let Some(mount) = &self.handles {
            match open_by_id(mount, id) {
                Ok(fd) => {
                    let target = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
                    return Ok(self.relative(&target));
                }
                Err(e) if e.raw_os_error() == Some(libc::ESTALE) => return Ok(None),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::EOPNOTSUPP)) => {
                    log::warn!(
                        "open_by_handle_at on {}: {e}; finding cgroups by walking the tree \
                         instead (slower: grant CAP_DAC_READ_SEARCH)",
                        self.root.display()
                    );
                    self.handles = None;
                }
                Err(e) => return Err(e),
            }
        }
        self.walk(id)
    }

    /// `/a/b` for `<root>/a/b`; `None` for a cgroup removed meanwhile (d_path appends
    /// ` (deleted)`) or a path outside the mount.
    fn relative(&self, target: &Path) -> Option<String> {
        if target.as_os_str().as_bytes().ends_with(b" (deleted)") {
            return None;
        }
        let rest = target.strip_prefix(&self.root).ok()?;
        Some(format!("/{}", rest.to_string_lossy()))
    }

    /// Searches the tree for the directory whose inode number is `id` (on 64-bit kernels,
    /// the kernfs id). Reads at most [`WALK_LIMIT`] directories.
    fn walk(&self, id: u64) -> io::Result<Option<String>> {
        if fs::metadata(&self.root)?.ino() == id {
            return Ok(Some("/".to_owned()));
        }
        let mut stack = vec![self.root.clone()];
        let mut read = 0;
        while let Some(dir) = stack.pop() {
            read += 1;
            if read > WALK_LIMIT {
                log::warn!("cgroup {id}: not found in the first {WALK_LIMIT} cgroups");
                break;
            }
            // A cgroup removed meanwhile is skipped.
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                // readdir's d_ino: for kernfs, kernfs_ino(), the id (fs/kernfs/dir.c).
                if entry.ino() == id {
                    return Ok(self.relative(&entry.path()));
                }
                stack.push(entry.path());
            }
        }
        Ok(None)
    }
}

/// Whether `dir` is on a cgroup2 file system, the only one whose handles are kernfs ids.
fn is_cgroup2(dir: &File) -> bool {
    // SAFETY: statfs is plain data; fstatfs fills it for a valid fd.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a statfs to write to.
    let rc = unsafe { libc::fstatfs(dir.as_raw_fd(), &mut st) };
    rc == 0 && st.f_type == libc::CGROUP2_SUPER_MAGIC
}

/// `open_by_handle_at` with the kernfs handle for `id`: an `O_PATH` descriptor of the
/// cgroup's directory.
fn open_by_id(mount: &File, id: u64) -> io::Result<OwnedFd> {
    let mut handle = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: a valid mount fd and a complete handle; the kernel only reads it.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&raw mut handle).cast(),
            libc::O_PATH | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const ID2: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    const UID: &str = "3d4c5b6a-1234-4f2e-9a8b-0c1d2e3f4a5b";

    fn uid_() -> String {
        UID.replace('-', "_")
    }

    fn workload(
        path: &str,
        container: Option<(&str, Option<Runtime>)>,
        pod: Option<QosClass>,
    ) -> Workload {
        Workload {
            cgroup: path.to_owned(),
            container: container.map(|(id, runtime)| Container {
                id: id.to_owned(),
                runtime,
            }),
            pod_uid: pod.map(|_| UID.to_owned()),
            qos: pod,
        }
    }

    fn check(path: &str, container: Option<(&str, Option<Runtime>)>, pod: Option<QosClass>) {
        assert_eq!(
            parse_cgroup_path(path),
            workload(path, container, pod),
            "{path}"
        );
    }

    #[test]
    fn kubernetes_systemd_driver_every_qos_and_runtime() {
        let u = uid_();
        for (runtime, prefix) in [
            (Runtime::Containerd, "cri-containerd-"),
            (Runtime::CriO, "crio-"),
            (Runtime::Docker, "docker-"),
        ] {
            let c = Some((ID, Some(runtime)));
            check(
                &format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/{prefix}{ID}.scope"),
                c,
                Some(QosClass::Burstable),
            );
            check(
                &format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/{prefix}{ID}.scope"),
                c,
                Some(QosClass::BestEffort),
            );
            check(
                &format!("/kubepods.slice/kubepods-pod{u}.slice/{prefix}{ID}.scope"),
                c,
                Some(QosClass::Guaranteed),
            );
        }
        // The pod's own cgroup: a pod, no container.
        check(
            &format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice"),
            None,
            Some(QosClass::Burstable),
        );
        // A static pod's UID is a hash: 32 hex digits, no dashes.
        let hash = "6f3bd4a1c8e1e8d8d3c9c2b1a0f9e8d7";
        let w = parse_cgroup_path(&format!("/kubepods.slice/kubepods-pod{hash}.slice"));
        assert_eq!(w.pod_uid.as_deref(), Some(hash));
    }

    #[test]
    fn kubernetes_cgroupfs_driver() {
        for (dir, qos) in [
            ("/kubepods/burstable", QosClass::Burstable),
            ("/kubepods/besteffort", QosClass::BestEffort),
            ("/kubepods", QosClass::Guaranteed),
        ] {
            check(&format!("{dir}/pod{UID}/{ID}"), Some((ID, None)), Some(qos));
            check(&format!("{dir}/pod{UID}"), None, Some(qos));
            // CRI-O names its cgroupfs cgroups `crio-<id>`.
            check(
                &format!("{dir}/pod{UID}/crio-{ID}"),
                Some((ID, Some(Runtime::CriO))),
                Some(qos),
            );
        }
        // `pod…` means a pod only under kubepods.
        check(&format!("/other/pod{UID}/{ID}"), None, None);
        check(&format!("/other/burstable/pod{UID}"), None, None);
    }

    #[test]
    fn docker_podman_nerdctl() {
        let docker = Some((ID, Some(Runtime::Docker)));
        let podman = Some((ID, Some(Runtime::Podman)));
        let containerd = Some((ID, Some(Runtime::Containerd)));
        check(&format!("/system.slice/docker-{ID}.scope"), docker, None);
        check(&format!("/docker/{ID}"), docker, None);
        check(&format!("/machine.slice/libpod-{ID}.scope"), podman, None);
        check(
            &format!("/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope"),
            podman,
            None,
        );
        check(
            &format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            podman,
            None,
        );
        check(&format!("/libpod_parent/libpod-{ID}"), podman, None);
        check(
            &format!("/system.slice/nerdctl-{ID}.scope"),
            containerd,
            None,
        );
        check(&format!("/default/{ID}"), containerd, None);
        assert_eq!(
            parse_cgroup_path(&format!("/docker/{ID}"))
                .container
                .unwrap()
                .short_id(),
            "0123456789ab"
        );
    }

    #[test]
    fn not_anchored_at_the_root_and_innermost_wins() {
        let u = uid_();
        check(
            &format!("/tcptrace-test-42/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"),
            Some((ID, Some(Runtime::Containerd))),
            Some(QosClass::Burstable),
        );
        check(
            &format!("/tcptrace-test-42/system.slice/docker-{ID}.scope"),
            Some((ID, Some(Runtime::Docker))),
            None,
        );
        // Sub-cgroups of a container still belong to it.
        check(
            &format!("/kubepods.slice/kubepods-pod{u}.slice/crio-{ID}.scope/container"),
            Some((ID, Some(Runtime::CriO))),
            Some(QosClass::Guaranteed),
        );
        check(
            &format!("/machine.slice/libpod-{ID}.scope/init.scope"),
            Some((ID, Some(Runtime::Podman))),
            None,
        );
        // Docker in Docker: the inner container.
        check(
            &format!("/system.slice/docker-{ID2}.scope/docker/{ID}"),
            Some((ID, Some(Runtime::Docker))),
            None,
        );
        // Kubernetes in Docker (kind): the pod and its container, not the node.
        let kind = format!("/system.slice/docker-{ID2}.scope/kubepods/besteffort/pod{UID}");
        check(&kind, None, Some(QosClass::BestEffort));
        check(
            &format!("{kind}/{ID}"),
            Some((ID, None)),
            Some(QosClass::BestEffort),
        );
    }

    #[test]
    fn conmon_and_other_paths_are_no_container() {
        check(
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            None,
            None,
        );
        check(
            &format!(
                "/kubepods.slice/kubepods-pod{}.slice/crio-conmon-{ID}.scope",
                uid_()
            ),
            None,
            Some(QosClass::Guaranteed),
        );
        check("/libpod_parent/conmon", None, None);
        check("/user.slice/user-1000.slice/session-2.scope", None, None);
        check("/", None, None);
        check("", None, None);
        check("/system.slice/nginx.service", None, None);
        check("/system.slice/containerd.service", None, None);
        check("/kubepods.slice/kubepods-burstable.slice", None, None);
        // Ids that are not 64 lowercase hex digits.
        let short = &ID[1..];
        let upper = ID.to_uppercase();
        let long = format!("{ID}0");
        for id in [short, upper.as_str(), long.as_str(), "xyz"] {
            check(&format!("/system.slice/docker-{id}.scope"), None, None);
            check(&format!("/docker/{id}"), None, None);
            check(
                &format!("/kubepods/pod{UID}/{id}"),
                None,
                Some(QosClass::Guaranteed),
            );
        }
        // A pod UID must look like one.
        check("/kubepods.slice/kubepods-podzz.slice", None, None);
        check("/kubepods/pod", None, None);
    }

    #[test]
    fn serializes_in_snake_case() {
        let w = parse_cgroup_path(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}"));
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(json["qos"], "best_effort");
        assert_eq!(json["container"]["runtime"], "cri_o");
        assert_eq!(json["pod_uid"], UID);
        let w = parse_cgroup_path(&format!("/kubepods/pod{UID}/{ID}"));
        assert!(serde_json::to_value(&w).unwrap()["container"]["runtime"].is_null());
    }

    #[test]
    fn finds_the_cgroup2_mount() {
        let hybrid = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
26 22 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
        assert_eq!(cgroup2_mount(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        // No optional fields; escaped space, tab and backslash.
        let escaped = r"50 22 0:40 / /mnt/my\040cg\011v2\134x rw - cgroup2 none rw";
        assert_eq!(
            cgroup2_mount(escaped),
            Some(PathBuf::from("/mnt/my cg\tv2\\x"))
        );
        // A v1 hierarchy named cgroup2, or a truncated line, is not one.
        assert_eq!(
            cgroup2_mount(
                "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup2 rw\n31 23 0:28 / /x\n"
            ),
            None
        );
        assert_eq!(cgroup2_mount(""), None);
    }

    /// A plain directory tree (not cgroup2: searched by inode number) under a fresh
    /// temporary directory.
    struct Tree(PathBuf);

    impl Tree {
        fn new(tag: &str) -> Tree {
            let root =
                std::env::temp_dir().join(format!("tcptrace-cgroup-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            Tree(root)
        }

        fn dir(&self, rel: &str) -> u64 {
            let path = self.0.join(rel.trim_start_matches('/'));
            fs::create_dir_all(&path).unwrap();
            fs::metadata(path).unwrap().ino()
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn resolves_by_inode_in_a_plain_tree() {
        let tree = Tree::new("walk");
        let pod = format!("/kubepods/burstable/pod{UID}");
        let path = format!("{pod}/{ID}");
        let id = tree.dir(&path);
        tree.dir(&format!("{pod}/{ID2}"));
        let mut resolver = CgroupResolver::new(tree.0.clone(), 8);
        assert!(resolver.handles.is_none(), "a temp dir is no cgroup2 mount");
        let w = resolver.resolve(id).expect("found by inode");
        assert_eq!(
            *w,
            workload(&path, Some((ID, None)), Some(QosClass::Burstable))
        );
        let root_ino = fs::metadata(&tree.0).unwrap().ino();
        assert_eq!(resolver.resolve(root_ino).unwrap().cgroup, "/");
        assert_eq!(resolver.len(), 2);
    }

    #[test]
    fn caches_negative_answers_and_stays_bounded() {
        let tree = Tree::new("cache");
        let outside = Tree::new("outside");
        let (a, b, c) = (tree.dir("/a"), tree.dir("/b"), tree.dir("/c"));
        let stray = outside.dir("/stray");
        let mut resolver = CgroupResolver::new(tree.0.clone(), 3);
        assert!(resolver.is_empty());

        assert_eq!(resolver.resolve(stray), None);
        assert_eq!(resolver.len(), 1, "a miss is cached");
        // Moved into the tree, the directory is still unknown: the miss was remembered
        // (a cgroup id never comes back).
        fs::rename(outside.0.join("stray"), tree.0.join("stray")).unwrap();
        assert_eq!(resolver.resolve(stray), None);

        assert_eq!(resolver.resolve(a).unwrap().cgroup, "/a");
        assert_eq!(resolver.resolve(b).unwrap().cgroup, "/b");
        assert_eq!(resolver.len(), 3);
        // Full: c pushes the oldest (the miss) out, so stray is looked up again now.
        assert_eq!(resolver.resolve(c).unwrap().cgroup, "/c");
        assert_eq!(resolver.len(), 3);
        // Answers come from the cache while kept: /a gone from disk still resolves.
        fs::remove_dir(tree.0.join("a")).unwrap();
        assert_eq!(resolver.resolve(a).unwrap().cgroup, "/a");
        assert_eq!(resolver.resolve(stray).unwrap().cgroup, "/stray");
        assert_eq!(resolver.len(), 3, "stray pushed /a out");
        assert_eq!(resolver.resolve(a), None, "/a was forgotten, and is gone");

        let mut none = CgroupResolver::new(tree.0.clone(), 0);
        assert_eq!(none.resolve(b).unwrap().cgroup, "/b");
        assert!(none.is_empty(), "capacity 0 caches nothing");
    }
}
