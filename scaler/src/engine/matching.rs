//! Whether a pod may run on a node (or on a node a template would create): labels, taints,
//! tier preference and GPU resource. Resources are checked separately in `pack`.

use std::collections::BTreeMap;

use gpu_autoscaler_api::CapacityType;
use gpu_autoscaler_api::policy::TaintEffect;

use super::model::{
    PodAffinityTerm, PodView, SelectorOp, SpreadConstraint, Taint, Toleration, TolerationOp,
};

/// The topology key of per-node pod anti-affinity, the one the engine enforces.
pub const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";

/// The scheduling-relevant face of a node or of a node-to-be.
#[derive(Debug, Clone)]
pub struct NodeFace<'a> {
    pub labels: &'a BTreeMap<String, String>,
    pub taints: &'a [Taint],
    pub capacity_type: Option<CapacityType>,
    pub gpu_resource: Option<&'a str>,
}

/// Why a pod can't go on a face; the first failing rule wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mismatch {
    NodeSelector,
    Affinity,
    Taint,
    Tier,
    GpuResource,
}

impl Mismatch {
    pub fn describe(self) -> &'static str {
        match self {
            Mismatch::NodeSelector => "its nodeSelector matches no pool's labels",
            Mismatch::Affinity => "its required node affinity matches no pool's labels",
            Mismatch::Taint => "it tolerates no pool's taints",
            Mismatch::Tier => "its tier preference allows no pool's capacity type",
            Mismatch::GpuResource => "no pool offers its GPU resource",
        }
    }
}

pub fn check(pod: &PodView, face: &NodeFace<'_>) -> Result<(), Mismatch> {
    if !pod
        .node_selector
        .iter()
        .all(|(k, v)| face.labels.get(k) == Some(v))
    {
        return Err(Mismatch::NodeSelector);
    }
    if !pod.affinity.is_empty()
        && !pod.affinity.iter().any(|term| {
            term.iter()
                .all(|r| requirement_holds(r.op, &r.key, &r.values, face.labels))
        })
    {
        return Err(Mismatch::Affinity);
    }
    if !tolerates_all(&pod.tolerations, face.taints) {
        return Err(Mismatch::Taint);
    }
    if !pod.tier_preference.is_empty() {
        // A node of unknown capacity type can't satisfy an explicit preference.
        match face.capacity_type {
            Some(ct) if pod.tier_preference.contains(&ct) => {}
            _ => return Err(Mismatch::Tier),
        }
    }
    if pod.gpus > 0
        && let Some(want) = pod.gpu_resource.as_deref()
        && face.gpu_resource != Some(want)
    {
        return Err(Mismatch::GpuResource);
    }
    Ok(())
}

/// Whether `term` (written by a pod in `owner_namespace`) selects `other`.
fn term_selects(term: &PodAffinityTerm, owner_namespace: &str, other: &PodView) -> bool {
    let Some(selector) = &term.selector else {
        return false;
    };
    let namespace_ok = term.all_namespaces
        || if term.namespaces.is_empty() {
            other.namespace == owner_namespace
        } else {
            term.namespaces.contains(&other.namespace)
        };
    namespace_ok
        && selector
            .iter()
            .all(|r| value_satisfies(r.op, &r.values, other.labels.get(&r.key)))
}

/// Whether a node with `labels` satisfies the pod's nodeSelector and required node affinity
/// (the nodes kube-scheduler weighs spread constraints over).
pub fn node_labels_fit(pod: &PodView, labels: &BTreeMap<String, String>) -> bool {
    pod.node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
        && (pod.affinity.is_empty()
            || pod.affinity.iter().any(|term| {
                term.iter()
                    .all(|r| requirement_holds(r.op, &r.key, &r.values, labels))
            }))
}

/// Whether a spread constraint of a pod in `owner_namespace` counts `other`.
pub fn spread_counts(c: &SpreadConstraint, owner_namespace: &str, other: &PodView) -> bool {
    other.namespace == owner_namespace
        && c.selector.as_ref().is_some_and(|sel| {
            sel.iter()
                .all(|r| value_satisfies(r.op, &r.values, other.labels.get(&r.key)))
        })
}

/// Whether `pod` has required anti-affinity terms on `topology_key`.
pub fn has_anti_affinity_on(pod: &PodView, topology_key: &str) -> bool {
    pod.anti_affinity
        .iter()
        .any(|t| t.topology_key == topology_key)
}

/// Whether `a` and `b` may not run on one node: pods on one node share every topology domain
/// (its hostname, zone, ...), so a required anti-affinity term on any key rules it out.
pub fn excludes_on_node(a: &PodView, b: &PodView) -> bool {
    let one_way = |x: &PodView, y: &PodView| {
        x.anti_affinity
            .iter()
            .any(|t| term_selects(t, &x.namespace, y))
    };
    one_way(a, b) || one_way(b, a)
}

/// Whether `a` and `b` may not share a `topology_key` domain (a zone, ...), in either
/// direction.
pub fn excludes_on(a: &PodView, b: &PodView, topology_key: &str) -> bool {
    let one_way = |x: &PodView, y: &PodView| {
        x.anti_affinity
            .iter()
            .filter(|t| t.topology_key == topology_key)
            .any(|t| term_selects(t, &x.namespace, y))
    };
    one_way(a, b) || one_way(b, a)
}

fn requirement_holds(
    op: SelectorOp,
    key: &str,
    values: &[String],
    labels: &BTreeMap<String, String>,
) -> bool {
    value_satisfies(op, values, labels.get(key).map(String::as_str))
}

