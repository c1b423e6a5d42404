//! Kubernetes objects to engine views: the only place that knows both shapes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use gpu_autoscaler_api::policy::TaintEffect;
use gpu_autoscaler_api::{
    EvictionPriority, GpuResourceNames, PodRequests, TierPreference, WorkloadType, capacity, keys,
    quantity,
};
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};

use crate::engine::{
    InterruptionNotice, LabelRequirement, NodeView, OwnerRef, PodAffinityTerm, PodLabels, PodPhase,
    PodView, SelectorOp, SelectorTerm, SpreadConstraint, Taint, Toleration, TolerationOp,
};

/// Node annotation holding the start of the node's current underutilized stretch (RFC 3339),
/// so a restart or a new leader doesn't restart the `underutilizedDuration` clock.
pub const ANNOTATION_UNDERUTILIZED_SINCE: &str = "gpu-autoscaler.io/underutilized-since";
/// Node annotation: when the engine picked the node for scale-down (RFC 3339).
pub const ANNOTATION_SCALE_DOWN_STARTED: &str = "gpu-autoscaler.io/scale-down-started";
/// Mirror pods carry this annotation (static pods the kubelet mirrors into the API).
const ANNOTATION_MIRROR: &str = "kubernetes.io/config.mirror";
/// How long after an interruption warning without a time the node is assumed gone: the
/// shortest notice a cloud gives (GCP and Azure: 30 s) would be safer, but AWS's two minutes is
/// what the reference uses for its `kubectl annotate` test recipe.
pub const DEFAULT_NOTICE_SECONDS: i64 = 120;

/// Kubernetes time (jiff) to chrono.
pub fn to_chrono(t: &Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), t.0.subsec_nanosecond().max(0) as u32)
}

