//! Which tracepoints this kernel can run the programs on. They are BTF tracepoints
//! (`tp_btf`): attached by the tracepoint's BTF id, not through tracefs, so tracefs need
//! not be mounted. A kernel has one when its BTF holds `btf_trace_<name>`, the typedef
//! `DEFINE_EVENT` makes for it (include/trace/bpf_probe.h).

use btf_rs::{Btf, Type};

use super::VMLINUX_BTF;

#[derive(Debug, thiserror::Error)]
#[error(
    "the kernel has no tracepoint {category}:{name} (its BTF, {VMLINUX_BTF}, has no \
     `btf_trace_{name}`); tcptrace needs a kernel with it: Linux 6.10 or later built \
     with CONFIG_DEBUG_INFO_BTF=y"
)]
pub struct MissingTracepoint {
    pub category: &'static str,
    pub name: &'static str,
}

/// Checks that `btf` has the tracepoint, so that a missing one is named in the error.
pub fn check_tracepoint(
    btf: &Btf,
    category: &'static str,
    name: &'static str,
) -> Result<(), MissingTracepoint> {
    let typedef = format!("btf_trace_{name}");
    let found = btf
        .resolve_types_by_name(&typedef)
        .is_ok_and(|types| types.iter().any(|ty| matches!(ty, Type::Typedef(_))));
    if found {
        Ok(())
    } else {
        Err(MissingTracepoint { category, name })
    }
}

/// BTF that has these tracepoints, as the kernel declares them (a typedef of a pointer
/// to a function prototype; the prototype's shape does not matter to the check).
#[cfg(test)]
pub(crate) fn btf_with(tracepoints: &[&str]) -> Btf {
    use super::test_btf::{TestBtf, TYPEDEF};
    let mut b = TestBtf::new();
    let int = b.int("int", 4);
    for name in tracepoints {
        b.reference(TYPEDEF, &format!("btf_trace_{name}"), int);
    }
    b.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracepoint_is_found_by_its_typedef_and_a_missing_one_is_named() {
        let btf = btf_with(&["inet_sock_set_state"]);
        assert!(check_tracepoint(&btf, "sock", "inet_sock_set_state").is_ok());
        let err = check_tracepoint(&btf, "tcp", "tcp_send_reset").unwrap_err();
        assert_eq!(
            err.to_string(),
            "the kernel has no tracepoint tcp:tcp_send_reset (its BTF, \
             /sys/kernel/btf/vmlinux, has no `btf_trace_tcp_send_reset`); tcptrace needs a \
             kernel with it: Linux 6.10 or later built with CONFIG_DEBUG_INFO_BTF=y"
        );
    }

    #[test]
    fn this_kernel_has_every_tracepoint_the_programs_use() {
        // The project's machines have BTF (DESIGN.md): its absence is a failure.
        let btf = crate::probe::kernel_btf().unwrap_or_else(|err| panic!("{err}"));
        for spec in crate::probe::PROGRAMS {
            check_tracepoint(&btf, spec.category, spec.name).unwrap_or_else(|err| panic!("{err}"));
        }
    }
}
