//! Conservation, determinism, the CA-like baseline, and proof that the engine runs.

mod common;

use common::*;
use gpu_autoscaler_api::CapacityType;
use gpu_autoscaler_simulate::baselines::{ReactiveOnDemand, StaticPeak};
use gpu_autoscaler_simulate::config::{build_pools, on_demand_pools};
use gpu_autoscaler_simulate::engine_driver::EngineAutoscaler;
use gpu_autoscaler_simulate::run::{self, PolicyResult, epoch, make_pods, run_policy};
use gpu_autoscaler_simulate::{SimConfig, Trace, run_all};

fn quiet() -> impl FnMut(&str, f64, i64) {
    |_: &str, _: f64, _: i64| {}
}

fn reactive(trace: &Trace, cfg: &SimConfig) -> PolicyResult {
    let pools = build_pools(cfg).unwrap();
    let mut ca = ReactiveOnDemand::new(on_demand_pools(cfg, &pools).unwrap());
    let (s, e) = run::window(trace, cfg);
    run_policy(trace, cfg, &mut ca, s, e, &mut quiet())
}

/// The invariants every policy must keep.
fn check_conservation(r: &PolicyResult, pods: usize) {
    let m = &r.metrics;
    // Cost = Σ node-seconds × price (no reserved pools in these runs).
    let by_nodes: f64 = r
        .node_costs
        .iter()
        .map(|n| (n.ended_at - n.requested_at) as f64 * n.price_per_hour / 3600.0)
        .sum();
    assert!(
        (by_nodes - m.total_cost_usd).abs() < 1e-6 * by_nodes.max(1.0),
        "{}: {by_nodes} vs {}",
        r.name,
        m.total_cost_usd
    );
    // Every pod either completed or is counted unfinished.
    assert_eq!(m.pods_completed + m.pods_unfinished, pods, "{}", r.name);
    assert_eq!(m.pods, pods, "{}", r.name);
    // No pod ran on a node before the node existed (and had GPUs), or after it was gone.
    for run in &r.runs {
        let n = &r.node_costs[run.node];
        assert!(
            n.requested_at <= n.gpu_ready_at && n.gpu_ready_at <= run.started,
            "{}: {run:?} on {n:?}",
            r.name
        );
        assert!(
            run.ended <= n.ended_at && run.started <= run.ended,
            "{}: {run:?} on {n:?}",
            r.name
        );
    }
    // Allocated GPU-hours = Σ runs × GPUs is covered by the paid capacity.
    assert!(
        m.allocated_gpu_hours <= m.paid_gpu_hours + 1e-9,
        "{}",
        r.name
    );
}

#[test]
fn hand_computed_single_pod() {
    // One 1-GPU pod from t=0 for 1 h; 1 h settle: window [0, 7200].
    let trace = tiny(&[("p", 1, "LS", 0, 0, 3600)]);
    let mut cfg = aws_config();
    cfg.settle_s = 3600;
    let price = od_price("g4dn.12xlarge");
    let boot = cfg.boot_s + cfg.gpu_ready_s; // 240 s

    // Static peak: one g4dn.12xlarge for the whole window; the pod never waits.
    let pools = build_pools(&cfg).unwrap();
    let od = on_demand_pools(&cfg, &pools).unwrap();
    let (s, e) = run::window(&trace, &cfg);
    assert_eq!((s, e), (0, 7200));
    let mut fixed = StaticPeak::size(&od, &trace, &make_pods(&trace), s, e);
    let st = run_policy(&trace, &cfg, &mut fixed, s, e, &mut quiet());
    assert!(
        (st.metrics.total_cost_usd - 2.0 * price).abs() < 1e-9,
        "{}",
        st.metrics.total_cost_usd
    );
    assert_eq!(st.metrics.wait_max_s, 0.0);
    assert_eq!(st.metrics.pods_completed, 1);
    check_conservation(&st, 1);

    // Reactive: launched at t=0, GPUs at 240 s, pod runs 240..3840. The node is at 1 of 4
    // GPUs (below 50 %) from 240 s but its pod has nowhere to go; once empty, at 3840, it has
    // been below for over 10 min and is removed at that scan.
    let ca = reactive(&trace, &cfg);
    assert_eq!(ca.metrics.wait_p50_s, boot as f64);
    assert_eq!(ca.node_costs.len(), 1);
    assert_eq!(ca.node_costs[0].ended_at, 3600 + boot);
    let want = (3600 + boot) as f64 * price / 3600.0;
    assert!(
        (ca.metrics.total_cost_usd - want).abs() < 1e-9,
        "{} vs {want}",
        ca.metrics.total_cost_usd
    );
    // Idle = paid − allocated: 3840 s × 4 GPUs − 3600 s × 1 GPU.
    let idle = (3840.0 * 4.0 - 3600.0) / 3600.0;
    assert!((ca.metrics.idle_gpu_hours - idle).abs() < 1e-9);
    check_conservation(&ca, 1);
}

