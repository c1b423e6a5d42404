//! Runs the three policies on the same workload and the same random draws, and computes the
//! figures of the report.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use gpu_autoscaler_api::{CapacityType, EvictionPriority, WorkloadType};
use serde::Serialize;

use crate::SimError;
use crate::baselines::{Autoscaler, ReactiveOnDemand, StaticPeak};
use crate::cluster::{Cluster, Gauges, Pod, PodState};
use crate::config::{PoolDef, SimConfig, build_pools, on_demand_pools};
use crate::engine_driver::EngineAutoscaler;
use crate::trace::{Trace, TracePod, TraceSummary};

/// Virtual time 0. The openb trace has no date (only seconds from its start), so the weekday
/// is unknown; we pin t = 0 to a Monday 00:00 UTC so weekly models see a stable calendar.
pub fn epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2023, 1, 2, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The eviction priority of a trace pod, as the webhook would resolve it from the workload
/// type implied by the QoS class: `LS` (latency-sensitive) = inference, `BE` (best effort)
/// and `Burstable` = batch, `Guaranteed` = training; aggregate-series pods = training.
pub fn workload_type(qos: &str) -> WorkloadType {
    match qos {
        "LS" => WorkloadType::Inference,
        "BE" | "Burstable" => WorkloadType::Batch,
        _ => WorkloadType::Training,
    }
}

/// Turns trace pods into cluster pods, with the webhook's default tier preference.
pub fn make_pods(trace: &Trace) -> Vec<Pod> {
    let tiers = gpu_autoscaler_webhook::config::default_tier_preferences();
    trace
        .pods
        .iter()
        .enumerate()
        .map(|(i, tp)| pod_from(i, tp, &tiers))
        .collect()
}

fn pod_from(
    id: usize,
    tp: &TracePod,
    tiers: &BTreeMap<EvictionPriority, gpu_autoscaler_api::TierPreference>,
) -> Pod {
    let priority = workload_type(&tp.qos).default_priority();
    Pod {
        id,
        name: tp.name.clone(),
        gpus: tp.gpus,
        gpu_milli: tp.gpu_milli,
        cpu_millis: tp.cpu_milli,
        memory_bytes: tp.memory_mib * 1024 * 1024,
        priority,
        tier: tiers
            .get(&priority)
            .map(|t| t.as_slice().to_vec())
            .unwrap_or_default(),
        arrival: tp.arrival_s,
        remaining_s: tp.duration_s,
        state: PodState::NotArrived,
        attempt: 0,
        pending_since: None,
        unschedulable_since: None,
        wait_s: 0,
        first_start: None,
        eviction_requested: false,
        never_scheduled_in_trace: tp.never_scheduled,
        service: tp.qos == "LS",
    }
}

/// One point of the charts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub t: i64,
    #[serde(flatten)]
    pub gauges: Gauges,
}

