//! Compact views of Nodes and Pods: only what the extender decides on.
//!
//! Decisions never touch full API objects. A [`NodeView`] is built once per watch event in
//! cache mode (and kept in the index), or once per request item in full-NodeList mode; a
//! [`PodView`] once per request. Strings that repeat across thousands of nodes (pool, instance
//! type, zone, region) are `Arc<str>` so views stay cheap to build and to share.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use gpu_autoscaler_api::capacity::{self, CapacityType};
use gpu_autoscaler_api::keys;
use gpu_autoscaler_api::priority::{EvictionPriority, TierPreference, WorkloadType};
use gpu_autoscaler_api::{GpuResourceNames, PodRequests, quantity};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde::Deserialize;

/// The label carrying a node's region (well-known, set by cloud controllers).
pub const LABEL_REGION: &str = "topology.kubernetes.io/region";

/// What the extender knows about one node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub name: Arc<str>,
    /// `None` when no labelling convention says anything (see [`capacity::detect`]).
    pub capacity: Option<CapacityType>,
    pub pool: Option<Arc<str>>,
    pub instance_type: Option<Arc<str>>,
    pub zone: Option<Arc<str>>,
    pub region: Option<Arc<str>>,
    /// The agent's `spot-interruption-warning: "true"` annotation, or its interruption taint.
    pub interruption_warning: bool,
    /// The `spot-termination-time` annotation, when it parses as RFC 3339.
    pub termination_time: Option<DateTime<Utc>>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Sum of allocatable GPU resources (all configured GPU resource names).
    pub allocatable_gpus: u32,
    /// GPUs requested by bound, non-terminated GPU pods on this node.
    pub gpus_in_use: u32,
}

impl NodeView {
    /// A node with only a name; everything else unknown or zero. Handy for tables in tests.
    pub fn named(name: &str) -> Self {
        NodeView {
            name: Arc::from(name),
            capacity: None,
            pool: None,
            instance_type: None,
            zone: None,
            region: None,
            interruption_warning: false,
            termination_time: None,
            unschedulable: false,
            allocatable_gpus: 0,
            gpus_in_use: 0,
        }
    }

