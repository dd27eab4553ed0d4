//! Reading kernel structs through the typed pointers a BTF tracepoint hands over.
//!
//! A `tp_btf` program's arguments are `struct sock *` and friends, typed by the kernel's
//! BTF: the verifier checks each load against the struct's layout and turns it into a
//! plain load with an exception-table entry (a fault reads 0). That costs about what a
//! load costs, where each `bpf_probe_read_kernel` of the classic tracepoint programs cost
//! ~20 ns. The offsets come from the running kernel's BTF, set by the loader in a
//! frozen `.rodata` global, so the verifier sees each as the constant it is.

use tcptrace_common::KernelOffsets;

/// The offsets, a load-time setting resolved by the loader from the kernel's BTF.
#[unsafe(no_mangle)]
pub(crate) static KERNEL_OFFSETS: aya_ebpf::Global<KernelOffsets> =
    aya_ebpf::Global::new(KernelOffsets::ZERO);

/// One offset from [`KERNEL_OFFSETS`], read on its own: a load the verifier resolves to a
/// constant, so `pointer + offset` keeps a known offset it can check against BTF.
macro_rules! offset {
    ($field:ident) => {{
        let offsets =
            (&raw const $crate::kernel::KERNEL_OFFSETS).cast::<tcptrace_common::KernelOffsets>();
        // SAFETY: `Global` is `repr(transparent)` over the value; a read of one field.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*offsets).$field)) }
    }};
}
pub(crate) use offset;

/// A kernel pointer as a BTF tracepoint gives it; only ever read through [`read`].
pub type KernelPtr = *const u8;

/// The `T` at `base + offset`. `base` must be a pointer the verifier types from BTF (an
/// argument, or a pointer read through one), and `offset` one of [`KERNEL_OFFSETS`].
#[inline(always)]
pub fn read<T: Copy>(base: KernelPtr, offset: u32) -> T {
    // SAFETY: the verifier proves the access lies in the struct BTF says `base` points to,
    // and the JIT makes a fault (a freed or null pointer) read zero instead of crashing.
    unsafe { core::ptr::read_volatile(base.wrapping_add(offset as usize).cast::<T>()) }
}
