//! Privileged: real cgroup v2 directories laid out as containerd under Kubernetes and as
//! Docker, a real process in them, and what the resolver makes of their ids, through
//! `open_by_handle_at` and through the fallback walk (this thread without
//! CAP_DAC_READ_SEARCH). Everything made is removed, also when a test panics.

mod common;

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Child, Command},
};

use common::require_root;
use tcptrace::diag::{
    cgroup::{cgroup2_mount, cgroup_id, CgroupResolver, Container, QosClass, Runtime, Workload},
    owners::parse_cgroup,
};

const CONTAINERD_ID: &str = "4f9a1c0e7b2d3a4958c6e1f0a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
const DOCKER_ID: &str = "d0c4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
const POD_UID: &str = "7c2d9e4f-5a6b-4c3d-8e9f-0a1b2c3d4e5f";

/// The v2 mount, from this process's mountinfo.
fn v2_mount() -> PathBuf {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    cgroup2_mount(&mountinfo).expect("a cgroup2 mount (DESIGN.md §9)")
}

/// The cgroup v2 path a process is in (`0::<path>`).
fn cgroup_of(pid: u32) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(text.lines().any(|l| l.starts_with("0::")), "{text}");
    parse_cgroup(&text).unwrap()
}

/// `tcptrace-test-<pid>-<tag>` under the v2 mount, and a child process moved around in it. On
/// drop, the child goes back to this process's cgroup and is killed, and every directory
/// made is removed (deepest first); a failure there panics unless the test already is.
struct TestCgroups {
    mount: PathBuf,
    top: PathBuf,
    home: String,
    child: Child,
}

impl TestCgroups {
    /// `tag` keeps the tests of one run (threads of one process) apart.
    fn new(tag: &str) -> TestCgroups {
        let mount = v2_mount();
        let top = mount.join(format!("tcptrace-test-{}-{tag}", std::process::id()));
        let child = Command::new("sleep").arg("60").spawn().expect("sleep runs");
        let cgroups = TestCgroups {
            home: cgroup_of(std::process::id()),
            mount,
            top,
            child,
        };
        cgroups.cleanup(); // a previous run's, if it died hard
        fs::create_dir(&cgroups.top).unwrap();
        cgroups
    }

    /// Makes `<top>/<rel>` (and its parents) and returns its path.
    fn make(&self, rel: &str) -> PathBuf {
        let dir = self.top.join(rel);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        dir
    }

    fn move_child(&self, dir: &Path) {
        fs::write(dir.join("cgroup.procs"), self.child.id().to_string())
            .unwrap_or_else(|e| panic!("moving {} into {}: {e}", self.child.id(), dir.display()));
    }

    fn relative(&self, dir: &Path) -> String {
        format!("/{}", dir.strip_prefix(&self.mount).unwrap().display())
    }