    /// Builds a view from the parts of a Node the extender reads.
    pub fn from_parts<'a>(
        name: &str,
        labels: &BTreeMap<String, String>,
        annotations: &BTreeMap<String, String>,
        unschedulable: bool,
        taint_keys: impl IntoIterator<Item = &'a str>,
        allocatable: impl IntoIterator<Item = (&'a str, &'a str)>,
        gpu_names: &GpuResourceNames,
    ) -> Self {
        let label = |k: &str| labels.get(k).map(|v| Arc::<str>::from(v.as_str()));
        let warned_by_annotation = annotations
            .get(keys::ANNOTATION_SPOT_INTERRUPTION_WARNING)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let warned_by_taint = taint_keys
            .into_iter()
            .any(|k| k == keys::TAINT_SPOT_INTERRUPTION_KEY);
        // An unreadable termination time is not treated as imminent: the agent always writes
        // RFC 3339 and sets the warning annotation alongside, which is the primary signal.
        let termination_time = annotations
            .get(keys::ANNOTATION_SPOT_TERMINATION_TIME)
            .and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
            .map(|t| t.with_timezone(&Utc));
        let allocatable_gpus = allocatable
            .into_iter()
            .filter(|(k, _)| gpu_names.is_gpu(k))
            .filter_map(|(_, q)| quantity::parse(q).ok())
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold(0u32, |acc, v| {
                acc.saturating_add(v.floor().min(u32::MAX as f64) as u32)
            });
        NodeView {
            name: Arc::from(name),
            capacity: capacity::detect(labels),
            pool: label(keys::LABEL_NODE_POOL),
            instance_type: label(keys::LABEL_INSTANCE_TYPE)
                .or_else(|| label("beta.kubernetes.io/instance-type")),
            zone: label(keys::LABEL_ZONE)
                .or_else(|| label("failure-domain.beta.kubernetes.io/zone")),
            region: label(LABEL_REGION)
                .or_else(|| label("failure-domain.beta.kubernetes.io/region")),
            interruption_warning: warned_by_annotation || warned_by_taint,
            termination_time,
            unschedulable,
            allocatable_gpus,
            gpus_in_use: 0,
        }
    }

    /// Builds a view from a typed Node (the watch path).
    pub fn from_node(node: &Node, gpu_names: &GpuResourceNames) -> Option<Self> {
        let name = node.metadata.name.as_deref()?;
        let empty = BTreeMap::new();
        let spec = node.spec.as_ref();
        let taints = spec
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .map(|t| t.key.as_str());
        let allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .into_iter()
            .flatten()
            .map(|(k, q)| (k.as_str(), q.0.as_str()));
        Some(Self::from_parts(
            name,
            node.metadata.labels.as_ref().unwrap_or(&empty),
            node.metadata.annotations.as_ref().unwrap_or(&empty),
            spec.and_then(|s| s.unschedulable).unwrap_or(false),
            taints,
            allocatable,
            gpu_names,
        ))
    }

    /// Builds a view from one Node of a full-NodeList request, given as JSON text. Only the
    /// fields read here are materialised.
    pub fn from_json(text: &str, gpu_names: &GpuResourceNames) -> Result<Self, String> {
        let lean: LeanNode =
            serde_json::from_str(text).map_err(|e| format!("invalid Node: {e}"))?;
        let name = lean
            .metadata
            .name
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| "a Node in Nodes.items has no metadata.name".to_string())?;
        Ok(Self::from_parts(
            name,
            &lean.metadata.labels,
            &lean.metadata.annotations,
            lean.spec.unschedulable,
            lean.spec.taints.iter().map(|t| t.key.as_str()),
            lean.status
                .allocatable
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
            gpu_names,
        ))
    }

    /// GPUs not yet requested by bound pods.
    pub fn free_gpus(&self) -> u32 {
        self.allocatable_gpus.saturating_sub(self.gpus_in_use)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LeanNode {
    #[serde(deserialize_with = "null_as_default")]
    metadata: LeanMeta,
    #[serde(deserialize_with = "null_as_default")]
    spec: LeanSpec,
    #[serde(deserialize_with = "null_as_default")]
    status: LeanStatus,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LeanMeta {
    name: Option<String>,
    #[serde(deserialize_with = "null_as_default")]
    labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_as_default")]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LeanSpec {
    #[serde(deserialize_with = "null_as_default")]
    unschedulable: bool,
    #[serde(deserialize_with = "null_as_default")]
    taints: Vec<LeanTaint>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LeanTaint {
    key: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LeanStatus {
    #[serde(deserialize_with = "null_as_default")]
    allocatable: BTreeMap<String, String>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The controller that owns a pod (its uid), used to spread replicas.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerKey(pub Arc<str>);

impl OwnerKey {
    /// The pod's controller reference, if it has one.
    pub fn of(pod: &Pod) -> Option<Self> {
        pod.metadata
            .owner_references
            .as_ref()?
            .iter()
            .find(|r| r.controller == Some(true))
            .map(|r| OwnerKey(Arc::from(r.uid.as_str())))
    }
}

/// How the extender treats a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum PodPolicy {
    /// Not a GPU pod, or a GPU pod without a tier-preference annotation: every node passes
    /// and every score is equal, so the scheduler decides exactly as without us.
    PassThrough,
    /// A GPU pod that states where it may run.
    Managed {
        tiers: TierPreference,
        priority: EvictionPriority,
    },
    /// A GPU pod whose tier-preference annotation does not parse. The pod cannot be placed
    /// as its owner intended, so it is kept off every node with the parse error as reason
    /// (visible in its FailedScheduling event), rather than silently allowed everywhere.
    Invalid(String),
}

/// What the extender knows about the pod being scheduled.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    /// Effective GPU request (init/sidecar rules applied).
    pub gpus: u32,
    pub policy: PodPolicy,
    pub owner: Option<OwnerKey>,
}

impl PodView {
    pub fn from_pod(pod: &Pod, gpu_names: &GpuResourceNames) -> Self {
        let gpus = pod
            .spec
            .as_ref()
            .map(|s| PodRequests::of(s).gpu_count(gpu_names))
            .unwrap_or(0);
        let annotations = pod.metadata.annotations.as_ref();
        let annotation = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
        let policy = match (gpus, annotation(keys::ANNOTATION_TIER_PREFERENCE)) {
            (0, _) | (_, None) => PodPolicy::PassThrough,
            (_, Some(raw)) => match raw.parse::<TierPreference>() {
                Ok(tiers) => PodPolicy::Managed {
                    tiers,
                    priority: eviction_priority(pod),
                },
                Err(e) => PodPolicy::Invalid(e.to_string()),
            },
        };
        PodView {
            gpus,
            policy,
            owner: OwnerKey::of(pod),
        }
    }
}

/// The pod's eviction priority: its annotation, else its workload type's default, else medium.
/// Only scoring depends on it, so an unreadable value degrades to the middle, not to an error.
fn eviction_priority(pod: &Pod) -> EvictionPriority {
    let annotated = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::ANNOTATION_EVICTION_PRIORITY))
        .and_then(|v| v.parse().ok());
    let by_workload = || {
        pod.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(keys::LABEL_WORKLOAD_TYPE))
            .and_then(|v| v.parse::<WorkloadType>().ok())
            .map(WorkloadType::default_priority)
    };
    annotated
        .or_else(by_workload)
        .unwrap_or(EvictionPriority::Medium)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lean_json_node_reads_every_field() {
        let node = json!({
            "metadata": {
                "name": "n1",
                "labels": {
                    "karpenter.sh/capacity-type": "spot",
                    "gpu-autoscaler.io/node-pool": "a100",
                    "node.kubernetes.io/instance-type": "p4d.24xlarge",
                    "topology.kubernetes.io/zone": "us-east-1a",
                    "topology.kubernetes.io/region": "us-east-1"
                },
                "annotations": {
                    "gpu-autoscaler.io/spot-interruption-warning": "true",
                    "gpu-autoscaler.io/spot-termination-time": "2025-01-01T00:02:00Z"
                }
            },
            "spec": {"unschedulable": true, "taints": [{"key": "x", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"nvidia.com/gpu": "8", "cpu": "96"}}
        });
        let v = NodeView::from_json(&node.to_string(), &GpuResourceNames::default()).unwrap();
        assert_eq!(&*v.name, "n1");
        assert_eq!(v.capacity, Some(CapacityType::Spot));
        assert_eq!(v.pool.as_deref(), Some("a100"));
        assert_eq!(v.instance_type.as_deref(), Some("p4d.24xlarge"));
        assert_eq!(v.zone.as_deref(), Some("us-east-1a"));
        assert_eq!(v.region.as_deref(), Some("us-east-1"));
        assert!(v.interruption_warning);
        assert_eq!(
            v.termination_time,
            Some("2025-01-01T00:02:00Z".parse::<DateTime<Utc>>().unwrap())
        );
        assert!(v.unschedulable);
        assert_eq!(v.allocatable_gpus, 8);
    }

    #[test]
    fn nulls_and_missing_sections_are_tolerated() {
        let v = NodeView::from_json(
            r#"{"metadata":{"name":"n","labels":null},"spec":{"taints":null},"status":null}"#,
            &GpuResourceNames::default(),
        );
        assert_eq!(v.map(|v| v.allocatable_gpus), Ok(0));
        let v = NodeView::from_json(r#"{"metadata":{"name":"n"}}"#, &GpuResourceNames::default())
            .unwrap();
        assert_eq!(v.capacity, None);
        assert!(!v.interruption_warning && !v.unschedulable);
        let e =
            NodeView::from_json(r#"{"metadata":{}}"#, &GpuResourceNames::default()).unwrap_err();
        assert!(e.contains("metadata.name"), "{e}");
    }

    #[test]
    fn interruption_taint_counts_as_warning_and_bad_time_is_ignored() {
        let node = json!({
            "metadata": {"name": "n", "annotations": {"gpu-autoscaler.io/spot-termination-time": "soon"}},
            "spec": {"taints": [{"key": "gpu-autoscaler.io/spot-interruption", "effect": "NoSchedule"}]}
        });
        let v = NodeView::from_json(&node.to_string(), &GpuResourceNames::default()).unwrap();
        assert!(v.interruption_warning);
        assert_eq!(v.termination_time, None);
    }

    fn pod(annotations: serde_json::Value, labels: serde_json::Value, gpus: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "p", "namespace": "ns", "annotations": annotations, "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                                     "uid": "u-1", "controller": true}]
            },
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn pod_policy_covers_pass_through_managed_and_invalid() {
        let names = GpuResourceNames::default();
        let p = PodView::from_pod(&pod(json!({}), json!({}), "1"), &names);
        assert_eq!(p.policy, PodPolicy::PassThrough);
        assert_eq!(p.gpus, 1);
        assert_eq!(p.owner, Some(OwnerKey(Arc::from("u-1"))));

        let p = PodView::from_pod(
            &pod(
                json!({"gpu-autoscaler.io/tier-preference": "spot,on-demand"}),
                json!({}),
                "0",
            ),
            &names,
        );
        assert_eq!(
            p.policy,
            PodPolicy::PassThrough,
            "non-GPU pods pass through"
        );

        let p = PodView::from_pod(
            &pod(
                json!({"gpu-autoscaler.io/tier-preference": "spot,on-demand"}),
                json!({"gpu-autoscaler.io/workload-type": "training"}),
                "2",
            ),
            &names,
        );
        assert_eq!(
            p.policy,
            PodPolicy::Managed {
                tiers: "spot,on-demand".parse().unwrap(),
                priority: EvictionPriority::High
            }
        );

        let p = PodView::from_pod(
            &pod(
                json!({"gpu-autoscaler.io/tier-preference": "on-demand",
                       "gpu-autoscaler.io/eviction-priority": "low"}),
                json!({"gpu-autoscaler.io/workload-type": "training"}),
                "1",
            ),
            &names,
        );
        assert!(matches!(
            p.policy,
            PodPolicy::Managed {
                priority: EvictionPriority::Low,
                ..
            }
        ));

        let p = PodView::from_pod(
            &pod(
                json!({"gpu-autoscaler.io/tier-preference": "spot,cheap"}),
                json!({}),
                "1",
            ),
            &names,
        );
        match p.policy {
            PodPolicy::Invalid(msg) => assert!(msg.contains("\"cheap\""), "{msg}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}
