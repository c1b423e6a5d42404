//! Planner cost at scale: 10,000 pending GPU pods, 50 pools × 8 instance types.
//!
//! `cargo bench -p gpu-autoscaler-scaler --bench planner`. Target: ≤ 200 ms per plan.
//! Instance specs are the real AWS ones bundled in `engine::testing::AWS_SPECS`; no prices.

use std::hint::black_box;

use chrono::{Duration, TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use gpu_autoscaler_api::{AutoscalingPolicySpec, CapacityType, EvictionPriority};
use gpu_autoscaler_scaler::engine::testing::{
    AWS_SPECS, gpu_pod, node_pool, pool_state, with_tiers,
};
use gpu_autoscaler_scaler::engine::{EngineMemory, Snapshot, UtilizationView, plan};

const PODS: usize = 10_000;
const POOLS: usize = 50;
const TYPES_PER_POOL: usize = 8;

fn snapshot() -> Snapshot {
    let now = Utc.with_ymd_and_hms(2024, 3, 4, 9, 0, 0).unwrap();
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let mut pools = Vec::with_capacity(POOLS);
    for i in 0..POOLS {
        let ct = match i % 10 {
            0 => CapacityType::Reserved,
            1..=5 => CapacityType::Spot,
            _ => CapacityType::OnDemand,
        };
        // Eight of the ten bundled types, rotated so pools differ.
        let types: Vec<&str> = (0..TYPES_PER_POOL)
            .map(|k| AWS_SPECS[(i + k) % AWS_SPECS.len()].0)
            .collect();
        let mut spec = node_pool(&format!("pool-{i:02}"), ct, 0, 2_000, &types, &zones);
        spec.priority = (i % 3) as i32;
        spec.labels.insert("team".into(), format!("team-{}", i % 5));
        pools.push(pool_state(spec));
    }
    let mut pods = Vec::with_capacity(PODS);
    for i in 0..PODS {
        let gpus = [1, 1, 2, 4, 1, 8, 2, 1][i % 8];
        let tiers: &[CapacityType] = match i % 4 {
            0 => &[CapacityType::Spot, CapacityType::OnDemand],
            1 => &[CapacityType::OnDemand],
            2 => &[
                CapacityType::Reserved,
                CapacityType::OnDemand,
                CapacityType::Spot,
            ],
            _ => &[],
        };
        let mut p = with_tiers(gpu_pod(&format!("job-{i:05}"), gpus), tiers);
        if i % 7 == 0 {
            p.node_selector
                .insert("team".into(), format!("team-{}", i % 5));
        }
        p.eviction_priority = [
            EvictionPriority::Low,
            EvictionPriority::Medium,
            EvictionPriority::High,
        ][i % 3];
        p.unschedulable_since = Some(now - Duration::minutes(5));
        pods.push(p);
    }
    let policy = AutoscalingPolicySpec {
        max_nodes: 100_000,
        node_pools: pools.iter().map(|p| p.spec.clone()).collect(),
        ..AutoscalingPolicySpec::default()
    };
    Snapshot {
        now,
        policy,
        pools,
        nodes: Vec::new(),
        pods,
        utilization: UtilizationView::default(),
        forecast: None,
        provider_events: Vec::new(),
        memory: EngineMemory::default(),
    }
}

fn bench(c: &mut Criterion) {
    let s = snapshot();
    let p = plan(&s);
    let nodes: u32 = p.scale_ups.iter().map(|s| s.add).sum();
    let placed: usize = p.scale_ups.iter().map(|s| s.pods.len()).sum();
    eprintln!(
        "planner: {} pods, {} pools x {} types -> {} scale-up entries, {} nodes, {} pods placed, {} warnings",
        PODS,
        POOLS,
        TYPES_PER_POOL,
        p.scale_ups.len(),
        nodes,
        placed,
        p.warnings.len()
    );
    c.bench_function("plan_10k_pending_pods_50_pools_x_8_types", |b| {
        b.iter(|| plan(black_box(&s)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
