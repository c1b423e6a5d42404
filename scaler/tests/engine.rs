//! Engine tests on a virtual clock: table-driven, multi-step (VirtualCluster) and
//! property-based. They use only the public API, as the controller and `simulate` do.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use gpu_autoscaler_api::{AutoscalingPolicySpec, CapacityType, EvictionPriority};
use gpu_autoscaler_scaler::engine::testing::{
    self, FailureMode, Happening, VirtualCluster, gpu_pod, node_pool, pool_state, with_tiers,
};
use gpu_autoscaler_scaler::engine::*;
use proptest::prelude::*;

use CapacityType::{OnDemand, Reserved, Spot};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 4, 8, 0, 0).unwrap()
}

fn policy(pools: &[PoolState]) -> AutoscalingPolicySpec {
    AutoscalingPolicySpec {
        node_pools: pools.iter().map(|p| p.spec.clone()).collect(),
        ..AutoscalingPolicySpec::default()
    }
}

fn cluster(pools: Vec<PoolState>) -> VirtualCluster {
    let p = policy(&pools);
    VirtualCluster::new(t0(), p, pools)
}

/// A pod that has been unschedulable long enough to count.
fn pending(name: &str, gpus: u32) -> PodView {
    let mut p = gpu_pod(name, gpus);
    p.unschedulable_since = Some(t0() - Duration::seconds(600));
    p
}

fn empty_snapshot(pools: Vec<PoolState>) -> Snapshot {
    Snapshot {
        now: t0(),
        policy: policy(&pools),
        pools,
        nodes: vec![],
        pods: vec![],
        utilization: UtilizationView::default(),
        forecast: None,
        provider_events: vec![],
        memory: EngineMemory::default(),
    }
}

fn added(plan: &Plan) -> u32 {
    plan.scale_ups.iter().map(|s| s.add).sum()
}

fn added_by_type(plan: &Plan, ct: CapacityType) -> u32 {
    plan.scale_ups
        .iter()
        .filter(|s| s.capacity_type == ct)
        .map(|s| s.add)
        .sum()
}

fn requested(vc: &VirtualCluster, pool: &str) -> u32 {
    vc.log
        .iter()
        .filter_map(|(_, h)| match h {
            Happening::ScaleUpRequested { pool: p, add, .. } if p == pool => Some(*add),
            _ => None,
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// Pending pressure
// ---------------------------------------------------------------------------------------

#[test]
fn pending_pods_are_sized_by_bin_packing() {
    // (instance types, pod GPU sizes, expected nodes per instance type)
    type Case<'a> = (&'a [&'a str], &'a [u32], &'a [(&'a str, u32)]);
    let cases: &[Case] = &[
        (&["p3.8xlarge"], &[2, 2, 2], &[("p3.8xlarge", 2)]),
        (&["p3.8xlarge"], &[1, 1, 1, 1], &[("p3.8xlarge", 1)]),
        (&["p3.8xlarge"], &[4, 3, 1], &[("p3.8xlarge", 2)]),
        // Least waste: eight 1-GPU pods fill one 8-GPU node, a single one takes the 1-GPU type.
        (
            &["p3.2xlarge", "p3.16xlarge"],
            &[1, 1, 1, 1, 1, 1, 1, 1],
            &[("p3.16xlarge", 1)],
        ),
        (&["p3.2xlarge", "p3.16xlarge"], &[1], &[("p3.2xlarge", 1)]),
        // An 8-GPU pod only fits the big type.
        (
            &["p3.2xlarge", "p3.16xlarge"],
            &[8, 1],
            &[("p3.16xlarge", 1), ("p3.2xlarge", 1)],
        ),
        // FFD: 5+3 and 5+3 share two 8-GPU nodes.
        (&["p3.16xlarge"], &[3, 5, 3, 5], &[("p3.16xlarge", 2)]),
    ];
    for (types, sizes, want) in cases {
        let pools = vec![pool_state(node_pool("od", OnDemand, 0, 50, types, &[]))];
        let mut s = empty_snapshot(pools);
        s.pods = sizes
            .iter()
            .enumerate()
            .map(|(i, g)| pending(&format!("p{i}"), *g))
            .collect();
        let plan = plan(&s);
        let mut got: BTreeMap<String, u32> = BTreeMap::new();
        for su in &plan.scale_ups {
            assert_eq!(su.cause, ScaleUpCause::PendingPods);
            *got.entry(su.instance_type.clone().unwrap()).or_default() += su.add;
        }
        let want: BTreeMap<String, u32> = want.iter().map(|(t, n)| (t.to_string(), *n)).collect();
        assert_eq!(got, want, "types {types:?} pods {sizes:?}");
        // Every counted pod is named in exactly one scale-up and gets an event.
        let named: usize = plan.scale_ups.iter().map(|s| s.pods.len()).sum();
        assert_eq!(named, sizes.len());
        assert!(plan.events.iter().any(|e| e.reason == "TriggeredScaleUp"
            && e.message.starts_with("triggered scale-up of pool od by")));
    }
}

#[test]
fn pods_not_yet_past_the_timeout_or_bound_or_cpu_only_do_not_count() {
    let pools = vec![pool_state(node_pool(
        "od",
        OnDemand,
        0,
        10,
        &["p3.8xlarge"],
        &[],
    ))];
    let mut s = empty_snapshot(pools);
    let mut young = gpu_pod("young", 1);
    young.unschedulable_since = Some(t0() - Duration::seconds(30));
    let mut cpu_only = pending("cpu", 1);
    cpu_only.gpus = 0;
    let not_unschedulable = gpu_pod("just-created", 1);
    s.pods = vec![young, cpu_only, not_unschedulable];
    let p = plan(&s);
    assert!(p.scale_ups.is_empty(), "{:?}", p.scale_ups);
    assert_eq!(p.status.pending_gpu_pods, 1);
}

#[test]
fn unsatisfiable_pods_warn_and_do_not_scale() {
    let pools = vec![pool_state(node_pool(
        "od",
        OnDemand,
        0,
        10,
        &["p3.8xlarge"],
        &[],
    ))];
    let mut s = empty_snapshot(pools);
    let mut sel = pending("sel", 1);
    sel.node_selector.insert("team".into(), "nobody".into());
    let huge = pending("huge", 16);
    let spot_only = with_tiers(pending("spot-only", 1), &[Spot]);
    s.pods = vec![sel, huge, spot_only];
    let p = plan(&s);
    assert!(p.scale_ups.is_empty(), "{:?}", p.scale_ups);
    let msgs: Vec<&str> = p
        .events
        .iter()
        .filter(|e| e.reason == "NotTriggerScaleUp")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("nodeSelector")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("large enough")), "{msgs:?}");
    assert!(
        msgs.iter().any(|m| m.contains("tier preference")),
        "{msgs:?}"
    );
}

#[test]
fn scale_from_zero_uses_templates_and_pool_labels() {
    let mut spec = node_pool("a100", OnDemand, 0, 4, &["p4d.24xlarge"], &["us-east-1a"]);
    spec.labels.insert("gpu".into(), "a100".into());
    let mut s = empty_snapshot(vec![
        pool_state(node_pool("t4", OnDemand, 0, 4, &["g4dn.12xlarge"], &[])),
        pool_state(spec),
    ]);
    let mut p = pending("needs-a100", 8);
    p.node_selector.insert("gpu".into(), "a100".into());
    let mut zoned = pending("zoned", 2);
    zoned.affinity = vec![vec![LabelRequirement {
        key: "topology.kubernetes.io/zone".into(),
        op: SelectorOp::In,
        values: vec!["us-east-1a".into()],
    }]];
    s.pods = vec![p, zoned];
    let out = plan(&s);
    assert_eq!(out.scale_ups.len(), 2, "{:?}", out.scale_ups);
    assert!(out.scale_ups.iter().all(|s| s.pool == "a100"));
    let z = out
        .scale_ups
        .iter()
        .find(|s| s.pods.iter().any(|p| p.name == "zoned"))
        .unwrap();
    assert_eq!(z.zone.as_deref(), Some("us-east-1a"));
    assert_eq!(out.scale_ups.last().unwrap().new_target, 2);
}

