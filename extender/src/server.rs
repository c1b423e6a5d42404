//! HTTP(S) serving: `POST /filter`, `POST /prioritize`, `GET /healthz`, `/readyz`, `/metrics`.
//!
//! The handlers are thin: [`Extender::handle_filter`] and [`Extender::handle_prioritize`] take
//! the raw body and return status and answer bytes, so they can be benchmarked and tested
//! without a socket. Bodies are decoded by us, not by an axum extractor, so that an undecodable
//! body still gets a well-formed extender answer (and a log line) instead of axum's 4xx text.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use chrono::{DateTime, Utc};

use crate::decide::{self, Config, FailReason, ScoreContext};
use crate::index::{ClusterIndex, IndexState};
use crate::metrics::{Metrics, ReasonLabels, RequestLabels, VerbLabels};
use crate::rates::SpotRates;
use crate::view::{NodeView, PodPolicy, PodView};
use crate::wire::encode::{self, Failed, Passed};
use crate::wire::{ExtenderArgs, FilterResult, Name};

/// Source of "now" for decisions (a fixed clock in tests).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Largest request body accepted. A full NodeList of 5,000 real nodes is 15-40 MB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024 * 1024;

/// Outcome class of one request, the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    PassThrough,
    Error,
    BadRequest,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::PassThrough => "passthrough",
            Outcome::Error => "error",
            Outcome::BadRequest => "bad_request",
        }
    }
}

/// An answer ready to be written.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
    pub outcome: Outcome,
    pub nodes: usize,
}

/// The extender: configuration, index, rates and metrics.
pub struct Extender {
    pub config: Config,
    pub index: Arc<ClusterIndex>,
    pub metrics: Metrics,
    rates: RwLock<Arc<SpotRates>>,
    clock: Clock,
    max_body_bytes: usize,
}