/// Per-policy figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub total_cost_usd: f64,
    pub cost_by_capacity_usd: BTreeMap<String, f64>,
    /// Reserved capacity is a commitment: billed for the whole window at the peak number of
    /// reserved nodes of each type (included in the total).
    pub reserved_commitment_usd: f64,
    pub paid_gpu_hours: f64,
    pub allocated_gpu_hours: f64,
    /// Allocated GPU-hours minus work lost to interruptions and scale-down restarts.
    pub served_gpu_hours: f64,
    pub cost_per_served_gpu_hour: f64,
    /// Paid minus allocated (boot time, fragmentation, idle nodes).
    pub idle_gpu_hours: f64,
    pub wait_p50_s: f64,
    pub wait_p95_s: f64,
    pub wait_max_s: f64,
    pub pending_gpu_minutes: f64,
    pub pods: usize,
    pub pods_completed: usize,
    pub pods_unfinished: usize,
    pub pods_never_started: usize,
    pub spot_interruptions: u64,
    pub evicted_by_priority: BTreeMap<String, u64>,
    pub killed_at_reclaim: u64,
    pub lost_gpu_hours_interruption: f64,
    /// Interruption losses over allocated GPU-hours.
    pub lost_fraction: f64,
    pub lost_gpu_hours_scale_down: f64,
    pub scale_down_restarts: u64,
    /// Service pods moved or interrupted (no work lost, they waited again).
    pub service_restarts: u64,
    pub peak_nodes: BTreeMap<String, u64>,
    pub peak_nodes_total: u64,
    /// Spot node-hours over all node-hours.
    pub spot_share_node_hours: f64,
    pub node_launches: BTreeMap<String, u64>,
    /// Launches per "capacity type/instance type".
    pub node_launches_by_type: BTreeMap<String, u64>,
    /// Paid node-hours per capacity type.
    pub node_hours_by_capacity: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyResult {
    pub name: String,
    pub metrics: Metrics,
    pub series: Vec<Sample>,
    /// Each pod's total wait in seconds (censored at the end for pods still waiting).
    #[serde(skip)]
    pub waits: Vec<i64>,
    pub wait_histogram: Vec<(String, usize)>,
    pub diagnostics: serde_json::Value,
    /// Node-seconds × price, per node, for conservation checks.
    #[serde(skip)]
    pub node_costs: Vec<NodeCost>,
    /// Every run of every pod (for conservation checks).
    #[serde(skip)]
    pub runs: Vec<crate::cluster::RunRecord>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeCost {
    pub name: String,
    pub capacity: CapacityType,
    pub instance_type: String,
    pub price_per_hour: f64,
    pub requested_at: i64,
    pub ended_at: i64,
    pub gpu_ready_at: i64,
}

/// Where we stand against the goal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Goal {
    pub cost_reduction_vs_reactive: f64,
    pub cost_goal_met: bool,
    pub p95_wait_s: f64,
    pub reactive_p95_wait_s: f64,
    pub wait_goal_met: bool,
    pub lost_fraction: f64,
    pub lost_goal_met: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub trace: TraceSummary,
    pub config: SimConfig,
    pub window_start_s: i64,
    pub window_end_s: i64,
    pub pools: Vec<PoolDef>,
    pub results: Vec<PolicyResult>,
    pub goal: Option<Goal>,
    /// Wall-clock seconds of the run, filled in by the CLI (absent in library runs so that
    /// reports are reproducible).
    pub runtime_seconds: Option<f64>,
}

/// Progress callback: (policy, fraction done of that policy, virtual time).
pub type Progress<'a> = &'a mut dyn FnMut(&str, f64, i64);

/// The simulation window: from the first arrival to the last event plus the settle time.
pub fn window(trace: &Trace, cfg: &SimConfig) -> (i64, i64) {
    let start = trace.pods.first().map_or(0, |p| p.arrival_s);
    (start, trace.end_s + cfg.settle_s)
}

/// Runs one policy over `[start, end]`.
pub fn run_policy(
    trace: &Trace,
    cfg: &SimConfig,
    scaler: &mut dyn Autoscaler,
    start: i64,
    end: i64,
    progress: Progress<'_>,
) -> PolicyResult {
    let pods = make_pods(trace);
    let mut cluster = Cluster::new(cfg.timing(), pods, start);
    scaler.setup(&mut cluster);
    let interval = scaler.interval_s().max(1);
    let sample = cfg.sample_s.max(1);
    // Ticks on a fixed grid (multiples of the interval), like a controller's resync timer.
    let mut next_tick = start.div_euclid(interval) * interval;
    if next_tick < start {
        next_tick += interval;
    }
    let mut next_sample = start;
    let mut series = Vec::new();
    let span = (end - start).max(1) as f64;
    while next_tick <= end || next_sample <= end {
        let t = next_tick.min(next_sample);
        cluster.run_until(t);
        if t == next_sample {
            series.push(Sample {
                t,
                gauges: cluster.gauges(),
            });
            progress(scaler.name(), (t - start) as f64 / span, t);
            next_sample += sample;
        }
        if t == next_tick {
            scaler.tick(&mut cluster);
            next_tick += interval;
        }
    }
    cluster.finish(end);
    summarize(scaler, &cluster, series, start, end)
}

