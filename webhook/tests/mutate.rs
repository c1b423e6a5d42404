//! Table-driven tests of the pure mutation, plus property tests that apply every emitted patch.

use gpu_autoscaler_api::{EvictionPriority, TierPreference, keys};
use gpu_autoscaler_webhook::mutate::{preference_weight, tolerates_spot};
use gpu_autoscaler_webhook::{Config, Decision, Operation, mutate_pod};
use json_patch::Patch;
use k8s_openapi::api::core::v1::Pod;
use proptest::prelude::*;
use serde_json::{Value, json};

const EP: &str = "gpu-autoscaler.io/eviction-priority";
const TP: &str = "gpu-autoscaler.io/tier-preference";

fn gpu_container(n: u32) -> Value {
    json!({"name": "main", "image": "trainer:1", "resources": {"limits": {"nvidia.com/gpu": n.to_string()}}})
}

/// A GPU pod with `meta` merged into metadata and `spec` merged into spec.
fn pod(meta: Value, spec: Value) -> Pod {
    let mut v = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ml"},
        "spec": {"containers": [gpu_container(1)]},
    });
    merge(&mut v["metadata"], meta);
    merge(&mut v["spec"], spec);
    serde_json::from_value(v).expect("test pod decodes")
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        for (k, v) in b {
            a.insert(k, v);
        }
    }
}

fn apply(p: &Pod, patch: &Patch) -> Pod {
    let mut doc = serde_json::to_value(p).expect("pod encodes");
    json_patch::patch(&mut doc, patch).expect("patch applies");
    serde_json::from_value(doc).expect("patched pod decodes")
}

/// Runs the mutation on CREATE in namespace `ml`, applies any patch, checks idempotence, and
/// returns the patched pod with the patch and warnings.
fn admit(p: &Pod, cfg: &Config) -> (Pod, Patch, Vec<String>) {
    match mutate_pod(p, Operation::Create, "ml", cfg) {
        Decision::Patch { patch, warnings } => {
            let out = apply(p, &patch);
            assert_eq!(
                mutate_pod(&out, Operation::Create, "ml", cfg),
                Decision::Allow,
                "re-admitting the mutated pod must yield no patch"
            );
            (out, patch, warnings)
        }
        other => panic!("expected a patch, got {other:?}"),
    }
}

fn ann(p: &Pod, key: &str) -> Option<String> {
    p.metadata.annotations.as_ref()?.get(key).cloned()
}

fn capacity_weights(p: &Pod) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    let terms = p
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .clone()
        })
        .unwrap_or_default();
    for t in terms {
        for e in t.preference.match_expressions.unwrap_or_default() {
            if e.key == keys::LABEL_CAPACITY_TYPE {
                for v in e.values.unwrap_or_default() {
                    out.push((v, t.weight));
                }
            }
        }
    }
    out
}

fn has_spot_toleration(p: &Pod) -> bool {
    tolerates_spot(
        p.spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[]),
    )
}