impl std::fmt::Debug for Extender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extender")
            .field("config", &self.config)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Extender {
    pub fn new(config: Config, index: Arc<ClusterIndex>) -> Self {
        Extender {
            config,
            index,
            metrics: Metrics::new(),
            rates: RwLock::new(Arc::new(SpotRates::default())),
            clock: Arc::new(Utc::now),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    pub fn with_rates(self, rates: SpotRates) -> Self {
        self.set_rates(rates);
        self
    }

    /// Replaces the spot rates (when the published document changes).
    pub fn set_rates(&self, rates: SpotRates) {
        *self.rates.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rates);
    }

    pub fn rates(&self) -> Arc<SpotRates> {
        self.rates.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `POST /filter`. Problems are answered with status 200 and `Error` set, which is how
    /// kube-scheduler expects a filter to fail (it then skips an ignorable extender).
    pub fn handle_filter(&self, body: &[u8]) -> Answer {
        let args = match decode_args(body) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, bytes = body.len(), "filter: undecodable ExtenderArgs");
                return filter_error(
                    format!("gpu-autoscaler: cannot decode ExtenderArgs: {e}"),
                    Outcome::BadRequest,
                );
            }
        };
        let Some(pod) = args.pod.as_ref() else {
            tracing::warn!("filter: ExtenderArgs without Pod");
            return filter_error(
                "gpu-autoscaler: ExtenderArgs has no Pod".to_string(),
                Outcome::BadRequest,
            );
        };
        let pod_view = PodView::from_pod(pod, &self.config.gpu_names);
        let pod_name = pod_display(pod);
        let now = (self.clock)();
        match (&args.nodes, &args.node_names) {
            (Some(items), _) => self.filter_full(&pod_view, &pod_name, items, now),
            (None, Some(names)) => self.filter_cached(&pod_view, &pod_name, names, now),
            (None, None) => {
                tracing::warn!(pod = %pod_name, "filter: ExtenderArgs has neither Nodes nor NodeNames");
                filter_error(
                    "gpu-autoscaler: ExtenderArgs has neither Nodes nor NodeNames".to_string(),
                    Outcome::BadRequest,
                )
            }
        }
    }

    fn filter_full(
        &self,
        pod: &PodView,
        pod_name: &str,
        items: &[&serde_json::value::RawValue],
        now: DateTime<Utc>,
    ) -> Answer {
        if pod.policy == PodPolicy::PassThrough {
            let body = encode::filter_result(Passed::Items(items), &mut Failed::default());
            return ok_answer(body, Outcome::PassThrough, items.len());
        }
        let views = match self.parse_nodes(items) {
            Ok(v) => v,
            Err(msg) => {
                tracing::warn!(pod = %pod_name, error = %msg, "filter: bad Node in request");
                return filter_error(format!("gpu-autoscaler: {msg}"), Outcome::BadRequest);
            }
        };
        let verdicts = decide::filter(pod, views.iter(), now, &self.config);
        let mut passed = Vec::with_capacity(items.len());
        let mut reasons = ReasonTable::default();
        let mut failed = Vec::new();
        for ((item, view), verdict) in items.iter().zip(&views).zip(verdicts) {
            match verdict {
                None => passed.push(*item),
                Some(r) => failed.push((&*view.name, reasons.index_of(r))),
            }
        }
        self.count_filtered(&reasons);
        log_decision(pod_name, items.len(), failed.len());
        let mut failed = reasons.into_failed(failed);
        let body = encode::filter_result(Passed::Items(&passed), &mut failed);
        ok_answer(body, Outcome::Ok, items.len())
    }

    fn filter_cached(
        &self,
        pod: &PodView,
        pod_name: &str,
        names: &[Name<'_>],
        now: DateTime<Utc>,
    ) -> Answer {
        if pod.policy == PodPolicy::PassThrough {
            let all: Vec<&str> = names.iter().map(Name::as_str).collect();
            let body = encode::filter_result(Passed::Names(&all), &mut Failed::default());
            return ok_answer(body, Outcome::PassThrough, names.len());
        }
        if let Err(msg) = self.cache_ready() {
            tracing::warn!(pod = %pod_name, "filter: {msg}");
            return filter_error(msg, Outcome::Error);
        }
        // One read guard for the whole decision: lookups, checks and nothing else.
        let state = self.index.read();
        let views = match lookup_all(&state, names) {
            Ok(v) => v,
            Err(msg) => {
                drop(state);
                tracing::warn!(pod = %pod_name, "filter: {msg}");
                return filter_error(msg, Outcome::Error);
            }
        };
        let mut passed = Vec::with_capacity(names.len());
        let mut reasons = ReasonTable::default();
        let mut failed = Vec::new();
        for (name, view) in names.iter().zip(&views) {
            match decide::check_node(pod, view, now, &self.config) {
                None => passed.push(name.as_str()),
                Some(r) => failed.push((name.as_str(), reasons.index_of(r))),
            }
        }
        drop(views);
        drop(state);
        self.count_filtered(&reasons);
        log_decision(pod_name, names.len(), failed.len());
        let mut failed = reasons.into_failed(failed);
        let body = encode::filter_result(Passed::Names(&passed), &mut failed);
        ok_answer(body, Outcome::Ok, names.len())
    }

    /// `POST /prioritize`. Problems are answered with 400 (bad input) or 503 (index not yet
    /// synced); kube-scheduler then ignores this extender's scores for the pod.
    pub fn handle_prioritize(&self, body: &[u8]) -> Answer {
        let args = match decode_args(body) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, bytes = body.len(), "prioritize: undecodable ExtenderArgs");
                return plain_error(
                    StatusCode::BAD_REQUEST,
                    format!("gpu-autoscaler: cannot decode ExtenderArgs: {e}"),
                    Outcome::BadRequest,
                );
            }
        };
        let Some(pod) = args.pod.as_ref() else {
            tracing::warn!("prioritize: ExtenderArgs without Pod");
            return plain_error(
                StatusCode::BAD_REQUEST,
                "gpu-autoscaler: ExtenderArgs has no Pod".to_string(),
                Outcome::BadRequest,
            );
        };
        let pod_view = PodView::from_pod(pod, &self.config.gpu_names);
        let now = (self.clock)();
        let rates = self.rates();
        match (&args.nodes, &args.node_names) {
            (Some(items), _) => {
                let views = match self.parse_nodes(items) {
                    Ok(v) => v,
                    Err(msg) => {
                        tracing::warn!(pod = %pod_display(pod), error = %msg, "prioritize: bad Node in request");
                        return plain_error(
                            StatusCode::BAD_REQUEST,
                            format!("gpu-autoscaler: {msg}"),
                            Outcome::BadRequest,
                        );
                    }
                };
                let state = self.index.read();
                let mut views = views;
                for v in &mut views {
                    v.gpus_in_use = state.gpus_in_use(&v.name);
                }
                let spread = pod_view.owner.as_ref().and_then(|o| {
                    let by_name: HashMap<&str, &NodeView> =
                        views.iter().map(|v| (&*v.name, v)).collect();
                    state.spread_of(o, |n| by_name.get(n).copied())
                });
                drop(state);
                let ctx = ScoreContext {
                    rates: &rates,
                    spread: spread.as_ref(),
                };
                let scores = decide::prioritize(&pod_view, views.iter(), now, &ctx, &self.config);
                let body = encode::host_priorities(
                    views.len(),
                    views.iter().map(|v| &*v.name).zip(scores),
                );
                ok_answer(body, outcome_of(&pod_view), views.len())
            }
            (None, Some(names)) => {
                if pod_view.policy == PodPolicy::PassThrough {
                    let body =
                        encode::host_priorities(names.len(), names.iter().map(|n| (n.as_str(), 0)));
                    return ok_answer(body, Outcome::PassThrough, names.len());
                }
                if let Err(msg) = self.cache_ready() {
                    tracing::warn!(pod = %pod_display(pod), "prioritize: {msg}");
                    return plain_error(StatusCode::SERVICE_UNAVAILABLE, msg, Outcome::Error);
                }
                let state = self.index.read();
                let views = match lookup_all(&state, names) {
                    Ok(v) => v,
                    Err(msg) => {
                        tracing::warn!(pod = %pod_display(pod), "prioritize: {msg}");
                        return plain_error(StatusCode::BAD_REQUEST, msg, Outcome::Error);
                    }
                };
                let spread = pod_view
                    .owner
                    .as_ref()
                    .and_then(|o| state.spread_of(o, |n| state.node(n)));
                let ctx = ScoreContext {
                    rates: &rates,
                    spread: spread.as_ref(),
                };
                let scores =
                    decide::prioritize(&pod_view, views.iter().copied(), now, &ctx, &self.config);
                drop(views);
                drop(state);
                let body = encode::host_priorities(
                    names.len(),
                    names.iter().map(Name::as_str).zip(scores),
                );
                ok_answer(body, Outcome::Ok, names.len())
            }
            (None, None) => plain_error(
                StatusCode::BAD_REQUEST,
                "gpu-autoscaler: ExtenderArgs has neither Nodes nor NodeNames".to_string(),
                Outcome::BadRequest,
            ),
        }
    }

    fn cache_ready(&self) -> Result<(), String> {
        if !self.index.node_cache() {
            return Err("gpu-autoscaler: request carries NodeNames only but the extender runs without --node-cache; start it with --node-cache or set nodeCacheCapable: false".to_string());
        }
        if !self.index.is_synced() {
            return Err("gpu-autoscaler: node index not synced yet".to_string());
        }
        Ok(())
    }

    fn parse_nodes(&self, items: &[&serde_json::value::RawValue]) -> Result<Vec<NodeView>, String> {
        items
            .iter()
            .enumerate()
            .map(|(i, raw)| {
                NodeView::from_json(raw.get(), &self.config.gpu_names)
                    .map_err(|e| format!("Nodes.items[{i}]: {e}"))
            })
            .collect()
    }

    /// Adds a request's failed nodes to the metric, once per reason label rather than once
    /// per node (each update takes the family's lock).
    fn count_filtered(&self, reasons: &ReasonTable) {
        let mut per_label: Vec<(&'static str, u64)> = Vec::new();
        for (reason, _, count) in &reasons.seen {
            let label = reason.metric_label();
            match per_label.iter_mut().find(|(l, _)| *l == label) {
                Some((_, n)) => *n += count,
                None => per_label.push((label, *count)),
            }
        }
        for (reason, n) in per_label {
            self.metrics
                .filtered
                .get_or_create(&ReasonLabels { reason })
                .inc_by(n);
        }
    }

    fn observe(&self, verb: &'static str, answer: &Answer, started: Instant) {
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                verb,
                result: answer.outcome.label(),
            })
            .inc();
        self.metrics
            .duration
            .get_or_create(&VerbLabels { verb })
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .request_nodes
            .get_or_create(&VerbLabels { verb })
            .observe(answer.nodes as f64);
    }
}