#[test]
fn capacity_on_its_way_is_counted_in_one_plan() {
    let pools = vec![pool_state(node_pool(
        "od",
        OnDemand,
        0,
        20,
        &["p3.8xlarge"],
        &[],
    ))];
    // (target, in-flight listed, registered-but-no-GPUs nodes, pods of 4 GPUs, expected adds)
    let cases: &[(u32, usize, usize, usize, u32)] = &[
        (0, 0, 0, 4, 4),
        (4, 4, 0, 4, 0), // four requested instances not registered yet
        (4, 0, 0, 4, 0), // same, but the provider only reports the target
        (4, 0, 4, 4, 0), // four registered nodes whose GPUs aren't allocatable yet
        (2, 0, 2, 4, 2),
        (3, 1, 2, 4, 1),
    ];
    for &(target, listed, booting, pods, want) in cases {
        let mut s = empty_snapshot(pools.clone());
        s.pools[0].target_size = target;
        s.pools[0].in_flight = (0..listed)
            .map(|_| InFlightInstance {
                instance_type: Some("p3.8xlarge".into()),
                zone: None,
                requested_at: Some(t0() - Duration::seconds(60)),
            })
            .collect();
        let mut vc = cluster(pools.clone());
        for _ in 0..booting {
            let n = vc.add_ready_node("od", "p3.8xlarge", None).unwrap();
            let node = vc.nodes.iter_mut().find(|x| x.name == n).unwrap();
            node.gpus_allocatable = 0;
            node.created = t0() - Duration::seconds(30);
        }
        s.nodes = vc.nodes.clone();
        s.memory.last_scale_up = Some(t0() - Duration::seconds(60));
        s.pods = (0..pods).map(|i| pending(&format!("p{i}"), 4)).collect();
        let p = plan(&s);
        assert_eq!(
            added(&p),
            want,
            "target {target} listed {listed} booting {booting}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Free room on ready nodes
// ---------------------------------------------------------------------------------------

/// A ready node of `pool` whose GPUs are already allocatable, with a bound, running pod taking
/// `used` GPUs (and `cpu` millicores) when `used > 0`.
fn ready_node_using(vc: &mut VirtualCluster, pool: &str, used: u32, cpu: Option<u64>) -> String {
    let n = vc.add_ready_node(pool, "p3.16xlarge", None).unwrap();
    if used > 0 || cpu.is_some() {
        let mut p = gpu_pod(&format!("on-{n}"), used);
        p.node = Some(n.clone());
        p.phase = PodPhase::Running;
        if let Some(c) = cpu {
            p.cpu_millis = c;
        }
        vc.add_pod(p);
    }
    n
}

/// The plan for `pending` pods on top of `vc` as it stands (no scheduler step in between:
/// the pods were marked unschedulable before the room on the ready nodes existed).
fn plan_with_pending(vc: &VirtualCluster, pending_pods: Vec<PodView>) -> Plan {
    let mut s = vc.snapshot();
    s.pods.extend(pending_pods);
    plan(&s)
}

#[test]
fn free_gpus_on_ready_nodes_are_used_before_scaling_up() {
    // (GPUs used on each ready 8-GPU node, pending pod sizes, expected new nodes)
    let cases: &[(&[u32], &[u32], u32)] = &[
        (&[2], &[4, 2], 0),
        (&[2], &[4, 2, 4], 1),
        (&[0, 0], &[8, 8], 0),
        (&[0, 0], &[8, 8, 1], 1),
        (&[8], &[1], 1),
        (&[7, 7, 7], &[1, 1, 1], 0),
        (&[7, 7, 7], &[2], 1),
        (&[5, 6], &[3, 2], 0),
        (&[], &[8, 8], 2),
        // The scaler e2e's twenty pods, after its ten nodes turned ready: nothing more.
        (
            &[0; 10],
            &[8, 8, 7, 6, 6, 5, 5, 4, 4, 4, 3, 3, 2, 2, 2, 1, 1, 1, 1, 1],
            0,
        ),
    ];
    for &(used, sizes, want) in cases {
        let mut vc = cluster(vec![pool_state(node_pool(
            "od",
            OnDemand,
            0,
            40,
            &["p3.16xlarge"],
            &[],
        ))]);
        vc.policy.max_nodes = 40;
        // Only pending pressure here, not the utilization the bound pods imply.
        vc.utilization_from_allocation = false;
        for u in used {
            ready_node_using(&mut vc, "od", *u, None);
        }
        let pods = sizes
            .iter()
            .enumerate()
            .map(|(i, g)| pending(&format!("p{i:02}"), *g))
            .collect();
        let p = plan_with_pending(&vc, pods);
        assert_eq!(added(&p), want, "used {used:?}, pending {sizes:?}");
        // Pods that found room are not announced as having triggered anything.
        let triggered: usize = p.scale_ups.iter().map(|s| s.pods.len()).sum();
        assert!(triggered <= sizes.len());
        if want == 0 {
            assert!(p.scale_ups.is_empty());
            assert!(
                p.events.iter().all(|e| e.reason != "TriggeredScaleUp"),
                "used {used:?}, pending {sizes:?}"
            );
        }
    }
}

#[test]
fn ready_node_room_respects_scheduling_constraints() {
    type Edit = Box<dyn Fn(&mut VirtualCluster, &str, &mut PodView)>;
    // (case, edit of the cluster (node name) and of the 4-GPU pending pod, expected new nodes)
    let cases: Vec<(&str, Edit, u32)> = vec![
        ("fits", Box::new(|_, _, _| {}), 0),
        (
            "cordoned node",
            Box::new(|vc, n, _| {
                vc.nodes
                    .iter_mut()
                    .find(|x| x.name == n)
                    .unwrap()
                    .unschedulable = true;
            }),
            1,
        ),
        (
            "interruption notice",
            Box::new(|vc, n, _| {
                // Without pods of its own, so no replacement capacity muddies the count.
                vc.pods.retain(|p| p.node.as_deref() != Some(n));
                vc.interrupt(n, Duration::seconds(600));
            }),
            1,
        ),
        (
            "GPUs not yet allocatable (counted as booting, not as free room)",
            Box::new(|vc, n, _| {
                let node = vc.nodes.iter_mut().find(|x| x.name == n).unwrap();
                node.gpus_allocatable = 0;
            }),
            0,
        ),
        (
            "node selector",
            Box::new(|_, _, p| {
                p.node_selector.insert("team".into(), "vision".into());
            }),
            // No pool carries the label either: nothing to add, the pod is reported.
            0,
        ),
        (
            "required affinity on the instance type",
            Box::new(|_, _, p| {
                p.affinity = vec![vec![LabelRequirement {
                    key: gpu_autoscaler_api::keys::LABEL_INSTANCE_TYPE.into(),
                    op: SelectorOp::NotIn,
                    values: vec!["p3.16xlarge".into()],
                }]];
            }),
            0,
        ),
        (
            "untolerated taint",
            Box::new(|vc, n, _| {
                vc.nodes
                    .iter_mut()
                    .find(|x| x.name == n)
                    .unwrap()
                    .taints
                    .push(Taint {
                        key: "dedicated".into(),
                        value: "infra".into(),
                        effect: gpu_autoscaler_api::policy::TaintEffect::NoSchedule,
                    });
            }),
            1,
        ),
        (
            "tier preference excludes the node's capacity type",
            Box::new(|vc, n, p| {
                vc.nodes
                    .iter_mut()
                    .find(|x| x.name == n)
                    .unwrap()
                    .capacity_type = Some(Spot);
                *p = with_tiers(p.clone(), &[OnDemand]);
            }),
            1,
        ),
        (
            "not enough CPU left",
            Box::new(|vc, n, _| {
                let mut hog = gpu_pod("cpu-hog", 0);
                hog.node = Some(n.to_string());
                hog.phase = PodPhase::Running;
                hog.cpu_millis = 62_000;
                vc.add_pod(hog);
            }),
            1,
        ),
        (
            "node being drained for scale-down",
            Box::new(|vc, n, _| {
                vc.memory
                    .nodes
                    .entry(n.to_string())
                    .or_default()
                    .scale_down_started = Some(vc.now);
            }),
            1,
        ),
        (
            "other GPU resource",
            Box::new(|_, _, p| p.gpu_resource = Some("amd.com/gpu".into())),
            0,
        ),
    ];
    for (name, edit, want) in cases {
        let mut vc = cluster(vec![pool_state(node_pool(
            "od",
            OnDemand,
            0,
            10,
            &["p3.16xlarge"],
            &[],
        ))]);
        let n = ready_node_using(&mut vc, "od", 2, None);
        let mut pod = pending("waiting", 4);
        edit(&mut vc, &n, &mut pod);
        let p = plan_with_pending(&vc, vec![pod]);
        assert_eq!(added(&p), want, "{name}");
        if name.contains("selector") || name.contains("affinity") || name.contains("resource") {
            assert!(
                p.events.iter().any(|e| e.reason == "NotTriggerScaleUp"),
                "{name}: {:?}",
                p.events
            );
        }
    }
}

/// A replica of `app` that must not share a node with another replica of `app` (in its
/// namespace), the usual one-per-node spread of an inference Deployment.
fn one_per_node(mut p: PodView, app: &str) -> PodView {
    p.labels.insert("app", app);
    p.anti_affinity.push(PodAffinityTerm {
        selector: Some(vec![LabelRequirement {
            key: "app".into(),
            op: SelectorOp::In,
            values: vec![app.into()],
        }]),
        namespaces: vec![],
        all_namespaces: false,
        topology_key: "kubernetes.io/hostname".into(),
    });
    p
}

#[test]
fn required_pod_anti_affinity_is_respected_when_packing() {
    let od = || {
        vec![pool_state(node_pool(
            "od",
            OnDemand,
            0,
            40,
            &["p3.16xlarge"],
            &[],
        ))]
    };
    // Two pending one-per-node replicas need two new nodes, not one shared 8-GPU node.
    let mut s = empty_snapshot(od());
    s.pods = vec![
        one_per_node(pending("r1", 1), "infer"),
        one_per_node(pending("r2", 1), "infer"),
    ];
    assert_eq!(added(&plan(&s)), 2);
    // Without the term they share one node.
    s.pods = vec![pending("r1", 1), pending("r2", 1)];
    assert_eq!(added(&plan(&s)), 1);

    // (case, edit of the replica already running on the ready node, of the pending one,
    //  expected new nodes). The ready node has 7 free GPUs in every case.
    type Edit = fn(PodView) -> PodView;
    let cases: [(&str, Edit, Edit, u32); 5] = [
        (
            "both carry the term",
            |p| one_per_node(p, "infer"),
            |p| one_per_node(p, "infer"),
            1,
        ),
        (
            "only the pending pod",
            |p| {
                let mut p = p;
                p.labels.insert("app", "infer");
                p
            },
            |p| one_per_node(p, "infer"),
            1,
        ),
        (
            "only the running pod",
            |p| one_per_node(p, "infer"),
            |p| {
                let mut p = p;
                p.labels.insert("app", "infer");
                p
            },
            1,
        ),
        (
            "other app",
            |p| one_per_node(p, "train"),
            |p| one_per_node(p, "infer"),
            0,
        ),
        (
            "other namespace",
            |p| {
                let mut p = one_per_node(p, "infer");
                p.namespace = "team-b".into();
                p
            },
            |p| one_per_node(p, "infer"),
            0,
        ),
    ];
    for (case, running, pending_edit, want) in cases {
        let mut vc = cluster(od());
        vc.utilization_from_allocation = false;
        let n = vc.add_ready_node("od", "p3.16xlarge", None).unwrap();
        let mut r = running(gpu_pod("r0", 1));
        r.node = Some(n);
        r.phase = PodPhase::Running;
        vc.add_pod(r);
        let p = plan_with_pending(&vc, vec![pending_edit(pending("r1", 1))]);
        assert_eq!(added(&p), want, "{case}");
    }
}

/// `one_per_node`, but one per zone.
fn one_per_zone(mut p: PodView, app: &str) -> PodView {
    p = one_per_node(p, app);
    p.anti_affinity[0].topology_key = "topology.kubernetes.io/zone".into();
    p
}

#[test]
fn zone_anti_affinity_steers_new_nodes_to_a_free_zone() {
    let zonal = || {
        vec![pool_state(node_pool(
            "od",
            OnDemand,
            0,
            40,
            &["p3.16xlarge"],
            &["z-a", "z-b"],
        ))]
    };
    let zones = |p: &Plan| -> Vec<Option<String>> {
        let mut z: Vec<_> = p.scale_ups.iter().map(|s| s.zone.clone()).collect();
        z.sort();
        z
    };
    // A replica runs in z-a on a node with 7 free GPUs. Another replica may not join it in
    // z-a, so the new node must be in z-b; a pod of another app just uses the room.
    let mut vc = cluster(zonal());
    vc.utilization_from_allocation = false;
    let n = vc.add_ready_node("od", "p3.16xlarge", Some("z-a")).unwrap();
    let mut r0 = one_per_zone(gpu_pod("r0", 1), "infer");
    r0.node = Some(n);
    r0.phase = PodPhase::Running;
    vc.add_pod(r0);
    let p = plan_with_pending(&vc, vec![one_per_zone(pending("r1", 1), "infer")]);
    assert_eq!(zones(&p), [Some("z-b".to_string())]);
    let p = plan_with_pending(&vc, vec![one_per_zone(pending("o1", 1), "train")]);
    assert_eq!(added(&p), 0);
    // Only the running pod carries the term: the pending one is still kept out of z-a.
    let mut plain = pending("r2", 1);
    plain.labels.insert("app", "infer");
    let p = plan_with_pending(&vc, vec![plain]);
    assert_eq!(zones(&p), [Some("z-b".to_string())]);

    // From nothing: two replicas, two zones; a third has nowhere to go and says why.
    let mut s = empty_snapshot(zonal());
    s.pods = (1..=3)
        .map(|i| one_per_zone(pending(&format!("r{i}"), 1), "infer"))
        .collect();
    let p = plan(&s);
    assert_eq!(
        zones(&p),
        [Some("z-a".to_string()), Some("z-b".to_string())]
    );
    let why: Vec<&str> = p
        .events
        .iter()
        .filter(|e| e.reason == "NotTriggerScaleUp")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(why[0].contains("anti-affinity"), "{why:?}");
}

/// A replica of `app` with a hard spread constraint (max skew 1) on `key`.
fn spread_over(mut p: PodView, app: &str, key: &str) -> PodView {
    p.labels.insert("app", app);
    p.spread.push(SpreadConstraint {
        topology_key: key.into(),
        max_skew: 1,
        selector: Some(vec![LabelRequirement {
            key: "app".into(),
            op: SelectorOp::In,
            values: vec![app.into()],
        }]),
    });
    p
}

#[test]
fn hard_topology_spread_is_respected_when_packing() {
    const ZONE: &str = "topology.kubernetes.io/zone";
    const HOST: &str = "kubernetes.io/hostname";
    let zonal = || {
        vec![pool_state(node_pool(
            "od",
            OnDemand,
            0,
            40,
            &["p3.16xlarge"],
            &["z-a", "z-b"],
        ))]
    };
    // Node A (z-a) runs one replica and has 7 free GPUs; node B (z-b) runs none and is full.
    // Skew 1 forbids a second replica in z-a while z-b has none: a node in z-b is needed.
    // Without the constraint the pod just takes the room on A.
    for (key, constrained, want_zone) in [
        (ZONE, true, Some(Some("z-b".to_string()))),
        (HOST, true, Some(None)),
        (ZONE, false, None),
    ] {
        let mut vc = cluster(zonal());
        vc.utilization_from_allocation = false;
        let a = vc.add_ready_node("od", "p3.16xlarge", Some("z-a")).unwrap();
        let b = vc.add_ready_node("od", "p3.16xlarge", Some("z-b")).unwrap();
        let mut r0 = spread_over(gpu_pod("r0", 1), "infer", key);
        r0.node = Some(a);
        r0.phase = PodPhase::Running;
        vc.add_pod(r0);
        let mut filler = gpu_pod("filler", 8);
        filler.node = Some(b);
        filler.phase = PodPhase::Running;
        vc.add_pod(filler);
        let pod = if constrained {
            spread_over(pending("r1", 1), "infer", key)
        } else {
            let mut p = pending("r1", 1);
            p.labels.insert("app", "infer");
            p
        };
        let p = plan_with_pending(&vc, vec![pod]);
        match &want_zone {
            None => assert_eq!(added(&p), 0, "{key} constrained={constrained}"),
            Some(zone) => {
                assert_eq!(added(&p), 1, "{key}");
                if key == ZONE {
                    assert_eq!(&p.scale_ups[0].zone, zone, "{key}");
                }
            }
        }
    }

    // Both zones have a (full) node: four replicas need new room, two per zone, so one new
    // 8-GPU node in each zone.
    let mut vc = cluster(zonal());
    vc.utilization_from_allocation = false;
    for (i, zone) in ["z-a", "z-b"].iter().enumerate() {
        let n = vc.add_ready_node("od", "p3.16xlarge", Some(zone)).unwrap();
        let mut filler = gpu_pod(&format!("filler-{i}"), 8);
        filler.node = Some(n);
        filler.phase = PodPhase::Running;
        vc.add_pod(filler);
    }
    let pods = (1..=4)
        .map(|i| spread_over(pending(&format!("r{i}"), 1), "infer", ZONE))
        .collect();
    let p = plan_with_pending(&vc, pods);
    let mut zones: Vec<Option<String>> = p.scale_ups.iter().map(|s| s.zone.clone()).collect();
    zones.sort();
    assert_eq!(zones, [Some("z-a".to_string()), Some("z-b".to_string())]);
    assert!(p.events.iter().all(|e| e.reason != "NotTriggerScaleUp"));

    // With no node at all, kube-scheduler weighs only the zones that have nodes: replicas may
    // all land in the first zone, so one node is enough, and that is what is asked for.
    let mut s = empty_snapshot(zonal());
    s.pods = (1..=4)
        .map(|i| spread_over(pending(&format!("r{i}"), 1), "infer", ZONE))
        .collect();
    assert_eq!(added(&plan(&s)), 1);
}

#[test]
fn scale_down_does_not_move_a_replica_next_to_its_sibling() {
    // Two under-used nodes, one replica each; each could hold the other's pod, but the
    // replicas exclude each other, so neither node may go.
    for (spread, want_drains) in [(true, 0), (false, 1)] {
        let (mut vc, a, b) = scale_down_cluster();
        vc.utilization_overrides.insert(b.clone(), Some(0.05));
        if spread {
            for p in vc.pods.iter_mut() {
                *p = one_per_node(p.clone(), "infer");
            }
        }
        let mut drained = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let p = vc.step(Duration::seconds(30));
            drained.extend(p.drains.iter().map(|d| d.node.clone()));
        }
        assert_eq!(drained.len(), want_drains, "spread {spread}: {drained:?}");
        if spread {
            assert!(vc.nodes.iter().any(|n| n.name == a) && vc.nodes.iter().any(|n| n.name == b));
        }
    }
}

#[test]
fn ready_nodes_of_the_preferred_tier_are_used_first() {
    let mut vc = cluster(tiered_pools());
    vc.policy.enable_spot_instances = true;
    // On-demand node first in the node list: plain first-fit would hand it to the pod that
    // prefers spot and leave the on-demand-only pod without room.
    ready_node_using(&mut vc, "od", 0, None);
    ready_node_using(&mut vc, "spot", 0, None);
    let pods = vec![
        with_tiers(pending("a-spot-first", 4), &[Spot, OnDemand]),
        with_tiers(pending("b-od-only", 4), &[OnDemand]),
    ];
    let p = plan_with_pending(&vc, pods);
    assert_eq!(added(&p), 0, "{:?}", p.scale_ups);
}

#[test]
fn unmanaged_ready_nodes_count_as_room() {
    let mut vc = cluster(vec![pool_state(node_pool(
        "od",
        OnDemand,
        0,
        10,
        &["p3.16xlarge"],
        &[],
    ))]);
    let n = ready_node_using(&mut vc, "od", 0, None);
    // A node someone else provisioned: no pool label, no capacity type.
    {
        let node = vc.nodes.iter_mut().find(|x| x.name == n).unwrap();
        node.pool = None;
        node.capacity_type = None;
        node.labels
            .remove(gpu_autoscaler_api::keys::LABEL_NODE_POOL);
        node.labels
            .remove(gpu_autoscaler_api::keys::LABEL_CAPACITY_TYPE);
    }
    // The pool never asked for it.
    vc.pool_mut("od").unwrap().state.target_size = 0;
    let p = plan_with_pending(&vc, vec![pending("a", 4), pending("b", 4)]);
    assert_eq!(added(&p), 0);
    // A pod with an explicit tier can't be sure of a node of unknown capacity type.
    let p = plan_with_pending(&vc, vec![with_tiers(pending("c", 4), &[OnDemand])]);
    assert_eq!(added(&p), 1);
}

#[test]
fn scale_down_keeps_room_promised_to_pending_pods() {
    // Node a is idle and underutilized; its pod could move to b only if b's room were not
    // already promised to a pending pod.
    let (mut vc, a, b) = scale_down_cluster();
    vc.policy.pending_pod_timeout_seconds = 0;
    vc.policy.scale_down_cooldown_seconds = 0;
    vc.policy.scale_up_cooldown_seconds = 0;
    vc.memory
        .nodes
        .entry(a.clone())
        .or_default()
        .underutilized_since = Some(vc.now - Duration::seconds(3600));
    // b (4 GPUs, 2 used) gets a 2-GPU pending pod that only fits there (selector on b).
    let mut waiting = gpu_pod("waiting", 2);
    waiting.unschedulable_since = Some(vc.now - Duration::seconds(60));
    waiting
        .node_selector
        .insert("kubernetes.io/hostname".into(), b.clone());
    vc.nodes
        .iter_mut()
        .find(|x| x.name == b)
        .unwrap()
        .labels
        .insert("kubernetes.io/hostname".into(), b.clone());
    let p = plan_with_pending(&vc, vec![waiting]);
    assert_eq!(added(&p), 0);
    assert!(
        p.drains.iter().all(|d| d.node != a) && p.terminations.iter().all(|t| t.node != a),
        "a's pod would need the room promised to the pending pod: {:?}",
        p.drains
    );
}

#[test]
fn booting_capacity_prevents_duplicate_scale_ups_over_many_plans() {
    let mut vc = cluster(vec![pool_state(node_pool(
        "od",
        OnDemand,
        0,
        50,
        &["p3.8xlarge"],
        &[],
    ))]);
    vc.boot_delay = Duration::seconds(120);
    vc.gpu_ready_delay = Duration::seconds(60);
    vc.policy.pending_pod_timeout_seconds = 0;
    vc.utilization_from_allocation = false; // busy GPUs would add utilization pressure
    for i in 0..4 {
        vc.add_pod(gpu_pod(&format!("job-{i}"), 4));
    }
    vc.advance(Duration::seconds(1)); // scheduler marks them unschedulable
    for _ in 0..60 {
        vc.step(Duration::seconds(5));
    }
    assert_eq!(
        requested(&vc, "od"),
        4,
        "exactly one node per 4-GPU job: {:?}",
        vc.log
    );
    assert_eq!(vc.pending_gpu_pods(), 0);
}

// ---------------------------------------------------------------------------------------
// Tiers, shares, fallback
// ---------------------------------------------------------------------------------------

fn tiered_pools() -> Vec<PoolState> {
    vec![
        pool_state(node_pool(
            "spot",
            Spot,
            0,
            100,
            &["p3.8xlarge", "g5.12xlarge"],
            &["a", "b", "c"],
        )),
        pool_state(node_pool("od", OnDemand, 0, 100, &["p3.8xlarge"], &[])),
    ]
}

#[test]
fn tier_preferences_are_honoured() {
    let mut s = empty_snapshot(tiered_pools());
    let mut pods = vec![];
    for i in 0..6 {
        pods.push(with_tiers(pending(&format!("od-only-{i}"), 4), &[OnDemand]));
        pods.push(with_tiers(pending(&format!("spot-only-{i}"), 4), &[Spot]));
        pods.push(with_tiers(
            pending(&format!("either-{i}"), 4),
            &[Spot, OnDemand],
        ));
    }
    s.pods = pods;
    let p = plan(&s);
    for su in &p.scale_ups {
        for pod in &su.pods {
            if pod.name.starts_with("od-only") {
                assert_eq!(su.capacity_type, OnDemand, "{pod}");
            }
            if pod.name.starts_with("spot-only") {
                assert_eq!(su.capacity_type, Spot, "{pod}");
            }
        }
    }
    assert_eq!(added(&p), 18);
    // Spot additions are spread over instance types and zones.
    let mut spread: BTreeMap<(Option<String>, Option<String>), u32> = BTreeMap::new();
    for su in p.scale_ups.iter().filter(|s| s.capacity_type == Spot) {
        *spread
            .entry((su.instance_type.clone(), su.zone.clone()))
            .or_default() += su.add;
    }
    assert!(spread.len() >= 4, "spot spread {spread:?}");
    assert!(
        spread.values().max().unwrap() - spread.values().min().unwrap() <= 1,
        "{spread:?}"
    );
}

#[test]
fn on_demand_only_pods_never_wait_for_failed_spot() {
    let mut vc = cluster(tiered_pools());
    vc.pool_mut("spot").unwrap().failure = Some(FailureMode::InsufficientCapacity);
    vc.policy.pending_pod_timeout_seconds = 0;
    for i in 0..3 {
        vc.add_pod(with_tiers(gpu_pod(&format!("od-{i}"), 4), &[OnDemand]));
        vc.add_pod(with_tiers(gpu_pod(&format!("sp-{i}"), 4), &[Spot]));
    }
    vc.advance(Duration::seconds(1));
    for _ in 0..40 {
        vc.step(Duration::seconds(10));
    }
    let bound_od = vc
        .pods
        .iter()
        .filter(|p| p.name.starts_with("od-") && p.node.is_some())
        .count();
    assert_eq!(bound_od, 3);
    // Spot-only pods are never placed on on-demand.
    assert!(
        vc.pods
            .iter()
            .filter(|p| p.name.starts_with("sp-"))
            .all(|p| p.node.is_none())
    );
}

#[test]
fn spot_share_converges_to_target() {
    for (multi_tier, spot_pct, want) in [
        (true, 0.6, 0.6 / 0.95),
        (false, 0.7, 0.7),
        (false, 0.3, 0.3),
    ] {
        let mut vc = cluster(tiered_pools());
        vc.policy.enable_multi_tier_scaling = multi_tier;
        vc.policy.spot_instance_percentage = spot_pct;
        vc.policy.pending_pod_timeout_seconds = 0;
        vc.boot_delay = Duration::seconds(20);
        vc.gpu_ready_delay = Duration::seconds(10);
        for round in 0..10 {
            for i in 0..4 {
                vc.add_pod(with_tiers(
                    gpu_pod(&format!("r{round}-{i}"), 4),
                    &[Spot, OnDemand],
                ));
            }
            vc.advance(Duration::seconds(1));
            for _ in 0..8 {
                vc.step(Duration::seconds(10));
            }
        }
        let spot = vc.nodes_of("spot") as f64;
        let od = vc.nodes_of("od") as f64;
        assert_eq!(spot + od, 40.0);
        let share = spot / (spot + od);
        assert!(
            (share - want).abs() <= 1.0 / 40.0 + 1e-9,
            "multi {multi_tier} pct {spot_pct}: share {share} want {want}"
        );
    }
}

#[test]
fn reserved_pools_fill_first() {
    let mut pools = tiered_pools();
    pools.insert(
        0,
        pool_state(node_pool("ri", Reserved, 0, 2, &["p3.8xlarge"], &[])),
    );
    let mut s = empty_snapshot(pools);
    s.pods = (0..5)
        .map(|i| with_tiers(pending(&format!("p{i}"), 4), &[Reserved, Spot, OnDemand]))
        .collect();
    let p = plan(&s);
    assert_eq!(added_by_type(&p, Reserved), 2);
    assert_eq!(added(&p), 5);
}

#[test]
fn failed_spot_pool_falls_back_within_60s() {
    for mode in [
        FailureMode::InsufficientCapacity,
        FailureMode::Error,
        FailureMode::Silent,
    ] {
        let mut vc = cluster(tiered_pools());
        vc.pool_mut("spot").unwrap().failure = Some(mode);
        vc.policy.pending_pod_timeout_seconds = 0;
        vc.policy.max_node_provision_time_seconds = 300;
        vc.policy.enable_multi_tier_scaling = false;
        vc.policy.spot_instance_percentage = 1.0;
        for i in 0..3 {
            vc.add_pod(with_tiers(gpu_pod(&format!("p{i}"), 4), &[Spot, OnDemand]));
        }
        vc.advance(Duration::seconds(1));
        let mut failed_at = None;
        let mut fallback_at = None;
        for _ in 0..80 {
            let plan = vc.step(Duration::seconds(10));
            let now = vc.now - Duration::seconds(10);
            if failed_at.is_none() {
                let refused = vc
                    .log
                    .iter()
                    .any(|(_, h)| matches!(h, Happening::ScaleUpRefused { .. }));
                let timed_out = plan.target_reductions.iter().any(|r| r.pool == "spot");
                if refused {
                    failed_at = vc.log.iter().find_map(|(t, h)| {
                        matches!(h, Happening::ScaleUpRefused { .. }).then_some(*t)
                    });
                } else if timed_out {
                    failed_at = Some(now);
                }
            }
            if fallback_at.is_none() && plan.scale_ups.iter().any(|s| s.pool == "od") {
                fallback_at = Some(now);
            }
        }
        let (f, b) = (
            failed_at.expect("spot failed"),
            fallback_at.expect("fell back"),
        );
        assert!(
            b >= f && b - f <= Duration::seconds(60),
            "{mode:?}: failed {f} fallback {b}"
        );
        assert_eq!(vc.pending_gpu_pods(), 0, "{mode:?}");
        let mem = &vc.memory.pools["spot"];
        assert!(
            mem.consecutive_failures >= 1 && mem.last_error.is_some(),
            "{mode:?}: {mem:?}"
        );
    }
}

#[test]
fn backoff_doubles_and_caps() {
    let got: Vec<i64> = (1..=8).map(backoff_seconds).collect();
    assert_eq!(got, vec![30, 60, 120, 240, 480, 600, 600, 600]);
}

#[test]
fn repeated_provider_events_do_not_double_the_backoff() {
    let mut s = empty_snapshot(tiered_pools());
    let ev = ProviderEvent {
        pool: "spot".into(),
        at: t0(),
        kind: ProviderEventKind::InsufficientCapacity {
            instance_type: None,
            zone: None,
            message: "no capacity".into(),
        },
    };
    s.provider_events = vec![ev.clone()];
    let p1 = plan(&s);
    s.memory = p1.memory.clone();
    s.now = t0() + Duration::seconds(5);
    let p2 = plan(&s);
    assert_eq!(p2.memory.pools["spot"].consecutive_failures, 1);
    assert_eq!(
        p2.memory.pools["spot"].backoff_until,
        Some(t0() + Duration::seconds(30))
    );
}

// ---------------------------------------------------------------------------------------
// Interruptions
// ---------------------------------------------------------------------------------------

fn interrupted_cluster(notice_secs: i64) -> (VirtualCluster, String) {
    let mut vc = cluster(tiered_pools());
    let node = vc.add_ready_node("spot", "p3.8xlarge", Some("a")).unwrap();
    let mk = |name: &str, prio: EvictionPriority, grace: Option<u32>| {
        let mut p = with_tiers(gpu_pod(name, 1), &[Spot, OnDemand]);
        p.eviction_priority = prio;
        p.termination_grace_seconds = grace;
        p
    };
    vc.add_pod(mk("train", EvictionPriority::High, Some(30)));
    vc.add_pod(mk("infer", EvictionPriority::Medium, Some(60)));
    vc.add_pod(mk("dev", EvictionPriority::Low, None));
    vc.add_pod(mk("batch", EvictionPriority::Low, Some(5)));
    vc.advance(Duration::seconds(1));
    assert!(
        vc.pods
            .iter()
            .all(|p| p.node.as_deref() == Some(node.as_str()))
    );
    vc.interrupt(&node, Duration::seconds(notice_secs));
    (vc, node)
}

#[test]
fn interruption_drain_orders_by_priority_and_fits_the_notice() {
    for notice in [120, 30] {
        let (vc, node) = interrupted_cluster(notice);
        let p = plan(&vc.snapshot());
        let termination = vc.now + Duration::seconds(notice);
        let deadline = termination - Duration::seconds(10);
        assert!(p.cordons.iter().any(|c| c.node == node));
        let d = p.drains.iter().find(|d| d.node == node).expect("drain");
        assert_eq!(d.cause, DrainCause::Interruption);
        assert_eq!(d.deadline, Some(deadline));
        let prios: Vec<EvictionPriority> = d.evictions.iter().map(|e| e.priority).collect();
        let mut sorted = prios.clone();
        sorted.sort();
        assert_eq!(prios, sorted, "low → medium → high");
        for w in d.evictions.windows(2) {
            assert!(w[0].not_before <= w[1].not_before);
        }
        let high = d
            .evictions
            .iter()
            .find(|e| e.priority == EvictionPriority::High)
            .unwrap();
        for e in &d.evictions {
            let g = Duration::seconds(i64::from(e.grace_seconds.unwrap()));
            assert!(e.not_before < deadline, "asked before the deadline");
            assert!(
                e.not_before + g <= deadline,
                "{notice}s: {e:?} ends after {deadline}"
            );
            assert!(
                e.grace_seconds <= high.grace_seconds,
                "high has the longest window"
            );
            if e.priority != EvictionPriority::High {
                assert!(
                    e.not_before < high.not_before,
                    "high is never evicted first"
                );
            }
        }
        // Grace fitted: high gets all the time left; the rest keep theirs, capped.
        let want_high = if notice == 120 { 100 } else { 18 };
        assert_eq!(high.grace_seconds, Some(want_high), "{notice}");
        let batch = d.evictions.iter().find(|e| e.pod.name == "batch").unwrap();
        assert_eq!(batch.grace_seconds, Some(5));
        let infer = d.evictions.iter().find(|e| e.pod.name == "infer").unwrap();
        assert!(infer.grace_seconds.unwrap() <= want_high);
    }
}

#[test]
fn replacement_is_requested_in_the_same_plan_on_another_type_or_zone() {
    let (mut vc, node) = interrupted_cluster(120);
    let p = vc.step(Duration::seconds(1));
    assert!(p.drains.iter().any(|d| d.node == node));
    let rep: Vec<&ScaleUp> = p
        .scale_ups
        .iter()
        .filter(|s| s.cause == ScaleUpCause::Replacement)
        .collect();
    assert!(
        !rep.is_empty(),
        "replacement in the same plan: {:?}",
        p.scale_ups
    );
    assert_eq!(rep.iter().map(|s| s.pods.len()).sum::<usize>(), 4);
    for s in &rep {
        assert!(
            s.pool != "spot"
                || s.instance_type.as_deref() != Some("p3.8xlarge")
                || s.zone.as_deref().is_some_and(|z| z != "a"),
            "replacement must avoid the reclaimed type+zone: {s:?}"
        );
    }
    // Asked once: the next plans don't request again.
    for _ in 0..5 {
        let p = vc.step(Duration::seconds(5));
        assert!(
            p.scale_ups
                .iter()
                .all(|s| s.cause != ScaleUpCause::Replacement)
        );
    }
    // Everything was evicted before the node went away, in priority order.
    for _ in 0..30 {
        vc.step(Duration::seconds(5));
    }
    let evictions: Vec<(DateTime<Utc>, EvictionPriority)> = vc
        .log
        .iter()
        .filter_map(|(t, h)| match h {
            Happening::Evicted { priority, .. } => Some((*t, *priority)),
            _ => None,
        })
        .collect();
    assert_eq!(evictions.len(), 4);
    let reclaimed = vc
        .log
        .iter()
        .find_map(|(t, h)| {
            matches!(
                h,
                Happening::Reclaimed { .. } | Happening::Terminated { .. }
            )
            .then_some(*t)
        })
        .unwrap();
    assert!(evictions.iter().all(|(t, _)| *t <= reclaimed));
    assert!(evictions.windows(2).all(|w| w[0].1 <= w[1].1));
    assert_eq!(
        vc.pending_gpu_pods(),
        0,
        "replacement capacity took the pods"
    );
}

#[test]
fn interruption_rate_lowers_spot_share_and_recovers() {
    let mut s = empty_snapshot(tiered_pools());
    let base = plan(&s).status.effective_spot_share;
    assert!((base - 0.6).abs() < 1e-9);
    // 10 nodes, 5 interruptions in the last day: rate 0.5, five times the 0.1 threshold.
    let mut vc = cluster(tiered_pools());
    for _ in 0..10 {
        vc.add_ready_node("spot", "p3.8xlarge", Some("a"));
    }
    s.nodes = vc.nodes.clone();
    s.pools[0].target_size = 10;
    s.memory.pools.insert(
        "spot".into(),
        PoolMemory {
            interruptions: (0..5).map(|i| t0() - Duration::hours(i + 1)).collect(),
            ..PoolMemory::default()
        },
    );
    s.pods = (0..20)
        .map(|i| with_tiers(pending(&format!("p{i}"), 4), &[Spot, OnDemand]))
        .collect();
    let p = plan(&s);
    assert!(
        (p.status.effective_spot_share - 0.6 * 0.2).abs() < 1e-9,
        "{}",
        p.status.effective_spot_share
    );
    assert!(
        added_by_type(&p, OnDemand) > added_by_type(&p, Spot),
        "{:?}",
        p.scale_ups
    );
    // A day later the burst has left the 24 h window: the share is restored.
    s.now = t0() + Duration::hours(25);
    s.memory = p.memory.clone();
    let later = plan(&s);
    assert!((later.status.effective_spot_share - 0.6).abs() < 1e-9);
    // The controller may also pass a measured rate.
    assert!((spot_rate_factor(0.2, 0.1) - 0.5).abs() < 1e-12);
    assert_eq!(spot_rate_factor(0.05, 0.1), 1.0);
}

// ---------------------------------------------------------------------------------------
// Scale-down
// ---------------------------------------------------------------------------------------

/// Two on-demand nodes; `a` is idle-ish, `b` has room.
fn scale_down_cluster() -> (VirtualCluster, String, String) {
    let mut vc = cluster(vec![pool_state(node_pool(
        "od",
        OnDemand,
        0,
        10,
        &["p3.8xlarge"],
        &[],
    ))]);
    vc.utilization_from_allocation = false;
    let a = vc.add_ready_node("od", "p3.8xlarge", None).unwrap();
    let b = vc.add_ready_node("od", "p3.8xlarge", None).unwrap();
    let mut pa = gpu_pod("on-a", 1);
    pa.node = Some(a.clone());
    pa.phase = PodPhase::Running;
    let mut pb = gpu_pod("on-b", 2);
    pb.node = Some(b.clone());
    pb.phase = PodPhase::Running;
    vc.add_pod(pa);
    vc.add_pod(pb);
    vc.utilization_overrides.insert(a.clone(), Some(0.05));
    vc.utilization_overrides.insert(b.clone(), Some(0.5));
    (vc, a, b)
}

#[test]
fn underutilized_node_is_cordoned_drained_and_terminated() {
    let (mut vc, a, b) = scale_down_cluster();
    let mut first_drain = None;
    for i in 0..40 {
        let p = vc.step(Duration::seconds(30));
        if first_drain.is_none() && p.drains.iter().any(|d| d.node == a) {
            first_drain = Some(i);
            assert!(p.cordons.iter().any(|c| c.node == a));
        }
        assert!(p.drains.iter().all(|d| d.node != b));
    }
    // 600 s underutilized at a 30 s step: not before step 20.
    assert!(first_drain.is_some_and(|i| i >= 20), "{first_drain:?}");
    assert!(vc.nodes.iter().all(|n| n.name != a), "terminated");
    assert!(
        vc.pods
            .iter()
            .find(|p| p.name == "on-a")
            .unwrap()
            .node
            .as_deref()
            == Some(b.as_str())
    );
    assert_eq!(vc.pool("od").unwrap().state.target_size, 1);
}

#[test]
fn scale_down_blockers() {
    type Edit = Box<dyn Fn(&mut VirtualCluster, &str)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "unknown utilization",
            Box::new(|vc, a| {
                vc.utilization_overrides.insert(a.to_string(), None);
            }),
        ),
        (
            "safe-to-evict false",
            Box::new(|vc, _| {
                vc.pods
                    .iter_mut()
                    .find(|p| p.name == "on-a")
                    .unwrap()
                    .safe_to_evict = false;
            }),
        ),
        (
            "bare pod",
            Box::new(|vc, _| {
                vc.pods.iter_mut().find(|p| p.name == "on-a").unwrap().owner = None;
            }),
        ),
        (
            "pod does not fit elsewhere",
            Box::new(|vc, _| {
                vc.pods.iter_mut().find(|p| p.name == "on-a").unwrap().gpus = 3;
            }),
        ),
        (
            "pool minimum",
            Box::new(|vc, _| {
                vc.pool_mut("od").unwrap().state.spec.min_size = 2;
                vc.policy.node_pools[0].min_size = 2;
            }),
        ),
        ("global minimum", Box::new(|vc, _| vc.policy.min_nodes = 2)),
        (
            "pending pod could use it",
            Box::new(|vc, _| {
                // No room to add a node for it, so it stays pending.
                vc.pool_mut("od").unwrap().state.spec.max_size = 2;
                vc.policy.node_pools[0].max_size = 2;
                let mut p = gpu_pod("waiting", 4);
                p.unschedulable_since = Some(vc.now);
                vc.add_pod(p);
            }),
        ),
        (
            "recent scale-up (cooldown)",
            Box::new(|vc, _| vc.memory.last_scale_up = Some(vc.now + Duration::seconds(500))),
        ),
    ];
    for (name, edit) in cases {
        let (mut vc, a, _) = scale_down_cluster();
        edit(&mut vc, &a);
        for _ in 0..30 {
            let p = vc.step(Duration::seconds(30));
            assert!(p.drains.iter().all(|d| d.node != a), "{name}: drained");
            assert!(
                p.terminations.iter().all(|t| t.node != a),
                "{name}: terminated"
            );
        }
    }
}

