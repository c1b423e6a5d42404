//! The two comparison policies and the trait every simulated autoscaler implements.

use std::collections::BTreeMap;

use gpu_autoscaler_api::CapacityType;
use serde_json::json;

use crate::cluster::{Cluster, Node, NodeShape, Pod};
use crate::config::PoolDef;
use crate::trace::Trace;

/// A policy under test: runs every `interval_s` on the virtual clock and acts on the cluster.
pub trait Autoscaler {
    fn name(&self) -> &'static str;
    fn interval_s(&self) -> i64;
    /// Called once before the clock starts.
    fn setup(&mut self, _cluster: &mut Cluster) {}
    fn tick(&mut self, cluster: &mut Cluster);
    /// Policy-specific figures for the report (plans run, reasons, ...).
    fn diagnostics(&self) -> serde_json::Value {
        json!({})
    }
}

/// Picks, for a pod, the first pool shape (pools in priority order, shapes in listed order)
/// a fresh node of which can hold it.
pub fn first_fitting_shape<'a>(
    pools: &'a [PoolDef],
    pod: &Pod,
) -> Option<(&'a PoolDef, &'a NodeShape)> {
    pools
        .iter()
        .filter(|p| pod.allows(p.capacity))
        .find_map(|p| {
            p.shapes
                .iter()
                .find(|s| {
                    pod.gpus <= s.gpus
                        && pod.cpu_millis <= s.cpu_millis
                        && pod.memory_bytes <= s.memory_bytes
                })
                .map(|s| (p, s))
        })
}

/// Cluster-Autoscaler-like reactive scaling on on-demand capacity only:
/// - every 10 s, pending pods that don't fit on Ready nodes or nodes already coming up are
///   bin-packed (first fit, in queue order) onto new nodes of the first pool shape that can
///   hold them, and those nodes are launched;
/// - a node whose requested GPUs stay below 50 % of its GPUs for 10 minutes is removed if its
///   pods fit on the other nodes (they are evicted and rescheduled; empty nodes go in bulk,
///   at most one non-empty node per scan, as CA drains one at a time);
/// - no scale-down within 10 minutes of a scale-up (CA's `scale-down-delay-after-add`).
pub struct ReactiveOnDemand {
    pub pools: Vec<PoolDef>,
    pub interval_s: i64,
    pub unneeded_s: i64,
    pub utilization_threshold: f64,
    pub delay_after_add_s: i64,
    below_since: BTreeMap<usize, i64>,
    last_scale_up: Option<i64>,
    scale_ups: u64,
    scale_downs: u64,
}

impl ReactiveOnDemand {
    /// CA's defaults: 10 s scan, 10 min unneeded time, 0.5 utilization threshold.
    pub fn new(pools: Vec<PoolDef>) -> Self {
        Self {
            pools,
            interval_s: 10,
            unneeded_s: 600,
            utilization_threshold: 0.5,
            delay_after_add_s: 600,
            below_since: BTreeMap::new(),
            last_scale_up: None,
            scale_ups: 0,
            scale_downs: 0,
        }
    }

    fn pool_size(cluster: &Cluster, pool: &str) -> u32 {
        cluster.alive_nodes().filter(|n| n.pool == pool).count() as u32
    }

    fn scale_up(&mut self, cluster: &mut Cluster) {
        let now = cluster.now;
        // Virtual free capacity of nodes still coming up (CA counts upcoming nodes).
        struct Bin {
            gpus: u32,
            cpu: u64,
            mem: u64,
        }
        let mut upcoming: Vec<Bin> = cluster
            .alive_nodes()
            .filter(|n| !n.gpus_allocatable(now))
            .map(|n| Bin {
                gpus: n.shape.gpus - n.used_gpus,
                cpu: n.shape.cpu_millis - n.used_cpu,
                mem: n.shape.memory_bytes - n.used_mem,
            })
            .collect();
        let pending: Vec<usize> = cluster
            .pending_pods()
            .filter(|p| p.unschedulable_since.is_some())
            .map(|p| p.id)
            .collect();
        let mut new_nodes: Vec<(usize, usize, Bin)> = Vec::new(); // (pool idx, shape idx, free)
        for id in pending {
            let pod = &cluster.pods[id];
            let fits = |b: &Bin| {
                b.gpus >= pod.gpus && b.cpu >= pod.cpu_millis && b.mem >= pod.memory_bytes
            };
            if let Some(b) = upcoming.iter_mut().find(|b| fits(b)) {
                b.gpus -= pod.gpus;
                b.cpu -= pod.cpu_millis;
                b.mem -= pod.memory_bytes;
                continue;
            }
            if let Some((_, _, b)) = new_nodes.iter_mut().find(|(_, _, b)| fits(b)) {
                b.gpus -= pod.gpus;
                b.cpu -= pod.cpu_millis;
                b.mem -= pod.memory_bytes;
                continue;
            }
            let Some((pool, shape)) = first_fitting_shape(&self.pools, pod) else {
                continue;
            };
            let pi = self
                .pools
                .iter()
                .position(|p| p.name == pool.name)
                .unwrap_or(0);
            let si = pool.shapes.iter().position(|s| s == shape).unwrap_or(0);
            let planned = new_nodes.iter().filter(|(p, _, _)| *p == pi).count() as u32;
            if Self::pool_size(cluster, &pool.name) + planned >= pool.max_size {
                continue;
            }
            new_nodes.push((
                pi,
                si,
                Bin {
                    gpus: shape.gpus - pod.gpus,
                    cpu: shape.cpu_millis - pod.cpu_millis,
                    mem: shape.memory_bytes - pod.memory_bytes,
                },
            ));
        }
        if new_nodes.is_empty() {
            return;
        }
        for (pi, si, _) in new_nodes {
            let pool = &self.pools[pi];
            let shape = &pool.shapes[si];
            cluster.launch(
                &pool.name,
                CapacityType::OnDemand,
                shape,
                pool.node_labels(shape),
            );
        }
        self.scale_ups += 1;
        self.last_scale_up = Some(now);
    }

