//! The engine's data model: what goes into [`plan`](super::plan) and what comes out.
//!
//! Everything here is plain data with public fields, so the controller, `simulate` and tests
//! build snapshots directly. Quantities are integers in base units (GPU devices, CPU
//! millicores, memory bytes) so that packing arithmetic is exact. Times are UTC; the engine
//! never reads a clock, it uses [`Snapshot::now`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use gpu_autoscaler_api::policy::{NodeCounts, PoolStatus, PredictiveStatus, TaintEffect};
use gpu_autoscaler_api::{AutoscalingPolicySpec, CapacityType, EvictionPriority};
use serde::{Deserialize, Serialize};

pub use gpu_autoscaler_api::policy::NodePool;

// ---------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------

/// Everything the engine may look at for one decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The decision time (wall clock in the controller, virtual clock in tests and `simulate`).
    pub now: DateTime<Utc>,
    pub policy: AutoscalingPolicySpec,
    /// One entry per `policy.node_pools` entry that the provider knows. Pools of the policy
    /// without an entry here are reported in `Plan::warnings` and never scaled.
    pub pools: Vec<PoolState>,
    /// All nodes the controller sees (managed or not; unmanaged nodes have `pool: None` and
    /// count as places where pods can go, but are never scaled).
    pub nodes: Vec<NodeView>,
    /// All non-terminal pods, bound or not. Non-GPU pods matter too: they use CPU and memory
    /// on the nodes and must move when a node is drained.
    pub pods: Vec<PodView>,
    pub utilization: UtilizationView,
    /// Present only when a forecast exists; the engine checks the policy's thresholds itself.
    #[serde(default)]
    pub forecast: Option<ForecastView>,
    /// Provider outcomes since the previous plan. Re-sending an event already seen is
    /// harmless: the engine ignores events not newer than the failure it last recorded.
    #[serde(default)]
    pub provider_events: Vec<ProviderEvent>,
    /// What the previous plan returned in [`Plan::memory`] (empty on the very first run).
    #[serde(default)]
    pub memory: EngineMemory,
}

/// A node template: what one instance of a type looks like once it is a ready node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceTemplate {
    pub instance_type: String,
    /// GPU devices the node will expose as allocatable.
    pub gpus: u32,
    /// The extended resource the GPUs appear as (`nvidia.com/gpu`, `amd.com/gpu`, ...).
    pub gpu_resource: String,
    /// Allocatable CPU in millicores.
    pub cpu_millis: u64,
    /// Allocatable memory in bytes.
    pub memory_bytes: u64,
    /// USD per hour for the pool's capacity type, when a real price table has it.
    #[serde(default)]
    pub price_per_hour: Option<f64>,
    /// Zones this type can launch in; empty means "whatever the pool's group decides".
    #[serde(default)]
    pub zones: Vec<String>,
}

/// A scalable group as the provider and the policy see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolState {
    /// The policy's pool definition (name, sizes, instance types, capacity type, labels...).
    pub spec: NodePool,
    /// Templates for the pool's instance types, in `spec.instance_types` order. A type with
    /// no template cannot be planned (warning).
    pub templates: Vec<InstanceTemplate>,
    /// The provider's current desired size of the group (registered + in flight).
    pub target_size: u32,
    /// Instances requested but not yet registered as Nodes, when the provider can list them.
    /// If it can't, leave empty: the engine then assumes `target_size - registered nodes`
    /// instances of the pool's first template are on their way.
    #[serde(default)]
    pub in_flight: Vec<InFlightInstance>,
    /// The pool's 24 h interruption rate (interruptions per node-day) when the controller
    /// measures it; otherwise the engine derives it from its own memory.
    #[serde(default)]
    pub interruption_rate_24h: Option<f64>,
}

/// An instance the provider is launching.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlightInstance {
    pub instance_type: Option<String>,
    pub zone: Option<String>,
    /// When it was requested; `None` falls back to the pool's last scale-up in memory.
    pub requested_at: Option<DateTime<Utc>>,
}

/// A node taint, as on the Node object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    #[serde(default)]
    pub value: String,
    pub effect: TaintEffect,
}