/// Decodes `ExtenderArgs`, checking UTF-8 once for the whole body: decoding from bytes would
/// re-validate every borrowed node name on its own, which at 5,000 names costs about as
/// much as the filter. A body that is not UTF-8 goes through the byte decoder, so its error
/// message is serde_json's usual one.
fn decode_args(body: &[u8]) -> Result<ExtenderArgs<'_>, serde_json::Error> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

fn outcome_of(pod: &PodView) -> Outcome {
    if matches!(pod.policy, PodPolicy::Managed { .. }) {
        Outcome::Ok
    } else {
        Outcome::PassThrough
    }
}

/// The distinct failure reasons of one request, each rendered once as a JSON string: thousands
/// of nodes usually fail for one or two reasons, and every one of them refers to the shared
/// text by index instead of carrying its own copy.
#[derive(Default)]
struct ReasonTable {
    /// (reason, rendered JSON string literal, nodes failing for it).
    seen: Vec<(FailReason, Vec<u8>, u64)>,
}

impl ReasonTable {
    /// Only the first this many entries are searched for a match. Reasons that carry a
    /// per-node termination time are mostly distinct; past this bound each just gets its own
    /// entry instead of making every lookup scan a long list.
    const SEARCHED: usize = 16;

    fn index_of(&mut self, r: FailReason) -> u32 {
        let hit = self
            .seen
            .iter()
            .enumerate()
            .take(Self::SEARCHED)
            .find(|(_, (k, _, _))| *k == r)
            .map(|(i, _)| i);
        let i = match hit {
            Some(i) => i,
            None => {
                let mut text = Vec::new();
                encode::json_string(&mut text, &r.to_string());
                self.seen.push((r, text, 0));
                self.seen.len() - 1
            }
        };
        self.seen[i].2 += 1;
        i as u32
    }

