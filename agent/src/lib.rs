//! The gpu-autoscaler node agent (`gpu-autoscaler agent`, one per node as a DaemonSet).
//!
//! Two jobs:
//! - **GPU utilization**: sample every GPU through NVML ([`gpu::NvmlReader`], behind the
//!   [`gpu::GpuReader`] seam), drop garbage readings, attach the pods holding each GPU
//!   ([`podresources`]), and serve the result on `/metrics` (dcgm-exporter names) and
//!   `GET /v1/utilization` ([`server`]). The scaler reads those through [`scrape`].
//! - **Spot interruptions**: poll the cloud's metadata service ([`cloud`]) and, on a notice,
//!   annotate, taint and cordon the Node and emit an Event ([`node`], [`watcher`]).
//!
//! A node without a GPU or driver is a normal case: the agent serves `status: "no-gpu"` and
//! keeps watching for interruptions.

pub mod cloud;
pub mod gpu;
pub mod http;
pub mod metrics;
pub mod node;
pub mod podresources;
pub mod run;
pub mod scrape;
pub mod server;
pub mod watcher;

pub use cloud::{Cloud, CloudWatcher, Notice, NoticeKind};
pub use gpu::{FakeGpuReader, GpuReader, NvmlReader, RawGpu, ReadError, Status, UtilizationReport};
pub use node::{NodeActions, RebalanceAction};
pub use run::{AgentConfig, Endpoints, Handles};
pub use scrape::UtilizationScraper;
pub use server::{AgentState, SamplingConfig};
pub use watcher::Watcher;
