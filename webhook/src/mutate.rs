//! The pure mutation: what the webhook does to one pod. No I/O, no clock, no globals, so every
//! branch is a table-driven unit test and a property test away.
//!
//! For a GPU pod on CREATE, in this order:
//! 1. `gpu-autoscaler.io/eviction-priority`: a valid user value is kept, an invalid one denies
//!    the pod; when absent it is derived from the `workload-type` label, else from the pod's
//!    PriorityClass (by name, then by numeric priority against the thresholds), else the
//!    configured default.
//! 2. `gpu-autoscaler.io/tier-preference`: kept when valid, denied when invalid, otherwise taken
//!    from the configured mapping of the eviction priority.
//! 3. A toleration for the spot taint when the preference allows spot.
//! 4. Preferred node affinity on the capacity-type label, weighted by preference order.
//! 5. Optionally `spec.schedulerName`.
//!
//! Every step checks whether its result is already there, so a mutated pod admitted again
//! (`reinvocationPolicy: IfNeeded`) gets no patch.

use gpu_autoscaler_api::gpu::is_gpu_pod;
use gpu_autoscaler_api::{CapacityType, EvictionPriority, TierPreference, WorkloadType, keys};
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PreferredSchedulingTerm, Toleration};
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::review::Operation;

/// What to answer for one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Admit unchanged (not a GPU pod, excluded, not a CREATE, or already mutated).
    Allow,
    /// Admit with this RFC 6902 patch. `warnings` go back to the client (kubectl prints them).
    Patch { patch: Patch, warnings: Vec<String> },
    /// Reject, with a message for the person who applied the pod.
    Deny(String),
}

/// The scheduler name the apiserver defaults to; a pod carrying it made no explicit choice.
const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// Decides the mutation of `pod`. `namespace` is the request's namespace (a pod created with
/// `generateName` or without `metadata.namespace` may not carry it in the object).
pub fn mutate_pod(pod: &Pod, operation: Operation, namespace: &str, config: &Config) -> Decision {
    // Only CREATE: on UPDATE tolerations can only grow and affinity is immutable, and
    // denying an update over an annotation could wedge controllers that only remove finalizers.
    if operation != Operation::Create || config.is_excluded_namespace(namespace) {
        return Decision::Allow;
    }
    let meta = &pod.metadata;
    if meta
        .labels
        .as_ref()
        .and_then(|l| l.get(keys::LABEL_WEBHOOK_OPT_OUT))
        .is_some_and(|v| v.trim() == "true")
    {
        return Decision::Allow;
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Decision::Allow;
    };
    if !is_gpu_pod(spec, &config.gpu_resources) {
        return Decision::Allow;
    }

    let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key));
    let mut errors: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();

    let user_priority =
        annotation(keys::ANNOTATION_EVICTION_PRIORITY).map(|v| v.parse::<EvictionPriority>());
    let user_preference =
        annotation(keys::ANNOTATION_TIER_PREFERENCE).map(|v| v.parse::<TierPreference>());
    if let Some(Err(e)) = &user_priority {
        errors.push(e.to_string());
    }
    if let Some(Err(e)) = &user_preference {
        errors.push(e.to_string());
    }
    if !errors.is_empty() {
        return Decision::Deny(errors.join("; "));
    }

    let mut new_annotations: Vec<(&'static str, String)> = Vec::new();
    let priority = match user_priority {
        Some(Ok(p)) => p,
        _ => {
            let p = derive_priority(pod, spec, config, &mut warnings);
            new_annotations.push((keys::ANNOTATION_EVICTION_PRIORITY, p.as_str().to_string()));
            p
        }
    };
    let preference = match user_preference {
        Some(Ok(p)) => p,
        _ => {
            let p = config.tier_preference(priority);
            new_annotations.push((keys::ANNOTATION_TIER_PREFERENCE, p.to_string()));
            p
        }
    };

    let mut ops: Vec<PatchOperation> = Vec::new();
    annotation_ops(pod, &new_annotations, &mut ops);
    if preference.allows(CapacityType::Spot)
        && !tolerates_spot(spec.tolerations.as_deref().unwrap_or(&[]))
    {
        toleration_ops(spec, &mut ops);
    }
    if !has_capacity_type_preference(spec) {
        affinity_ops(spec, &preference, &mut ops);
    }
    if let Some(name) = config.scheduler_name.as_deref() {
        let current = spec.scheduler_name.as_deref().unwrap_or("");
        // An explicit choice of another scheduler is the user's to make.
        if current.is_empty() || current == DEFAULT_SCHEDULER {
            ops.push(add(
                &["spec", "schedulerName"],
                Value::String(name.to_string()),
            ));
        }
    }

    if ops.is_empty() {
        Decision::Allow
    } else {
        Decision::Patch {
            patch: Patch(ops),
            warnings,
        }
    }
}