    /// The failed entries with the reason texts they index.
    fn into_failed<'a>(self, entries: Vec<(&'a str, u32)>) -> Failed<'a> {
        Failed {
            entries,
            reasons: self.seen.into_iter().map(|(_, text, _)| text).collect(),
        }
    }
}

fn lookup_all<'s>(state: &'s IndexState, names: &[Name<'_>]) -> Result<Vec<&'s NodeView>, String> {
    let found = state.nodes_named(names);
    if found.iter().all(Option::is_some) {
        return Ok(found.into_iter().flatten().collect());
    }
    let unknown: Vec<&str> = names
        .iter()
        .zip(&found)
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    let shown: Vec<&str> = unknown.iter().take(10).copied().collect();
    Err(format!(
        "gpu-autoscaler: {} node(s) unknown to the extender's node cache: {}{}",
        unknown.len(),
        shown.join(", "),
        if unknown.len() > shown.len() {
            ", ..."
        } else {
            ""
        }
    ))
}

fn pod_display(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

fn log_decision(pod: &str, nodes: usize, failed: usize) {
    tracing::debug!(pod, nodes, failed, "filter decision");
}

fn filter_error(msg: String, outcome: Outcome) -> Answer {
    let result = FilterResult::error(msg);
    let mut a = encode_filter(&result, outcome, 0);
    a.outcome = outcome;
    a
}

fn encode_filter(result: &FilterResult<'_>, outcome: Outcome, nodes: usize) -> Answer {
    match serde_json::to_vec(result) {
        Ok(body) => ok_answer(body, outcome, nodes),
        Err(e) => plain_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("gpu-autoscaler: cannot encode answer: {e}"),
            Outcome::Error,
        ),
    }
}

fn ok_answer(body: Vec<u8>, outcome: Outcome, nodes: usize) -> Answer {
    Answer {
        status: StatusCode::OK,
        body,
        outcome,
        nodes,
    }
}

fn plain_error(status: StatusCode, msg: String, outcome: Outcome) -> Answer {
    let body = serde_json::to_vec(&serde_json::json!({ "Error": msg }))
        .unwrap_or_else(|_| b"{\"Error\":\"gpu-autoscaler: error\"}".to_vec());
    Answer {
        status,
        body,
        outcome,
        nodes: 0,
    }
}

fn respond(answer: Answer) -> Response {
    let mut resp = (answer.status, answer.body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn filter_handler(State(ext): State<Arc<Extender>>, body: Bytes) -> Response {
    let started = Instant::now();
    let answer = ext.handle_filter(&body);
    ext.observe("filter", &answer, started);
    respond(answer)
}

async fn prioritize_handler(State(ext): State<Arc<Extender>>, body: Bytes) -> Response {
    let started = Instant::now();
    let answer = ext.handle_prioritize(&body);
    ext.observe("prioritize", &answer, started);
    respond(answer)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(ext): State<Arc<Extender>>) -> (StatusCode, &'static str) {
    if ext.index.is_synced() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "index not synced")
    }
}

async fn metrics_handler(State(ext): State<Arc<Extender>>) -> Response {
    {
        let st = ext.index.read();
        ext.metrics.index_nodes.set(st.nodes.len() as i64);
        ext.metrics.index_gpu_pods.set(st.pod_count() as i64);
    }
    ext.metrics
        .index_synced
        .set(i64::from(ext.index.is_synced()));
    match ext.metrics.encode() {
        Ok(text) => {
            let mut resp = text.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// All routes of the extender.
pub fn router(ext: Arc<Extender>) -> Router {
    let limit = ext.max_body_bytes;
    Router::new()
        .route("/filter", post(filter_handler))
        .route("/prioritize", post(prioritize_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ext)
}

/// Certificate and key files for HTTPS; re-read when they change (cert-manager rotation).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load TLS certificate {cert} / key {key}: {source}")]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves `app` on an already bound listener (plain HTTP) until `shutdown` completes.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Answers are written in several segments; with Nagle on, the last small one can wait
    // for the client's delayed ACK (tens of ms), which alone would break a 5 ms p99.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Io)
}

/// Serves `app` on `addr`, over HTTPS when `tls` is given, until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    tls: Option<TlsFiles>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Some(tls) = tls else {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        tracing::info!(%addr, "extender listening (http)");
        return serve_http(listener, app, shutdown).await;
    };
    let tls_err = |source| ServeError::Tls {
        cert: tls.cert.clone(),
        key: tls.key.clone(),
        source,
    };
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key)
        .await
        .map_err(tls_err)?;
    let handle = axum_server::Handle::<SocketAddr>::new();
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            handle.graceful_shutdown(Some(Duration::from_secs(10)));
        });
    }
    tokio::spawn(reload_tls(config.clone(), tls.clone()));
    tracing::info!(%addr, "extender listening (https)");
    // TCP_NODELAY for the same reason as in `serve_http`.
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(config)
        .acceptor(axum_server::accept::NoDelayAcceptor::new());
    axum_server::bind(addr)
        .acceptor(acceptor)
        .handle(handle)
        .serve(app.into_make_service())
        .await
        .map_err(ServeError::Io)
}

/// Re-reads the certificate pair when either file's modification time changes.
async fn reload_tls(config: axum_server::tls_rustls::RustlsConfig, files: TlsFiles) {
    let stamp = |f: &TlsFiles| -> Option<(SystemTime, SystemTime)> {
        let m = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((m(&f.cert)?, m(&f.key)?))
    };
    let mut last = stamp(&files);
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        let now = stamp(&files);
        if now.is_some() && now != last {
            match config.reload_from_pem_file(&files.cert, &files.key).await {
                Ok(()) => {
                    tracing::info!(cert = %files.cert.display(), "reloaded TLS certificate");
                    last = now;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate changed but does not load; keeping the old one")
                }
            }
        }
    }
}
