//! GPU utilization from the node agents (`gpu-autoscaler agent`, `GET /v1/utilization`).
//!
//! Each reconcile asks the agents of the managed nodes concurrently, each exchange bounded by
//! a timeout ([`UtilizationScraper`]). A node whose agent is missing, slow, reports no GPU or
//! an error, or answers for another node is left out of the view: *unknown*, which the engine
//! never reads as idle. Agents are found from the nodes' `InternalIP` and the agent port (the
//! DaemonSet runs with hostNetwork); the address list is refreshed at most every
//! [`ENDPOINT_REFRESH`], or sooner when an asked-for node has no known address.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use gpu_autoscaler_agent::UtilizationReport;
use gpu_autoscaler_agent::scrape::UtilizationScraper;
use gpu_autoscaler_agent::scrape::{ScrapeError, endpoints_from_nodes, usable_average};
use gpu_autoscaler_api::keys;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::ListParams;
use tokio::sync::{mpsc, oneshot};

use super::utilization::{UtilizationError, UtilizationSource};
use crate::engine::UtilizationView;

pub use gpu_autoscaler_agent::scrape::DEFAULT_AGENT_PORT;

/// How long a node → agent address list is reused.
pub const ENDPOINT_REFRESH: Duration = Duration::from_secs(30);
/// Default bound on one agent exchange.
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Window reported when no agent answered (the agent's default `--window`).
const DEFAULT_WINDOW_SECONDS: u32 = 300;

enum Endpoints {
    /// Discovered from Node objects: `http://<InternalIP>:<port>`.
    Nodes {
        api: Box<Api<Node>>,
        port: u16,
        cache: Mutex<Option<(Instant, BTreeMap<String, String>)>>,
    },
    /// Node name → agent base URL, as given (tests, agents behind a proxy).
    Fixed(BTreeMap<String, String>),
}

type Reports = BTreeMap<String, Result<UtilizationReport, ScrapeError>>;
type Job = (BTreeMap<String, String>, oneshot::Sender<Reports>);

/// Runs the scraper on a thread of its own with a single-threaded runtime.
///
/// `UtilizationScraper::scrape_reports` returns a future rustc can't prove `Send` for every
/// lifetime (its stream maps borrowed items through a closure: the known higher-ranked
/// closure limitation), so it can't be awaited inside the controller's `Send` reconcile
/// future, nor spawned. On its own runtime it needn't be `Send`; only the endpoint map and
/// the answers cross threads. The runtime lives as long as the source, so the scraper's
/// pooled connections stay valid between reconciles.
struct ScrapeThread {
    jobs: mpsc::UnboundedSender<Job>,
}

impl ScrapeThread {
    fn start(scraper: UtilizationScraper) -> Option<Self> {
        let (jobs, mut rx) = mpsc::unbounded_channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("agent-scrape".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "agent scrape runtime failed to start");
                        return;
                    }
                };
                rt.block_on(async move {
                    while let Some((endpoints, reply)) = rx.recv().await {
                        let _ = reply.send(scraper.scrape_reports(&endpoints).await);
                    }
                });
            });
        match spawned {
            Ok(_) => Some(ScrapeThread { jobs }),
            Err(e) => {
                tracing::error!(error = %e, "agent scrape thread failed to start");
                None
            }
        }
    }

    async fn scrape(&self, endpoints: BTreeMap<String, String>) -> Result<Reports, String> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send((endpoints, tx))
            .map_err(|_| "agent scrape thread stopped".to_string())?;
        rx.await
            .map_err(|_| "agent scrape thread stopped".to_string())
    }
}

/// A [`UtilizationSource`] that scrapes the node agents.
pub struct AgentUtilization {
    scraper: Option<ScrapeThread>,
    endpoints: Endpoints,
}

impl AgentUtilization {
    /// Agents on every managed node's InternalIP at `port`.
    pub fn from_nodes(client: kube::Client, port: u16, timeout: Duration) -> Self {
        AgentUtilization {
            scraper: ScrapeThread::start(UtilizationScraper::new(timeout)),
            endpoints: Endpoints::Nodes {
                api: Box::new(Api::all(client)),
                port,
                cache: Mutex::new(None),
            },
        }
    }

    /// Agents at fixed base URLs (node name → `http://host:port`).
    pub fn from_endpoints(endpoints: BTreeMap<String, String>, timeout: Duration) -> Self {
        AgentUtilization {
            scraper: ScrapeThread::start(UtilizationScraper::new(timeout)),
            endpoints: Endpoints::Fixed(endpoints),
        }
    }