    fn scale_down(&mut self, cluster: &mut Cluster) {
        let now = cluster.now;
        let ready: Vec<usize> = cluster
            .alive_nodes()
            .filter(|n| n.gpus_allocatable(now))
            .map(|n| n.id)
            .collect();
        self.below_since.retain(|id, _| ready.contains(id));
        for &id in &ready {
            let n = &cluster.nodes[id];
            if n.gpu_request_ratio() < self.utilization_threshold {
                self.below_since.entry(id).or_insert(now);
            } else {
                self.below_since.remove(&id);
            }
        }
        if self
            .last_scale_up
            .is_some_and(|t| now - t < self.delay_after_add_s)
        {
            return;
        }
        let candidates: Vec<usize> = self
            .below_since
            .iter()
            .filter(|(id, since)| now - **since >= self.unneeded_s && self.above_min(cluster, **id))
            .map(|(id, _)| *id)
            .collect();
        let mut removed: Vec<usize> = Vec::new();
        let mut drained_one = false;
        for id in candidates {
            let node = &cluster.nodes[id];
            if node.pods.is_empty() {
                removed.push(id);
                continue;
            }
            if drained_one {
                continue;
            }
            if can_move_pods(cluster, node, &removed) {
                drained_one = true;
                removed.push(id);
            }
        }
        for id in removed {
            cluster.set_cordon(id, true);
            let pods = cluster.nodes[id].pods.clone();
            for p in pods {
                cluster.request_eviction(p, now, false);
            }
            // Evictions are processed at `now`, before the node goes: terminate right after.
            cluster.run_until(now);
            cluster.terminate(id);
            self.below_since.remove(&id);
            self.scale_downs += 1;
        }
    }

    fn above_min(&self, cluster: &Cluster, id: usize) -> bool {
        let n = &cluster.nodes[id];
        let min = self
            .pools
            .iter()
            .find(|p| p.name == n.pool)
            .map_or(0, |p| p.min_size);
        Self::pool_size(cluster, &n.pool) > min
    }
}

/// Whether every pod of `node` fits on the other schedulable nodes (simulated first fit),
/// leaving out nodes being removed.
fn can_move_pods(cluster: &Cluster, node: &Node, removed: &[usize]) -> bool {
    let now = cluster.now;
    let mut free: Vec<(usize, u32, u64, u64)> = cluster
        .alive_nodes()
        .filter(|n| n.id != node.id && n.schedulable(now) && !removed.contains(&n.id))
        .map(|n| {
            (
                n.id,
                n.shape.gpus - n.used_gpus,
                n.shape.cpu_millis - n.used_cpu,
                n.shape.memory_bytes - n.used_mem,
            )
        })
        .collect();
    for &p in &node.pods {
        let pod = &cluster.pods[p];
        let Some(slot) = free.iter_mut().find(|(id, g, c, m)| {
            *g >= pod.gpus
                && *c >= pod.cpu_millis
                && *m >= pod.memory_bytes
                && pod.allows(cluster.nodes[*id].capacity)
        }) else {
            return false;
        };
        slot.1 -= pod.gpus;
        slot.2 -= pod.cpu_millis;
        slot.3 -= pod.memory_bytes;
    }
    true
}

impl Autoscaler for ReactiveOnDemand {
    fn name(&self) -> &'static str {
        "reactive-on-demand"
    }
    fn interval_s(&self) -> i64 {
        self.interval_s
    }
    fn setup(&mut self, cluster: &mut Cluster) {
        for pool in self.pools.clone() {
            if let Some(shape) = pool.shapes.first() {
                for _ in 0..pool.min_size {
                    cluster.launch(
                        &pool.name,
                        CapacityType::OnDemand,
                        shape,
                        pool.node_labels(shape),
                    );
                }
            }
        }
    }
    fn tick(&mut self, cluster: &mut Cluster) {
        self.scale_up(cluster);
        self.scale_down(cluster);
    }
    fn diagnostics(&self) -> serde_json::Value {
        json!({ "scale_up_rounds": self.scale_ups, "nodes_removed": self.scale_downs })
    }
}

