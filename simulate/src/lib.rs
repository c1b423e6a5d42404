//! `gpu-autoscaler simulate`: replays a real GPU cluster trace on a simulated cloud through
//! the live scaler's decision engine, on a virtual clock, and compares it with a reactive
//! on-demand autoscaler (Cluster-Autoscaler-like) and a static fleet sized to peak demand.
//!
//! - [`trace`]: the workload (openb pod list, or an aggregate demand series);
//! - [`cluster`]: the simulated cloud and cluster, the scheduler stand-in and the books;
//! - [`engine_driver`]: the engine on the virtual clock (snapshot in, plan executed);
//! - [`baselines`]: the comparison policies;
//! - [`run`]: runs all three and computes the figures; [`report`]: table, JSON and HTML.
//!
//! The models (run time, lost work, interruptions, boot delay, reserved commitment) are
//! documented in each module and summarised in `docs/simulate.md`.

pub mod baselines;
pub mod cluster;
pub mod config;
pub mod engine_driver;
pub mod forecast;
pub mod report;
pub mod run;
pub mod trace;

pub use config::SimConfig;
pub use run::{Report, run_all};
pub use trace::{LoadError, Trace};

/// Everything that can stop a simulation, worded for the person who ran it.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Catalog(#[from] gpu_autoscaler_catalog::CatalogError),
    #[error("{file}: {message}")]
    Policy { file: String, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{path}: {message}")]
    Output { path: String, message: String },
}
