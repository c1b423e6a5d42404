//! The agent's HTTP surface and GPU sampling loop.
//!
//! - `GET /v1/utilization`: [`crate::gpu::UtilizationReport`] as JSON (what the scaler scrapes);
//! - `GET /metrics`: Prometheus text;
//! - `GET /healthz`: the process serves;
//! - `GET /readyz`: a first GPU sample was taken (a node without GPUs is ready too: "no GPU"
//!   is a valid answer).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;

use crate::gpu::{GpuReader, PodRef, Sampler, UtilizationReport};
use crate::metrics::Metrics;
use crate::podresources;

pub const UTILIZATION_PATH: &str = "/v1/utilization";

/// Shared between the sampler, the watcher and the HTTP handlers.
pub struct AgentState {
    report: RwLock<UtilizationReport>,
    sampled: AtomicBool,
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("sampled", &self.sampled.load(Ordering::Relaxed))
            .finish()
    }
}

impl AgentState {
    pub fn new(initial: UtilizationReport, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(AgentState {
            report: RwLock::new(initial),
            sampled: AtomicBool::new(false),
            metrics,
        })
    }

    pub fn report(&self) -> Option<UtilizationReport> {
        self.report.read().ok().map(|r| r.clone())
    }

    pub fn publish(&self, report: UtilizationReport) {
        if let Ok(mut slot) = self.report.write() {
            *slot = report;
        }
        self.sampled.store(true, Ordering::Release);
    }

    pub fn ready(&self) -> bool {
        self.sampled.load(Ordering::Acquire)
    }
}

pub fn router(state: Arc<AgentState>) -> Router {
    Router::new()
        .route(UTILIZATION_PATH, get(utilization))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn utilization(State(state): State<Arc<AgentState>>) -> Response {
    match state.report() {
        Some(report) => Json(report).into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, "state unavailable").into_response(),
    }
}

async fn metrics(State(state): State<Arc<AgentState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(state): State<Arc<AgentState>>) -> Response {
    if state.ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no GPU sample yet").into_response()
    }
}

/// How GPU samples are taken.
pub struct SamplingConfig {
    pub reader: Arc<dyn GpuReader>,
    pub interval: Duration,
    /// Kubelet pod-resources socket; `None` disables the pod mapping.
    pub pod_resources_socket: Option<PathBuf>,
    /// Resource names that are GPUs in pod-resources answers.
    pub gpu_resource: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl std::fmt::Debug for SamplingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamplingConfig")
            .field("interval", &self.interval)
            .field("pod_resources_socket", &self.pod_resources_socket)
            .finish()
    }
}

/// Takes one sample: reads the GPUs (on a blocking thread), maps pods, publishes.
pub async fn sample_once(
    config: &SamplingConfig,
    sampler: &mut Sampler,
    state: &AgentState,
) -> UtilizationReport {
    let reader = config.reader.clone();
    let read = tokio::task::spawn_blocking(move || reader.read())
        .await
        .unwrap_or_else(|e| Err(crate::gpu::ReadError::Failed(format!("GPU reader: {e}"))));
    let pods: Option<BTreeMap<String, Vec<PodRef>>> = match (&read, &config.pod_resources_socket) {
        (Ok(_), Some(socket)) => match podresources::list(socket, Duration::from_secs(2)).await {
            Ok(list) => Some(podresources::pods_by_device(&list, |r| {
                (config.gpu_resource)(r)
            })),
            Err(e) => {
                tracing::debug!(error = %e, "pod-resources unavailable");
                None
            }
        },
        _ => None,
    };
    let (report, rejected) = sampler.record(Utc::now(), read, pods.as_ref());
    if rejected.utilization + rejected.memory > 0 {
        tracing::warn!(?rejected, "dropped garbage GPU readings");
    }
    state.metrics.record_sample(&report, rejected);
    state.publish(report.clone());
    report
}

/// Samples every `config.interval` until `shutdown` resolves.
pub async fn run_sampler(
    config: SamplingConfig,
    mut sampler: Sampler,
    state: Arc<AgentState>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(config.interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut last_status = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tick.tick() => {
                let report = sample_once(&config, &mut sampler, &state).await;
                if last_status != Some(report.status) {
                    tracing::info!(status = report.status.as_str(), gpus = report.gpus.len(), error = ?report.error, "GPU sampling status");
                    last_status = Some(report.status);
                }
            }
        }
    }
}