/// A fixed on-demand fleet, booted before the start, sized to the trace's p99 demand: every
/// pod is assigned to the first pool shape that can hold it; for each shape, the
/// time-weighted 99th percentile of concurrent GPUs demanded (pods alive from arrival for
/// their run time, as if never waiting) divided by the shape's GPUs, rounded up.
pub struct StaticPeak {
    pub fleet: Vec<(PoolDef, usize, u32)>,
}

impl StaticPeak {
    pub fn size(pools: &[PoolDef], trace: &Trace, pods: &[Pod], start: i64, end: i64) -> Self {
        let mut per_shape: BTreeMap<(usize, usize), Vec<(i64, i64)>> = BTreeMap::new();
        for (tp, pod) in trace.pods.iter().zip(pods) {
            let Some((pool, shape)) = first_fitting_shape(pools, pod) else {
                continue;
            };
            let pi = pools.iter().position(|p| p.name == pool.name).unwrap_or(0);
            let si = pool.shapes.iter().position(|s| s == shape).unwrap_or(0);
            let (a, b) = (
                tp.arrival_s.max(start),
                (tp.arrival_s + tp.duration_s).min(end),
            );
            if b > a {
                let e = per_shape.entry((pi, si)).or_default();
                e.push((a, i64::from(pod.gpus)));
                e.push((b, -i64::from(pod.gpus)));
            }
        }
        let mut fleet = Vec::new();
        for ((pi, si), mut deltas) in per_shape {
            deltas.sort_unstable();
            let p99 = time_weighted_quantile(&deltas, start, end, 0.99);
            let gpus = i64::from(pools[pi].shapes[si].gpus.max(1));
            let n = ((p99 + gpus - 1) / gpus).max(0) as u32;
            fleet.push((pools[pi].clone(), si, n.min(pools[pi].max_size)));
        }
        Self { fleet }
    }
}

/// Time-weighted quantile of a step function given as sorted (time, delta) pairs.
pub fn time_weighted_quantile(deltas: &[(i64, i64)], start: i64, end: i64, q: f64) -> i64 {
    let mut level = 0i64;
    let mut t = start;
    let mut dur: BTreeMap<i64, i64> = BTreeMap::new();
    for &(at, d) in deltas {
        if at > t {
            *dur.entry(level).or_default() += at.min(end) - t;
            t = at.min(end);
        }
        level += d;
    }
    if end > t {
        *dur.entry(level).or_default() += end - t;
    }
    let total: i64 = dur.values().sum();
    let target = (total as f64 * q).ceil() as i64;
    let mut acc = 0;
    for (lvl, d) in dur {
        acc += d;
        if acc >= target {
            return lvl;
        }
    }
    level
}

impl Autoscaler for StaticPeak {
    fn name(&self) -> &'static str {
        "static-peak"
    }
    fn interval_s(&self) -> i64 {
        3600
    }
    fn setup(&mut self, cluster: &mut Cluster) {
        // Booted before the start: requested one boot + GPU-ready delay earlier, billed from
        // the start (a fleet that exists anyway costs the same per second of the window).
        let start = cluster.now;
        for (pool, si, n) in &self.fleet {
            let shape = &pool.shapes[*si];
            for _ in 0..*n {
                let id = cluster.launch_at(
                    &pool.name,
                    CapacityType::OnDemand,
                    shape,
                    pool.node_labels(shape),
                    start,
                );
                cluster.nodes[id].registered_at = start;
                cluster.nodes[id].gpu_ready_at = start;
            }
        }
        cluster.mark_dirty();
    }
    fn tick(&mut self, _cluster: &mut Cluster) {}
    fn diagnostics(&self) -> serde_json::Value {
        json!({
            "fleet": self.fleet.iter().map(|(p, si, n)| json!({
                "pool": p.name, "instance_type": p.shapes[*si].instance_type, "nodes": n
            })).collect::<Vec<_>>()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::time_weighted_quantile;

    #[test]
    fn time_weighted_quantile_weights_levels_by_duration() {
        // Level 1 for 90 s, level 5 for 10 s over [0, 100).
        let d = [(0, 1), (90, 4), (100, -5)];
        assert_eq!(time_weighted_quantile(&d, 0, 100, 0.5), 1);
        assert_eq!(time_weighted_quantile(&d, 0, 100, 0.9), 1);
        assert_eq!(time_weighted_quantile(&d, 0, 100, 0.95), 5);
        // Idle tail after the last event counts at level 0.
        assert_eq!(time_weighted_quantile(&d, 0, 1000, 0.5), 0);
    }
}