#[test]
fn derivation_table() {
    let high_default = Config {
        default_eviction_priority: EvictionPriority::Low,
        priority_classes: [("research-preemptible".to_string(), EvictionPriority::Low)].into(),
        ..Config::default()
    };
    let base = Config::default();
    // (case, labels, spec fields, config, expected priority, warning expected)
    let cases: Vec<(&str, Value, Value, &Config, &str, bool)> = vec![
        (
            "training label",
            json!({"gpu-autoscaler.io/workload-type": "training"}),
            json!({}),
            &base,
            "high",
            false,
        ),
        (
            "inference label",
            json!({"gpu-autoscaler.io/workload-type": "inference"}),
            json!({}),
            &base,
            "medium",
            false,
        ),
        (
            "serving label",
            json!({"gpu-autoscaler.io/workload-type": "serving"}),
            json!({}),
            &base,
            "medium",
            false,
        ),
        (
            "development label",
            json!({"gpu-autoscaler.io/workload-type": "development"}),
            json!({}),
            &base,
            "low",
            false,
        ),
        (
            "batch label",
            json!({"gpu-autoscaler.io/workload-type": "batch"}),
            json!({}),
            &base,
            "low",
            false,
        ),
        (
            "label wins over a high priority class",
            json!({"gpu-autoscaler.io/workload-type": "batch"}),
            json!({"priorityClassName": "system-cluster-critical", "priority": 2_000_000_000}),
            &base,
            "low",
            false,
        ),
        (
            "unknown label falls through to priority, with a warning",
            json!({"gpu-autoscaler.io/workload-type": "research"}),
            json!({"priorityClassName": "big", "priority": 1_000_000}),
            &base,
            "high",
            true,
        ),
        (
            "class at the high threshold",
            json!({}),
            json!({"priorityClassName": "big", "priority": 1_000_000}),
            &base,
            "high",
            false,
        ),
        (
            "class just under the high threshold",
            json!({}),
            json!({"priorityClassName": "mid", "priority": 999_999}),
            &base,
            "medium",
            false,
        ),
        (
            "negative class is low",
            json!({}),
            json!({"priorityClassName": "preemptible", "priority": -10}),
            &base,
            "low",
            false,
        ),
        (
            "class of value 0 is medium by threshold",
            json!({}),
            json!({"priorityClassName": "zero", "priority": 0}),
            &high_default,
            "medium",
            false,
        ),
        (
            "non-zero priority without a class name",
            json!({}),
            json!({"priority": 5}),
            &high_default,
            "medium",
            false,
        ),
        (
            "priority 0 without a class uses the default",
            json!({}),
            json!({"priority": 0}),
            &high_default,
            "low",
            false,
        ),
        (
            "class name mapping wins over the number",
            json!({}),
            json!({"priorityClassName": "research-preemptible", "priority": 5_000_000}),
            &high_default,
            "low",
            false,
        ),
        (
            "nothing set: default medium",
            json!({}),
            json!({}),
            &base,
            "medium",
            false,
        ),
        (
            "nothing set: configured default",
            json!({}),
            json!({}),
            &high_default,
            "low",
            false,
        ),
    ];
    for (case, labels, spec, cfg, want, warn) in cases {
        let p = pod(json!({"labels": labels}), spec);
        let (out, _, warnings) = admit(&p, cfg);
        assert_eq!(ann(&out, EP).as_deref(), Some(want), "{case}");
        let want_pref = cfg.tier_preference(want.parse().unwrap()).to_string();
        assert_eq!(ann(&out, TP), Some(want_pref), "{case}");
        assert_eq!(!warnings.is_empty(), warn, "{case}: {warnings:?}");
        if warn {
            assert!(
                warnings[0].contains("gpu-autoscaler.io/workload-type"),
                "{case}: {warnings:?}"
            );
        }
    }
}

#[test]
fn default_mapping_toleration_and_weights_per_priority() {
    let cfg = Config::default();
    let cases = [
        (
            "low",
            "spot,on-demand",
            true,
            vec![("spot", 100), ("on-demand", 50)],
        ),
        (
            "medium",
            "on-demand,spot",
            true,
            vec![("on-demand", 100), ("spot", 50)],
        ),
        (
            "high",
            "reserved,on-demand,spot",
            true,
            vec![("reserved", 100), ("on-demand", 67), ("spot", 33)],
        ),
    ];
    for (level, pref, spot, weights) in cases {
        let p = pod(json!({"annotations": {EP: level}}), json!({}));
        let (out, patch, _) = admit(&p, &cfg);
        assert_eq!(ann(&out, EP).as_deref(), Some(level));
        assert_eq!(ann(&out, TP).as_deref(), Some(pref), "{level}");
        assert_eq!(has_spot_toleration(&out), spot, "{level}");
        let want: Vec<(String, i32)> = weights
            .into_iter()
            .map(|(c, w)| (c.to_string(), w))
            .collect();
        assert_eq!(capacity_weights(&out), want, "{level}");
        // The user's own eviction-priority annotation is kept, not rewritten.
        let text = serde_json::to_string(&patch).unwrap();
        assert!(!text.contains("eviction-priority"), "{level}: {text}");
    }
}

