//! Prometheus metrics of the scaler (documented in `docs/metrics.md`).
//!
//! The names of the reference document are kept exactly; counters are registered without
//! their `_total` suffix because the text encoder appends it.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// `scale-up` or `scale-down`.
    pub direction: &'static str,
    pub pool: String,
    pub capacity_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapacityLabels {
    pub capacity_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolLabels {
    pub pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderErrorLabels {
    pub provider: &'static str,
    pub operation: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// `gpu_autoscaler_spot_interruptions_total`: per pool and instance type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterruptionLabels {
    pub pool: String,
    pub instance_type: String,
}

/// Interruption rates: `instance_type="all"` is the pool's; `window` is `24h` or `7d`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLabels {
    pub pool: String,
    pub instance_type: String,
    pub window: &'static str,
}

/// Drain evictions: `cause` (`interruption`, `scale-down`), the pod's eviction `priority`,
/// and the `outcome` (`evicted`, `pdb_blocked`, `gone`, `error`, `deadline_missed`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DrainLabels {
    pub cause: &'static str,
    pub priority: &'static str,
    pub outcome: &'static str,
}

/// Interruption drains: `before_deadline` or `after_deadline`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DrainResultLabels {
    pub result: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn seconds_histogram() -> Histogram {
    // 10 ms .. ~1.5 h: API calls at the short end, node boots and drains at the long end.
    Histogram::new(exponential_buckets(0.01, 2.0, 20))
}

