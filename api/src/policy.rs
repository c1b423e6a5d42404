//! The `AutoscalingPolicy` custom resource (`gpu-autoscaler.io/v1alpha1`, cluster-scoped).
//!
//! The spec carries every field of the reference document's example under the same names,
//! plus the settings of the Helm values tree that have no flat equivalent (`multiTier`,
//! `spot`, `predictive`, and the per-cloud group mappings). Single-field rules (ranges, enums)
//! live in the OpenAPI schema so the apiserver rejects them; rules across fields cannot be
//! expressed in Kubernetes 1.20's schema and live in [`validate`], shared by the webhook's
//! `/validate-policy` route and the scaler.

mod validate;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::capacity::CapacityType;

pub use validate::{FieldError, ValidationErrors, validate};

/// Which cloud API the scaler drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Aws,
    Gcp,
    Azure,
    /// Simulates a cloud by creating Node objects (local runs and tests).
    Kube,
}

/// Desired state of GPU autoscaling for the cluster.
// Each printcolumn(...) repeats `type_ = "integer"`; clippy mistakes that for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gpu-autoscaler.io",
    version = "v1alpha1",
    kind = "AutoscalingPolicy",
    plural = "autoscalingpolicies",
    singular = "autoscalingpolicy",
    shortname = "asp",
    status = "AutoscalingPolicyStatus",
    derive = "PartialEq",
    doc = "GPU node autoscaling policy: thresholds, limits, capacity tiers, node pools and prediction.",
    printcolumn(name = "Enabled", type_ = "boolean", json_path = ".spec.enabled"),
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(
        name = "Nodes",
        type_ = "integer",
        json_path = ".status.currentNodes.total"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredNodes.total"
    ),
    printcolumn(
        name = "Spot",
        type_ = "integer",
        json_path = ".status.currentNodes.spot"
    ),
    printcolumn(
        name = "GPU-Util",
        type_ = "number",
        json_path = ".status.averageGpuUtilization"
    ),
    printcolumn(
        name = "Pending",
        type_ = "integer",
        json_path = ".status.pendingGpuPods"
    ),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingPolicySpec {
    /// Master switch: when false the scaler observes and reports but changes nothing.
    #[serde(default = "d::yes")]
    pub enabled: bool,
    /// Cloud API to drive. When unset, the scaler's `--provider` flag decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderKind>,

    /// Cluster GPU utilization (0..1) above which capacity is added.
    #[serde(default = "d::scale_up_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub scale_up_threshold: f64,
    /// Node GPU utilization (0..1) below which a node may be removed.
    #[serde(default = "d::scale_down_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub scale_down_threshold: f64,
    /// Minimum time between two scale-ups of the same pool.
    #[serde(default = "d::scale_up_cooldown")]
    pub scale_up_cooldown_seconds: u32,
    /// Minimum time between two scale-downs, and after a scale-up before any scale-down.
    #[serde(default = "d::scale_down_cooldown")]
    pub scale_down_cooldown_seconds: u32,
    /// How long a GPU pod must be unschedulable before it counts as pending pressure.
    #[serde(default = "d::pending_pod_timeout")]
    pub pending_pod_timeout_seconds: u32,
    /// How long a node must stay under `scaleDownThreshold` before it is removed.
    #[serde(default = "d::underutilized_duration")]
    pub underutilized_duration_seconds: u32,
    /// A requested node not Ready with GPUs allocatable after this long counts as failed.
    #[serde(default = "d::max_node_provision_time")]
    pub max_node_provision_time_seconds: u32,

    /// Lower bound on GPU nodes managed by this policy.
    #[serde(default)]
    pub min_nodes: u32,
    /// Upper bound on GPU nodes managed by this policy; never exceeded.
    #[serde(default = "d::max_nodes")]
    pub max_nodes: u32,

    /// Target share of spot nodes (0..1) when multi-tier scaling is off.
    #[serde(default = "d::spot_share")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub spot_instance_percentage: f64,
    #[serde(default = "d::yes")]
    pub enable_spot_instances: bool,
    #[serde(default = "d::yes")]
    pub enable_multi_tier_scaling: bool,
    #[serde(default)]
    pub enable_predictive_scaling: bool,

    /// Target shares of the three capacity tiers; they must sum to 1.
    #[serde(default)]
    pub multi_tier: MultiTier,
    /// Spot handling.
    #[serde(default)]
    pub spot: SpotSettings,
    /// Predictive pre-warming.
    #[serde(default)]
    pub predictive: PredictiveSettings,

    /// The GPU node pools this policy may scale.
    #[serde(default)]
    pub node_pools: Vec<NodePool>,

    /// AWS: region and pool name -> Auto Scaling Group name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSettings>,
    /// GCP: project, region and pool name -> Managed Instance Group name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpSettings>,
    /// Azure: subscription, resource group and pool name -> VM Scale Set name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureSettings>,
}