#[test]
fn user_tier_preference_is_kept_and_steers_toleration() {
    let cfg = Config::default();
    // No spot: no toleration, one term.
    let p = pod(
        json!({"annotations": {TP: "on-demand"}, "labels": {"gpu-autoscaler.io/workload-type": "batch"}}),
        json!({}),
    );
    let (out, _, _) = admit(&p, &cfg);
    assert_eq!(ann(&out, EP).as_deref(), Some("low"));
    assert_eq!(ann(&out, TP).as_deref(), Some("on-demand"));
    assert!(!has_spot_toleration(&out));
    assert!(out.spec.as_ref().unwrap().tolerations.is_none());
    assert_eq!(capacity_weights(&out), vec![("on-demand".to_string(), 100)]);
    // Spot only, with whitespace: kept verbatim, toleration added.
    let p = pod(json!({"annotations": {TP: " spot "}}), json!({}));
    let (out, _, _) = admit(&p, &cfg);
    assert_eq!(ann(&out, TP).as_deref(), Some(" spot "));
    assert!(has_spot_toleration(&out));
    assert_eq!(capacity_weights(&out), vec![("spot".to_string(), 100)]);
}

#[test]
fn invalid_user_values_are_denied_with_precise_messages() {
    let cfg = Config::default();
    let cases: [(Value, &[&str]); 5] = [
        (
            json!({EP: "urgent"}),
            &[EP, "\"urgent\"", "low, medium, high"],
        ),
        (json!({EP: "High"}), &[EP, "\"High\""]),
        (
            json!({TP: "spot,cheap"}),
            &[TP, "\"cheap\" at position 2", "reserved, on-demand, spot"],
        ),
        (json!({TP: "spot,spot"}), &[TP, "positions 1 and 2"]),
        (json!({EP: "", TP: ""}), &[EP, TP, "; "]),
    ];
    for (annotations, wants) in cases {
        let p = pod(json!({"annotations": annotations}), json!({}));
        match mutate_pod(&p, Operation::Create, "ml", &cfg) {
            Decision::Deny(msg) => {
                for w in wants {
                    assert!(msg.contains(w), "{annotations}: {msg:?} lacks {w:?}");
                }
            }
            other => panic!("{annotations}: expected a denial, got {other:?}"),
        }
    }
    // Invalid values on a non-GPU pod are none of our business.
    let mut p = pod(json!({"annotations": {EP: "urgent"}}), json!({}));
    p.spec.as_mut().unwrap().containers =
        vec![serde_json::from_value(json!({"name": "c"})).unwrap()];
    assert_eq!(
        mutate_pod(&p, Operation::Create, "ml", &cfg),
        Decision::Allow
    );
}

#[test]
fn no_patch_for_pods_we_do_not_touch() {
    let cfg = Config::default();
    let cpu_only: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}]},
    }))
    .unwrap();
    assert_eq!(
        mutate_pod(&cpu_only, Operation::Create, "ml", &cfg),
        Decision::Allow
    );
    let zero_gpu = pod(json!({}), json!({"containers": [gpu_container(0)]}));
    assert_eq!(
        mutate_pod(&zero_gpu, Operation::Create, "ml", &cfg),
        Decision::Allow
    );
    let no_spec: Pod = serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
    assert_eq!(
        mutate_pod(&no_spec, Operation::Create, "ml", &cfg),
        Decision::Allow
    );
    let gpu = pod(json!({}), json!({}));
    for op in [
        Operation::Update,
        Operation::Delete,
        Operation::Connect,
        Operation::Unknown,
    ] {
        assert_eq!(mutate_pod(&gpu, op, "ml", &cfg), Decision::Allow, "{op:?}");
    }
    assert_eq!(
        mutate_pod(&gpu, Operation::Create, "kube-system", &cfg),
        Decision::Allow
    );
    let opted_out = pod(
        json!({"labels": {"gpu-autoscaler.io/ignore": "true"}}),
        json!({}),
    );
    assert_eq!(
        mutate_pod(&opted_out, Operation::Create, "ml", &cfg),
        Decision::Allow
    );
}

#[test]
fn effective_request_rules_and_extra_gpu_names_decide_gpu_pods() {
    let cfg = Config::default();
    // GPU only in an init container: still a GPU pod (the effective request is the max).
    let p = pod(
        json!({}),
        json!({"initContainers": [gpu_container(2)], "containers": [{"name": "c"}]}),
    );
    admit(&p, &cfg);
    let p = pod(
        json!({}),
        json!({"containers": [{"name": "c", "resources": {"limits": {"example.com/vgpu-small": "1"}}}]}),
    );
    assert_eq!(
        mutate_pod(&p, Operation::Create, "ml", &cfg),
        Decision::Allow
    );
    let cfg = Config::default().with_extra_gpu_resources(["example.com/vgpu-*"]);
    admit(&p, &cfg);
}