/// A node as the engine needs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    /// The policy pool (`gpu-autoscaler.io/node-pool` label); `None` = not ours to scale.
    pub pool: Option<String>,
    pub capacity_type: Option<CapacityType>,
    pub instance_type: Option<String>,
    pub zone: Option<String>,
    pub created: DateTime<Utc>,
    /// The Ready condition.
    pub ready: bool,
    /// GPUs in `status.capacity` (what the hardware has, once the device plugin reports).
    pub gpus_capacity: u32,
    /// GPUs in `status.allocatable`; lags capacity until the driver and plugin are up.
    pub gpus_allocatable: u32,
    pub gpu_resource: Option<String>,
    pub cpu_millis_allocatable: u64,
    pub memory_bytes_allocatable: u64,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    #[serde(default)]
    pub unschedulable: bool,
    /// Set when a spot interruption notice is known for this node.
    #[serde(default)]
    pub interruption: Option<InterruptionNotice>,
    #[serde(default)]
    pub provider_id: Option<String>,
}

/// A reclaim notice for a node (from the agent's annotations, or set by hand).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptionNotice {
    /// When the cloud takes the node away.
    pub termination_time: DateTime<Utc>,
    /// When the notice was first seen, if known (for latency metrics only).
    #[serde(default)]
    pub noticed_at: Option<DateTime<Utc>>,
}

/// Identity of a pod in plans, events and packing results.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
}

impl PodKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for PodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Operator of a node-affinity requirement (the subset of `NodeSelectorRequirement` we model;
/// `Gt`/`Lt` are treated as unsatisfiable by pool labels and reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SelectorOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    /// `Gt`, `Lt` or anything else the engine can't evaluate against template labels.
    Unsupported,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LabelRequirement {
    pub key: String,
    pub op: SelectorOp,
    #[serde(default)]
    pub values: Vec<String>,
}

/// One `nodeSelectorTerm`: all requirements must hold. Terms are ORed.
pub type SelectorTerm = Vec<LabelRequirement>;

/// A pod's labels, packed into one shared allocation.
///
/// The controller caches a view of every pod (50,000 in the memory benchmark) and copies all of
/// them into each snapshot; a `BTreeMap<String, String>` per pod cost ~70 MiB there. Packed as
/// `key NUL value NUL ...` (sorted by key) behind an `Arc`, a pod's labels take one small
/// allocation and a snapshot copy only bumps a count. Label keys and values can't contain NUL
/// (the API server validates them), so a pair that does is dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct PodLabels(Option<Arc<str>>);

impl PodLabels {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// The pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut parts = self.0.as_deref().unwrap_or("").split('\0');
        std::iter::from_fn(move || {
            let k = parts.next().filter(|k| !k.is_empty())?;
            Some((k, parts.next()?))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Sets `key` to `value` (rebuilds the packed form; for tests and tools, not hot paths).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let mut map: BTreeMap<String, String> = self
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert(key.into(), value.into());
        *self = PodLabels::from(&map);
    }
}

impl From<&BTreeMap<String, String>> for PodLabels {
    fn from(map: &BTreeMap<String, String>) -> Self {
        let mut packed = String::new();
        for (k, v) in map {
            if k.is_empty() || k.contains('\0') || v.contains('\0') {
                continue;
            }
            packed.push_str(k);
            packed.push('\0');
            packed.push_str(v);
            packed.push('\0');
        }
        PodLabels((!packed.is_empty()).then(|| Arc::from(packed)))
    }
}

impl fmt::Debug for PodLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for PodLabels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for PodLabels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(d).map(|m| PodLabels::from(&m))
    }
}

/// A `topologySpreadConstraints` entry with `whenUnsatisfiable: DoNotSchedule` (the others
/// never keep a pod pending). Placing the pod in a domain (a node for the hostname key, a
/// zone, ...) is allowed when the domain's count of matching pods, plus one, exceeds the
/// smallest count among the existing nodes' domains by at most `max_skew`, as kube-scheduler
/// computes it. Counted pods are those in the pod's namespace its selector matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpreadConstraint {
    pub topology_key: String,
    pub max_skew: u32,
    /// `labelSelector` as ANDed requirements; `None` selects no pod (nothing to count).
    pub selector: Option<Vec<LabelRequirement>>,
}

/// One required pod anti-affinity term (`requiredDuringSchedulingIgnoredDuringExecution`).
///
/// Packing never puts two pods that exclude each other on one node (ready, on its way or new)
/// or, for terms on another key such as `topology.kubernetes.io/zone`, into one domain of
/// that key as the nodes' (or the instance templates') labels give it; scale-down never moves
/// a pod where it would break a term. A new node for a pod with zone terms is opened in a
/// zone it may use when its pool lists zones; a pool without zones leaves the choice to the
/// cloud, so the node may land in a zone the pod can't use (it then waits for another).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodAffinityTerm {
    /// `labelSelector` as ANDed requirements (`matchLabels` become `In`); `None` when the
    /// term has no selector, which selects no pod.
    pub selector: Option<Vec<LabelRequirement>>,
    /// Namespaces the selector applies to; empty means the pod's own namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The term has a `namespaceSelector`. Namespace labels are not in the snapshot, so every
    /// namespace is taken to match: at worst a node too many, never a pod left pending.
    #[serde(default)]
    pub all_namespaces: bool,
    pub topology_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TolerationOp {
    Equal,
    Exists,
}