/// Target shares of the capacity tiers for the managed fleet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiTier {
    #[serde(default = "d::spot_share")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub spot_percentage: f64,
    #[serde(default = "d::on_demand_share")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub on_demand_percentage: f64,
    #[serde(default = "d::reserved_share")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub reserved_percentage: f64,
}

impl Default for MultiTier {
    fn default() -> Self {
        Self {
            spot_percentage: d::spot_share(),
            on_demand_percentage: d::on_demand_share(),
            reserved_percentage: d::reserved_share(),
        }
    }
}

/// How spot capacity is used and protected.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpotSettings {
    /// Drain interrupted nodes by eviction priority inside the notice window.
    #[serde(default = "d::yes")]
    pub graceful_eviction: bool,
    /// Spread spot additions across the pool's instance types and zones.
    #[serde(default = "d::yes")]
    pub diversify: bool,
    /// Interruption rate (interruptions per node per day, 0..1) above which a pool's spot
    /// share for new capacity is lowered.
    #[serde(default = "d::interruption_rate_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub interruption_rate_threshold: f64,
    /// Every pod is asked to stop this long before the announced termination time.
    #[serde(default = "d::drain_safety_margin")]
    pub drain_safety_margin_seconds: u32,
}

impl Default for SpotSettings {
    fn default() -> Self {
        Self {
            graceful_eviction: true,
            diversify: true,
            interruption_rate_threshold: d::interruption_rate_threshold(),
            drain_safety_margin_seconds: d::drain_safety_margin(),
        }
    }
}

/// Forecast-driven pre-warming.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictiveSettings {
    /// History the seasonal profile is built from.
    #[serde(default = "d::lookback_days")]
    #[schemars(range(min = 1, max = 28))]
    pub lookback_days: u32,
    /// How far ahead to forecast.
    #[serde(default = "d::horizon_minutes")]
    #[schemars(range(min = 1, max = 1440))]
    pub horizon_minutes: u32,
    /// Act only on forecasts at least this confident (0..1).
    #[serde(default = "d::confidence_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence_threshold: f64,
    /// Pre-warm when predicted utilization of current capacity reaches this (0..1).
    #[serde(default = "d::pre_warm_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub pre_warm_threshold: f64,
}

impl Default for PredictiveSettings {
    fn default() -> Self {
        Self {
            lookback_days: d::lookback_days(),
            horizon_minutes: d::horizon_minutes(),
            confidence_threshold: d::confidence_threshold(),
            pre_warm_threshold: d::pre_warm_threshold(),
        }
    }
}