fn parse_rfc3339(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn taint_effect(s: &str) -> Option<TaintEffect> {
    match s {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

fn selector_op(operator: &str) -> SelectorOp {
    match operator {
        "In" => SelectorOp::In,
        "NotIn" => SelectorOp::NotIn,
        "Exists" => SelectorOp::Exists,
        "DoesNotExist" => SelectorOp::DoesNotExist,
        _ => SelectorOp::Unsupported,
    }
}

fn requirement(r: &NodeSelectorRequirement) -> LabelRequirement {
    LabelRequirement {
        key: r.key.clone(),
        op: selector_op(&r.operator),
        values: r.values.clone().unwrap_or_default(),
    }
}

/// A `LabelSelector` as ANDed requirements (`matchLabels` entries become `In`).
fn label_selector(sel: &LabelSelector) -> Vec<LabelRequirement> {
    let by_label = sel
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| LabelRequirement {
            key: k.clone(),
            op: SelectorOp::In,
            values: vec![v.clone()],
        });
    let by_expression = sel
        .match_expressions
        .iter()
        .flatten()
        .map(|r| LabelRequirement {
            key: r.key.clone(),
            op: selector_op(&r.operator),
            values: r.values.clone().unwrap_or_default(),
        });
    by_label.chain(by_expression).collect()
}

/// The engine's view of a pod. `None` for objects without a name (never stored by the API).
pub fn pod_view(pod: &Pod, names: &GpuResourceNames) -> Option<PodView> {
    let meta = &pod.metadata;
    let name = meta.name.clone()?;
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let spec = pod.spec.as_ref()?;
    let annotations = meta.annotations.as_ref();
    let labels = meta.labels.as_ref();
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);

    let requests = PodRequests::of(spec);
    let by_resource = requests.gpus_by_resource(names);
    let gpus = by_resource.values().fold(0u32, |a, b| a.saturating_add(*b));
    let gpu_resource = (by_resource.len() == 1)
        .then(|| by_resource.keys().next().cloned())
        .flatten();

    let affinity: Vec<SelectorTerm> = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|sel| {
            sel.node_selector_terms
                .iter()
                .map(|term| {
                    let mut reqs: Vec<LabelRequirement> = term
                        .match_expressions
                        .iter()
                        .flatten()
                        .map(requirement)
                        .collect();
                    // matchFields select by node name: never true of a node that doesn't exist yet.
                    reqs.extend(
                        term.match_fields
                            .iter()
                            .flatten()
                            .map(|r| LabelRequirement {
                                key: r.key.clone(),
                                op: SelectorOp::Unsupported,
                                values: r.values.clone().unwrap_or_default(),
                            }),
                    );
                    reqs
                })
                .collect()
        })
        .unwrap_or_default();

    let anti_affinity: Vec<PodAffinityTerm> = spec
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|pa| {
            pa.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .map(|t| PodAffinityTerm {
            selector: t.label_selector.as_ref().map(label_selector),
            namespaces: t.namespaces.clone().unwrap_or_default(),
            all_namespaces: t.namespace_selector.is_some(),
            topology_key: t.topology_key.clone(),
        })
        .collect();

    let spread: Vec<SpreadConstraint> = spec
        .topology_spread_constraints
        .iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == "DoNotSchedule")
        .map(|c| SpreadConstraint {
            topology_key: c.topology_key.clone(),
            max_skew: u32::try_from(c.max_skew.max(1)).unwrap_or(1),
            selector: c.label_selector.as_ref().map(label_selector),
        })
        .collect();

    let tolerations = spec
        .tolerations
        .iter()
        .flatten()
        // The apiserver's DefaultTolerationSeconds plugin gives every pod NoExecute
        // tolerations for the not-ready and unreachable taints. The engine only places pods on
        // Ready nodes and templates, which never carry those taints, so they can't change a
        // decision; dropping them saves ~200 bytes per cached pod (10 MB at 50,000 pods).
        .filter(|t| !is_default_node_health_toleration(t))
        .map(|t| Toleration {
            key: t.key.clone().filter(|k| !k.is_empty()),
            operator: if t.operator.as_deref() == Some("Exists") {
                TolerationOp::Exists
            } else {
                TolerationOp::Equal
            },
            value: t.value.clone().unwrap_or_default(),
            effect: t.effect.as_deref().and_then(taint_effect),
        })
        .collect();

    // Bad values were rejected by the webhook; objects that slipped past fall back to defaults.
    let tier_preference = annotation(keys::ANNOTATION_TIER_PREFERENCE)
        .and_then(|s| s.parse::<TierPreference>().ok())
        .map(|p| p.as_slice().to_vec())
        .unwrap_or_default();
    let eviction_priority = annotation(keys::ANNOTATION_EVICTION_PRIORITY)
        .and_then(|s| s.parse::<EvictionPriority>().ok())
        .or_else(|| {
            labels
                .and_then(|l| l.get(keys::LABEL_WORKLOAD_TYPE))
                .and_then(|s| s.parse::<WorkloadType>().ok())
                .map(WorkloadType::default_priority)
        })
        .unwrap_or(EvictionPriority::Medium);

    let status = pod.status.as_ref();
    let unschedulable_since = if spec.node_name.is_none() {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter().find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
            })
            .map(|c| {
                c.last_transition_time
                    .as_ref()
                    .and_then(to_chrono)
                    .or_else(|| meta.creation_timestamp.as_ref().and_then(to_chrono))
                    .unwrap_or(DateTime::UNIX_EPOCH)
            })
    } else {
        None
    };

    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| OwnerRef {
            kind: o.kind.clone(),
            name: o.name.clone(),
        });
    let is_daemonset = owner.as_ref().is_some_and(|o| o.kind == "DaemonSet");
    let is_mirror = annotation(ANNOTATION_MIRROR).is_some();
    let safe_to_evict = annotation(keys::ANNOTATION_CA_SAFE_TO_EVICT) != Some("false")
        && annotation(keys::ANNOTATION_SCALE_DOWN_DISABLED) != Some("true");

    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some("Unknown") => PodPhase::Unknown,
        _ => PodPhase::Pending,
    };

    Some(PodView {
        namespace,
        name,
        uid: meta.uid.clone().unwrap_or_default(),
        node: spec.node_name.clone(),
        gpus,
        gpu_resource,
        cpu_millis: (requests.cpu() * 1000.0).ceil().max(0.0) as u64,
        memory_bytes: requests.memory().ceil().max(0.0) as u64,
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        labels: labels.map(PodLabels::from).unwrap_or_default(),
        anti_affinity,
        spread,
        affinity,
        tolerations,
        tier_preference,
        eviction_priority,
        unschedulable_since,
        owner,
        is_daemonset,
        is_mirror,
        safe_to_evict,
        termination_grace_seconds: spec
            .termination_grace_period_seconds
            .map(|s| s.clamp(0, i64::from(u32::MAX)) as u32),
        phase,
    })
}