#[test]
fn reactive_baseline_behaves_like_cluster_autoscaler() {
    // Five 1-GPU pods at t=5 for 1 h, then one 8-GPU pod at t=7205 for 10 min.
    let trace = tiny(&[
        ("a1", 1, "BE", 5, 5, 3605),
        ("a2", 1, "BE", 5, 5, 3605),
        ("a3", 1, "BE", 5, 5, 3605),
        ("a4", 1, "BE", 5, 5, 3605),
        ("a5", 1, "BE", 5, 5, 3605),
        ("big", 8, "LS", 7205, 7205, 7805),
    ]);
    let mut cfg = aws_config();
    cfg.settle_s = 3600;
    let r = reactive(&trace, &cfg);
    let boot = cfg.boot_s + cfg.gpu_ready_s;
    let nodes = &r.node_costs;
    // Scale-up at the next 10 s scan (t=10): pending pods bin-packed onto 4-GPU on-demand
    // nodes, first fit: 4 + 1 -> two nodes.
    let first: Vec<_> = nodes.iter().filter(|n| n.requested_at == 10).collect();
    assert_eq!(first.len(), 2, "{nodes:?}");
    assert!(
        first
            .iter()
            .all(|n| n.instance_type == "g4dn.12xlarge" && n.capacity == CapacityType::OnDemand)
    );
    // The 8-GPU pod gets the first shape that can hold it.
    let big: Vec<_> = nodes.iter().filter(|n| n.requested_at > 7000).collect();
    assert_eq!(big.len(), 1);
    assert_eq!(big[0].instance_type, "g6.48xlarge");
    assert_eq!(big[0].requested_at, 7210);
    // Waits: from arrival (5) to GPUs up (10 + 240).
    assert_eq!(r.metrics.wait_max_s, (10 + boot - 5) as f64);
    // Scale-down: the node with one pod (25 % < 50 %) can't move its pod (the other node is
    // full), so it stays while the pod runs; both become empty at 3850 + ... = pods end at
    // 250 + 3600 = 3850. The lightly used node has been below 50 % for > 10 min: removed at
    // the first scan after the pods end (3850). The full one is below from 3850: removed
    // at 4450.
    let mut ends: Vec<i64> = first.iter().map(|n| n.ended_at).collect();
    ends.sort_unstable();
    assert_eq!(ends, vec![3850, 4450]);
    assert_eq!(r.metrics.scale_down_restarts, 0);
    assert_eq!(r.metrics.spot_interruptions, 0);
    assert_eq!(r.metrics.peak_nodes.get("spot"), Some(&0));
    check_conservation(&r, 6);
}

#[test]
fn reactive_baseline_moves_pods_off_an_underused_node() {
    // Two nodes end up at 1 GPU each (the others finished); after 10 min below 50 % one of
    // them is drained: its pod moves (restart: lost work) and the node goes.
    let trace = tiny(&[
        ("a-long1", 1, "BE", 0, 0, 20000),
        ("b-short1", 1, "BE", 0, 0, 100),
        ("c-short2", 1, "BE", 0, 0, 100),
        ("d-short3", 1, "BE", 0, 0, 100),
        ("e-long2", 1, "BE", 0, 0, 20000),
    ]);
    let mut cfg = aws_config();
    cfg.settle_s = 3600;
    let r = reactive(&trace, &cfg);
    assert_eq!(
        r.metrics.scale_down_restarts, 1,
        "{:?} {:?} {:?}",
        r.diagnostics, r.node_costs, r.runs
    );
    assert!(r.metrics.lost_gpu_hours_scale_down > 0.0);
    check_conservation(&r, 5);
}