/// A pod toleration. `key: None` with `Exists` tolerates everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Toleration {
    pub key: Option<String>,
    pub operator: TolerationOp,
    #[serde(default)]
    pub value: String,
    /// `None` tolerates every effect.
    pub effect: Option<TaintEffect>,
}

// The api's TaintEffect has no Hash; tolerations are hashed to intern pod signatures.
impl std::hash::Hash for Toleration {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
        self.operator.hash(state);
        self.value.hash(state);
        self.effect.map(|e| e as u8).hash(state);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

/// The controlling owner of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OwnerRef {
    pub kind: String,
    pub name: String,
}

/// A pod as the engine needs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodView {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.nodeName`; `None` while unbound.
    pub node: Option<String>,
    /// Effective GPU request (api `PodRequests::gpu_count`).
    pub gpus: u32,
    /// The GPU resource requested; `None` when `gpus == 0` or the pod takes any GPU resource.
    #[serde(default)]
    pub gpu_resource: Option<String>,
    /// Effective CPU request in millicores.
    pub cpu_millis: u64,
    /// Effective memory request in bytes.
    pub memory_bytes: u64,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// The pod's labels (what other pods' anti-affinity selectors look at).
    #[serde(default)]
    pub labels: PodLabels,
    /// Required pod anti-affinity terms; see [`PodAffinityTerm`].
    #[serde(default)]
    pub anti_affinity: Vec<PodAffinityTerm>,
    /// Hard topology spread constraints; see [`SpreadConstraint`].
    #[serde(default)]
    pub spread: Vec<SpreadConstraint>,
    /// Required node affinity terms (ORed); empty = no requirement.
    #[serde(default)]
    pub affinity: Vec<SelectorTerm>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    /// Allowed capacity types, most preferred first (api `TierPreference::as_slice`);
    /// empty = no preference (only taints decide).
    #[serde(default)]
    pub tier_preference: Vec<CapacityType>,
    /// Resolved by the controller: annotation, else the workload type's default, else medium.
    pub eviction_priority: EvictionPriority,
    /// When `PodScheduled` became `False` with reason `Unschedulable`; `None` otherwise.
    #[serde(default)]
    pub unschedulable_since: Option<DateTime<Utc>>,
    /// The controlling owner; `None` for bare pods (which nothing would recreate).
    #[serde(default)]
    pub owner: Option<OwnerRef>,
    #[serde(default)]
    pub is_daemonset: bool,
    #[serde(default)]
    pub is_mirror: bool,
    /// False when annotated `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"` or
    /// `gpu-autoscaler.io/scale-down-disabled: "true"`.
    #[serde(default = "yes")]
    pub safe_to_evict: bool,
    /// `spec.terminationGracePeriodSeconds` (Kubernetes default 30 when unset).
    #[serde(default)]
    pub termination_grace_seconds: Option<u32>,
    pub phase: PodPhase,
}

fn yes() -> bool {
    true
}

impl PodView {
    pub fn key(&self) -> PodKey {
        PodKey::new(self.namespace.clone(), self.name.clone())
    }

    /// Pods the drain leaves alone: they die with the node or are recreated on every node.
    pub fn is_node_bound_infrastructure(&self) -> bool {
        self.is_daemonset || self.is_mirror
    }

    pub fn is_terminal(&self) -> bool {
        matches!(self.phase, PodPhase::Succeeded | PodPhase::Failed)
    }
}

/// GPU utilization per node, averaged over the source's window, each in 0..1.
/// A node missing from the map has unknown utilization (never treated as 0).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UtilizationView {
    pub window_seconds: u32,
    pub nodes: BTreeMap<String, f64>,
}

/// A demand forecast, produced by the predictor crate and adapted by the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastView {
    /// Upper prediction-interval quantile of GPUs demanded at `target_time`.
    pub predicted_gpus_upper: f64,
    /// Predicted utilization (0..1) of the current fleet at `target_time`.
    pub predicted_utilization: f64,
    /// Confidence in 0..1.
    pub confidence: f64,
    /// The time the forecast is for (now + horizon + boot lead time).
    pub target_time: DateTime<Utc>,
    /// Keep pre-warmed capacity until this time (the end of the predicted peak).
    pub hold_until: DateTime<Utc>,
    /// Measured boot + GPU-ready lead time the forecast already accounts for.
    pub lead_time_seconds: u32,
}

