//! STUB until the wt-ns branch lands: the types of per-namespace dumps.

use std::path::PathBuf;

use super::{DiagError, DiagSocket};
use crate::detect::time_wait::PortRange;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub inum: u32,
    pub path: PathBuf,
}

pub struct NamespaceDump {
    pub netns: u32,
    pub sockets: Vec<DiagSocket>,
    pub port_range: Option<PortRange>,
}

pub struct NamespacesDump {
    pub dumps: Vec<NamespaceDump>,
    pub failed: Vec<(u32, DiagError)>,
}

#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct NetnsError;

pub fn resolve(_arg: &str) -> Result<Namespace, NetnsError> {
    Err(NetnsError)
}

pub fn find_namespaces(_proc: &std::path::Path, _run: &std::path::Path) -> Vec<Namespace> {
    vec![]
}

pub fn dump_namespaces(
    _namespaces: &[Namespace],
    _states: &[crate::state::TcpState],
) -> NamespacesDump {
    NamespacesDump {
        dumps: vec![],
        failed: vec![],
    }
}

pub fn own_netns() -> std::io::Result<u32> {
    Ok(0)
}