#[test]
fn daemonset_and_mirror_pods_are_ignored_and_never_evicted() {
    let (mut vc, a, _) = scale_down_cluster();
    for (i, (ds, mirror)) in [(true, false), (false, true)].into_iter().enumerate() {
        let mut p = gpu_pod(&format!("infra-{i}"), 0);
        p.node = Some(a.clone());
        p.owner = None;
        p.safe_to_evict = false;
        p.is_daemonset = ds;
        p.is_mirror = mirror;
        vc.add_pod(p);
    }
    let mut terminated = false;
    for _ in 0..40 {
        let p = vc.step(Duration::seconds(30));
        for d in &p.drains {
            assert!(d.evictions.iter().all(|e| !e.pod.name.starts_with("infra")));
        }
        terminated |= p.terminations.iter().any(|t| t.node == a);
    }
    assert!(terminated);
}

#[test]
fn minimums_are_reached_despite_cooldowns() {
    let mut s = empty_snapshot(vec![
        pool_state(node_pool("ri", Reserved, 2, 4, &["p3.8xlarge"], &[])),
        pool_state(node_pool("od", OnDemand, 0, 10, &["p3.8xlarge"], &[])),
    ]);
    s.policy.min_nodes = 3;
    s.memory.last_scale_up = Some(t0());
    s.memory.pools.insert(
        "ri".into(),
        PoolMemory {
            last_scale_up: Some(t0()),
            ..Default::default()
        },
    );
    let p = plan(&s);
    assert_eq!(added(&p), 3);
    assert!(p.scale_ups.iter().all(|s| s.cause == ScaleUpCause::Minimum));
    assert_eq!(p.status.desired_nodes.total, 3);
}