/// A provider outcome the engine must react to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderEvent {
    pub pool: String,
    pub at: DateTime<Utc>,
    pub kind: ProviderEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProviderEventKind {
    /// The provider refused or failed a scale-up (API error, quota...).
    ScaleUpFailed { message: String },
    /// The cloud has no capacity of this kind right now.
    InsufficientCapacity {
        instance_type: Option<String>,
        zone: Option<String>,
        message: String,
    },
    /// A node of the pool was reclaimed by the cloud (used for interruption rates when no
    /// notice was seen on the node, e.g. GCP preemptions discovered after the fact).
    Interrupted { node: String },
}

// ---------------------------------------------------------------------------------------------
// Memory (persisted by the controller between plans)
// ---------------------------------------------------------------------------------------------

/// Everything the engine remembers between plans. The controller persists the returned copy
/// (policy status for the pool parts, an annotation or ConfigMap for the rest) so that a
/// restart or leader change continues where the last plan left off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineMemory {
    #[serde(default)]
    pub last_scale_up: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_scale_up_reason: Option<String>,
    #[serde(default)]
    pub last_scale_down: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_scale_down_reason: Option<String>,
    #[serde(default)]
    pub pools: BTreeMap<String, PoolMemory>,
    /// Per node; entries of nodes no longer in the snapshot are dropped.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeMemory>,
    /// Capacity kept for a predicted peak.
    #[serde(default)]
    pub pre_warm: Option<PreWarmHold>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolMemory {
    #[serde(default)]
    pub last_scale_up: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_scale_down: Option<DateTime<Utc>>,
    #[serde(default)]
    pub backoff_until: Option<DateTime<Utc>>,
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Time of the last failure recorded (events at or before it are duplicates).
    #[serde(default)]
    pub last_failure_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Interruption times within the last 7 days (bounded).
    #[serde(default)]
    pub interruptions: Vec<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMemory {
    /// Start of the current stretch of known utilization below `scaleDownThreshold`.
    #[serde(default)]
    pub underutilized_since: Option<DateTime<Utc>>,
    /// Set when the engine chose the node for scale-down (cordon + drain started).
    #[serde(default)]
    pub scale_down_started: Option<DateTime<Utc>>,
    /// When the interruption notice was first acted on: counted once in the pool's rate and
    /// replacement capacity requested once.
    #[serde(default)]
    pub interruption_handled: Option<DateTime<Utc>>,
}

/// Pre-warmed capacity: scale-down keeps at least `gpus` GPUs until `hold_until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreWarmHold {
    pub gpus: u32,
    pub hold_until: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// The decision. The controller executes it in this order: `target_reductions`,
/// `scale_ups`, `cordons`, `drains`, `terminations`, `uncordons`; then persists `memory`,
/// writes `status` and emits `events`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Plan {
    pub scale_ups: Vec<ScaleUp>,
    /// Lower a pool's target to drop requests that failed or timed out (so they neither
    /// arrive late as duplicates nor keep the cloud retrying).
    pub target_reductions: Vec<TargetReduction>,
    pub cordons: Vec<Cordon>,
    pub drains: Vec<Drain>,
    /// Delete the instance and decrement its pool's target by one.
    pub terminations: Vec<Terminate>,
    /// Nodes the engine cordoned for scale-down and now gives back.
    pub uncordons: Vec<Uncordon>,
    pub status: PlanStatus,
    pub memory: EngineMemory,
    pub events: Vec<PlanEvent>,
    /// Conditions a human should know about (also logged by the controller).
    pub warnings: Vec<String>,
}

/// Why capacity is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ScaleUpCause {
    /// Pool or global minimum (never blocked by cooldowns).
    Minimum,
    /// Unschedulable GPU pods.
    PendingPods,
    /// Cluster GPU utilization above `scaleUpThreshold`.
    Utilization,
    /// Replacement for an interrupted spot node, requested alongside its drain.
    Replacement,
    /// Forecast pre-warming.
    Predictive,
}