    async fn endpoints_for(&self, nodes: &[String]) -> BTreeMap<String, String> {
        let all = match &self.endpoints {
            Endpoints::Fixed(map) => map.clone(),
            Endpoints::Nodes { api, port, cache } => {
                let cached = cache.lock().ok().and_then(|c| c.clone());
                let fresh = cached.as_ref().is_some_and(|(at, map)| {
                    at.elapsed() < ENDPOINT_REFRESH && nodes.iter().all(|n| map.contains_key(n))
                });
                match cached {
                    Some((_, map)) if fresh => map,
                    stale => {
                        // resourceVersion=0: served from the apiserver's watch cache.
                        let lp = ListParams::default()
                            .labels(keys::LABEL_NODE_POOL)
                            .match_any();
                        match api.list(&lp).await {
                            Ok(list) => {
                                let map = endpoints_from_nodes(&list.items, *port);
                                if let Ok(mut c) = cache.lock() {
                                    *c = Some((Instant::now(), map.clone()));
                                }
                                map
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "listing nodes for agent addresses failed; using the last list");
                                stale.map(|(_, m)| m).unwrap_or_default()
                            }
                        }
                    }
                }
            }
        };
        nodes
            .iter()
            .filter_map(|n| Some((n.clone(), all.get(n)?.clone())))
            .collect()
    }
}

/// The engine's view from the agents' answers: usable averages only; the window is the
/// longest any healthy agent reported. Pure.
pub fn view_from_reports(
    reports: &BTreeMap<String, Result<UtilizationReport, ScrapeError>>,
) -> UtilizationView {
    let mut window: Option<u64> = None;
    let mut nodes = BTreeMap::new();
    for (node, report) in reports {
        match report {
            Ok(r) => {
                if let Some(v) = usable_average(r) {
                    nodes.insert(node.clone(), v);
                    window = Some(window.unwrap_or(0).max(r.window_seconds));
                }
            }
            Err(e) => tracing::debug!(node, error = %e, "agent unreachable: utilization unknown"),
        }
    }
    UtilizationView {
        window_seconds: window
            .and_then(|w| u32::try_from(w).ok())
            .unwrap_or(DEFAULT_WINDOW_SECONDS),
        nodes,
    }
}

impl UtilizationSource for AgentUtilization {
    fn fetch<'a>(
        &'a self,
        nodes: &'a [String],
    ) -> BoxFuture<'a, Result<UtilizationView, UtilizationError>> {
        async move {
            let scraper = self.scraper.as_ref().ok_or_else(|| {
                UtilizationError::Other("agent scrape thread failed to start".into())
            })?;
            let endpoints = self.endpoints_for(nodes).await;
            let reports = scraper
                .scrape(endpoints)
                .await
                .map_err(UtilizationError::Other)?;
            Ok(view_from_reports(&reports))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Json;
    use axum::routing::get;
    use serde_json::json;

    /// A fake agent on loopback answering `report` for `node`.
    async fn fake_agent(node: &'static str, average: Option<f64>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/v1/utilization",
            get(move || async move {
                Json(json!({
                    "node": node,
                    "status": if average.is_some() { "ok" } else { "no-gpu" },
                    "gpus": [],
                    "average": average,
                    "current": average,
                    "window_seconds": 120,
                    "window_samples": 12,
                    "sampled_at": null,
                    "error": null,
                }))
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn two_agents_answer_and_a_missing_one_is_unknown() {
        let a = fake_agent("node-a", Some(0.25)).await;
        let b = fake_agent("node-b", Some(0.9)).await;
        let no_gpu = fake_agent("node-d", None).await;
        // A port nothing listens on: bind, note, close.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let endpoints = BTreeMap::from([
            ("node-a".to_string(), a.clone()),
            ("node-b".to_string(), b),
            ("node-c".to_string(), format!("http://{closed}")),
            ("node-d".to_string(), no_gpu),
            // A stale address: node-a's agent answering for node-e.
            ("node-e".to_string(), a),
        ]);
        let source = AgentUtilization::from_endpoints(endpoints, Duration::from_millis(500));
        let asked: Vec<String> = ["node-a", "node-b", "node-c", "node-d", "node-e", "node-f"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let started = Instant::now();
        let view = source
            .fetch(&asked)
            .await
            .expect("agents never fail the reconcile");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by the timeout"
        );
        assert_eq!(view.nodes.len(), 2, "{:?}", view.nodes);
        assert_eq!(view.nodes["node-a"], 0.25);
        assert_eq!(view.nodes["node-b"], 0.9);
        for unknown in ["node-c", "node-d", "node-e", "node-f"] {
            assert!(
                !view.nodes.contains_key(unknown),
                "{unknown} must be unknown, not 0"
            );
        }
        assert_eq!(view.window_seconds, 120);
    }

    #[test]
    fn no_answer_means_every_node_unknown() {
        let v = view_from_reports(&BTreeMap::new());
        assert!(v.nodes.is_empty());
        assert_eq!(v.window_seconds, DEFAULT_WINDOW_SECONDS);
    }
}