// ---------------------------------------------------------------------------------------
// Utilization and predictive pressure
// ---------------------------------------------------------------------------------------

#[test]
fn utilization_pressure_adds_enough_gpus_and_respects_cooldown() {
    let mut vc = cluster(vec![pool_state(node_pool(
        "od",
        OnDemand,
        0,
        10,
        &["p3.8xlarge"],
        &[],
    ))]);
    vc.utilization_from_allocation = false;
    for _ in 0..4 {
        let n = vc.add_ready_node("od", "p3.8xlarge", None).unwrap();
        vc.utilization_overrides.insert(n, Some(0.95));
    }
    let s = vc.snapshot();
    let p = plan(&s);
    // 16 GPUs at 0.95 = 15.2 busy; under 0.8 needs 19 GPUs: one more 4-GPU node.
    assert_eq!(added(&p), 1);
    assert_eq!(p.scale_ups[0].cause, ScaleUpCause::Utilization);
    let mut s2 = s.clone();
    s2.memory = p.memory.clone();
    s2.now += Duration::seconds(10);
    s2.pools[0].target_size += 1;
    assert_eq!(added(&plan(&s2)), 0, "cooldown and in-flight capacity");
    // Unknown utilization is never 0 and never pressure.
    let mut s3 = s.clone();
    s3.utilization.nodes.clear();
    let p3 = plan(&s3);
    assert!(p3.scale_ups.is_empty() && p3.status.average_gpu_utilization.is_none());
}