/// Whether a label's value (`None`: not set) satisfies a requirement.
fn value_satisfies(op: SelectorOp, values: &[String], v: Option<&str>) -> bool {
    match op {
        SelectorOp::In => v.is_some_and(|v| values.iter().any(|x| x == v)),
        SelectorOp::NotIn => v.is_none_or(|v| !values.iter().any(|x| x == v)),
        SelectorOp::Exists => v.is_some(),
        SelectorOp::DoesNotExist => v.is_none(),
        SelectorOp::Unsupported => false,
    }
}

/// Every NoSchedule / NoExecute taint must be tolerated; PreferNoSchedule never blocks.
pub fn tolerates_all(tolerations: &[Toleration], taints: &[Taint]) -> bool {
    taints
        .iter()
        .filter(|t| t.effect != TaintEffect::PreferNoSchedule)
        .all(|t| tolerations.iter().any(|tol| tolerates(tol, t)))
}

fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = tol.effect
        && effect != taint.effect
    {
        return false;
    }
    match (&tol.key, tol.operator) {
        (None, TolerationOp::Exists) => true,
        (None, TolerationOp::Equal) => false,
        (Some(k), op) => {
            k == &taint.key && (op == TolerationOp::Exists || tol.value == taint.value)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::{LabelRequirement, PodPhase};
    use gpu_autoscaler_api::EvictionPriority;

    fn pod() -> PodView {
        PodView {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u".into(),
            node: None,
            gpus: 1,
            gpu_resource: Some("nvidia.com/gpu".into()),
            cpu_millis: 0,
            memory_bytes: 0,
            node_selector: BTreeMap::new(),
            labels: Default::default(),
            anti_affinity: Vec::new(),
            spread: Vec::new(),
            affinity: vec![],
            tolerations: vec![],
            tier_preference: vec![],
            eviction_priority: EvictionPriority::Medium,
            unschedulable_since: None,
            owner: None,
            is_daemonset: false,
            is_mirror: false,
            safe_to_evict: true,
            termination_grace_seconds: None,
            phase: PodPhase::Pending,
        }
    }

    fn spot_taint() -> Taint {
        Taint {
            key: "gpu-autoscaler.io/capacity-type".into(),
            value: "spot".into(),
            effect: TaintEffect::NoSchedule,
        }
    }

    #[test]
    fn rules_table() {
        let labels: BTreeMap<String, String> = [
            ("team".to_string(), "a".to_string()),
            ("zone".to_string(), "z1".to_string()),
        ]
        .into();
        let taints = [spot_taint()];
        let spot = NodeFace {
            labels: &labels,
            taints: &taints,
            capacity_type: Some(CapacityType::Spot),
            gpu_resource: Some("nvidia.com/gpu"),
        };
        let od = NodeFace {
            labels: &labels,
            taints: &[],
            capacity_type: Some(CapacityType::OnDemand),
            gpu_resource: Some("nvidia.com/gpu"),
        };
        let tol = Toleration {
            key: Some("gpu-autoscaler.io/capacity-type".into()),
            operator: TolerationOp::Equal,
            value: "spot".into(),
            effect: Some(TaintEffect::NoSchedule),
        };
        let req = |key: &str, op, values: &[&str]| LabelRequirement {
            key: key.into(),
            op,
            values: values.iter().map(|s| s.to_string()).collect(),
        };
        type Case = (&'static str, Box<dyn Fn(&mut PodView)>, bool, bool);
        let cases: Vec<Case> = vec![
            (
                "plain pod: on-demand only (spot taint)",
                Box::new(|_| {}),
                false,
                true,
            ),
            (
                "toleration opens spot",
                Box::new(move |p| p.tolerations = vec![tol.clone()]),
                true,
                true,
            ),
            (
                "on-demand-only preference",
                Box::new(|p| p.tier_preference = vec![CapacityType::OnDemand]),
                false,
                true,
            ),
            (
                "selector match",
                Box::new(|p| p.node_selector = [("team".into(), "a".into())].into()),
                false,
                true,
            ),
            (
                "selector mismatch",
                Box::new(|p| p.node_selector = [("team".into(), "b".into())].into()),
                false,
                false,
            ),
            (
                "affinity In / NotIn / Exists",
                Box::new(move |p| {
                    p.affinity = vec![vec![
                        req("zone", SelectorOp::In, &["z1", "z2"]),
                        req("team", SelectorOp::NotIn, &["b"]),
                        req("team", SelectorOp::Exists, &[]),
                    ]]
                }),
                false,
                true,
            ),
            (
                "affinity terms are ORed",
                Box::new(move |p| {
                    p.affinity = vec![
                        vec![req("gpu", SelectorOp::Exists, &[])],
                        vec![req("gpu", SelectorOp::DoesNotExist, &[])],
                    ]
                }),
                false,
                true,
            ),
            (
                "unsupported operator never matches",
                Box::new(move |p| {
                    p.affinity = vec![vec![req("zone", SelectorOp::Unsupported, &["1"])]]
                }),
                false,
                false,
            ),
            (
                "amd pod on nvidia node",
                Box::new(|p| p.gpu_resource = Some("amd.com/gpu".into())),
                false,
                false,
            ),
        ];
        for (name, edit, want_spot, want_od) in cases {
            let mut p = pod();
            edit(&mut p);
            assert_eq!(check(&p, &spot).is_ok(), want_spot, "{name}: spot");
            assert_eq!(check(&p, &od).is_ok(), want_od, "{name}: on-demand");
        }
    }

    #[test]
    fn wildcard_toleration_and_prefer_no_schedule() {
        let all = Toleration {
            key: None,
            operator: TolerationOp::Exists,
            value: String::new(),
            effect: None,
        };
        assert!(tolerates_all(&[all], &[spot_taint()]));
        let soft = Taint {
            key: "x".into(),
            value: String::new(),
            effect: TaintEffect::PreferNoSchedule,
        };
        assert!(tolerates_all(&[], &[soft]));
    }
}
