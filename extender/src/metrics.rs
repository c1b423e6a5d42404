//! Prometheus metrics of the extender.
//!
//! - `gpu_autoscaler_extender_requests_total{verb, result}`: every `/filter` and
//!   `/prioritize` call; `result` is `ok`, `passthrough` (pod not managed), `error` (answered
//!   with `Error` or a 4xx/5xx after decoding) or `bad_request` (undecodable body, no Pod).
//! - `gpu_autoscaler_extender_request_duration_seconds{verb}`: handler latency, body decoding
//!   and answer encoding included.
//! - `gpu_autoscaler_extender_filtered_nodes_total{reason}`: nodes failed by the filter.
//! - `gpu_autoscaler_extender_request_nodes{verb}`: nodes per request.
//! - `gpu_autoscaler_extender_index_nodes`, `gpu_autoscaler_extender_index_gpu_pods`: size of
//!   the watch-fed index; `gpu_autoscaler_extender_index_synced`: 1 once it has listed.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 us .. ~1.6 s: decisions are sub-millisecond, full-NodeList decoding can take tens of ms.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

fn size_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 9))
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<VerbLabels, Histogram>,
    pub request_nodes: Family<VerbLabels, Histogram>,
    pub filtered: Family<ReasonLabels, Counter>,
    pub index_nodes: Gauge,
    pub index_gpu_pods: Gauge,
    pub index_synced: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: Family<VerbLabels, Histogram> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let request_nodes: Family<VerbLabels, Histogram> =
            Family::new_with_constructor(size_histogram as fn() -> Histogram);
        let filtered = Family::<ReasonLabels, Counter>::default();
        let index_nodes = Gauge::default();
        let index_gpu_pods = Gauge::default();
        let index_synced = Gauge::default();
        registry.register(
            "gpu_autoscaler_extender_requests",
            "Extender requests by verb and result",
            requests.clone(),
        );
        registry.register(
            "gpu_autoscaler_extender_request_duration_seconds",
            "Extender request handling latency by verb",
            duration.clone(),
        );
        registry.register(
            "gpu_autoscaler_extender_request_nodes",
            "Nodes per extender request by verb",
            request_nodes.clone(),
        );
        registry.register(
            "gpu_autoscaler_extender_filtered_nodes",
            "Nodes failed by the extender filter, by reason",
            filtered.clone(),
        );
        registry.register(
            "gpu_autoscaler_extender_index_nodes",
            "Nodes in the extender's watch-fed index",
            index_nodes.clone(),
        );
        registry.register(
            "gpu_autoscaler_extender_index_gpu_pods",
            "Bound GPU pods in the extender's watch-fed index",
            index_gpu_pods.clone(),
        );
        registry.register(
            "gpu_autoscaler_extender_index_synced",
            "1 once the extender's watches have listed",
            index_synced.clone(),
        );
        Metrics {
            registry,
            requests,
            duration,
            request_nodes,
            filtered,
            index_nodes,
            index_gpu_pods,
            index_synced,
        }
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