#[test]
fn annotation_paths_are_escaped_and_presence_is_respected() {
    let cfg = Config::default();
    // Absent annotations: one op that creates the map.
    let (_, patch, _) = admit(&pod(json!({}), json!({})), &cfg);
    let ops = serde_json::to_value(&patch).unwrap();
    assert_eq!(ops[0]["path"], "/metadata/annotations");
    assert_eq!(ops[0]["value"][EP], "medium");
    // Present (even empty): one op per key, with `/` escaped as `~1`.
    for existing in [json!({}), json!({"a~b/c": "x", "other": "y"})] {
        let p = pod(json!({"annotations": existing.clone()}), json!({}));
        let (out, patch, _) = admit(&p, &cfg);
        let ops = serde_json::to_value(&patch).unwrap();
        assert_eq!(
            ops[0]["path"],
            "/metadata/annotations/gpu-autoscaler.io~1eviction-priority"
        );
        assert_eq!(
            ops[1]["path"],
            "/metadata/annotations/gpu-autoscaler.io~1tier-preference"
        );
        for (k, v) in existing.as_object().unwrap() {
            assert_eq!(
                ann(&out, k).as_deref(),
                v.as_str(),
                "existing annotation {k} kept"
            );
        }
    }
}

#[test]
fn existing_tolerations_are_kept_and_not_duplicated() {
    let cfg = Config::default();
    let gpu_tol = json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"});
    // (existing tolerations, expect an op on /spec/tolerations..., expected count after)
    let cases: Vec<(Option<Value>, Option<&str>, usize)> = vec![
        (None, Some("/spec/tolerations"), 1),
        (Some(json!([])), Some("/spec/tolerations/-"), 1),
        (
            Some(json!([gpu_tol.clone()])),
            Some("/spec/tolerations/-"),
            2,
        ),
        // Already tolerated in each of the ways Kubernetes matches.
        (
            Some(
                json!([{"key": "gpu-autoscaler.io/capacity-type", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}]),
            ),
            None,
            1,
        ),
        (
            Some(json!([{"key": "gpu-autoscaler.io/capacity-type", "value": "spot"}])),
            None,
            1,
        ),
        (
            Some(json!([{"key": "gpu-autoscaler.io/capacity-type", "operator": "Exists"}])),
            None,
            1,
        ),
        (
            Some(json!([gpu_tol.clone(), {"operator": "Exists"}])),
            None,
            2,
        ),
        // Not tolerated: wrong effect or value.
        (
            Some(
                json!([{"key": "gpu-autoscaler.io/capacity-type", "operator": "Exists", "effect": "NoExecute"}]),
            ),
            Some("/spec/tolerations/-"),
            2,
        ),
        (
            Some(
                json!([{"key": "gpu-autoscaler.io/capacity-type", "value": "on-demand", "effect": "NoSchedule"}]),
            ),
            Some("/spec/tolerations/-"),
            2,
        ),
    ];
    for (existing, want_path, want_count) in cases {
        let spec = match &existing {
            Some(t) => json!({"tolerations": t}),
            None => json!({}),
        };
        let p = pod(
            json!({"labels": {"gpu-autoscaler.io/workload-type": "batch"}}),
            spec,
        );
        let (out, patch, _) = admit(&p, &cfg);
        let ops = serde_json::to_value(&patch).unwrap();
        let tol_ops: Vec<&str> = ops
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["path"].as_str())
            .filter(|p| p.starts_with("/spec/tolerations"))
            .collect();
        assert_eq!(
            tol_ops,
            want_path.into_iter().collect::<Vec<_>>(),
            "{existing:?}"
        );
        let tols = out
            .spec
            .as_ref()
            .unwrap()
            .tolerations
            .clone()
            .unwrap_or_default();
        assert_eq!(tols.len(), want_count, "{existing:?}");
        assert!(has_spot_toleration(&out));
        if existing
            .as_ref()
            .is_some_and(|e| e.to_string().contains("nvidia.com/gpu"))
        {
            assert_eq!(
                tols[0].key.as_deref(),
                Some("nvidia.com/gpu"),
                "existing toleration first and kept"
            );
        }
    }
}

