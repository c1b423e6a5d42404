//! Prometheus metrics of the webhook (documented in docs/webhook.md).

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// What became of one admission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Admitted with a patch.
    Mutated,
    /// Admitted without a patch (non-GPU pod, other kind, already mutated, valid policy).
    Unchanged,
    /// Rejected with a message for the user.
    Denied,
    /// The request itself was bad (body, content type, size, JSON) or could not be decoded.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutated => "mutated",
            Self::Unchanged => "unchanged",
            Self::Denied => "denied",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// `mutate` or `validate-policy`.
    pub route: &'static str,
    /// The admission operation (`CREATE`, `UPDATE`, `DELETE`, `CONNECT`), `unknown` when the
    /// body could not be read.
    pub operation: &'static str,
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `error`.
    pub result: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. 2.5 s: a review takes tens of microseconds; the apiserver gives up at 3 s.
    Histogram::new([
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
        1.0, 2.5,
    ])
}

/// Every metric of the webhook, registered in one registry served on `/metrics`.
pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub certificate_expiry: Gauge<i64, AtomicI64>,
    pub certificate_reloads: Family<ReloadLabels, Counter>,
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
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let certificate_expiry = Gauge::<i64, AtomicI64>::default();
        let certificate_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "gpu_autoscaler_webhook_requests",
            "Admission requests by route, operation and result (mutated, unchanged, denied, error)",
            requests.clone(),
        );
        registry.register(
            "gpu_autoscaler_webhook_request_duration_seconds",
            "Time from a complete request body to the encoded response",
            latency.clone(),
        );
        registry.register(
            "gpu_autoscaler_webhook_certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use, as a Unix timestamp (0 until one is loaded)",
            certificate_expiry.clone(),
        );
        registry.register(
            "gpu_autoscaler_webhook_certificate_reloads",
            "Certificate (re)loads from the mounted files, by result",
            certificate_reloads.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            certificate_expiry,
            certificate_reloads,
        }
    }

    pub fn count(&self, route: &'static str, operation: &'static str, outcome: Outcome) {
        self.requests
            .get_or_create(&RequestLabels {
                route,
                operation,
                result: outcome.as_str(),
            })
            .inc();
    }

    pub fn observe(&self, route: &'static str, seconds: f64) {
        self.latency
            .get_or_create(&RouteLabels { route })
            .observe(seconds);
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