fn forecast(confidence: f64) -> ForecastView {
    ForecastView {
        predicted_gpus_upper: 20.0,
        predicted_utilization: 0.9,
        confidence,
        target_time: t0() + Duration::minutes(35),
        hold_until: t0() + Duration::hours(2),
        lead_time_seconds: 300,
    }
}

#[test]
fn predictive_pre_warm_only_when_confident_and_holds_capacity() {
    let mut s = empty_snapshot(vec![pool_state(node_pool(
        "od",
        OnDemand,
        0,
        10,
        &["p3.8xlarge"],
        &[],
    ))]);
    s.policy.enable_predictive_scaling = true;
    s.forecast = Some(forecast(0.5));
    assert!(plan(&s).scale_ups.is_empty(), "low confidence: no pre-warm");
    s.forecast = Some(forecast(0.9));
    let p = plan(&s);
    assert_eq!(added(&p), 5, "20 GPUs / 4 per node");
    assert!(
        p.scale_ups
            .iter()
            .all(|s| s.cause == ScaleUpCause::Predictive)
    );
    assert_eq!(p.memory.pre_warm.as_ref().map(|h| h.gpus), Some(20));
    s.policy.enable_predictive_scaling = false;
    assert!(plan(&s).scale_ups.is_empty(), "disabled in the policy");

    // The pre-warmed (idle) nodes stay until hold_until.
    let mut vc = cluster(vec![pool_state(node_pool(
        "od",
        OnDemand,
        0,
        10,
        &["p3.8xlarge"],
        &[],
    ))]);
    vc.policy.enable_predictive_scaling = true;
    vc.forecast = Some(forecast(0.9));
    for _ in 0..5 {
        vc.step(Duration::seconds(60));
    }
    vc.forecast = None;
    for _ in 0..60 {
        vc.step(Duration::seconds(60));
        if vc.now < t0() + Duration::hours(2) {
            assert_eq!(vc.nodes_of("od"), 5, "at {}", vc.now);
        }
    }
    for _ in 0..80 {
        vc.step(Duration::seconds(60));
    }
    assert!(vc.nodes_of("od") < 5, "released after the peak");
}