/// Label, then PriorityClass name, then numeric priority, then the default.
fn derive_priority(
    pod: &Pod,
    spec: &PodSpec,
    config: &Config,
    warnings: &mut Vec<String>,
) -> EvictionPriority {
    if let Some(raw) = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(keys::LABEL_WORKLOAD_TYPE))
    {
        match raw.parse::<WorkloadType>() {
            Ok(w) => return w.default_priority(),
            // Labels belong to many tools, so a strange value is a warning, not a denial.
            Err(e) => warnings.push(format!(
                "{e}; eviction priority derived from the pod's priority instead"
            )),
        }
    }
    let class = spec.priority_class_name.as_deref().unwrap_or("").trim();
    if let Some(level) = config.priority_classes.get(class) {
        return *level;
    }
    // The Priority admission plugin runs before webhooks and fills spec.priority (0 when the
    // pod has no class and no global default exists). Only a named class or a non-zero value
    // says something about the pod; a plain 0 means "nobody decided", so the default applies.
    if let Some(p) = spec.priority
        && (!class.is_empty() || p != 0)
    {
        return config.priority_thresholds.classify(p);
    }
    config.default_eviction_priority
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    // from_tokens escapes `~` and `/` inside each token (`~0`, `~1`).
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

fn annotation_ops(pod: &Pod, new: &[(&'static str, String)], ops: &mut Vec<PatchOperation>) {
    if new.is_empty() {
        return;
    }
    if pod.metadata.annotations.is_some() {
        for (k, v) in new {
            ops.push(add(
                &["metadata", "annotations", k],
                Value::String(v.clone()),
            ));
        }
    } else {
        let map: Map<String, Value> = new
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        ops.push(add(&["metadata", "annotations"], Value::Object(map)));
    }
}

fn spot_toleration() -> Value {
    json!({
        "key": keys::TAINT_SPOT_KEY,
        "operator": "Equal",
        "value": keys::TAINT_SPOT_VALUE,
        "effect": keys::TAINT_EFFECT_NO_SCHEDULE,
    })
}

fn toleration_ops(spec: &PodSpec, ops: &mut Vec<PatchOperation>) {
    if spec.tolerations.is_some() {
        ops.push(add(&["spec", "tolerations", "-"], spot_toleration()));
    } else {
        ops.push(add(
            &["spec", "tolerations"],
            Value::Array(vec![spot_toleration()]),
        ));
    }
}

/// True when some toleration already covers `capacity-type=spot:NoSchedule`, including the
/// broad forms (`operator: Exists` on the key or on every key, any effect).
pub fn tolerates_spot(tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = match t.effect.as_deref() {
            None | Some("") => true,
            Some(e) => e == keys::TAINT_EFFECT_NO_SCHEDULE,
        };
        let key = t.key.as_deref().unwrap_or("");
        let matches = match t.operator.as_deref().unwrap_or("Equal") {
            "Exists" => key.is_empty() || key == keys::TAINT_SPOT_KEY,
            _ => {
                key == keys::TAINT_SPOT_KEY
                    && t.value.as_deref().unwrap_or("") == keys::TAINT_SPOT_VALUE
            }
        };
        effect_ok && matches
    })
}

fn preferred_terms(spec: &PodSpec) -> &[PreferredSchedulingTerm] {
    spec.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or(&[])
}

/// True when a preferred node-affinity term already speaks about the capacity-type label:
/// either ours from an earlier admission or the user's own, which wins.
fn has_capacity_type_preference(spec: &PodSpec) -> bool {
    preferred_terms(spec).iter().any(|t| {
        t.preference
            .match_expressions
            .iter()
            .flatten()
            .any(|e| e.key == keys::LABEL_CAPACITY_TYPE)
    })
}

/// Weight of the `rank`-th (0-based) of `n` preferred capacity types: 100 for the first, then
/// evenly spaced down (100/50 for two, 100/67/33 for three), always within 1..=100.
pub fn preference_weight(rank: usize, n: usize) -> i32 {
    let n = n.max(1);
    let rank = rank.min(n - 1);
    (((100 * (n - rank)) + n / 2) / n).clamp(1, 100) as i32
}

/// The preferred scheduling terms for a tier preference, most preferred first.
pub fn affinity_terms(preference: &TierPreference) -> Vec<Value> {
    let n = preference.as_slice().len();
    preference
        .as_slice()
        .iter()
        .enumerate()
        .map(|(i, ct)| {
            json!({
                "weight": preference_weight(i, n),
                "preference": {"matchExpressions": [{
                    "key": keys::LABEL_CAPACITY_TYPE,
                    "operator": "In",
                    "values": [ct.as_str()],
                }]},
            })
        })
        .collect()
}

fn affinity_ops(spec: &PodSpec, preference: &TierPreference, ops: &mut Vec<PatchOperation>) {
    const PREFERRED: &str = "preferredDuringSchedulingIgnoredDuringExecution";
    let terms = affinity_terms(preference);
    let Some(affinity) = spec.affinity.as_ref() else {
        ops.push(add(
            &["spec", "affinity"],
            json!({"nodeAffinity": {PREFERRED: terms}}),
        ));
        return;
    };
    let Some(node) = affinity.node_affinity.as_ref() else {
        ops.push(add(
            &["spec", "affinity", "nodeAffinity"],
            json!({PREFERRED: terms}),
        ));
        return;
    };
    if node
        .preferred_during_scheduling_ignored_during_execution
        .is_none()
    {
        ops.push(add(
            &["spec", "affinity", "nodeAffinity", PREFERRED],
            Value::Array(terms),
        ));
        return;
    }
    for term in terms {
        ops.push(add(
            &["spec", "affinity", "nodeAffinity", PREFERRED, "-"],
            term,
        ));
    }
}