fn quantity_of(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    key: &str,
) -> f64 {
    map.and_then(|m| m.get(key))
        .and_then(|q| quantity::parse(&q.0).ok())
        .unwrap_or(0.0)
}

fn gpu_sum(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    names: &GpuResourceNames,
) -> (u32, Option<String>) {
    let mut total = 0u32;
    let mut resource = None;
    for (k, q) in map.into_iter().flatten() {
        if !names.is_gpu(k) {
            continue;
        }
        let v = quantity::parse(&q.0)
            .unwrap_or(0.0)
            .max(0.0)
            .floor()
            .min(f64::from(u32::MAX)) as u32;
        total = total.saturating_add(v);
        if resource.is_none() {
            resource = Some(k.clone());
        }
    }
    (total, resource)
}

/// The engine's view of a node at `now` (used only for interruption warnings without a time).
pub fn node_view(node: &Node, names: &GpuResourceNames, now: DateTime<Utc>) -> Option<NodeView> {
    let meta = &node.metadata;
    let name = meta.name.clone()?;
    let labels = meta.labels.clone().unwrap_or_default();
    let annotations = meta.annotations.as_ref();
    let spec = node.spec.as_ref();
    let status = node.status.as_ref();
    let capacity_map = status.and_then(|s| s.capacity.as_ref());
    let allocatable_map = status.and_then(|s| s.allocatable.as_ref());
    let (gpus_capacity, cap_resource) = gpu_sum(capacity_map, names);
    let (gpus_allocatable, alloc_resource) = gpu_sum(allocatable_map, names);
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let taints = spec
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(Taint {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect: taint_effect(&t.effect)?,
            })
        })
        .collect();
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).map(String::as_str);
    let interruption = (annotation(keys::ANNOTATION_SPOT_INTERRUPTION_WARNING).map(str::trim)
        == Some("true"))
    .then(|| InterruptionNotice {
        termination_time: annotation(keys::ANNOTATION_SPOT_TERMINATION_TIME)
            .and_then(parse_rfc3339)
            .unwrap_or_else(|| now + chrono::Duration::seconds(DEFAULT_NOTICE_SECONDS)),
        noticed_at: None,
    });
    let label = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).cloned());
    Some(NodeView {
        pool: labels.get(keys::LABEL_NODE_POOL).cloned(),
        capacity_type: capacity::detect(&labels),
        instance_type: label(&[
            keys::LABEL_INSTANCE_TYPE,
            "beta.kubernetes.io/instance-type",
        ]),
        zone: label(&[keys::LABEL_ZONE, "failure-domain.beta.kubernetes.io/zone"]),
        created: meta
            .creation_timestamp
            .as_ref()
            .and_then(to_chrono)
            .unwrap_or(now),
        ready,
        gpus_capacity,
        gpus_allocatable,
        gpu_resource: alloc_resource.or(cap_resource),
        cpu_millis_allocatable: (quantity_of(allocatable_map, "cpu") * 1000.0)
            .floor()
            .max(0.0) as u64,
        memory_bytes_allocatable: quantity_of(allocatable_map, "memory").floor().max(0.0) as u64,
        labels,
        taints,
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        interruption,
        provider_id: spec.and_then(|s| s.provider_id.clone()),
        name,
    })
}

/// The underutilized-since / scale-down-started times a node carries, for memory restore.
pub fn node_memory_annotations(node: &Node) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let a = node.metadata.annotations.as_ref();
    let get = |k: &str| a.and_then(|a| a.get(k)).and_then(|s| parse_rfc3339(s));
    (
        get(ANNOTATION_UNDERUTILIZED_SINCE),
        get(ANNOTATION_SCALE_DOWN_STARTED),
    )
}