#[test]
fn memory_survives_a_restart() {
    let (mut vc, a, _) = scale_down_cluster();
    for _ in 0..15 {
        vc.step(Duration::seconds(30));
    }
    // Persist and reload through JSON, as the controller does.
    let json = serde_json::to_string(&vc.memory).unwrap();
    vc.memory = serde_json::from_str(&json).unwrap();
    let since = vc.memory.nodes[&a].underutilized_since.unwrap();
    let mut drained_at = None;
    for _ in 0..10 {
        let p = vc.step(Duration::seconds(30));
        if drained_at.is_none()
            && (p.drains.iter().any(|d| d.node == a) || p.terminations.iter().any(|t| t.node == a))
        {
            drained_at = Some(vc.now);
        }
    }
    assert!(
        drained_at.is_some_and(|t| t - since <= Duration::seconds(700)),
        "{since} {drained_at:?}"
    );
}

#[test]
fn disabled_or_invalid_policy_takes_no_action() {
    let mut s = empty_snapshot(vec![pool_state(node_pool(
        "od",
        OnDemand,
        1,
        10,
        &["p3.8xlarge"],
        &[],
    ))]);
    s.pods = vec![pending("p", 1)];
    s.policy.enabled = false;
    let p = plan(&s);
    assert!(p.scale_ups.is_empty() && !p.warnings.is_empty());
    s.policy.enabled = true;
    s.policy.scale_down_threshold = 0.9; // above scaleUpThreshold: invalid
    let p = plan(&s);
    assert!(p.scale_ups.is_empty());
    assert!(
        p.warnings.iter().any(|w| w.contains("invalid")),
        "{:?}",
        p.warnings
    );
}