/// One scalable group of GPU nodes (an ASG, MIG or VMSS, or a simulated group).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePool {
    /// Pool name; also the value of the `gpu-autoscaler.io/node-pool` node label.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    #[serde(default)]
    pub min_size: u32,
    pub max_size: u32,
    /// GPU model, informational (e.g. `nvidia-tesla-v100`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
    /// Instance types the group may launch, most preferred first.
    #[schemars(length(min = 1))]
    pub instance_types: Vec<String>,
    #[serde(default = "d::on_demand")]
    pub capacity_type: CapacityType,
    /// Share of spot inside a mixed-instances group (0..1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub spot_percentage: Option<f64>,
    /// Higher is tried first among pools of the same capacity type.
    #[serde(default)]
    pub priority: i32,
    /// Labels every node of the pool carries (used to match pod node selectors).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Taints every node of the pool carries, besides the spot taint spot pools get.
    #[serde(default)]
    pub taints: Vec<PoolTaint>,
    #[serde(default)]
    pub availability_zones: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolTaint {
    pub key: String,
    // Optional rather than defaulted to "": an empty-string schema default is mis-read as
    // null by the json-iterator build in our 1.20 test apiserver, which then rejects the CRD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: TaintEffect,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Pool name -> Auto Scaling Group name.
    #[serde(default)]
    pub auto_scaling_groups: BTreeMap<String, String>,
    /// Discover groups by these tags instead of (or besides) the explicit mapping.
    #[serde(default)]
    pub auto_discovery_tags: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcpSettings {
    #[serde(rename = "projectID")]
    pub project_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Pool name -> Managed Instance Group name.
    #[serde(default)]
    pub instance_groups: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureSettings {
    #[serde(rename = "subscriptionID")]
    pub subscription_id: String,
    pub resource_group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Pool name -> VM Scale Set name.
    #[serde(default)]
    pub vm_scale_sets: BTreeMap<String, String>,
}

/// Node counts by capacity type.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    #[serde(default)]
    pub spot: u32,
    #[serde(default)]
    pub on_demand: u32,
    #[serde(default)]
    pub reserved: u32,
    #[serde(default)]
    pub total: u32,
}

impl NodeCounts {
    pub fn add(&mut self, ct: CapacityType, n: u32) {
        match ct {
            CapacityType::Spot => self.spot += n,
            CapacityType::OnDemand => self.on_demand += n,
            CapacityType::Reserved => self.reserved += n,
        }
        self.total += n;
    }

    pub fn get(&self, ct: CapacityType) -> u32 {
        match ct {
            CapacityType::Spot => self.spot,
            CapacityType::OnDemand => self.on_demand,
            CapacityType::Reserved => self.reserved,
        }
    }
}

/// Observed state, written by the scaler through the status subresource. Scaling memory
/// (cooldowns, back-offs) lives here so it survives restarts and leader changes.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub current_nodes: NodeCounts,
    #[serde(default)]
    pub desired_nodes: NodeCounts,
    /// Mean GPU utilization (0..1) over the window; absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_gpu_utilization: Option<f64>,
    #[serde(default)]
    pub pending_gpu_pods: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_scale_up_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_up_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_scale_down_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_down_reason: Option<String>,
    #[serde(default)]
    pub spot_interruptions: SpotInterruptionStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_monthly_cost_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_monthly_savings_usd: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictive: Option<PredictiveStatus>,
    #[serde(default)]
    pub pools: Vec<PoolStatus>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpotInterruptionStatus {
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub last24h: u32,
    #[serde(default)]
    pub last7d: u32,
    #[serde(default)]
    pub active_warnings: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictiveStatus {
    /// Predicted GPU utilization (0..1) of the current fleet at now + horizon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_utilization: Option<f64>,
    /// Predicted GPU demand (upper quantile) at now + horizon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_gpus: Option<f64>,
    /// Confidence (0..1) in the forecast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    #[serde(default)]
    pub pre_warming: bool,
    /// Pre-warmed nodes are kept until this time (the predicted peak's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub hold_until: Option<DateTime<Utc>>,
}

/// Per-pool scaling memory and health.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    pub name: String,
    #[serde(default)]
    pub current_nodes: u32,
    #[serde(default)]
    pub desired_nodes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_scale_up_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_scale_down_time: Option<DateTime<Utc>>,
    /// Provisioning failures back the pool off until this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub backoff_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub consecutive_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Interruptions per node-day over the last 24 h and 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruption_rate24h: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruption_rate7d: Option<f64>,
}

/// A standard Kubernetes-style condition (`Valid`, `Ready`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase machine-readable reason (optional for the same reason as `PoolTaint::value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub last_transition_time: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Default for AutoscalingPolicySpec {
    fn default() -> Self {
        // Deserialising an empty object applies exactly the serde defaults, so the Rust
        // default and the schema defaults cannot disagree.
        serde_json::from_value(serde_json::json!({})).expect("all spec fields have defaults")
    }
}

/// Defaults, as named functions so serde and the schema share them.
mod d {
    use crate::capacity::CapacityType;
    pub fn yes() -> bool {
        true
    }
    pub fn scale_up_threshold() -> f64 {
        0.8
    }
    pub fn scale_down_threshold() -> f64 {
        0.2
    }
    pub fn scale_up_cooldown() -> u32 {
        180
    }
    pub fn scale_down_cooldown() -> u32 {
        600
    }
    pub fn pending_pod_timeout() -> u32 {
        120
    }
    pub fn underutilized_duration() -> u32 {
        600
    }
    pub fn max_node_provision_time() -> u32 {
        600
    }
    pub fn max_nodes() -> u32 {
        100
    }
    pub fn spot_share() -> f64 {
        0.6
    }
    pub fn on_demand_share() -> f64 {
        0.35
    }
    pub fn reserved_share() -> f64 {
        0.05
    }
    pub fn interruption_rate_threshold() -> f64 {
        0.1
    }
    pub fn drain_safety_margin() -> u32 {
        10
    }
    pub fn lookback_days() -> u32 {
        7
    }
    pub fn horizon_minutes() -> u32 {
        30
    }
    pub fn confidence_threshold() -> f64 {
        0.7
    }
    pub fn pre_warm_threshold() -> f64 {
        0.7
    }
    pub fn on_demand() -> CapacityType {
        CapacityType::OnDemand
    }
}