/// Shrinks a pod to what [`pod_view`] and the drain need before it goes into the cache: at
/// 50,000 pods, env vars, probes, volumes and managed fields would dominate memory.
pub fn trim_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.retain(|k, _| {
            k.starts_with("gpu-autoscaler.io/")
                || k == keys::ANNOTATION_CA_SAFE_TO_EVICT
                || k == ANNOTATION_MIRROR
        });
    }
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            c.env = None;
            c.env_from = None;
            c.command = None;
            c.args = None;
            c.volume_mounts = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
            c.ports = None;
            c.image = None;
            c.lifecycle = None;
            c.security_context = None;
        }
        spec.ephemeral_containers = None;
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
        status.pod_ips = None;
        status.host_ips = None;
        status.message = None;
        if let Some(cs) = status.conditions.as_mut() {
            cs.retain(|c| c.type_ == "PodScheduled");
        }
    }
}

/// Shrinks a node for the cache (images and managed fields are the bulk of a real Node).
pub fn trim_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_attached = None;
        status.volumes_in_use = None;
        status.node_info = None;
        status.addresses = None;
        status.daemon_endpoints = None;
        if let Some(cs) = status.conditions.as_mut() {
            cs.retain(|c| c.type_ == "Ready");
        }
    }
}

/// The tolerations `DefaultTolerationSeconds` adds to every pod.
fn is_default_node_health_toleration(t: &k8s_openapi::api::core::v1::Toleration) -> bool {
    t.effect.as_deref() == Some("NoExecute")
        && matches!(
            t.key.as_deref(),
            Some("node.kubernetes.io/not-ready" | "node.kubernetes.io/unreachable")
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpu_autoscaler_api::CapacityType;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("valid pod")
    }

    #[test]
    fn pending_gpu_pod_converts() {
        let p = pod(json!({
            "metadata": {
                "name": "train", "namespace": "ml", "uid": "u1",
                "labels": { "gpu-autoscaler.io/workload-type": "training" },
                "annotations": { "gpu-autoscaler.io/tier-preference": "spot,on-demand" },
                "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "x", "controller": true }],
            },
            "spec": {
                "containers": [{ "name": "c", "resources": {
                    "requests": { "cpu": "1500m", "memory": "2Gi", "nvidia.com/gpu": "4" },
                    "limits": { "nvidia.com/gpu": "4" } } }],
                "nodeSelector": { "gpu": "a100" },
                "tolerations": [{ "key": "gpu-autoscaler.io/capacity-type", "operator": "Equal", "value": "spot", "effect": "NoSchedule" }],
                "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{ "matchExpressions": [
                        { "key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1a"] },
                        { "key": "x", "operator": "Gt", "values": ["1"] }] }] } },
                    "podAntiAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": [
                        { "labelSelector": { "matchLabels": { "app": "train" },
                                             "matchExpressions": [{ "key": "tier", "operator": "NotIn", "values": ["x"] }] },
                          "topologyKey": "kubernetes.io/hostname" },
                        { "labelSelector": { "matchLabels": { "app": "train" } },
                          "namespaceSelector": {}, "topologyKey": "topology.kubernetes.io/zone" }] } },
                "terminationGracePeriodSeconds": 45,
                "topologySpreadConstraints": [
                    { "maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone",
                      "whenUnsatisfiable": "DoNotSchedule", "labelSelector": { "matchLabels": { "app": "train" } } },
                    { "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                      "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": { "matchLabels": { "app": "train" } } }],
            },
            "status": { "phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "lastTransitionTime": "2024-05-01T10:00:00Z" }] },
        }));
        let v = pod_view(&p, &GpuResourceNames::default()).expect("view");
        assert_eq!(v.gpus, 4);
        assert_eq!(v.gpu_resource.as_deref(), Some("nvidia.com/gpu"));
        assert_eq!(v.cpu_millis, 1500);
        assert_eq!(v.memory_bytes, 2 * 1024 * 1024 * 1024);
        assert_eq!(
            v.tier_preference,
            vec![CapacityType::Spot, CapacityType::OnDemand]
        );
        assert_eq!(
            v.eviction_priority,
            EvictionPriority::High,
            "training defaults to high"
        );
        assert_eq!(
            v.unschedulable_since,
            Some(
                DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            )
        );
        assert_eq!(
            v.owner,
            Some(OwnerRef {
                kind: "Job".into(),
                name: "j".into()
            })
        );
        assert!(!v.is_daemonset && !v.is_mirror && v.safe_to_evict);
        assert_eq!(v.termination_grace_seconds, Some(45));
        assert_eq!(v.node_selector["gpu"], "a100");
        assert_eq!(v.affinity.len(), 1);
        assert_eq!(v.affinity[0][0].op, SelectorOp::In);
        assert_eq!(v.affinity[0][1].op, SelectorOp::Unsupported);
        assert_eq!(
            v.labels.get("gpu-autoscaler.io/workload-type"),
            Some("training")
        );
        assert_eq!(v.anti_affinity.len(), 2);
        let sel = v.anti_affinity[0].selector.as_ref().expect("selector");
        assert_eq!(
            (sel[0].key.as_str(), sel[0].op, sel[0].values.as_slice()),
            ("app", SelectorOp::In, &["train".to_string()][..])
        );
        assert_eq!(sel[1].op, SelectorOp::NotIn);
        assert_eq!(v.anti_affinity[0].topology_key, "kubernetes.io/hostname");
        assert!(!v.anti_affinity[0].all_namespaces && v.anti_affinity[1].all_namespaces);
        assert_eq!(v.spread.len(), 1, "ScheduleAnyway never holds a pod");
        assert_eq!(v.spread[0].max_skew, 2);
        assert_eq!(v.spread[0].topology_key, "topology.kubernetes.io/zone");
        assert_eq!(v.tolerations[0].effect, Some(TaintEffect::NoSchedule));
        assert_eq!(v.tolerations[0].operator, TolerationOp::Equal);
        assert_eq!(v.phase, PodPhase::Pending);
    }

    #[test]
    fn defaults_and_opt_outs() {
        let p = pod(json!({
            "metadata": { "name": "ds", "namespace": "kube-system",
                "annotations": { "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
                                 "gpu-autoscaler.io/eviction-priority": "bogus",
                                 "gpu-autoscaler.io/tier-preference": "cheap" },
                "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "x", "controller": true }] },
            "spec": { "nodeName": "n1", "containers": [{ "name": "c" }] },
            "status": { "phase": "Running" },
        }));
        let v = pod_view(&p, &GpuResourceNames::default()).expect("view");
        assert_eq!(v.gpus, 0);
        assert_eq!(v.gpu_resource, None);
        assert!(v.is_daemonset);
        assert!(!v.safe_to_evict);
        assert_eq!(
            v.eviction_priority,
            EvictionPriority::Medium,
            "invalid annotation falls back"
        );
        assert!(v.tier_preference.is_empty());
        assert_eq!(
            v.unschedulable_since, None,
            "bound pods are never unschedulable"
        );
        assert_eq!(v.node.as_deref(), Some("n1"));

        let mirror = pod(json!({
            "metadata": { "name": "m", "annotations": { "kubernetes.io/config.mirror": "abc",
                "gpu-autoscaler.io/scale-down-disabled": "true" } },
            "spec": { "containers": [] },
        }));
        let v = pod_view(&mirror, &GpuResourceNames::default()).expect("view");
        assert!(v.is_mirror && !v.safe_to_evict);
        assert_eq!(v.namespace, "default");
    }

    #[test]
    fn node_converts_with_interruption_and_lagging_gpus() {
        let now = Utc::now();
        let n: Node = serde_json::from_value(json!({
            "metadata": { "name": "n1", "creationTimestamp": "2024-05-01T10:00:00Z",
                "labels": { "gpu-autoscaler.io/node-pool": "spot-pool", "gpu-autoscaler.io/capacity-type": "spot",
                            "node.kubernetes.io/instance-type": "p3.8xlarge", "topology.kubernetes.io/zone": "us-east-1a" },
                "annotations": { "gpu-autoscaler.io/spot-interruption-warning": "true",
                                 "gpu-autoscaler.io/spot-termination-time": "2024-05-01T10:05:00Z",
                                 "gpu-autoscaler.io/underutilized-since": "2024-05-01T10:01:00Z" } },
            "spec": { "providerID": "kube://spot-pool/i-1", "unschedulable": true,
                "taints": [{ "key": "gpu-autoscaler.io/capacity-type", "value": "spot", "effect": "NoSchedule" }] },
            "status": {
                "capacity": { "cpu": "32", "memory": "244Gi", "nvidia.com/gpu": "4" },
                "allocatable": { "cpu": "31500m", "memory": "240Gi", "nvidia.com/gpu": "0" },
                "conditions": [{ "type": "Ready", "status": "True" }] },
        }))
        .expect("valid node");
        let v = node_view(&n, &GpuResourceNames::default(), now).expect("view");
        assert_eq!(v.pool.as_deref(), Some("spot-pool"));
        assert_eq!(v.capacity_type, Some(CapacityType::Spot));
        assert_eq!(v.instance_type.as_deref(), Some("p3.8xlarge"));
        assert_eq!(v.zone.as_deref(), Some("us-east-1a"));
        assert_eq!((v.gpus_capacity, v.gpus_allocatable), (4, 0));
        assert_eq!(v.gpu_resource.as_deref(), Some("nvidia.com/gpu"));
        assert_eq!(v.cpu_millis_allocatable, 31_500);
        assert_eq!(v.memory_bytes_allocatable, 240 * 1024 * 1024 * 1024);
        assert!(v.ready && v.unschedulable);
        assert_eq!(v.taints.len(), 1);
        assert_eq!(v.provider_id.as_deref(), Some("kube://spot-pool/i-1"));
        let notice = v.interruption.expect("interruption");
        assert_eq!(
            notice.termination_time.to_rfc3339(),
            "2024-05-01T10:05:00+00:00"
        );
        let (under, started) = node_memory_annotations(&n);
        assert!(under.is_some() && started.is_none());
    }

    #[test]
    fn warning_without_time_assumes_the_default_notice() {
        let now = Utc::now();
        let n: Node = serde_json::from_value(json!({
            "metadata": { "name": "n2", "annotations": { "gpu-autoscaler.io/spot-interruption-warning": "true" } },
        }))
        .expect("valid node");
        let v = node_view(&n, &GpuResourceNames::default(), now).expect("view");
        assert_eq!(
            v.interruption.map(|i| i.termination_time),
            Some(now + chrono::Duration::seconds(120))
        );
        assert!(!v.ready);
        assert_eq!(v.pool, None);
    }

    #[test]
    fn trimming_keeps_what_the_views_need() {
        let mut p = pod(json!({
            "metadata": { "name": "p", "annotations": { "gpu-autoscaler.io/eviction-priority": "low", "other": "x" } },
            "spec": { "containers": [{ "name": "c", "image": "big", "env": [{ "name": "A", "value": "1" }],
                "resources": { "limits": { "nvidia.com/gpu": "2" } } }] },
        }));
        let before = pod_view(&p, &GpuResourceNames::default()).expect("view");
        trim_pod(&mut p);
        let after = pod_view(&p, &GpuResourceNames::default()).expect("view");
        assert_eq!(after.gpus, before.gpus);
        assert_eq!(after.eviction_priority, EvictionPriority::Low);
        assert!(
            !p.metadata
                .annotations
                .unwrap_or_default()
                .contains_key("other")
        );
        assert!(p.spec.unwrap_or_default().containers[0].env.is_none());
    }

    #[test]
    fn default_node_health_tolerations_are_not_kept() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "namespace": "ns", "uid": "u" },
            "spec": {
                "containers": [{ "name": "c", "resources": { "limits": { "nvidia.com/gpu": "1" } } }],
                "tolerations": [
                    { "key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300 },
                    { "key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300 },
                    { "key": "gpu-autoscaler.io/capacity-type", "operator": "Equal", "value": "spot", "effect": "NoSchedule" }
                ]
            }
        }))
        .unwrap();
        pod.status = None;
        let v = pod_view(&pod, &GpuResourceNames::default()).expect("a GPU pod has a view");
        assert_eq!(v.tolerations.len(), 1, "{:?}", v.tolerations);
        assert_eq!(
            v.tolerations[0].key.as_deref(),
            Some("gpu-autoscaler.io/capacity-type")
        );
    }
}
