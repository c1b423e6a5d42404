//! Test support for gpu-autoscaler: a real Kubernetes 1.20 control plane per test.
//!
//! [`ControlPlane::start`] runs etcd, kube-apiserver and (on request) kube-scheduler as child
//! processes on free loopback ports, each in its own temporary directory, and hands back an
//! authenticated [`kube::Client`] plus a kubeconfig file that our own binaries and kube-scheduler
//! can use. Everything is torn down when the [`ControlPlane`] is dropped, panics included, and
//! the children are also bound to the test process with `PR_SET_PDEATHSIG` so a killed test run
//! leaves nothing behind.
//!
//! Nothing reacts to Nodes in this cluster (no kubelet, no node controller), so [`GpuNodeSpec`]
//! creates Nodes that already look like healthy GPU machines: Ready, with GPU capacity and
//! allocatable, and without the `not-ready` taint that the apiserver adds on creation.
//!
//! Binaries: kube-apiserver and kube-scheduler come from `GPU_AUTOSCALER_K8S_BIN` or
//! `$HOME/.cache/gpu-autoscaler/k8s-1.20.2/bin` (built by `scripts/control-plane.sh`); etcd from
//! `PATH`. A missing binary is always an error, in CI and outside it.

mod binaries;
mod control_plane;
mod error;
mod nodes;
mod objects;
mod pdb;
mod pki;
mod process;
mod scheduler;
mod wait;

pub use binaries::{Binaries, ETCD_BIN_ENV, K8S_BIN_ENV, SETUP_COMMAND, default_k8s_bin_dir};
pub use control_plane::{Component, ComponentPid, ControlPlane, ControlPlaneBuilder, KEEP_ENV};
pub use error::Error;
pub use nodes::{
    GpuNodeSpec, mark_node_ready, remove_not_ready_taint, set_allocatable, set_gpus_allocatable,
};
pub use objects::{
    GpuPodSpec, create_namespace, create_unique_namespace, mark_pod_running, pod_node_name,
    wait_for_pod_bound,
};
pub use pdb::set_pdb_disruptions_allowed;
pub use process::pid_alive;
pub use scheduler::{ExtenderConfig, ExtenderTls, SchedulerConfig};
pub use wait::{Settled, wait_for};

/// The GPU resource name used when a helper is not told otherwise.
pub const DEFAULT_GPU_RESOURCE: &str = "nvidia.com/gpu";

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