#[test]
fn existing_affinity_terms_are_kept() {
    let cfg = Config::default();
    let zone_term = json!({"weight": 10, "preference": {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}]}});
    let required = json!({"nodeSelectorTerms": [{"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["H100"]}]}]});
    let anti = json!({"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]});
    // (affinity, expected op path)
    let cases = vec![
        (None, "/spec/affinity"),
        (Some(json!({})), "/spec/affinity/nodeAffinity"),
        (
            Some(json!({"podAntiAffinity": anti.clone()})),
            "/spec/affinity/nodeAffinity",
        ),
        (
            Some(json!({"nodeAffinity": {}})),
            "/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution",
        ),
        (
            Some(
                json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required.clone()}}),
            ),
            "/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution",
        ),
        (
            Some(
                json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [zone_term.clone()]}}),
            ),
            "/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution/-",
        ),
    ];
    for (affinity, want_path) in cases {
        let spec = match &affinity {
            Some(a) => json!({"affinity": a}),
            None => json!({}),
        };
        let p = pod(
            json!({"labels": {"gpu-autoscaler.io/workload-type": "training"}}),
            spec,
        );
        let (out, patch, _) = admit(&p, &cfg);
        let ops = serde_json::to_value(&patch).unwrap();
        let paths: Vec<&str> = ops
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o["path"].as_str())
            .collect();
        assert!(
            paths
                .iter()
                .all(|p| !p.starts_with("/spec/affinity") || *p == want_path),
            "{affinity:?}: {paths:?}"
        );
        assert!(paths.contains(&want_path), "{affinity:?}: {paths:?}");
        assert_eq!(capacity_weights(&out).len(), 3, "{affinity:?}");
        let after =
            serde_json::to_value(out.spec.as_ref().unwrap().affinity.as_ref().unwrap()).unwrap();
        let before = affinity.unwrap_or(json!({}));
        if let Some(pa) = before.get("podAntiAffinity") {
            assert_eq!(&after["podAntiAffinity"], pa);
        }
        if let Some(r) =
            before.pointer("/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution")
        {
            assert_eq!(
                after.pointer("/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution"),
                Some(r)
            );
        }
        if before
            .pointer("/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution")
            .is_some()
        {
            assert_eq!(
                after.pointer("/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution/0"),
                Some(&zone_term)
            );
        }
    }
    // A user's own capacity-type preference wins: no affinity op at all.
    let own = json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 5, "preference": {"matchExpressions": [{"key": "gpu-autoscaler.io/capacity-type", "operator": "In", "values": ["spot"]}]}}
    ]}});
    let p = pod(json!({}), json!({"affinity": own}));
    let (out, patch, _) = admit(&p, &cfg);
    assert!(
        !serde_json::to_string(&patch)
            .unwrap()
            .contains("/spec/affinity")
    );
    assert_eq!(capacity_weights(&out), vec![("spot".to_string(), 5)]);
}

