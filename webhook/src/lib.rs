//! `gpu-autoscaler webhook`: the mutating admission webhook every GPU pod meets first.
//!
//! - [`mutate::mutate_pod`] is the pure decision for one pod (annotations, toleration,
//!   affinity, scheduler name) and returns a [`Decision`];
//! - [`review`] speaks AdmissionReview v1 and v1beta1 and wraps the decision in a response;
//!   it also validates AutoscalingPolicy objects with the shared cross-field rules;
//! - [`server`] is the thin axum edge: body limits, content type, metrics, probes, and TLS
//!   serving with certificate hot reload ([`tls`]);
//! - [`config`] is the YAML configuration (documented in docs/webhook.md).

pub mod config;
pub mod metrics;
pub mod mutate;
pub mod review;
pub mod server;
pub mod tls;

pub use config::{Config, ConfigError, PriorityThresholds};
pub use mutate::{Decision, mutate_pod};
pub use review::{Answer, BadRequest, Operation, review_pod, review_policy};
pub use server::{
    AppState, MAX_BODY_BYTES, RunningServer, TlsServeOptions, probe_router, router, serve_tls,
};
pub use tls::{TlsError, TlsFiles};
