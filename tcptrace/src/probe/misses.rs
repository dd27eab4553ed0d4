//! Tracepoint hits the kernel did not run a program for. `trace_call_bpf()` skips a
//! program when another BPF program already runs on that CPU (a softirq fired the
//! tracepoint while a program ran in process context: the `bpf_prog_active` check),
//! and counts the skip only in that program's `recursion_misses` (`struct
//! bpf_prog_info`, since Linux 5.12). The programs never see those events, so their own
//! loss counter cannot either: this reads the kernel's count.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya_obj::generated::{bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, bpf_prog_info};

/// The `info` member of `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`
/// (include/uapi/linux/bpf.h).
#[repr(C)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The program's `recursion_misses`.
pub(crate) fn recursion_misses(program: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: plain integers and arrays, for which all-zero is valid.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let attr = InfoByFd {
        bpf_fd: u32::try_from(program.as_raw_fd()).map_err(io::Error::other)?,
        info_len: size_of::<bpf_prog_info>() as u32,
        info: (&raw mut info) as u64,
    };
    // SAFETY: bpf(2) with a correctly sized attr naming a buffer of info_len bytes
    // that lives for the call; the kernel writes at most info_len bytes into it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &raw const attr,
            size_of::<InfoByFd>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.recursion_misses)
}