#[test]
fn scheduler_name_is_optional_and_respects_explicit_choices() {
    let off = Config::default();
    let on = Config {
        scheduler_name: Some("gpu-scheduler".into()),
        ..Config::default()
    };
    let (out, _, _) = admit(
        &pod(json!({}), json!({"schedulerName": "default-scheduler"})),
        &off,
    );
    assert_eq!(
        out.spec.unwrap().scheduler_name.as_deref(),
        Some("default-scheduler")
    );
    for before in [
        json!({}),
        json!({"schedulerName": "default-scheduler"}),
        json!({"schedulerName": ""}),
    ] {
        let (out, _, _) = admit(&pod(json!({}), before.clone()), &on);
        assert_eq!(
            out.spec.unwrap().scheduler_name.as_deref(),
            Some("gpu-scheduler"),
            "{before}"
        );
    }
    let (out, _, _) = admit(&pod(json!({}), json!({"schedulerName": "volcano"})), &on);
    assert_eq!(out.spec.unwrap().scheduler_name.as_deref(), Some("volcano"));
    // A fully mutated pod with only the scheduler name missing gets just that.
    let done = admit(&pod(json!({}), json!({})), &off).0;
    match mutate_pod(&done, Operation::Create, "ml", &on) {
        Decision::Patch { patch, .. } => {
            assert_eq!(
                serde_json::to_value(&patch).unwrap(),
                json!([{"op": "add", "path": "/spec/schedulerName", "value": "gpu-scheduler"}])
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn weights_follow_preference_order() {
    assert_eq!(preference_weight(0, 1), 100);
    assert_eq!(
        (preference_weight(0, 2), preference_weight(1, 2)),
        (100, 50)
    );
    assert_eq!(
        (
            preference_weight(0, 3),
            preference_weight(1, 3),
            preference_weight(2, 3)
        ),
        (100, 67, 33)
    );
    assert_eq!(preference_weight(5, 3), 33, "out-of-range rank clamps");
    assert_eq!(preference_weight(0, 0), 100);
}

// ---- property tests -------------------------------------------------------------------------

fn arb_annotations() -> impl Strategy<Value = Option<Value>> {
    let key = prop_oneof![
        Just("team".to_string()),
        Just("a/b".to_string()),
        Just("x~y".to_string()),
        Just("~1/~0".to_string()),
        "[a-z]{1,8}(/[a-z]{1,8})?",
    ];
    let user_ep = prop_oneof![
        Just(None),
        Just(Some("low")),
        Just(Some("medium")),
        Just(Some("high"))
    ];
    let user_tp = prop_oneof![
        Just(None),
        Just(Some("spot")),
        Just(Some("on-demand")),
        Just(Some("reserved,on-demand")),
        Just(Some("on-demand,spot,reserved")),
    ];
    prop_oneof![
        Just(None),
        (
            proptest::collection::btree_map(key, "[a-z0-9]{0,6}", 0..4),
            user_ep,
            user_tp
        )
            .prop_map(|(m, ep, tp)| {
                let mut obj: serde_json::Map<String, Value> =
                    m.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
                if let Some(ep) = ep {
                    obj.insert(EP.into(), ep.into());
                }
                if let Some(tp) = tp {
                    obj.insert(TP.into(), tp.into());
                }
                Some(Value::Object(obj))
            }),
    ]
}

fn arb_tolerations() -> impl Strategy<Value = Option<Value>> {
    let tol = prop_oneof![
        Just(json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})),
        Just(
            json!({"key": "gpu-autoscaler.io/capacity-type", "operator": "Equal", "value": "spot", "effect": "NoSchedule"})
        ),
        Just(
            json!({"key": "gpu-autoscaler.io/capacity-type", "operator": "Exists", "effect": "NoExecute"})
        ),
        Just(json!({"operator": "Exists"})),
        Just(
            json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
        ),
    ];
    prop_oneof![
        Just(None),
        proptest::collection::vec(tol, 0..3).prop_map(|v| Some(Value::Array(v)))
    ]
}

fn arb_affinity() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        Just(Some(json!({}))),
        Just(Some(
            json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}]}})
        )),
        Just(Some(json!({"nodeAffinity": {}}))),
        Just(Some(
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]}}})
        )),
        Just(Some(
            json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 7, "preference": {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["b"]}]}}]}})
        )),
        Just(Some(
            json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}})
        )),
    ]
}

fn arb_pod() -> impl Strategy<Value = Value> {
    let workload = prop_oneof![
        Just(None),
        Just(Some("training")),
        Just(Some("inference")),
        Just(Some("serving")),
        Just(Some("development")),
        Just(Some("batch")),
        Just(Some("research")),
    ];
    let priority = prop_oneof![
        Just((None, None)),
        Just((Some("system-node-critical"), Some(2_000_001_000))),
        Just((Some("preemptible"), Some(-5))),
        Just((None, Some(0))),
        (any::<i32>()).prop_map(|p| (Some("custom"), Some(p))),
    ];
    let scheduler = prop_oneof![
        Just(None),
        Just(Some("default-scheduler")),
        Just(Some("volcano"))
    ];
    (
        arb_annotations(),
        workload,
        priority,
        arb_tolerations(),
        arb_affinity(),
        0u32..3,
        0u32..2,
        scheduler,
    )
        .prop_map(
            |(
                annotations,
                workload,
                (class, prio),
                tolerations,
                affinity,
                gpus,
                init_gpus,
                scheduler,
            )| {
                let mut meta = json!({"name": "p", "namespace": "ml"});
                if let Some(a) = annotations {
                    meta["annotations"] = a;
                }
                if let Some(w) = workload {
                    meta["labels"] = json!({"gpu-autoscaler.io/workload-type": w});
                }
                let mut spec = json!({"containers": [gpu_container(gpus)]});
                if init_gpus > 0 {
                    spec["initContainers"] = json!([gpu_container(init_gpus)]);
                }
                if let Some(c) = class {
                    spec["priorityClassName"] = c.into();
                }
                if let Some(p) = prio {
                    spec["priority"] = p.into();
                }
                if let Some(t) = tolerations {
                    spec["tolerations"] = t;
                }
                if let Some(a) = affinity {
                    spec["affinity"] = a;
                }
                if let Some(s) = scheduler {
                    spec["schedulerName"] = s.into();
                }
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
            },
        )
}