fn fast_histogram() -> Histogram {
    // 100 us .. ~13 s: one reconcile or one plan.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Every metric the scaler exports.
pub struct Metrics {
    pub registry: Registry,
    pub scaling_actions: Family<ActionLabels, Counter>,
    pub scaling_duration: Family<DirectionLabels, Histogram>,
    pub node_count: Family<CapacityLabels, Gauge>,
    pub desired_node_count: Family<CapacityLabels, Gauge>,
    pub cluster_utilization: FloatGauge,
    pub pending_pods: Gauge,
    pub underutilized_nodes: Gauge,
    pub spot_interruptions: Family<InterruptionLabels, Counter>,
    pub spot_termination_warnings: Gauge,
    pub spot_savings_percentage: FloatGauge,
    pub estimated_monthly_cost: Family<CapacityLabels, FloatGauge>,
    pub estimated_monthly_savings: FloatGauge,
    pub predicted_utilization: FloatGauge,
    pub prediction_confidence: FloatGauge,
    pub scale_up_cooldown_remaining: FloatGauge,
    pub scale_down_cooldown_remaining: FloatGauge,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    // Beyond the reference document.
    pub pool_current_nodes: Family<PoolLabels, Gauge>,
    pub pool_desired_nodes: Family<PoolLabels, Gauge>,
    pub pool_backoff_remaining: Family<PoolLabels, FloatGauge>,
    pub pool_consecutive_failures: Family<PoolLabels, Gauge>,
    pub provider_errors: Family<ProviderErrorLabels, Counter>,
    pub provider_request_duration: Family<OperationLabels, Histogram>,
    pub evictions: Family<ResultLabels, Counter>,
    pub reconciles: Counter,
    pub reconcile_duration: Histogram,
    pub plan_duration: Histogram,
    pub pending_to_scale_up: Histogram,
    pub leader: Gauge,
    pub caches_synced: Gauge,
    pub cached_pods: Gauge,
    pub cached_nodes: Gauge,
    // Interruption workflow.
    pub spot_interruption_rate: Family<RateLabels, FloatGauge>,
    pub drain_evictions: Family<DrainLabels, Counter>,
    pub interruption_drain_seconds: Family<DrainResultLabels, Histogram>,
    pub interruption_detection_to_cordon: Histogram,
    pub interruption_replacement_latency: Histogram,
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
        let mut r = Registry::default();
        let scaling_actions = Family::<ActionLabels, Counter>::default();
        r.register(
            "gpu_autoscaler_scaling_actions",
            "Scaling actions executed (scale-up: a pool target raised; scale-down: an instance terminated)",
            scaling_actions.clone(),
        );
        let scaling_duration: Family<DirectionLabels, Histogram> =
            Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        r.register(
            "gpu_autoscaler_scaling_duration_seconds",
            "Time to complete scaling: scale-up from the provider call to GPUs allocatable, scale-down from cordon to termination",
            scaling_duration.clone(),
        );
        let node_count = Family::<CapacityLabels, Gauge>::default();
        r.register(
            "gpu_autoscaler_node_count",
            "Registered managed GPU nodes by capacity type",
            node_count.clone(),
        );
        let desired_node_count = Family::<CapacityLabels, Gauge>::default();
        r.register(
            "gpu_autoscaler_desired_node_count",
            "Pool targets after the latest plan, by capacity type",
            desired_node_count.clone(),
        );
        let cluster_utilization = FloatGauge::default();
        r.register(
            "gpu_autoscaler_cluster_utilization",
            "GPU-weighted mean utilization (0-1) of nodes with known utilization; NaN when none is known",
            cluster_utilization.clone(),
        );
        let pending_pods = Gauge::default();
        r.register(
            "gpu_autoscaler_pending_pods",
            "Unschedulable GPU pods",
            pending_pods.clone(),
        );
        let underutilized_nodes = Gauge::default();
        r.register(
            "gpu_autoscaler_underutilized_nodes",
            "Nodes below scaleDownThreshold (known utilization only)",
            underutilized_nodes.clone(),
        );
        let spot_interruptions = Family::<InterruptionLabels, Counter>::default();
        r.register(
            "gpu_autoscaler_spot_interruptions",
            "Spot interruption notices seen on nodes, by pool and instance type (each node counted once)",
            spot_interruptions.clone(),
        );
        let spot_termination_warnings = Gauge::default();
        r.register(
            "gpu_autoscaler_spot_termination_warnings",
            "Nodes with an active interruption notice",
            spot_termination_warnings.clone(),
        );
        let spot_savings_percentage = FloatGauge::default();
        r.register(
            "gpu_autoscaler_spot_savings_percentage",
            "Spot nodes' discount against the on-demand price of the same instance types, in percent",
            spot_savings_percentage.clone(),
        );
        let estimated_monthly_cost = Family::<CapacityLabels, FloatGauge>::default();
        r.register(
            "gpu_autoscaler_estimated_monthly_cost_usd",
            "Monthly cost of the registered managed nodes at catalogue prices, by capacity type",
            estimated_monthly_cost.clone(),
        );
        let estimated_monthly_savings = FloatGauge::default();
        r.register(
            "gpu_autoscaler_estimated_monthly_savings_usd",
            "Monthly saving of spot and reserved nodes against on-demand prices",
            estimated_monthly_savings.clone(),
        );
        let predicted_utilization = FloatGauge::default();
        r.register(
            "gpu_autoscaler_predicted_utilization",
            "Predicted GPU utilization (0-1) of the current fleet; NaN without a forecast",
            predicted_utilization.clone(),
        );
        let prediction_confidence = FloatGauge::default();
        r.register(
            "gpu_autoscaler_prediction_confidence",
            "Confidence (0-1) of the current forecast; NaN without a forecast",
            prediction_confidence.clone(),
        );
        let scale_up_cooldown_remaining = FloatGauge::default();
        r.register(
            "gpu_autoscaler_scale_up_cooldown_remaining_seconds",
            "Seconds until a utilization-driven scale-up is allowed again",
            scale_up_cooldown_remaining.clone(),
        );
        let scale_down_cooldown_remaining = FloatGauge::default();
        r.register(
            "gpu_autoscaler_scale_down_cooldown_remaining_seconds",
            "Seconds until a scale-down is allowed again",
            scale_down_cooldown_remaining.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        r.register(
            "gpu_autoscaler_reconcile_errors",
            "Failed reconciles by error class",
            reconcile_errors.clone(),
        );
        let pool_current_nodes = Family::<PoolLabels, Gauge>::default();
        r.register(
            "gpu_autoscaler_pool_current_nodes",
            "Registered nodes per pool",
            pool_current_nodes.clone(),
        );
        let pool_desired_nodes = Family::<PoolLabels, Gauge>::default();
        r.register(
            "gpu_autoscaler_pool_desired_nodes",
            "Target size per pool",
            pool_desired_nodes.clone(),
        );
        let pool_backoff_remaining = Family::<PoolLabels, FloatGauge>::default();
        r.register(
            "gpu_autoscaler_pool_backoff_remaining_seconds",
            "Seconds a pool stays backed off after provisioning failures",
            pool_backoff_remaining.clone(),
        );
        let pool_consecutive_failures = Family::<PoolLabels, Gauge>::default();
        r.register(
            "gpu_autoscaler_pool_consecutive_failures",
            "Provisioning failures in a row per pool",
            pool_consecutive_failures.clone(),
        );
        let provider_errors = Family::<ProviderErrorLabels, Counter>::default();
        r.register(
            "gpu_autoscaler_provider_errors",
            "Failed cloud provider calls by operation and error kind",
            provider_errors.clone(),
        );
        let provider_request_duration: Family<OperationLabels, Histogram> =
            Family::new_with_constructor(fast_histogram as fn() -> Histogram);
        r.register(
            "gpu_autoscaler_provider_request_duration_seconds",
            "Cloud provider call latency",
            provider_request_duration.clone(),
        );
        let evictions = Family::<ResultLabels, Counter>::default();
        r.register(
            "gpu_autoscaler_evictions",
            "Eviction API calls by result (evicted, pdb_blocked, gone, error)",
            evictions.clone(),
        );
        let reconciles = Counter::default();
        r.register(
            "gpu_autoscaler_reconciles",
            "Reconciles run (leader and standby)",
            reconciles.clone(),
        );
        let reconcile_duration = fast_histogram();
        r.register(
            "gpu_autoscaler_reconcile_duration_seconds",
            "Duration of one reconcile, provider calls included",
            reconcile_duration.clone(),
        );
        let plan_duration = fast_histogram();
        r.register(
            "gpu_autoscaler_plan_duration_seconds",
            "Duration of one engine plan",
            plan_duration.clone(),
        );
        let pending_to_scale_up = seconds_histogram();
        r.register(
            "gpu_autoscaler_pending_to_scale_up_seconds",
            "From a pod becoming unschedulable to the provider call that adds capacity for it",
            pending_to_scale_up.clone(),
        );
        let leader = Gauge::default();
        r.register(
            "gpu_autoscaler_leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let caches_synced = Gauge::default();
        r.register(
            "gpu_autoscaler_caches_synced",
            "1 once the watch caches have listed",
            caches_synced.clone(),
        );
        let cached_pods = Gauge::default();
        r.register(
            "gpu_autoscaler_cached_pods",
            "Pods in the watch cache",
            cached_pods.clone(),
        );
        let cached_nodes = Gauge::default();
        r.register(
            "gpu_autoscaler_cached_nodes",
            "Nodes in the watch cache",
            cached_nodes.clone(),
        );
        let spot_interruption_rate = Family::<RateLabels, FloatGauge>::default();
        r.register(
            "gpu_autoscaler_spot_interruption_rate",
            "Spot interruptions per node-day over the window (24h, 7d), per pool (instance_type=\"all\") and instance type",
            spot_interruption_rate.clone(),
        );
        let drain_evictions = Family::<DrainLabels, Counter>::default();
        r.register(
            "gpu_autoscaler_drain_evictions",
            "Eviction outcomes of drains by cause, pod eviction priority and outcome",
            drain_evictions.clone(),
        );
        let interruption_drain_seconds: Family<DrainResultLabels, Histogram> =
            Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        r.register(
            "gpu_autoscaler_interruption_drain_seconds",
            "From the scaler seeing an interruption notice to every pod on the node having been asked to stop, by result against the drain deadline",
            interruption_drain_seconds.clone(),
        );
        let interruption_detection_to_cordon = seconds_histogram();
        r.register(
            "gpu_autoscaler_interruption_detection_to_cordon_seconds",
            "From the scaler seeing an interruption notice to its cordon being accepted (nodes the agent already cordoned are not counted)",
            interruption_detection_to_cordon.clone(),
        );
        let interruption_replacement_latency = seconds_histogram();
        r.register(
            "gpu_autoscaler_interruption_replacement_seconds",
            "From the scaler seeing an interruption notice to the replacement capacity request being accepted by the provider",
            interruption_replacement_latency.clone(),
        );
        Self {
            registry: r,
            scaling_actions,
            scaling_duration,
            node_count,
            desired_node_count,
            cluster_utilization,
            pending_pods,
            underutilized_nodes,
            spot_interruptions,
            spot_termination_warnings,
            spot_savings_percentage,
            estimated_monthly_cost,
            estimated_monthly_savings,
            predicted_utilization,
            prediction_confidence,
            scale_up_cooldown_remaining,
            scale_down_cooldown_remaining,
            reconcile_errors,
            pool_current_nodes,
            pool_desired_nodes,
            pool_backoff_remaining,
            pool_consecutive_failures,
            provider_errors,
            provider_request_duration,
            evictions,
            reconciles,
            reconcile_duration,
            plan_duration,
            pending_to_scale_up,
            leader,
            caches_synced,
            cached_pods,
            cached_nodes,
            spot_interruption_rate,
            drain_evictions,
            interruption_drain_seconds,
            interruption_detection_to_cordon,
            interruption_replacement_latency,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Total evictions with this result (tests and logs).
    pub fn evictions_with(&self, result: &'static str) -> u64 {
        self.evictions.get_or_create(&ResultLabels { result }).get()
    }

    /// Total scale-up actions over all pools.
    pub fn scale_up_actions(&self) -> u64 {
        self.scale_up_actions_of(None)
    }

    /// Scale-up actions for one pool (`None`: all pools). Reads the exposition, since a
    /// `Family` can't be iterated.
    pub fn scale_up_actions_of(&self, pool: Option<&str>) -> u64 {
        self.encode()
            .lines()
            .filter(|l| {
                l.starts_with("gpu_autoscaler_scaling_actions_total{")
                    && l.contains("direction=\"scale-up\"")
            })
            .filter(|l| pool.is_none_or(|p| l.contains(&format!("pool=\"{p}\""))))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_names_are_exported() {
        let m = Metrics::new();
        m.scaling_actions
            .get_or_create(&ActionLabels {
                direction: "scale-up",
                pool: "p".into(),
                capacity_type: "spot".into(),
            })
            .inc();
        m.node_count
            .get_or_create(&CapacityLabels {
                capacity_type: "spot",
            })
            .set(2);
        m.desired_node_count
            .get_or_create(&CapacityLabels {
                capacity_type: "spot",
            })
            .set(3);
        m.estimated_monthly_cost
            .get_or_create(&CapacityLabels {
                capacity_type: "spot",
            })
            .set(1.0);
        m.reconcile_errors
            .get_or_create(&ErrorLabels { error: "kube" })
            .inc();
        m.scaling_duration
            .get_or_create(&DirectionLabels {
                direction: "scale-up",
            })
            .observe(1.0);
        m.spot_interruptions
            .get_or_create(&InterruptionLabels {
                pool: "spot".into(),
                instance_type: "p3.8xlarge".into(),
            })
            .inc();
        let text = m.encode();
        assert!(text.contains(
            "gpu_autoscaler_spot_interruptions_total{pool=\"spot\",instance_type=\"p3.8xlarge\"} 1"
        ));
        for name in [
            "gpu_autoscaler_scaling_actions_total",
            "gpu_autoscaler_scaling_duration_seconds",
            "gpu_autoscaler_node_count",
            "gpu_autoscaler_desired_node_count",
            "gpu_autoscaler_cluster_utilization",
            "gpu_autoscaler_pending_pods",
            "gpu_autoscaler_underutilized_nodes",
            "gpu_autoscaler_spot_interruptions_total",
            "gpu_autoscaler_spot_termination_warnings",
            "gpu_autoscaler_spot_savings_percentage",
            "gpu_autoscaler_estimated_monthly_cost_usd",
            "gpu_autoscaler_estimated_monthly_savings_usd",
            "gpu_autoscaler_predicted_utilization",
            "gpu_autoscaler_prediction_confidence",
            "gpu_autoscaler_scale_up_cooldown_remaining_seconds",
            "gpu_autoscaler_scale_down_cooldown_remaining_seconds",
            "gpu_autoscaler_reconcile_errors_total",
        ] {
            assert!(
                text.contains(&format!("\n{name}")),
                "{name} missing from:\n{text}"
            );
        }
        assert!(!text.contains("_total_total"));
        assert_eq!(m.scale_up_actions(), 1);
        assert_eq!(m.scale_up_actions_of(Some("p")), 1);
        assert_eq!(m.scale_up_actions_of(Some("q")), 0);
    }
}