// ---------------------------------------------------------------------------------------
// Template choice by price
// ---------------------------------------------------------------------------------------

/// us-east-1 prices from `shared/data/pricing`: on-demand from
/// `aws_ondemand_gpu_us-east-1_history.csv`, spot as on-demand × (1 − savings) with the
/// 2025-06-28 Linux savings of `aws_spot_advisor_gpu.csv` (as `simulate` prices spot).
fn real_price(instance_type: &str, ct: CapacityType) -> f64 {
    let (on_demand, spot_savings_pct) = match instance_type {
        "g4dn.12xlarge" => (3.912, 64.0),
        "g5.12xlarge" => (5.672, 58.0),
        "g5.48xlarge" => (16.288, 71.0),
        "g6.48xlarge" => (13.3504, 69.0),
        other => panic!("no price in the test table for {other}"),
    };
    match ct {
        Spot => on_demand * (1.0 - spot_savings_pct / 100.0),
        _ => on_demand,
    }
}

/// A pool whose templates carry the real price for its capacity type (or none).
fn priced_pool(name: &str, ct: CapacityType, types: &[&str], priced: bool) -> PoolState {
    let mut ps = pool_state(node_pool(name, ct, 0, 100, types, &[]));
    // g6.48xlarge isn't in `AWS_SPECS`; its specs from `aws_gpu_instance_specs.csv`.
    ps.templates = types
        .iter()
        .map(|t| {
            let mut tpl = testing::aws_template(t).unwrap_or(InstanceTemplate {
                instance_type: (*t).to_string(),
                gpus: 8,
                gpu_resource: "nvidia.com/gpu".into(),
                cpu_millis: 192_000,
                memory_bytes: 786_432 * 1024 * 1024,
                price_per_hour: None,
                zones: Vec::new(),
            });
            tpl.price_per_hour = priced.then(|| real_price(t, ct));
            tpl
        })
        .collect();
    ps
}

fn nodes_by_type(p: &Plan) -> BTreeMap<String, u32> {
    let mut m = BTreeMap::new();
    for su in &p.scale_ups {
        *m.entry(su.instance_type.clone().unwrap_or_default())
            .or_default() += su.add;
    }
    m
}

#[test]
fn template_choice_prefers_the_lowest_price_per_useful_gpu() {
    // Listed dearest first: with prices, order no longer decides.
    let types = ["g5.48xlarge", "g5.12xlarge", "g4dn.12xlarge"];
    let pending_gpus = |n: u32, gpus: u32| -> Vec<PodView> {
        (0..n).map(|i| pending(&format!("p{i}"), gpus)).collect()
    };

    // 8 one-GPU pods: two g4dn.12xlarge ($0.98/GPU) beat one g5.48xlarge ($2.04/GPU) and
    // g5.12xlarge ($1.42/GPU).
    let mut s = empty_snapshot(vec![priced_pool("od", OnDemand, &types, true)]);
    s.pods = pending_gpus(8, 1);
    let p = plan(&s);
    assert_eq!(
        nodes_by_type(&p),
        BTreeMap::from([("g4dn.12xlarge".to_string(), 2)]),
        "{:?}",
        p.scale_ups
    );

    // One 2-GPU pod: no 8-GPU node for it (its price per useful GPU is 4× the 4-GPU one's).
    s.pods = pending_gpus(1, 2);
    let p = plan(&s);
    assert_eq!(
        nodes_by_type(&p),
        BTreeMap::from([("g4dn.12xlarge".to_string(), 1)])
    );

    // Without prices the unpriced rule stands: least waste, then the bigger node, then order.
    let mut s = empty_snapshot(vec![priced_pool("od", OnDemand, &types, false)]);
    s.pods = pending_gpus(8, 1);
    let p = plan(&s);
    assert_eq!(
        nodes_by_type(&p),
        BTreeMap::from([("g5.48xlarge".to_string(), 1)])
    );
}