fn arb_config() -> impl Strategy<Value = Config> {
    (any::<bool>(), any::<bool>()).prop_map(|(sched, low_default)| Config {
        scheduler_name: sched.then(|| "gpu-scheduler".to_string()),
        default_eviction_priority: if low_default {
            EvictionPriority::Low
        } else {
            EvictionPriority::Medium
        },
        ..Config::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every emitted patch applies to the pod's JSON; the result keeps what was there, carries
    /// valid annotations, a spot toleration exactly when needed, capacity-type preferences in
    /// order, and is a fixed point of the mutation.
    #[test]
    fn every_patch_applies_and_is_idempotent(doc in arb_pod(), cfg in arb_config()) {
        let pod: Pod = serde_json::from_value(doc.clone()).unwrap();
        let gpus = doc["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"].as_str().unwrap() != "0"
            || doc["spec"].get("initContainers").is_some();
        match mutate_pod(&pod, Operation::Create, "ml", &cfg) {
            Decision::Deny(m) => prop_assert!(false, "unexpected denial: {m}"),
            Decision::Allow => {
                // Only non-GPU pods, or pods already fully mutated, pass untouched.
                if gpus {
                    let ep = ann(&pod, EP);
                    let tp = ann(&pod, TP);
                    prop_assert!(ep.is_some() && tp.is_some(), "GPU pod without annotations passed untouched");
                }
            }
            Decision::Patch { patch, .. } => {
                prop_assert!(gpus);
                // Apply to the exact JSON the apiserver would hold, not to a re-encoding.
                let mut patched = serde_json::to_value(&pod).unwrap();
                json_patch::patch(&mut patched, &patch).unwrap();
                let out: Pod = serde_json::from_value(patched.clone()).unwrap();
                // Existing annotations survive unchanged.
                if let Some(before) = doc["metadata"]["annotations"].as_object() {
                    for (k, v) in before {
                        prop_assert_eq!(&patched["metadata"]["annotations"][k], v);
                    }
                }
                let ep: EvictionPriority = ann(&out, EP).unwrap().parse().unwrap();
                let tp: TierPreference = ann(&out, TP).unwrap().parse().unwrap();
                let _ = ep;
                // Existing tolerations are a prefix of the new list.
                let before_tols = doc["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
                let after_tols = patched["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
                prop_assert_eq!(&after_tols[..before_tols.len()], &before_tols[..]);
                if tp.allows(gpu_autoscaler_api::CapacityType::Spot) {
                    prop_assert!(has_spot_toleration(&out));
                } else {
                    prop_assert_eq!(after_tols.len(), before_tols.len());
                }
                // Preferences appear in order with strictly decreasing weights.
                let weights = capacity_weights(&out);
                let order: Vec<&str> = weights.iter().map(|(c, _)| c.as_str()).collect();
                let want: Vec<&str> = tp.as_slice().iter().map(|c| c.as_str()).collect();
                prop_assert_eq!(order, want);
                prop_assert!(weights.windows(2).all(|w| w[0].1 > w[1].1));
                prop_assert!(weights.iter().all(|(_, w)| (1..=100).contains(w)));
                // Other affinity survives.
                for ptr in ["/spec/affinity/podAntiAffinity", "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution"] {
                    prop_assert_eq!(doc.pointer(ptr), patched.pointer(ptr));
                }
                prop_assert_eq!(mutate_pod(&out, Operation::Create, "ml", &cfg), Decision::Allow);
            }
        }
    }
}
