//! Rate adaptation driven by a synthetic burst of interruptions, through the same path the
//! controller takes: notices on nodes → the engine handles them (memory) → the next plan's
//! spot share for new capacity is lowered; and the controller's measured rate
//! (`PoolState::interruption_rate_24h`) has the same effect on its own.

use chrono::{DateTime, Duration, TimeZone, Utc};
use gpu_autoscaler_api::{AutoscalingPolicySpec, CapacityType};
use gpu_autoscaler_scaler::engine::testing::{
    VirtualCluster, gpu_pod, node_pool, pool_state, with_tiers,
};
use gpu_autoscaler_scaler::engine::*;

use CapacityType::{OnDemand, Spot};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 3, 9, 0, 0).unwrap()
}

fn pools() -> Vec<PoolState> {
    vec![
        pool_state(node_pool(
            "spot",
            Spot,
            0,
            40,
            &["p3.8xlarge", "g5.12xlarge"],
            &["a", "b"],
        )),
        pool_state(node_pool("od", OnDemand, 0, 40, &["p3.8xlarge"], &["a"])),
    ]
}

fn policy(pools: &[PoolState]) -> AutoscalingPolicySpec {
    AutoscalingPolicySpec {
        node_pools: pools.iter().map(|p| p.spec.clone()).collect(),
        ..AutoscalingPolicySpec::default()
    }
}

/// Ten spot nodes, idle, and forty pending 4-GPU pods that may go to spot or on-demand.
fn cluster() -> (VirtualCluster, Vec<String>) {
    let p = pools();
    let mut vc = VirtualCluster::new(t0(), policy(&p), p);
    let nodes: Vec<String> = (0..10)
        .filter_map(|i| {
            vc.add_ready_node(
                "spot",
                "p3.8xlarge",
                Some(if i % 2 == 0 { "a" } else { "b" }),
            )
        })
        .collect();
    (vc, nodes)
}

fn with_demand(mut s: Snapshot) -> Snapshot {
    s.pods.extend((0..40).map(|i| {
        let mut p = with_tiers(gpu_pod(&format!("new-{i}"), 4), &[Spot, OnDemand]);
        p.unschedulable_since = Some(s.now - Duration::seconds(600));
        p
    }));
    s
}

fn added(plan: &Plan, ct: CapacityType) -> u32 {
    plan.scale_ups
        .iter()
        .filter(|s| s.capacity_type == ct && s.cause != ScaleUpCause::Replacement)
        .map(|s| s.add)
        .sum()
}

#[test]
fn a_burst_of_interruptions_lowers_the_spot_share_of_the_next_plan() {
    let (mut vc, nodes) = cluster();
    let calm = plan(&with_demand(vc.snapshot()));
    let base_share = calm.status.effective_spot_share;
    assert!(base_share > 0.0);
    let calm_spot = added(&calm, Spot);
    assert!(calm_spot > 0, "{:?}", calm.scale_ups);

    // A burst: 4 of the 10 spot nodes get a notice within a minute (at least 0.4 per
    // node-day, four times the default 0.1 threshold). The engine handles each notice once.
    for n in nodes.iter().take(4) {
        vc.interrupt(n, Duration::seconds(120));
        vc.step(Duration::seconds(15));
    }
    let mut s = with_demand(vc.snapshot());
    s.memory = vc.memory.clone();
    let after = plan(&s);
    let share = after.status.effective_spot_share;
    // Interruptions per registered node-day: 4 over the 10 nodes, or over fewer once the
    // drained nodes were terminated.
    let rate = after
        .status
        .pools
        .iter()
        .find(|p| p.name == "spot")
        .and_then(|p| p.interruption_rate24h)
        .unwrap_or_default();
    assert!(rate >= 0.4, "rate {rate}");
    let expected = base_share * spot_rate_factor(rate, 0.1);
    assert!(expected < base_share * 0.25 + 1e-9);
    assert!(
        (share - expected).abs() < 1e-9,
        "share {share}, expected {expected} (base {base_share})"
    );
    assert!(
        added(&after, Spot) < calm_spot,
        "fewer spot nodes for the same demand: {} vs {calm_spot}; {:?}",
        added(&after, Spot),
        after.scale_ups
    );
    assert!(added(&after, OnDemand) > added(&calm, OnDemand));
    assert!(
        after.warnings.iter().any(|w| w.contains("spot share")),
        "{:?}",
        after.warnings
    );

    // A day later the burst has left the 24 h window: the share is back.
    let mut later = with_demand(vc.snapshot());
    later.now = vc.now + Duration::hours(25);
    later.memory = after.memory.clone();
    for n in &mut later.nodes {
        n.interruption = None;
    }
    let restored = plan(&later).status.effective_spot_share;
    assert!(
        (restored - base_share).abs() < 1e-9,
        "{restored} vs {base_share}"
    );
}

#[test]
fn the_controllers_measured_rate_alone_lowers_the_share() {
    let (vc, _) = cluster();
    let mut s = with_demand(vc.snapshot());
    let base = plan(&s).status.effective_spot_share;
    // What the controller passes after reading its persisted history: 5 interruptions in
    // 24 h over 10 nodes.
    for p in &mut s.pools {
        if p.spec.name == "spot" {
            p.interruption_rate_24h = Some(0.5);
        }
    }
    let lowered = plan(&s).status.effective_spot_share;
    assert!((lowered - base * 0.2).abs() < 1e-9, "{lowered} vs {base}");
    // At or under the threshold nothing changes.
    for p in &mut s.pools {
        p.interruption_rate_24h = Some(0.1);
    }
    assert!((plan(&s).status.effective_spot_share - base).abs() < 1e-9);
}
