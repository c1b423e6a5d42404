//! The HTTP edge: a thin axum router over the pure reviews, plus probes, metrics and TLS serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::{Metrics, Outcome};
use crate::review::{Answer, BadRequest, review_pod, review_policy};
use crate::tls::{TlsFiles, load_when_available, watch};

/// Largest accepted request body. The apiserver's own limit on an object is 3 MiB (etcd's
/// 1.5 MiB plus encoding slack), so anything bigger is not a real admission.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

pub const ROUTE_MUTATE: &str = "mutate";
pub const ROUTE_VALIDATE_POLICY: &str = "validate-policy";

/// What every handler shares.
pub struct AppState {
    pub config: Config,
    pub metrics: Metrics,
    certificate_loaded: AtomicBool,
}

impl AppState {
    pub fn new(config: Config) -> Arc<Self> {
        Arc::new(Self {
            config,
            metrics: Metrics::new(),
            certificate_loaded: AtomicBool::new(false),
        })
    }

    /// Marks a certificate as in service; `not_after` feeds the expiry metric.
    pub fn set_certificate_loaded(&self, not_after: i64) {
        self.metrics.certificate_expiry.set(not_after);
        self.certificate_loaded.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.certificate_loaded.load(Ordering::Acquire)
    }
}

/// Every route: `/mutate`, `/validate-policy`, and the probes and metrics.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate-policy", post(validate_policy))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .merge(probe_router())
        .with_state(state)
}

/// `/healthz`, `/readyz` and `/metrics` only, for a plain-HTTP probe port.
pub fn probe_router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no serving certificate loaded yet\n",
        )
            .into_response()
    }
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn mutate(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&s, ROUTE_MUTATE, &headers, body, |b| {
        review_pod(b, &s.config)
    })
}

async fn validate_policy(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(&s, ROUTE_VALIDATE_POLICY, &headers, body, review_policy)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn read_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Bytes, BadRequest> {
    if !is_json(headers) {
        let got = headers
            .get(header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        return Err(BadRequest {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE.as_u16(),
            message: format!(
                "content type must be application/json, got {}",
                got.as_deref().unwrap_or("none")
            ),
            uid: None,
        });
    }
    body.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "request body exceeds the {} MiB limit",
                MAX_BODY_BYTES / (1024 * 1024)
            )
        } else {
            format!("could not read the request body: {}", rejection.body_text())
        };
        BadRequest {
            status: if status.is_client_error() {
                status.as_u16()
            } else {
                400
            },
            message,
            uid: None,
        }
    })
}

fn respond(
    s: &AppState,
    route: &'static str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    review: impl FnOnce(&[u8]) -> Result<Answer, BadRequest>,
) -> Response {
    let started = Instant::now();
    let result = read_body(headers, body).and_then(|b| review(&b));
    let response = match result {
        Ok(answer) => {
            s.metrics
                .count(route, answer.operation.as_str(), answer.outcome);
            match (answer.outcome, &answer.detail) {
                (Outcome::Denied, Some(d)) => {
                    tracing::info!(uid = %answer.uid, route, operation = answer.operation.as_str(), reason = %d, "denied")
                }
                (Outcome::Error, Some(d)) => {
                    tracing::warn!(uid = %answer.uid, route, operation = answer.operation.as_str(), error = %d, "admitted unchanged after an error")
                }
                _ => {
                    tracing::debug!(uid = %answer.uid, route, result = answer.outcome.as_str(), "reviewed")
                }
            }
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                answer.body,
            )
                .into_response()
        }
        Err(bad) => {
            s.metrics.count(route, "unknown", Outcome::Error);
            tracing::warn!(uid = bad.uid.as_deref().unwrap_or(""), route, status = bad.status, error = %bad.message, "bad admission request");
            let status = StatusCode::from_u16(bad.status).unwrap_or(StatusCode::BAD_REQUEST);
            (status, format!("{}\n", bad.message)).into_response()
        }
    };
    s.metrics.observe(route, started.elapsed().as_secs_f64());
    response
}

/// Serving options for [`serve_tls`].
#[derive(Debug, Clone)]
pub struct TlsServeOptions {
    pub files: TlsFiles,
    /// How often the certificate files are re-read.
    pub reload_interval: Duration,
}

/// A running HTTPS server.
pub struct RunningServer {
    pub local_addr: SocketAddr,
    pub handle: Handle<SocketAddr>,
    server: JoinHandle<std::io::Result<()>>,
    reloader: JoinHandle<()>,
}

impl RunningServer {
    /// Stops accepting, lets open requests finish for up to `grace`, and waits for the end.
    pub async fn shutdown(self, grace: Duration) -> std::io::Result<()> {
        self.handle.graceful_shutdown(Some(grace));
        self.reloader.abort();
        match self.server.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }

    /// Waits until the server stops on its own (an accept loop error).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match (&mut self.server).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Serves `router(state)` over TLS on `listener` once a certificate can be loaded, and keeps
/// the certificate fresh from the files.
pub async fn serve_tls(
    listener: std::net::TcpListener,
    state: Arc<AppState>,
    options: TlsServeOptions,
) -> std::io::Result<RunningServer> {
    let local_addr = listener.local_addr()?;
    let loaded = load_when_available(&options.files, options.reload_interval, &state).await;
    let rustls = RustlsConfig::from_config(loaded.config.clone());
    let handle: Handle<SocketAddr> = Handle::new();
    let app = router(state.clone());
    let server = axum_server::from_tcp_rustls(listener, rustls.clone())?
        .handle(handle.clone())
        .serve(app.into_make_service());
    let server = tokio::spawn(server);
    let reloader = tokio::spawn(watch(
        options.files,
        options.reload_interval,
        rustls,
        loaded,
        state,
    ));
    Ok(RunningServer {
        local_addr,
        handle,
        server,
        reloader,
    })
}