#[test]
fn diversified_spot_spreads_only_within_the_price_tolerance() {
    // Spot $/GPU/h: g4dn.12xlarge 0.35, g6.48xlarge 0.52, g5.48xlarge 0.59 (+14 % on
    // g6.48xlarge), g5.12xlarge 0.60.
    let types = ["g5.12xlarge", "g4dn.12xlarge", "g6.48xlarge", "g5.48xlarge"];
    let spot_pods = |n: u32, gpus: u32| -> Vec<PodView> {
        (0..n)
            .map(|i| with_tiers(pending(&format!("p{i}"), gpus), &[Spot]))
            .collect()
    };
    let snapshot = |priced: bool| {
        let mut s = empty_snapshot(vec![priced_pool("spot", Spot, &types, priced)]);
        s.policy.enable_spot_instances = true;
        s.policy.spot.diversify = true;
        s
    };
    assert!(
        real_price("g5.48xlarge", Spot) / 8.0
            <= real_price("g6.48xlarge", Spot) / 8.0 * (1.0 + DIVERSIFY_PRICE_TOLERANCE)
    );
    assert!(
        real_price("g5.12xlarge", Spot) / 4.0
            > real_price("g4dn.12xlarge", Spot) / 4.0 * (1.0 + DIVERSIFY_PRICE_TOLERANCE)
    );

    // 4-GPU pods: all on g4dn.12xlarge; the other types are more than 15 % dearer per GPU.
    let mut s = snapshot(true);
    s.pods = spot_pods(8, 4);
    let p = plan(&s);
    assert_eq!(
        nodes_by_type(&p),
        BTreeMap::from([("g4dn.12xlarge".to_string(), 8)]),
        "{:?}",
        p.scale_ups
    );

    // 8-GPU pods fit only the 48xlarge types, which are within the tolerance: spread evenly.
    s.pods = spot_pods(4, 8);
    let p = plan(&s);
    assert_eq!(
        nodes_by_type(&p),
        BTreeMap::from([
            ("g5.48xlarge".to_string(), 2),
            ("g6.48xlarge".to_string(), 2)
        ]),
        "{:?}",
        p.scale_ups
    );

    // Unpriced: the old spreading over every type that ties on waste and size.
    let mut s = snapshot(false);
    s.pods = spot_pods(8, 4);
    let p = plan(&s);
    let spread = nodes_by_type(&p);
    assert_eq!(spread.len(), 2, "{spread:?}");
    assert_eq!(
        spread.values().sum::<u32>(),
        4,
        "bigger nodes when unpriced: {spread:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct World {
    pools: Vec<(CapacityType, u32, u32)>,
    max_nodes: u32,
    min_nodes: u32,
    pods: Vec<(u32, u8)>,
    utils: Vec<Option<f64>>,
}

fn world() -> impl Strategy<Value = World> {
    (
        prop::collection::vec(
            (
                prop::sample::select(vec![Spot, OnDemand, Reserved]),
                0u32..3,
                0u32..8,
            ),
            1..4,
        ),
        0u32..20,
        0u32..4,
        prop::collection::vec((1u32..9, 0u8..3), 0..30),
        prop::collection::vec(prop::option::of(0.0f64..1.0), 0..8),
    )
        .prop_map(|(pools, max_nodes, min_nodes, pods, utils)| {
            // A valid policy: room for every pool's minimum and the global minimum.
            let min_sum: u32 = pools.iter().map(|(_, min, _)| *min).sum();
            World {
                pools: pools
                    .into_iter()
                    .map(|(ct, min, extra)| (ct, min, min + extra))
                    .collect(),
                max_nodes: max_nodes.max(min_nodes).max(min_sum),
                min_nodes,
                pods,
                utils,
            }
        })
}

fn build(w: &World) -> VirtualCluster {
    let pools: Vec<PoolState> = w
        .pools
        .iter()
        .enumerate()
        .map(|(i, (ct, min, max))| {
            pool_state(node_pool(
                &format!("pool{i}"),
                *ct,
                *min,
                *max,
                &["p3.8xlarge", "p3.16xlarge"],
                &["a", "b"],
            ))
        })
        .collect();
    let mut vc = cluster(pools);
    vc.policy.max_nodes = w.max_nodes;
    vc.policy.min_nodes = w.min_nodes;
    vc.policy.pending_pod_timeout_seconds = 0;
    vc.policy.underutilized_duration_seconds = 60;
    vc.policy.scale_down_cooldown_seconds = 60;
    vc.boot_delay = Duration::seconds(30);
    vc.gpu_ready_delay = Duration::seconds(10);
    vc.utilization_from_allocation = false;
    for (i, (gpus, tiers)) in w.pods.iter().enumerate() {
        let tiers: &[CapacityType] = match tiers {
            0 => &[Spot, OnDemand],
            1 => &[OnDemand],
            _ => &[],
        };
        vc.add_pod(with_tiers(gpu_pod(&format!("p{i}"), *gpus), tiers));
    }
    vc
}

fn check_limits(
    vc: &VirtualCluster,
    plan: &Plan,
    initial: &BTreeMap<String, u32>,
) -> Result<(), TestCaseError> {
    let mut total = 0;
    for p in &vc.pools {
        let t = p.state.target_size;
        total += t;
        let start = initial[&p.state.spec.name];
        prop_assert!(
            t <= p.state.spec.max_size.max(start),
            "{} above max: {t}",
            p.state.spec.name
        );
        prop_assert!(
            t >= p.state.spec.min_size.min(start.max(t))
                || plan.scale_ups.iter().any(|s| s.pool == p.state.spec.name),
            "{} below min",
            p.state.spec.name
        );
    }
    prop_assert!(
        total <= vc.policy.max_nodes.max(initial.values().sum()),
        "total {total} above maxNodes"
    );
    for su in &plan.scale_ups {
        let spec = &vc.pool(&su.pool).unwrap().state.spec;
        prop_assert!(su.new_target <= spec.max_size, "{su:?}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn never_above_max_or_below_min(w in world()) {
        let mut vc = build(&w);
        vc.advance(Duration::seconds(1));
        let initial: BTreeMap<String, u32> = vc.pools.iter().map(|p| (p.state.spec.name.clone(), 0)).collect();
        for step in 0..30 {
            let plan = vc.step(Duration::seconds(15));
            check_limits(&vc, &plan, &initial)?;
            // Scale-down never takes a pool below its minimum.
            for p in &vc.pools {
                let draining = plan.drains.iter().filter(|d| d.cause == DrainCause::ScaleDown
                    && vc.nodes.iter().any(|n| n.name == d.node && n.pool.as_deref() == Some(p.state.spec.name.as_str()))).count() as u32;
                if step > 10 {
                    prop_assert!(p.state.target_size.saturating_sub(draining) >= p.state.spec.min_size.min(vc.policy.max_nodes),
                        "{} draining below min", p.state.spec.name);
                }
            }
            if step == 15 {
                // Everything idle from now on: scale-down is allowed to act.
                for p in &mut vc.pods { p.phase = PodPhase::Succeeded; }
                for n in vc.nodes.clone() { vc.utilization_overrides.insert(n.name, Some(0.0)); }
            }
        }
        let live: u32 = vc.pools.iter().map(|p| p.state.target_size).sum();
        prop_assert!(live >= w.min_nodes.min(vc.pools.iter().map(|p| p.state.spec.max_size).sum()) || live >= w.max_nodes);
    }

    #[test]
    fn unknown_utilization_never_causes_scale_down(w in world()) {
        let mut vc = build(&w);
        vc.advance(Duration::seconds(1));
        for _ in 0..10 { vc.step(Duration::seconds(15)); }
        // Now some nodes report nothing at all.
        let names: Vec<String> = vc.nodes.iter().map(|n| n.name.clone()).collect();
        let mut unknown = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let u = w.utils.get(i).copied().flatten();
            vc.utilization_overrides.insert(n.clone(), u.map(|u| u * 0.1));
            if u.is_none() { unknown.push(n.clone()); }
        }
        for _ in 0..20 {
            let plan = vc.step(Duration::seconds(30));
            for n in &unknown {
                prop_assert!(plan.drains.iter().all(|d| d.cause != DrainCause::ScaleDown || &d.node != n), "drained {n}");
                prop_assert!(plan.terminations.iter().all(|t| &t.node != n), "terminated {n}");
            }
        }
    }

    #[test]
    fn never_scale_down_a_node_whose_pods_do_not_fit_elsewhere(
        loads in prop::collection::vec(prop::collection::vec(1u32..5, 0..3), 2..6),
    ) {
        // Nodes of 4 GPUs with random loads; all idle-looking and long underutilized.
        let mut vc = cluster(vec![pool_state(node_pool("od", OnDemand, 0, 10, &["p3.8xlarge"], &[]))]);
        vc.utilization_from_allocation = false;
        let mut node_pods: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (i, load) in loads.iter().enumerate() {
            let n = vc.add_ready_node("od", "p3.8xlarge", None).unwrap();
            vc.utilization_overrides.insert(n.clone(), Some(0.01));
            let mut used = 0;
            for (j, g) in load.iter().enumerate() {
                if used + g > 4 { continue; }
                used += g;
                let mut p = gpu_pod(&format!("n{i}-p{j}"), *g);
                p.node = Some(n.clone());
                p.phase = PodPhase::Running;
                vc.add_pod(p);
                node_pods.entry(n.clone()).or_default().push(*g);
            }
        }
        let mut s = vc.snapshot();
        for n in &s.nodes {
            s.memory.nodes.insert(n.name.clone(), NodeMemory {
                underutilized_since: Some(t0() - Duration::hours(1)), ..Default::default()
            });
        }
        let plan = plan(&s);
        let removed: Vec<&String> = plan.drains.iter().map(|d| &d.node)
            .chain(plan.terminations.iter().map(|t| &t.node)).collect();
        // Independent check: the GPUs of removed nodes fit in the free GPUs of the rest,
        // pod by pod, largest first onto the node with the most room.
        let mut free: Vec<u32> = node_pods.keys().chain(vc.nodes.iter().map(|n| &n.name))
            .filter(|n| !removed.contains(n))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|n| 4 - node_pods.get(n).map(|v| v.iter().sum()).unwrap_or(0))
            .collect();
        let mut moving: Vec<u32> = removed.iter().flat_map(|n| node_pods.get(*n).cloned().unwrap_or_default()).collect();
        moving.sort_unstable_by(|a, b| b.cmp(a));
        let total_free: u32 = free.iter().sum();
        prop_assert!(moving.iter().sum::<u32>() <= total_free, "removed {:?} pods {:?} plan {:?}", removed, node_pods, plan.drains);
        for g in moving {
            free.sort_unstable_by(|a, b| b.cmp(a));
            prop_assert!(free[0] >= g, "pod of {g} GPUs has nowhere to go");
            free[0] -= g;
        }
    }
}
