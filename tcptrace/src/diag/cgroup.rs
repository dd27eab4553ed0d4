//! STUB until the wt-cg branch lands.

use std::{path::PathBuf, sync::Arc};

use serde::Serialize;

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
    pub id: String,
    pub runtime: Runtime,
}

impl Container {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Workload {
    pub cgroup: String,
    pub container: Option<Container>,
    pub pod_uid: Option<String>,
    pub qos: Option<QosClass>,
}

pub fn parse_cgroup_path(path: &str) -> Workload {
    Workload {
        cgroup: path.to_owned(),
        container: None,
        pod_uid: None,
        qos: None,
    }
}

pub struct CgroupResolver {
    _root: PathBuf,
}

impl CgroupResolver {
    pub fn new(root: PathBuf, _capacity: usize) -> Self {
        Self { _root: root }
    }
    pub fn from_host(capacity: usize) -> Option<Self> {
        Some(Self::new(PathBuf::from("/sys/fs/cgroup/unified"), capacity))
    }
    pub fn resolve(&mut self, _id: u64) -> Option<Arc<Workload>> {
        None
    }
}
