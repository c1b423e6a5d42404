//! `GET /healthz`, `/readyz`, `/metrics` of a scaler replica.
//!
//! `/readyz` is 200 once the watch caches have synced, for the leader and for standbys alike:
//! a standby is a healthy replica, and failing its readiness would only hide it from
//! rollouts.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::ScalerHandle;

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(h): State<ScalerHandle>) -> (StatusCode, &'static str) {
    if h.is_ready() {
        (
            StatusCode::OK,
            if h.is_leader() {
                "ready (leader)"
            } else {
                "ready (standby)"
            },
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

async fn metrics(State(h): State<ScalerHandle>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}

pub fn router(handle: ScalerHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(handle)
}
