//! Finding (and if need be mounting) tracefs, which aya reads tracepoint ids from.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it failed ({0}); mount it with \
         `mount -t tracefs tracefs /sys/kernel/tracing` and try again"
    )]
    NotMounted(std::io::Error),
    #[error(
        "the kernel has no tracepoint {category}:{name} ({path} is missing); tcptrace needs \
         a kernel with it (Linux 4.16 or later, CONFIG_TRACEPOINTS)"
    )]
    MissingTracepoint {
        category: &'static str,
        name: &'static str,
        path: PathBuf,
    },
}

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACEFS: &str = "/sys/kernel/debug/tracing";

fn is_mounted(path: &Path) -> bool {
    path.join("events").is_dir()
}

/// Where tracefs is mounted, without mounting it.
pub fn find_mounted() -> Option<PathBuf> {
    [TRACEFS, DEBUGFS_TRACEFS]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| is_mounted(p))
}

/// The tracefs mount point, mounting tracefs at `/sys/kernel/tracing` when no mount
/// exists (as `perf` and bpftrace do).
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    for path in [TRACEFS, DEBUGFS_TRACEFS] {
        if is_mounted(Path::new(path)) {
            return Ok(PathBuf::from(path));
        }
    }
    let target = CString::new(TRACEFS).expect("no NUL");
    let fstype = CString::new("tracefs").expect("no NUL");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::NotMounted(std::io::Error::last_os_error()));
    }
    log::info!("mounted tracefs at {TRACEFS}");
    Ok(PathBuf::from(TRACEFS))
}

/// Checks that a tracepoint exists, so that a missing one is named in the error.
pub fn check_tracepoint(
    tracefs: &Path,
    category: &'static str,
    name: &'static str,
) -> Result<(), TracefsError> {
    let path = tracefs.join("events").join(category).join(name).join("id");
    if path.is_file() {
        Ok(())
    } else {
        Err(TracefsError::MissingTracepoint {
            category,
            name,
            path,
        })
    }
}