    /// Moves every process under `top` home, then removes the directories.
    fn cleanup(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !self.top.exists() {
            return errors;
        }
        let home = self.mount.join(self.home.trim_start_matches('/'));
        let mut dirs = vec![self.top.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(entries) = fs::read_dir(&dirs[i]) {
                dirs.extend(
                    entries
                        .filter_map(Result::ok)
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            i += 1;
        }
        for dir in dirs.iter().rev() {
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines() {
                if let Err(e) = fs::write(home.join("cgroup.procs"), pid) {
                    errors.push(format!("moving {pid} to {}: {e}", home.display()));
                }
            }
            if let Err(e) = fs::remove_dir(dir) {
                errors.push(format!("rmdir {}: {e}", dir.display()));
            }
        }
        errors
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        let errors = self.cleanup();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !errors.is_empty() && !std::thread::panicking() {
            panic!("cleaning up the test cgroups: {}", errors.join("; "));
        }
    }
}

/// Puts the child in `dir` and checks that the kernel, the file system and the resolver
/// agree on its id, and that it resolves to `expected`.
fn check(cgroups: &TestCgroups, resolver: &mut CgroupResolver, dir: &Path, expected: &Workload) {
    cgroups.move_child(dir);
    let path = cgroup_of(cgroups.child.id());
    assert_eq!(
        path,
        cgroups.relative(dir),
        "the kernel's view of the child"
    );
    assert_eq!(path, expected.cgroup);
    let id = cgroup_id(&cgroups.mount.join(path.trim_start_matches('/'))).unwrap();
    let inode = fs::metadata(dir).unwrap().ino();
    assert_eq!(id, inode, "the cgroup id is the directory's inode number");
    let workload = resolver
        .resolve(id)
        .unwrap_or_else(|| panic!("cgroup {id} ({path}) not found"));
    assert_eq!(*workload, *expected);
}

fn expected(cgroups: &TestCgroups) -> [(PathBuf, Workload); 2] {
    let uid = POD_UID.replace('-', "_");
    let k8s = cgroups.make(&format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/\
         cri-containerd-{CONTAINERD_ID}.scope"
    ));
    let docker = cgroups.make(&format!("system.slice/docker-{DOCKER_ID}.scope"));
    [
        (
            k8s.clone(),
            Workload {
                cgroup: cgroups.relative(&k8s),
                container: Some(Container {
                    id: CONTAINERD_ID.into(),
                    runtime: Some(Runtime::Containerd),
                }),
                pod_uid: Some(POD_UID.into()),
                qos: Some(QosClass::Burstable),
            },
        ),
        (
            docker.clone(),
            Workload {
                cgroup: cgroups.relative(&docker),
                container: Some(Container {
                    id: DOCKER_ID.into(),
                    runtime: Some(Runtime::Docker),
                }),
                pod_uid: None,
                qos: None,
            },
        ),
    ]
}

#[test]
#[ignore = "needs root"]
fn resolves_real_cgroups_by_file_handle() {
    require_root();
    let cgroups = TestCgroups::new("handle");
    let mut resolver = CgroupResolver::from_host(16).expect("the v2 mount");
    for (dir, workload) in expected(&cgroups) {
        check(&cgroups, &mut resolver, &dir, &workload);
    }
    assert_eq!(cgroup_id(&cgroups.mount).unwrap(), 1, "the root cgroup");
    assert_eq!(resolver.resolve(1).unwrap().cgroup, "/");
    // A removed cgroup is unknown from then on.
    let gone = cgroups.make("gone");
    let gone_id = cgroup_id(&gone).unwrap();
    fs::remove_dir(&gone).unwrap();
    assert_eq!(resolver.resolve(gone_id), None);
    assert_eq!(resolver.len(), 4);
}

/// `capget`/`capset` (include/uapi/linux/capability.h, version 3: two 32-bit words).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_DAC_READ_SEARCH: u32 = 2;

/// Capabilities are per thread: clears CAP_DAC_READ_SEARCH from this thread's effective
/// set (kept in the permitted set) until dropped.
struct WithoutDacReadSearch([CapData; 2]);

impl WithoutDacReadSearch {
    fn new() -> WithoutDacReadSearch {
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        // SAFETY: a v3 header and two data words, as the kernel expects.
        let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
        assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
        let saved = data;
        data[0].effective &= !(1 << CAP_DAC_READ_SEARCH);
        set_caps(&data);
        WithoutDacReadSearch(saved)
    }
}

impl Drop for WithoutDacReadSearch {
    fn drop(&mut self) {
        set_caps(&self.0);
    }
}

fn set_caps(data: &[CapData; 2]) {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: a v3 header and two data words; the kernel only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

/// `open_by_handle_at` of the root cgroup (id 1, a `FILEID_KERNFS` handle): its error.
fn open_root_by_handle(mount: &Path) -> std::io::Error {
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        id: u64,
    }
    let mut handle = Handle {
        bytes: 8,
        kind: 0xfe,
        id: 1,
    };
    let dir = fs::File::open(mount).unwrap();
    // SAFETY: a valid fd and a complete handle.
    let fd = unsafe {
        libc::open_by_handle_at(
            std::os::fd::AsRawFd::as_raw_fd(&dir),
            (&raw mut handle).cast(),
            libc::O_PATH,
        )
    };
    assert!(fd < 0, "open_by_handle_at worked");
    std::io::Error::last_os_error()
}

#[test]
#[ignore = "needs root"]
fn resolves_real_cgroups_by_walking_without_cap_dac_read_search() {
    require_root();
    let cgroups = TestCgroups::new("walk");
    let caps = WithoutDacReadSearch::new();
    assert_eq!(
        open_root_by_handle(&cgroups.mount).raw_os_error(),
        Some(libc::EPERM),
        "without CAP_DAC_READ_SEARCH, open_by_handle_at is refused (so the resolver walks)"
    );
    let mut resolver = CgroupResolver::from_host(16).expect("the v2 mount");
    for (dir, workload) in expected(&cgroups) {
        check(&cgroups, &mut resolver, &dir, &workload);
    }
    assert_eq!(resolver.resolve(1).unwrap().cgroup, "/");
    assert_eq!(resolver.resolve(u64::MAX), None);
    drop(caps);
}