/// The CRD as YAML, exactly as `gpu-autoscaler crd` prints it and the chart ships it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let body = serde_yaml::to_string(&AutoscalingPolicy::crd())
        .expect("a CRD built from static types always serialises");
    format!("# Generated by `gpu-autoscaler crd` from api/src/policy.rs. Do not edit.\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    const REFERENCE_EXAMPLE: &str = r#"
apiVersion: gpu-autoscaler.io/v1alpha1
kind: AutoscalingPolicy
metadata:
  name: production-autoscaling
spec:
  enabled: true
  provider: aws
  scaleUpThreshold: 0.8
  scaleDownThreshold: 0.2
  scaleUpCooldownSeconds: 180
  scaleDownCooldownSeconds: 600
  pendingPodTimeoutSeconds: 120
  minNodes: 0
  maxNodes: 100
  spotInstancePercentage: 0.6
  enableSpotInstances: true
  enableMultiTierScaling: true
  enablePredictiveScaling: false
  nodePools:
    - name: spot-pool
      minSize: 0
      maxSize: 50
      gpuType: nvidia-tesla-v100
      instanceTypes:
        - p3.2xlarge
        - p3.8xlarge
      capacityType: spot
      spotPercentage: 1.0
      priority: 10
      labels:
        gpu-autoscaler.io/capacity-type: spot
      availabilityZones:
        - us-west-2a
        - us-west-2b
        - us-west-2c
"#;

    #[test]
    fn reference_example_parses_with_defaults() {
        let p: AutoscalingPolicy = serde_yaml::from_str(REFERENCE_EXAMPLE).unwrap();
        assert_eq!(p.spec.provider, Some(ProviderKind::Aws));
        assert_eq!(p.spec.node_pools[0].capacity_type, CapacityType::Spot);
        assert_eq!(
            p.spec.node_pools[0].instance_types,
            vec!["p3.2xlarge", "p3.8xlarge"]
        );
        assert_eq!(p.spec.multi_tier, MultiTier::default());
        assert_eq!(p.spec.predictive.lookback_days, 7);
        assert_eq!(p.spec.underutilized_duration_seconds, 600);
        assert!(validate(&p.spec).is_ok());
    }

    #[test]
    fn defaults_match_the_reference() {
        let s = AutoscalingPolicySpec::default();
        assert!(s.enabled);
        assert_eq!(s.scale_up_threshold, 0.8);
        assert_eq!(s.scale_down_threshold, 0.2);
        assert_eq!(s.scale_up_cooldown_seconds, 180);
        assert_eq!(s.scale_down_cooldown_seconds, 600);
        assert_eq!(s.pending_pod_timeout_seconds, 120);
        assert_eq!((s.min_nodes, s.max_nodes), (0, 100));
        assert_eq!(s.spot_instance_percentage, 0.6);
        assert!(
            s.enable_spot_instances && s.enable_multi_tier_scaling && !s.enable_predictive_scaling
        );
        assert_eq!(s.predictive.confidence_threshold, 0.7);
        assert_eq!(s.predictive.pre_warm_threshold, 0.7);
        assert_eq!(s.predictive.horizon_minutes, 30);
    }

    #[test]
    fn crd_has_names_scope_status_and_columns() {
        let crd = AutoscalingPolicy::crd();
        assert_eq!(crd.spec.group, "gpu-autoscaler.io");
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.short_names, Some(vec!["asp".to_string()]));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let cols: Vec<_> = v
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert!(
            cols.contains(&"Nodes") && cols.contains(&"Valid"),
            "{cols:?}"
        );
        let schema = serde_json::to_string(&v.schema).unwrap();
        assert!(
            schema.contains("\"maximum\":1.0"),
            "thresholds must be bounded"
        );
        assert!(
            schema.contains("\"on-demand\""),
            "capacity types must be an enum"
        );
        assert!(
            schema.contains("\"default\":0.8"),
            "defaults must be in the schema"
        );
    }

    #[test]
    fn crd_yaml_is_valid_yaml_equal_to_the_crd() {
        let yaml = crd_yaml();
        let parsed: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(
            parsed,
            serde_json::to_value(AutoscalingPolicy::crd()).unwrap()
        );
    }
}