/// Add `add` instances to `pool`. Several entries may name the same pool (different instance
/// types or zones); their `new_target`s are cumulative in list order, so the last entry of a
/// pool carries the pool's target after the scale-ups. It still includes the nodes this plan
/// terminates: `terminations` run after the scale-ups and each lowers the target by one.
/// Providers that can't choose the type or zone set the target and ignore `instance_type` /
/// `zone`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleUp {
    pub pool: String,
    pub capacity_type: CapacityType,
    pub instance_type: Option<String>,
    pub zone: Option<String>,
    pub add: u32,
    pub new_target: u32,
    pub cause: ScaleUpCause,
    pub reason: String,
    /// Pods this capacity is for (empty for minimum, utilization and predictive).
    pub pods: Vec<PodKey>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetReduction {
    pub pool: String,
    pub remove: u32,
    pub new_target: u32,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cordon {
    pub node: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Uncordon {
    pub node: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DrainCause {
    ScaleDown,
    Interruption,
}

/// Evict these pods from `node` (cordon first). Evictions are listed in the order they must
/// be requested; `not_before` staggers them. DaemonSet and mirror pods are never listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drain {
    pub node: String,
    pub cause: DrainCause,
    /// Interruption: termination time minus the safety margin; every pod should be gone by then.
    pub deadline: Option<DateTime<Utc>>,
    pub evictions: Vec<Eviction>,
    pub reason: String,
}

/// One Eviction API call. If a PDB answers 429, retry until `deadline`, each time with
/// `grace_seconds = min(grace_seconds, deadline - now)` when a deadline is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Eviction {
    pub pod: PodKey,
    pub uid: String,
    pub priority: EvictionPriority,
    /// Don't request the eviction before this time.
    pub not_before: DateTime<Utc>,
    /// `DeleteOptions.gracePeriodSeconds`; `None` = the pod's own grace period.
    pub grace_seconds: Option<u32>,
    /// The pod must be gone by then (interruptions); `None` for scale-down (retry freely).
    pub deadline: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Terminate {
    pub node: String,
    pub pool: String,
    pub provider_id: Option<String>,
    pub reason: String,
}

/// Figures for the policy status and metrics, as of this plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanStatus {
    /// Registered managed nodes by capacity type.
    pub current_nodes: NodeCounts,
    /// Pool targets after this plan, by the pools' capacity types.
    pub desired_nodes: NodeCounts,
    /// GPU-weighted mean utilization over nodes with known utilization; `None` if none known.
    pub average_gpu_utilization: Option<f64>,
    /// Unbound GPU pods that are unschedulable (counted or not yet past the timeout).
    pub pending_gpu_pods: u32,
    /// Nodes below `scaleDownThreshold` right now (known utilization only).
    pub underutilized_nodes: u32,
    /// Nodes with an interruption notice.
    pub active_termination_warnings: u32,
    pub interruptions_last_24h: u32,
    pub interruptions_last_7d: u32,
    /// The spot share new capacity is steered towards after rate adaptation.
    pub effective_spot_share: f64,
    pub predictive: Option<PredictiveStatus>,
    /// Per-pool status in `AutoscalingPolicyStatus.pools` form.
    pub pools: Vec<PoolStatus>,
    /// Seconds until a utilization-driven scale-up / any scale-down is allowed again.
    pub scale_up_cooldown_remaining_seconds: u32,
    pub scale_down_cooldown_remaining_seconds: u32,
}

/// What a Kubernetes Event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventObject {
    Pod(PodKey),
    Node(String),
    /// The AutoscalingPolicy itself.
    Policy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

/// A Kubernetes Event to emit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEvent {
    pub object: EventObject,
    pub type_: EventType,
    /// CamelCase reason (`TriggeredScaleUp`, `NotTriggerScaleUp`, `ScaleDown`, ...).
    pub reason: String,
    pub message: String,
}

/// Set of pods, for callers that want to index plan results.
pub type PodSet = BTreeSet<PodKey>;

#[cfg(test)]
mod pod_labels_tests {
    use super::*;

    #[test]
    fn packed_labels_behave_like_a_sorted_map() {
        let map: BTreeMap<String, String> = [("b", "2"), ("a", "1"), ("app", ""), ("x\0y", "z")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut l = PodLabels::from(&map);
        assert_eq!(l.get("a"), Some("1"));
        assert_eq!(l.get("app"), Some(""), "empty values are kept");
        assert_eq!(l.get("x\0y"), None, "a pair with NUL is dropped");
        assert_eq!(l.get("c"), None);
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            [("a", "1"), ("app", ""), ("b", "2")]
        );
        l.insert("a", "9");
        l.insert("c", "3");
        assert_eq!(l.get("a"), Some("9"));
        assert_eq!(l.iter().count(), 4);
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(json, r#"{"a":"9","app":"","b":"2","c":"3"}"#);
        assert_eq!(serde_json::from_str::<PodLabels>(&json).unwrap(), l);
        assert!(PodLabels::default().is_empty() && PodLabels::from(&BTreeMap::new()).is_empty());
        // Clones share the allocation.
        let c = l.clone();
        assert!(matches!((&l.0, &c.0), (Some(a), Some(b)) if Arc::ptr_eq(a, b)));
    }
}