fn quantile(sorted: &[i64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // Nearest rank.
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}

fn summarize(
    scaler: &dyn Autoscaler,
    cluster: &Cluster,
    mut series: Vec<Sample>,
    start: i64,
    end: i64,
) -> PolicyResult {
    let b = &cluster.books;
    let hours = |s: f64| s / 3600.0;

    // Reserved commitment: peak concurrent reserved nodes per type × window × rate.
    let mut reserved_commitment = 0.0;
    let mut reserved_types: BTreeMap<(String, u64), Vec<(i64, i64)>> = BTreeMap::new();
    for n in cluster
        .nodes
        .iter()
        .filter(|n| n.capacity == CapacityType::Reserved)
    {
        let e = reserved_types
            .entry((
                n.shape.instance_type.clone(),
                n.shape.price_per_hour.to_bits(),
            ))
            .or_default();
        e.push((n.requested_at, 1));
        e.push((n.ended_at.unwrap_or(end), -1));
    }
    for ((_, price_bits), mut d) in reserved_types {
        d.sort_unstable();
        let (mut level, mut peak) = (0i64, 0i64);
        for (_, x) in d {
            level += x;
            peak = peak.max(level);
        }
        reserved_commitment +=
            peak as f64 * f64::from_bits(price_bits) * (end - start) as f64 / 3600.0;
    }
    let mut cost_by = b.cost_by_capacity.clone();
    if reserved_commitment > 0.0 || cost_by.contains_key("reserved") {
        cost_by.insert("reserved".into(), reserved_commitment);
    }
    let total_cost: f64 = cost_by.values().sum();
    // The cumulative-cost series spreads the commitment evenly over the window.
    let per_s_reserved = reserved_commitment / (end - start).max(1) as f64;
    for s in &mut series {
        s.gauges.cost += per_s_reserved * (s.t - start) as f64;
    }

    let mut waits: Vec<i64> = Vec::new();
    let (mut completed, mut unfinished, mut never_started) = (0, 0, 0);
    for p in &cluster.pods {
        match p.state {
            PodState::NotArrived => continue,
            PodState::Done { .. } => completed += 1,
            _ => unfinished += 1,
        }
        if p.first_start.is_none() {
            never_started += 1;
        }
        let extra = match (p.state, p.pending_since) {
            (PodState::Pending, Some(since)) => end - since,
            _ => 0,
        };
        waits.push(p.wait_s + extra);
    }
    waits.sort_unstable();
    let lost_int = hours(b.lost_gpu_s_interruption);
    let lost_sd = hours(b.lost_gpu_s_scale_down);
    let allocated = hours(b.allocated_gpu_s);
    let served = allocated - lost_int - lost_sd;
    let node_s_total: f64 = b.node_s_by_capacity.values().sum();
    let metrics = Metrics {
        total_cost_usd: total_cost,
        cost_by_capacity_usd: cost_by,
        reserved_commitment_usd: reserved_commitment,
        paid_gpu_hours: hours(b.paid_gpu_s),
        allocated_gpu_hours: allocated,
        served_gpu_hours: served,
        cost_per_served_gpu_hour: if served > 0.0 {
            total_cost / served
        } else {
            0.0
        },
        idle_gpu_hours: hours(b.paid_gpu_s - b.allocated_gpu_s),
        wait_p50_s: quantile(&waits, 0.50),
        wait_p95_s: quantile(&waits, 0.95),
        wait_max_s: waits.last().copied().unwrap_or(0) as f64,
        pending_gpu_minutes: b.pending_gpu_s / 60.0,
        pods: waits.len(),
        pods_completed: completed,
        pods_unfinished: unfinished,
        pods_never_started: never_started,
        spot_interruptions: b.interruptions,
        evicted_by_priority: EvictionPriority::ALL
            .iter()
            .map(|p| {
                (
                    p.to_string(),
                    b.evicted_by_priority.get(p.as_str()).copied().unwrap_or(0),
                )
            })
            .collect(),
        killed_at_reclaim: b.killed_at_reclaim,
        lost_gpu_hours_interruption: lost_int,
        lost_fraction: if allocated > 0.0 {
            lost_int / allocated
        } else {
            0.0
        },
        lost_gpu_hours_scale_down: lost_sd,
        scale_down_restarts: b.scale_down_restarts,
        service_restarts: b.service_restarts,
        peak_nodes: CapacityType::ALL
            .iter()
            .map(|c| {
                (
                    c.to_string(),
                    b.peak_nodes.get(c.as_str()).copied().unwrap_or(0),
                )
            })
            .collect(),
        peak_nodes_total: b.peak_nodes_total,
        spot_share_node_hours: if node_s_total > 0.0 {
            b.node_s_by_capacity.get("spot").copied().unwrap_or(0.0) / node_s_total
        } else {
            0.0
        },
        node_launches: b.launches.clone(),
        node_launches_by_type: b.launches_by_type.clone(),
        node_hours_by_capacity: b
            .node_s_by_capacity
            .iter()
            .map(|(k, v)| (k.clone(), v / 3600.0))
            .collect(),
    };
    let node_costs = cluster
        .nodes
        .iter()
        .map(|n| NodeCost {
            name: n.name.clone(),
            capacity: n.capacity,
            instance_type: n.shape.instance_type.clone(),
            price_per_hour: n.shape.price_per_hour,
            requested_at: n.requested_at,
            ended_at: n.ended_at.unwrap_or(end).min(end),
            gpu_ready_at: n.gpu_ready_at,
        })
        .collect();
    PolicyResult {
        name: scaler.name().to_string(),
        wait_histogram: wait_histogram(&waits),
        waits,
        metrics,
        series,
        diagnostics: scaler.diagnostics(),
        node_costs,
        runs: cluster.runs.clone(),
    }
}

/// Buckets for the waiting-time chart.
fn wait_histogram(waits: &[i64]) -> Vec<(String, usize)> {
    let edges: [(i64, &str); 8] = [
        (0, "0 s"),
        (60, "≤1 min"),
        (300, "1–5 min"),
        (900, "5–15 min"),
        (3600, "15–60 min"),
        (4 * 3600, "1–4 h"),
        (24 * 3600, "4–24 h"),
        (i64::MAX, ">24 h"),
    ];
    let mut counts = vec![0usize; edges.len()];
    for &w in waits {
        let i = edges
            .iter()
            .position(|(e, _)| w <= *e)
            .unwrap_or(edges.len() - 1);
        counts[i] += 1;
    }
    edges
        .iter()
        .zip(counts)
        .map(|((_, l), c)| (l.to_string(), c))
        .collect()
}

/// Runs gpu-autoscaler, reactive on-demand and static peak on the same trace and draws.
pub fn run_all(trace: &Trace, cfg: &SimConfig, progress: Progress<'_>) -> Result<Report, SimError> {
    let pools = build_pools(cfg)?;
    let od = on_demand_pools(cfg, &pools)?;
    let (start, end) = window(trace, cfg);
    let mut results = Vec::new();

    let mut engine = EngineAutoscaler::new(cfg.policy.clone(), pools.clone(), cfg.tick_s, epoch());
    if cfg.policy.enable_predictive_scaling {
        let feed = crate::forecast::PredictiveFeed::new(
            &cfg.policy.predictive,
            cfg.boot_s + cfg.gpu_ready_s,
        )
        .map_err(SimError::Unsupported)?;
        engine = engine.with_forecaster(feed);
    }
    results.push(run_policy(trace, cfg, &mut engine, start, end, progress));

    let mut reactive = ReactiveOnDemand::new(od.clone());
    results.push(run_policy(trace, cfg, &mut reactive, start, end, progress));

    let pods = make_pods(trace);
    let mut fixed = StaticPeak::size(&od, trace, &pods, start, end);
    results.push(run_policy(trace, cfg, &mut fixed, start, end, progress));

    let goal = goal(&results);
    Ok(Report {
        trace: trace.summary(),
        config: cfg.clone(),
        window_start_s: start,
        window_end_s: end,
        pools,
        results,
        goal,
        runtime_seconds: None,
    })
}

fn goal(results: &[PolicyResult]) -> Option<Goal> {
    let ours = results.iter().find(|r| r.name == "gpu-autoscaler")?;
    let reactive = results.iter().find(|r| r.name == "reactive-on-demand")?;
    let reduction = if reactive.metrics.total_cost_usd > 0.0 {
        1.0 - ours.metrics.total_cost_usd / reactive.metrics.total_cost_usd
    } else {
        0.0
    };
    Some(Goal {
        cost_reduction_vs_reactive: reduction,
        cost_goal_met: reduction >= 0.5,
        p95_wait_s: ours.metrics.wait_p95_s,
        reactive_p95_wait_s: reactive.metrics.wait_p95_s,
        wait_goal_met: ours.metrics.wait_p95_s <= reactive.metrics.wait_p95_s,
        lost_fraction: ours.metrics.lost_fraction,
        lost_goal_met: ours.metrics.lost_fraction < 0.01,
    })
}