#[test]
fn engine_runs_on_the_virtual_clock_and_its_plans_are_executed() {
    let trace = bundled_slice(120.0, 120.25);
    let mut cfg = aws_config();
    cfg.settle_s = 1800;
    let pools = build_pools(&cfg).unwrap();
    let (s, e) = run::window(&trace, &cfg);
    let mut engine = EngineAutoscaler::new(cfg.policy.clone(), pools, cfg.tick_s, epoch());
    let r = run_policy(&trace, &cfg, &mut engine, s, e, &mut quiet());
    // One plan per 10 s tick of the window.
    let first_tick = (s + cfg.tick_s - 1).div_euclid(cfg.tick_s) * cfg.tick_s;
    assert_eq!(engine.plans as i64, (e - first_tick) / cfg.tick_s + 1);
    // Capacity came from the engine's scale-ups, with its reasons in the log.
    assert!(engine.scale_up_nodes > 0, "{:?}", r.diagnostics);
    assert!(
        engine.log.iter().any(|l| l.what.starts_with("scale-up")),
        "{:?}",
        engine.log
    );
    assert!(!engine.event_reasons.is_empty(), "{:?}", r.diagnostics);
    assert!(r.metrics.pods_completed > 0);
    check_conservation(&r, trace.pods.len());
}

#[test]
fn same_seed_same_report_and_seed_changes_draws() {
    let trace = bundled_slice(121.0, 121.3);
    let mut cfg = aws_config();
    cfg.settle_s = 1800;
    let a = run_all(&trace, &cfg, &mut quiet()).unwrap();
    let b = run_all(&trace, &cfg, &mut quiet()).unwrap();
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    assert_eq!(a.results.len(), 3);
    for r in &a.results {
        check_conservation(r, trace.pods.len());
    }
    // The draws themselves depend on the seed.
    let d1 = gpu_autoscaler_simulate::cluster::draw(1, "g4dn.12xlarge", 1);
    let d2 = gpu_autoscaler_simulate::cluster::draw(2, "g4dn.12xlarge", 1);
    assert_ne!(d1, d2);
}

#[test]
fn spot_interruptions_follow_the_draws_and_lose_work() {
    // A hazard of ~0.9/h makes reclaims certain within the pods' 10 h.
    let trace = tiny(&[("t1", 1, "BE", 0, 0, 36000), ("t2", 1, "BE", 0, 0, 36000)]);
    let mut cfg = aws_config();
    cfg.settle_s = 36000;
    let mut pools = build_pools(&cfg).unwrap();
    for p in &mut pools {
        for s in &mut p.shapes {
            if p.capacity == CapacityType::Spot {
                s.hourly_interruption = Some(0.9);
            }
        }
    }
    let (s, e) = run::window(&trace, &cfg);
    let mut engine = EngineAutoscaler::new(cfg.policy.clone(), pools, cfg.tick_s, epoch());
    let r = run_policy(&trace, &cfg, &mut engine, s, e, &mut quiet());
    if r.metrics.peak_nodes.get("spot").copied().unwrap_or(0) > 0 {
        assert!(
            r.metrics.spot_interruptions > 0,
            "{:?} {:?}",
            r.metrics,
            r.node_costs
        );
        assert!(r.metrics.lost_gpu_hours_interruption > 0.0);
    }
    check_conservation(&r, 2);
}

#[test]
fn predictor_feeds_the_engine_when_the_policy_enables_it() {
    let trace = bundled_slice(123.0, 123.2);
    let mut cfg = aws_config();
    cfg.settle_s = 1800;
    cfg.policy.enable_predictive_scaling = true;
    let rep = run_all(&trace, &cfg, &mut quiet()).unwrap();
    let d = &rep.results[0].diagnostics;
    assert_eq!(rep.results[0].name, "gpu-autoscaler");
    assert!(d["plans_with_forecast"].as_u64().unwrap_or(0) > 0, "{d}");
    assert_eq!(d["plans_with_forecast"], d["plans"], "{d}");
}
