//! The decision procedure. One pass, in this order:
//! 1. memory: provider failures → back-off, per-node underutilization clocks, interruptions;
//! 2. accounting: registered nodes, nodes still waiting for GPUs, instances in flight
//!    (requests older than `maxNodeProvisionTimeSeconds` count as failed and are dropped);
//! 3. interruptions: cordon, priority drain fitted in the notice, replacement at once;
//! 4. minimums (pool `minSize`, global `minNodes`), never blocked by cooldowns;
//! 5. pending pods: first-fit-decreasing onto free room on ready nodes, then onto capacity in
//!    flight, then onto new nodes;
//! 6. utilization pressure, 7. predictive pre-warm;
//! 8. scale-down (continuing drains always; new candidates only in a quiet plan);
//! 9. status.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use gpu_autoscaler_api::policy::{NodeCounts, PoolStatus, PredictiveStatus};
use gpu_autoscaler_api::{CapacityType, policy};

use super::drain;
use super::matching::{self, NodeFace};
use super::model::*;
use super::pack::{CompatCache, Res, Shape, Shapes};

/// First back-off after a provisioning failure; doubles per consecutive failure.
pub const BACKOFF_INITIAL_SECONDS: i64 = 30;
/// Back-off ceiling.
pub const BACKOFF_MAX_SECONDS: i64 = 600;
/// A scale-down drain that hasn't emptied the node after this long is abandoned (uncordon).
pub const SCALE_DOWN_DRAIN_TIMEOUT_SECONDS: i64 = 900;
/// Diversified spot launches spread only over instance types whose price per useful GPU is
/// within this fraction of the cheapest candidate's: spreading over dearer types costs money
/// on every node, for a resilience that a few cheap types already give.
pub const DIVERSIFY_PRICE_TOLERANCE: f64 = 0.15;
/// Prices per useful GPU closer than this fraction count as equal (float noise).
const PRICE_TIE: f64 = 1e-9;
/// Interruption times kept per pool.
const INTERRUPTION_MEMORY_DAYS: i64 = 7;
const INTERRUPTION_MEMORY_MAX: usize = 10_000;

/// Back-off after `failures` consecutive failures (1-based): 30 s, 60 s, ... capped at 10 min.
pub fn backoff_seconds(failures: u32) -> i64 {
    let exp = failures.saturating_sub(1).min(20);
    (BACKOFF_INITIAL_SECONDS << exp).min(BACKOFF_MAX_SECONDS)
}

/// The spot adaptation factor of a pool: 1 while its 24 h interruption rate is at or under
/// the threshold, else `threshold / rate`. Proportional: at twice the threshold, half the
/// spot share. It recovers by itself as old interruptions leave the 24 h window.
pub fn spot_rate_factor(rate_24h: f64, threshold: f64) -> f64 {
    if rate_24h.is_finite() && rate_24h > threshold && rate_24h > 0.0 {
        (threshold / rate_24h).clamp(0.0, 1.0)
    } else {
        1.0
    }
}

/// A place pods can go during packing: capacity on its way, or a node this plan opens.
#[derive(Debug, Clone)]
struct Bin {
    shape: usize,
    free: Res,
    /// Index into `Ctx::opened` when this plan created it.
    opened: Option<usize>,
}

/// A registered, GPU-ready, schedulable node, with the room its bound pods leave.
///
/// Pending pods are placed here before anything is counted as missing: a pod marked
/// `Unschedulable` before a node turned GPU-ready (or that the scheduler simply hasn't
/// retried yet) is about to land on that node, and asking the cloud for another one would
/// over-provision.
#[derive(Debug, Clone)]
struct ReadyBin<'a> {
    node: &'a NodeView,
    /// The node's capacity type, else its pool's (for tier preferences).
    capacity_type: Option<CapacityType>,
    free: Res,
}

/// A template choice: template index, zone, price per useful GPU (when priced).
type TemplatePick = (usize, Option<String>, Option<f64>);

/// Whether a shape may take the node being placed.
type ShapeFilter<'f> = dyn Fn(usize, &Shapes) -> bool + 'f;

/// Scale-ups grouped by (pool, template, zone, cause), with node count and pods.
type Group = (usize, usize, Option<String>, ScaleUpCause, u32, Vec<PodKey>);

/// A node this plan adds.
#[derive(Debug, Clone)]
struct Opened {
    pool: usize,
    template: usize,
    zone: Option<String>,
    cause: ScaleUpCause,
    pods: Vec<PodKey>,
}

struct PoolCtx<'a> {
    state: &'a PoolState,
    mem: PoolMemory,
    /// Working target: starts at the provider's, follows this plan's actions.
    target: u32,
    registered: u32,
    /// Registered nodes with an interruption notice (about to disappear).
    interrupted: u32,
    /// Nodes this plan terminates (each lowers `target` by one, after the scale-ups).
    terminated: u32,
    /// Nodes being drained for scale-down (still in `target` until terminated).
    draining: u32,
    in_backoff: bool,
    rate_24h: f64,
    rate_7d: f64,
    spot_factor: f64,
    /// Nodes per (template, zone) that exist, are on their way or were opened: for spreading.
    usage: BTreeMap<(usize, Option<String>), u32>,
    /// Open bins of this pool (indices into `Ctx::bins`) with free GPUs.
    open_bins: Vec<usize>,
}

struct Ctx<'a> {
    snap: &'a Snapshot,
    now: DateTime<Utc>,
    p: &'a policy::AutoscalingPolicySpec,
    active: bool,
    pools: Vec<PoolCtx<'a>>,
    pool_index: BTreeMap<&'a str, usize>,
    shapes: Shapes,
    bins: Vec<Bin>,
    /// Ready nodes pods could go to now (see [`ReadyBin`]); the scale-down simulation starts
    /// from the room packing left on them.
    ready: Vec<ReadyBin<'a>>,
    ready_index: BTreeMap<&'a str, usize>,
    /// Indices into `ready` that still have free GPUs and may take pending pods.
    ready_open: Vec<usize>,
    opened: Vec<Opened>,
    mem: EngineMemory,
    plan: Plan,
    /// Nodes leaving in this plan (terminated or chosen for scale-down).
    leaving: BTreeSet<String>,
    /// Nodes whose interruption notice this plan handles for the first time.
    newly_interrupted: BTreeSet<String>,
    /// Pods by bound node.
    pods_by_node: BTreeMap<&'a str, Vec<&'a PodView>>,
    /// Whether any pod has required anti-affinity; when none does (the common case) the
    /// per-pod checks below are skipped entirely.
    any_anti_affinity: bool,
    /// Per ready bin: bound pods plus pods this plan placed there (for anti-affinity).
    ready_pods: Vec<Vec<&'a PodView>>,
    /// Per bin index: pods this plan placed there (for anti-affinity).
    bin_pods: BTreeMap<usize, Vec<&'a PodView>>,
    /// Topology keys other than the hostname (zones, ...) that some pod's required
    /// anti-affinity uses; empty in the common case, which skips the domain checks.
    domain_keys: Vec<&'a str>,
    /// (topology key, domain value) -> the pods there: every pod, and those with terms on
    /// that key (a pod without terms of its own only needs checking against the latter).
    domain_pods: BTreeMap<(&'a str, String), DomainPods<'a>>,
    /// Whether any pod has a hard topology spread constraint (else those checks are skipped).
    any_spread: bool,
    /// Pods placed in this plan, for the spread counts of the pods placed after them.
    spread_placed: Vec<(&'a PodView, Placed)>,
    shares: Shares,
}

/// Where a pod was placed in this plan (for spread counts).
#[derive(Debug, Clone, Copy)]
enum Placed {
    Ready(usize),
    Bin(usize),
}

/// One hard spread constraint of the pod being placed, counted over the cluster.
struct SpreadCount<'c> {
    constraint: &'c SpreadConstraint,
    /// Matching pods per domain (the node name for the hostname key; `bin:N` for a node this
    /// plan counts as on its way).
    counts: BTreeMap<String, u32>,
    /// Smallest count among the domains of the existing nodes the pod may use.
    min: u32,
}

/// A placement target's domain for one topology key.
enum Domain {
    Known(String),
    /// A node that doesn't exist yet, for the hostname key: a domain of its own.
    Fresh,
    /// A new node whose zone the cloud will pick.
    Unknown,
    /// A node without the key's label: kube-scheduler rejects it.
    Missing,
}

/// Whether every constraint allows one more pod in the target's domains.
fn spread_allows(counts: &[SpreadCount<'_>], domain: impl Fn(&str) -> Domain) -> bool {
    counts
        .iter()
        .all(|sc| match domain(&sc.constraint.topology_key) {
            Domain::Missing => false,
            Domain::Unknown | Domain::Fresh => true,
            Domain::Known(d) => {
                let n = sc.counts.get(&d).copied().unwrap_or(0);
                n + 1 - sc.min.min(n) <= sc.constraint.max_skew
            }
        })
}

/// The pods of one topology domain (see `Ctx::domain_pods`).
#[derive(Debug, Default)]
struct DomainPods<'a> {
    all: Vec<&'a PodView>,
    with_terms: Vec<&'a PodView>,
}

/// Domains (topology key, value) a pod must not be placed in.
type Blocked<'a> = Vec<(&'a str, String)>;

#[derive(Debug, Clone, Copy)]
struct Shares {
    reserved: f64,
    on_demand: f64,
    spot: f64,
}

impl Shares {
    fn of(&self, ct: CapacityType) -> f64 {
        match ct {
            CapacityType::Reserved => self.reserved,
            CapacityType::OnDemand => self.on_demand,
            CapacityType::Spot => self.spot,
        }
    }
}

/// Computes the plan for one snapshot. See the module documentation for the order.
pub fn plan(snap: &Snapshot) -> Plan {
    let mut cx = Ctx::new(snap);
    cx.update_memory();
    cx.account_pools();
    cx.handle_interruptions();
    if cx.active {
        cx.minimums();
        cx.pending_pods();
        cx.utilization_pressure();
        cx.predictive();
    }
    cx.emit_scale_ups();
    cx.scale_down();
    cx.finish()
}

fn gpu_ready(n: &NodeView) -> bool {
    n.ready && n.gpus_allocatable > 0 && n.gpus_allocatable >= n.gpus_capacity
}

fn secs(s: u32) -> Duration {
    Duration::seconds(i64::from(s))
}

impl<'a> Ctx<'a> {
    fn new(snap: &'a Snapshot) -> Self {
        let p = &snap.policy;
        let mut plan = Plan::default();
        let mut active = p.enabled;
        if !p.enabled {
            plan.warnings.push(
                "policy is disabled (spec.enabled: false): observing only, no actions".into(),
            );
        }
        if let Err(errs) = policy::validate(p) {
            active = false;
            plan.warnings.push(format!(
                "policy is invalid, no actions until it is fixed: {errs}"
            ));
        }
        // Pools: the policy's, in policy order, that the provider knows.
        let mut pool_refs: Vec<&PoolState> = Vec::new();
        for np in &p.node_pools {
            match snap.pools.iter().find(|s| s.spec.name == np.name) {
                Some(s) => pool_refs.push(s),
                None => plan.warnings.push(format!(
                    "node pool {:?} has no provider group; it is not scaled",
                    np.name
                )),
            }
        }
        for ps in &pool_refs {
            for it in &ps.spec.instance_types {
                if !ps.templates.iter().any(|t| &t.instance_type == it) {
                    plan.warnings.push(format!(
                        "pool {:?}: instance type {it:?} has no template (unknown specs); it is never planned",
                        ps.spec.name
                    ));
                }
            }
        }
        let shapes = Shapes::build(&pool_refs);
        let mut pool_index = BTreeMap::new();
        let mut pools = Vec::with_capacity(pool_refs.len());
        for (i, ps) in pool_refs.iter().enumerate() {
            pool_index.insert(ps.spec.name.as_str(), i);
            pools.push(PoolCtx {
                state: ps,
                mem: snap
                    .memory
                    .pools
                    .get(&ps.spec.name)
                    .cloned()
                    .unwrap_or_default(),
                target: ps.target_size,
                registered: 0,
                interrupted: 0,
                terminated: 0,
                draining: 0,
                in_backoff: false,
                rate_24h: 0.0,
                rate_7d: 0.0,
                spot_factor: 1.0,
                usage: BTreeMap::new(),
                open_bins: Vec::new(),
            });
        }
        let mut pods_by_node: BTreeMap<&str, Vec<&PodView>> = BTreeMap::new();
        for pod in &snap.pods {
            if let Some(n) = pod.node.as_deref()
                && !pod.is_terminal()
            {
                pods_by_node.entry(n).or_default().push(pod);
            }
        }
        let mut mem = snap.memory.clone();
        mem.pools.clear();
        Ctx {
            snap,
            now: snap.now,
            p,
            active,
            pools,
            pool_index,
            shapes,
            bins: Vec::new(),
            ready: Vec::new(),
            ready_index: BTreeMap::new(),
            ready_open: Vec::new(),
            opened: Vec::new(),
            mem,
            plan,
            leaving: BTreeSet::new(),
            newly_interrupted: BTreeSet::new(),
            any_anti_affinity: snap.pods.iter().any(|p| !p.anti_affinity.is_empty()),
            ready_pods: Vec::new(),
            bin_pods: BTreeMap::new(),
            domain_keys: {
                let keys: BTreeSet<&str> = snap
                    .pods
                    .iter()
                    .flat_map(|p| p.anti_affinity.iter())
                    .map(|t| t.topology_key.as_str())
                    .filter(|k| *k != matching::HOSTNAME_TOPOLOGY)
                    .collect();
                keys.into_iter().collect()
            },
            domain_pods: BTreeMap::new(),
            any_spread: snap.pods.iter().any(|p| !p.spread.is_empty()),
            spread_placed: Vec::new(),
            pods_by_node,
            shares: Shares {
                reserved: 0.0,
                on_demand: 1.0,
                spot: 0.0,
            },
        }
    }

    fn pool_of(&self, node: &NodeView) -> Option<usize> {
        node.pool
            .as_deref()
            .and_then(|p| self.pool_index.get(p).copied())
    }

    fn movable_pods(&self, node: &str) -> Vec<&'a PodView> {
        self.pods_by_node
            .get(node)
            .map(|v| {
                v.iter()
                    .copied()
                    .filter(|p| !p.is_node_bound_infrastructure())
                    .collect()
            })
            .unwrap_or_default()
    }

    // -----------------------------------------------------------------------------------
    // 1. Memory
    // -----------------------------------------------------------------------------------

    fn update_memory(&mut self) {
        let now = self.now;
        // Provider failures → back-off (idempotent: only events newer than the last one).
        for ev in &self.snap.provider_events {
            let Some(&pi) = self.pool_index.get(ev.pool.as_str()) else {
                continue;
            };
            match &ev.kind {
                ProviderEventKind::ScaleUpFailed { message } => {
                    record_failure(&mut self.pools[pi].mem, ev.at, message.clone());
                }
                ProviderEventKind::InsufficientCapacity {
                    instance_type,
                    zone,
                    message,
                } => {
                    let what = [instance_type.as_deref(), zone.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" in ");
                    let msg = if what.is_empty() {
                        format!("insufficient capacity: {message}")
                    } else {
                        format!("insufficient capacity for {what}: {message}")
                    };
                    record_failure(&mut self.pools[pi].mem, ev.at, msg);
                }
                ProviderEventKind::Interrupted { node } => {
                    let seen = self
                        .mem
                        .nodes
                        .get(node)
                        .is_some_and(|m| m.interruption_handled.is_some());
                    if !seen {
                        self.pools[pi].mem.interruptions.push(ev.at);
                    }
                }
            }
        }
        // Per-node memory: drop gone nodes, track underutilization, note new interruptions.
        let present: BTreeSet<&str> = self.snap.nodes.iter().map(|n| n.name.as_str()).collect();
        self.mem.nodes.retain(|k, _| present.contains(k.as_str()));
        let threshold = self.p.scale_down_threshold;
        for n in &self.snap.nodes {
            let util = self
                .snap
                .utilization
                .nodes
                .get(&n.name)
                .copied()
                .filter(|u| u.is_finite());
            let nm = self.mem.nodes.entry(n.name.clone()).or_default();
            match util {
                // Unknown utilization restarts the clock: we can't claim the node stayed low.
                Some(u) if u < threshold && gpu_ready(n) => {
                    nm.underutilized_since.get_or_insert(now);
                }
                _ => nm.underutilized_since = None,
            }
            // Acted on (and counted) once, and only by an active engine.
            if n.interruption.is_some() && nm.interruption_handled.is_none() && self.active {
                nm.interruption_handled = Some(now);
                self.newly_interrupted.insert(n.name.clone());
                let at = n
                    .interruption
                    .as_ref()
                    .and_then(|i| i.noticed_at)
                    .unwrap_or(now);
                if let Some(pi) = n
                    .pool
                    .as_deref()
                    .and_then(|p| self.pool_index.get(p).copied())
                {
                    self.pools[pi].mem.interruptions.push(at);
                }
            }
        }
        // A node that registered after the last failure proves the pool works again: the
        // doubling restarts (the current back-off still runs out).
        for pc in &mut self.pools {
            let horizon = now - Duration::days(INTERRUPTION_MEMORY_DAYS);
            pc.mem.interruptions.retain(|t| *t > horizon);
            pc.mem.interruptions.sort();
            let excess = pc
                .mem
                .interruptions
                .len()
                .saturating_sub(INTERRUPTION_MEMORY_MAX);
            pc.mem.interruptions.drain(..excess);
            if pc.mem.consecutive_failures > 0
                && let Some(failed_at) = pc.mem.last_failure_at
                && self.snap.nodes.iter().any(|n| {
                    n.pool.as_deref() == Some(pc.state.spec.name.as_str())
                        && n.created > failed_at
                        && gpu_ready(n)
                })
            {
                pc.mem.consecutive_failures = 0;
            }
        }
        if let Some(h) = &self.mem.pre_warm
            && h.hold_until <= now
        {
            self.mem.pre_warm = None;
        }
    }

    // -----------------------------------------------------------------------------------
    // 2. Accounting
    // -----------------------------------------------------------------------------------

    fn account_pools(&mut self) {
        let now = self.now;
        let max_provision = secs(self.p.max_node_provision_time_seconds);
        self.account_ready_nodes();
        self.account_domains();
        // Registered nodes per pool; nodes still waiting for GPUs become bins.
        for n in &self.snap.nodes {
            let Some(pi) = self.pool_of(n) else { continue };
            let pc = &mut self.pools[pi];
            pc.registered += 1;
            if n.interruption.is_some() {
                pc.interrupted += 1;
            }
            let ti = n.instance_type.as_deref().and_then(|it| {
                pc.state
                    .templates
                    .iter()
                    .position(|t| t.instance_type == it)
            });
            if let Some(ti) = ti {
                *pc.usage.entry((ti, n.zone.clone())).or_default() += 1;
            }
            if gpu_ready(n) || n.interruption.is_some() || n.unschedulable {
                continue;
            }
            if n.created + max_provision <= now {
                self.plan.warnings.push(format!(
                    "node {} of pool {} is still not ready with GPUs allocatable {}s after registering; not counted as capacity on its way",
                    n.name,
                    pc.state.spec.name,
                    (now - n.created).num_seconds()
                ));
                continue;
            }
            // Count the template's GPUs, not the (lagging) allocatable ones.
            let Some(ti) = ti.or(if pc.state.templates.is_empty() {
                None
            } else {
                Some(0)
            }) else {
                continue;
            };
            let shape = self.shape_for(pi, ti, n.zone.as_deref());
            let mut free = self.shapes.shapes[shape].res;
            for pod in self.pods_by_node.get(n.name.as_str()).into_iter().flatten() {
                free.take(&Res::of_pod(pod));
            }
            self.add_bin(pi, shape, free, None);
        }
        // Instances in flight, and the ones that failed.
        for pi in 0..self.pools.len() {
            let state = self.pools[pi].state;
            let name = state.spec.name.clone();
            let in_backoff = self.pools[pi].mem.backoff_until.is_some_and(|t| t > now);
            let implicit = self.pools[pi]
                .target
                .saturating_sub(self.pools[pi].registered)
                .saturating_sub(state.in_flight.len() as u32);
            let default_requested = self.pools[pi].mem.last_scale_up.unwrap_or(now);
            let mut flights: Vec<(Option<usize>, Option<String>, DateTime<Utc>)> = state
                .in_flight
                .iter()
                .map(|f| {
                    let ti = f
                        .instance_type
                        .as_deref()
                        .and_then(|it| state.templates.iter().position(|t| t.instance_type == it));
                    (
                        ti,
                        f.zone.clone(),
                        f.requested_at.unwrap_or(default_requested),
                    )
                })
                .collect();
            flights.extend((0..implicit).map(|_| (None, None, default_requested)));
            let timed_out = flights
                .iter()
                .filter(|(_, _, at)| *at + max_provision <= now)
                .count() as u32;
            if timed_out > 0 {
                record_failure(
                    &mut self.pools[pi].mem,
                    now,
                    format!(
                        "{timed_out} instance(s) did not register within maxNodeProvisionTimeSeconds ({}s)",
                        self.p.max_node_provision_time_seconds
                    ),
                );
            }
            let in_backoff_now = in_backoff || timed_out > 0;
            self.pools[pi].in_backoff = self.pools[pi].mem.backoff_until.is_some_and(|t| t > now);
            // While backed off, nothing the pool has in flight is trusted to arrive: drop it
            // so the demand is re-planned elsewhere now, not after the cloud gives up.
            let drop = if in_backoff_now {
                flights.len() as u32
            } else {
                timed_out
            };
            if drop > 0 && self.active {
                let pc = &mut self.pools[pi];
                let new_target = pc.target.saturating_sub(drop);
                let removed = pc.target - new_target;
                if removed > 0 {
                    pc.target = new_target;
                    self.plan.target_reductions.push(TargetReduction {
                        pool: name.clone(),
                        remove: removed,
                        new_target,
                        reason: format!(
                            "pool {name} is backing off after a provisioning failure ({}); dropping {removed} request(s) not yet registered so the demand is re-planned on other pools",
                            pc.mem.last_error.as_deref().unwrap_or("unknown error")
                        ),
                    });
                }
                continue;
            }
            if drop > 0 {
                continue;
            }
            for (ti, zone, _) in flights {
                let Some(ti) = ti.or(if state.templates.is_empty() {
                    None
                } else {
                    Some(0)
                }) else {
                    continue;
                };
                *self.pools[pi].usage.entry((ti, zone.clone())).or_default() += 1;
                let shape = self.shape_for(pi, ti, zone.as_deref());
                let free = self.shapes.shapes[shape].res;
                self.add_bin(pi, shape, free, None);
            }
        }
        // Interruption rates and the effective shares.
        let thr = self.p.spot.interruption_rate_threshold;
        let mut best_spot_factor: Option<f64> = None;
        for pc in &mut self.pools {
            let nodes = f64::from(pc.registered.max(1));
            let day = now - Duration::days(1);
            let n24 = pc.mem.interruptions.iter().filter(|t| **t > day).count() as f64;
            let n7 = pc.mem.interruptions.len() as f64;
            pc.rate_24h = pc.state.interruption_rate_24h.unwrap_or(n24 / nodes);
            pc.rate_7d = n7 / (7.0 * nodes);
            pc.spot_factor = spot_rate_factor(pc.rate_24h, thr);
            if pc.state.spec.capacity_type == CapacityType::Spot && !pc.state.templates.is_empty() {
                best_spot_factor = Some(best_spot_factor.unwrap_or(0.0).max(pc.spot_factor));
            }
        }
        let (mut reserved, mut on_demand, mut spot) = if self.p.enable_multi_tier_scaling {
            let m = &self.p.multi_tier;
            (
                m.reserved_percentage,
                m.on_demand_percentage,
                m.spot_percentage,
            )
        } else {
            (
                0.0,
                1.0 - self.p.spot_instance_percentage,
                self.p.spot_instance_percentage,
            )
        };
        if !self.p.enable_spot_instances {
            on_demand += spot;
            spot = 0.0;
        }
        let factor = best_spot_factor.unwrap_or(1.0);
        let adapted = spot * factor;
        if factor < 1.0 {
            self.plan.warnings.push(format!(
                "spot interruption rate above {thr} per node-day in every spot pool: spot share for new capacity lowered from {spot:.2} to {adapted:.2}"
            ));
        }
        on_demand += spot - adapted;
        spot = adapted;
        reserved = reserved.max(0.0);
        self.shares = Shares {
            reserved,
            on_demand,
            spot,
        };
    }

    /// Ready bins: every GPU-ready node that is schedulable (not cordoned, no interruption
    /// notice), managed or not, with allocatable minus the requests of its bound pods. Nodes
    /// being drained for scale-down take nothing new.
    fn account_ready_nodes(&mut self) {
        let snap = self.snap;
        for n in &snap.nodes {
            if !gpu_ready(n) || n.unschedulable || n.interruption.is_some() {
                continue;
            }
            let mut free = Res {
                gpus: n.gpus_allocatable,
                cpu: n.cpu_millis_allocatable,
                mem: n.memory_bytes_allocatable,
            };
            for p in self.pods_by_node.get(n.name.as_str()).into_iter().flatten() {
                free.take(&Res::of_pod(p));
            }
            let capacity_type = n.capacity_type.or_else(|| {
                self.pool_of(n)
                    .map(|pi| self.pools[pi].state.spec.capacity_type)
            });
            let draining = self
                .mem
                .nodes
                .get(&n.name)
                .is_some_and(|m| m.scale_down_started.is_some());
            let idx = self.ready.len();
            if free.gpus > 0 && !draining {
                self.ready_open.push(idx);
            }
            self.ready_index.insert(n.name.as_str(), idx);
            self.ready.push(ReadyBin {
                node: n,
                capacity_type,
                free,
            });
            self.ready_pods.push(if self.any_anti_affinity {
                self.pods_by_node
                    .get(n.name.as_str())
                    .cloned()
                    .unwrap_or_default()
            } else {
                Vec::new()
            });
        }
    }

    /// A ready node with room for `pod` (see [`ReadyBin`]): among the compatible ones, the
    /// first of the pod's most preferred capacity type. `known[sig]` caches compatibility per
    /// (signature, ready node): 0 unknown, 1 compatible, 2 not.
    fn fit_ready(
        &mut self,
        pod: &'a PodView,
        sig: usize,
        need: &Res,
        known: &mut Vec<Vec<u8>>,
        blocked: &[(&str, String)],
        spread: &[SpreadCount<'_>],
    ) -> Option<usize> {
        if self.ready_open.is_empty() {
            return None;
        }
        if known.len() <= sig {
            known.resize_with(sig + 1, Vec::new);
        }
        let row = &mut known[sig];
        if row.is_empty() {
            row.resize(self.ready.len(), 0);
        }
        let rank = |ct: Option<CapacityType>| {
            ct.and_then(|ct| pod.tier_preference.iter().position(|x| *x == ct))
                .unwrap_or(0)
        };
        let mut best: Option<(usize, usize)> = None; // (rank, position in ready_open)
        let mut k = 0;
        while k < self.ready_open.len() {
            let ri = self.ready_open[k];
            let b = &self.ready[ri];
            if b.free.gpus == 0 {
                self.ready_open.swap_remove(k);
                continue;
            }
            k += 1;
            if !b.free.fits(need) {
                continue;
            }
            if row[ri] == 0 {
                let face = NodeFace {
                    labels: &b.node.labels,
                    taints: &b.node.taints,
                    capacity_type: b.capacity_type,
                    gpu_resource: b.node.gpu_resource.as_deref(),
                };
                row[ri] = if matching::check(pod, &face).is_ok() {
                    1
                } else {
                    2
                };
            }
            if row[ri] != 1 {
                continue;
            }
            if self.any_anti_affinity
                && self.ready_pods[ri]
                    .iter()
                    .any(|o| matching::excludes_on_node(pod, o))
            {
                continue;
            }
            if !domain_allows(blocked, &b.node.labels) {
                continue;
            }
            if !spread.is_empty()
                && !spread_allows(spread, |k| match Self::node_domain(b.node, k) {
                    Some(d) => Domain::Known(d),
                    None => Domain::Missing,
                })
            {
                continue;
            }
            let r = rank(b.capacity_type);
            if best.is_none_or(|(br, _)| r < br) {
                best = Some((r, ri));
                if r == 0 {
                    break;
                }
            }
        }
        let (_, ri) = best?;
        self.ready[ri].free.take(need);
        if self.any_anti_affinity {
            self.ready_pods[ri].push(pod);
        }
        if !self.domain_keys.is_empty() {
            let node: &'a NodeView = self.ready[ri].node;
            self.record_domains(&node.labels, &[pod]);
        }
        if self.any_spread {
            self.spread_placed.push((pod, Placed::Ready(ri)));
        }
        Some(ri)
    }

    /// Indexes bound pods by the topology domains (zones, ...) their nodes are in, for the
    /// keys some pod's anti-affinity uses.
    fn account_domains(&mut self) {
        if self.domain_keys.is_empty() {
            return;
        }
        let snap = self.snap;
        for n in &snap.nodes {
            let Some(pods) = self.pods_by_node.get(n.name.as_str()) else {
                continue;
            };
            let pods = pods.clone();
            self.record_domains(&n.labels, &pods);
        }
    }

    /// Adds `pods` to the domains that `labels` (a node's, or a shape's) place them in.
    fn record_domains(&mut self, labels: &BTreeMap<String, String>, pods: &[&'a PodView]) {
        for i in 0..self.domain_keys.len() {
            let key = self.domain_keys[i];
            let Some(value) = labels.get(key) else {
                continue;
            };
            let d = self.domain_pods.entry((key, value.clone())).or_default();
            for &p in pods {
                d.all.push(p);
                if matching::has_anti_affinity_on(p, key) {
                    d.with_terms.push(p);
                }
            }
        }
    }

    /// The domains `pod` may not go to: those holding a pod it excludes or that excludes it
    /// (other than `pod` itself, which matters when a bound pod is being moved).
    fn blocked_domains(&self, pod: &PodView) -> Blocked<'a> {
        let mut out = Vec::new();
        for ((key, value), d) in &self.domain_pods {
            let key: &'a str = key;
            let candidates = if matching::has_anti_affinity_on(pod, key) {
                &d.all
            } else {
                &d.with_terms
            };
            if candidates
                .iter()
                .any(|o| !std::ptr::eq(*o, pod) && matching::excludes_on(pod, o, key))
            {
                out.push((key, value.clone()));
            }
        }
        out
    }

    /// A node's domain for a topology key.
    fn node_domain(n: &NodeView, key: &str) -> Option<String> {
        if key == matching::HOSTNAME_TOPOLOGY {
            Some(n.name.clone())
        } else {
            n.labels.get(key).cloned()
        }
    }

    /// A bin's domain for a topology key (bins are nodes on their way or opened by this plan).
    fn bin_domain(&self, bi: usize, key: &str) -> Domain {
        if key == matching::HOSTNAME_TOPOLOGY {
            return Domain::Known(format!("bin:{bi}"));
        }
        match self.shapes.shapes[self.bins[bi].shape].labels.get(key) {
            Some(v) => Domain::Known(v.clone()),
            None => Domain::Unknown,
        }
    }

    /// The pod's hard spread constraints, counted over bound pods and this plan's placements.
    fn spread_counts(&self, pod: &'a PodView) -> Vec<SpreadCount<'a>> {
        let node_by_name: BTreeMap<&str, &NodeView> = self
            .snap
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n))
            .collect();
        pod.spread
            .iter()
            .map(|c| {
                let key = c.topology_key.as_str();
                let mut counts: BTreeMap<String, u32> = BTreeMap::new();
                for o in &self.snap.pods {
                    let Some(node) = o.node.as_deref() else {
                        continue;
                    };
                    if o.is_terminal() || !matching::spread_counts(c, &pod.namespace, o) {
                        continue;
                    }
                    if let Some(d) = node_by_name
                        .get(node)
                        .and_then(|n| Self::node_domain(n, key))
                    {
                        *counts.entry(d).or_default() += 1;
                    }
                }
                for (o, at) in &self.spread_placed {
                    if !matching::spread_counts(c, &pod.namespace, o) {
                        continue;
                    }
                    let d = match at {
                        Placed::Ready(ri) => Self::node_domain(self.ready[*ri].node, key),
                        Placed::Bin(bi) => match self.bin_domain(*bi, key) {
                            Domain::Known(d) => Some(d),
                            _ => None,
                        },
                    };
                    if let Some(d) = d {
                        *counts.entry(d).or_default() += 1;
                    }
                }
                // Domains of the nodes the pod may use: those that exist, and those on their way
                // or opened by this plan (kube-scheduler will count them once they register).
                let existing = self
                    .snap
                    .nodes
                    .iter()
                    .filter(|n| matching::node_labels_fit(pod, &n.labels))
                    .filter_map(|n| Self::node_domain(n, key));
                let coming = (0..self.bins.len())
                    .filter(|&bi| {
                        matching::node_labels_fit(
                            pod,
                            &self.shapes.shapes[self.bins[bi].shape].labels,
                        )
                    })
                    .filter_map(|bi| match self.bin_domain(bi, key) {
                        Domain::Known(d) => Some(d),
                        _ => None,
                    });
                let min = existing
                    .chain(coming)
                    .map(|d| counts.get(&d).copied().unwrap_or(0))
                    .min()
                    .unwrap_or(0);
                SpreadCount {
                    constraint: c,
                    counts,
                    min,
                }
            })
            .collect()
    }

    /// The shape of `template` in `zone` (falls back to the "any zone" shape).
    fn shape_for(&self, pool: usize, template: usize, zone: Option<&str>) -> usize {
        let list = &self.shapes.by_pool[pool];
        let mut any = None;
        for &si in list {
            let s = &self.shapes.shapes[si];
            if s.template != template {
                continue;
            }
            if s.zone.is_none() && any.is_none() {
                any = Some(si);
            }
            if zone.is_some() && s.zone.as_deref() == zone {
                return si;
            }
        }
        any.unwrap_or(list[0])
    }

    fn add_bin(&mut self, pool: usize, shape: usize, free: Res, opened: Option<usize>) -> usize {
        let idx = self.bins.len();
        self.bins.push(Bin {
            shape,
            free,
            opened,
        });
        if free.gpus > 0 {
            self.pools[pool].open_bins.push(idx);
        }
        idx
    }

    // -----------------------------------------------------------------------------------
    // 3. Interruptions
    // -----------------------------------------------------------------------------------

    fn handle_interruptions(&mut self) {
        let now = self.now;
        let margin = self.p.spot.drain_safety_margin_seconds;
        for n in &self.snap.nodes {
            let Some(notice) = &n.interruption else {
                continue;
            };
            let pool = self.pool_of(n);
            let movable = self.movable_pods(&n.name);
            let deadline = notice.termination_time - secs(margin);
            let first_time = self.newly_interrupted.contains(&n.name);
            if !self.active {
                continue;
            }
            if !n.unschedulable {
                self.plan.cordons.push(Cordon {
                    node: n.name.clone(),
                    reason: format!(
                        "spot interruption notice: the cloud reclaims the node at {}",
                        notice.termination_time.to_rfc3339()
                    ),
                });
            }
            if !movable.is_empty() {
                // The waves are timed from when the notice was first handled, not from this
                // plan: re-timing them on every plan would push the high wave towards the
                // deadline, plan after plan.
                let anchor = self
                    .mem
                    .nodes
                    .get(&n.name)
                    .and_then(|m| m.interruption_handled)
                    .filter(|t| *t <= now)
                    .unwrap_or(now);
                let evictions = drain::interruption_evictions(
                    anchor,
                    notice.termination_time,
                    margin,
                    self.p.spot.graceful_eviction,
                    &movable,
                );
                self.plan.drains.push(Drain {
                    node: n.name.clone(),
                    cause: DrainCause::Interruption,
                    deadline: Some(deadline),
                    evictions,
                    reason: format!(
                        "spot interruption at {}: evicting {} pod(s) low → medium → high, all asked to stop before {} (termination − {margin}s margin)",
                        notice.termination_time.to_rfc3339(),
                        movable.len(),
                        deadline.to_rfc3339()
                    ),
                });
            } else if let Some(pi) = pool {
                self.terminate(
                    pi,
                    n,
                    "spot interruption: node drained (only DaemonSet/mirror pods left); terminating before the cloud reclaims it".into(),
                );
                self.pools[pi].interrupted = self.pools[pi].interrupted.saturating_sub(1);
            }
            if first_time {
                self.plan.events.push(PlanEvent {
                    object: EventObject::Node(n.name.clone()),
                    type_: EventType::Warning,
                    reason: "SpotInterruption".into(),
                    message: format!(
                        "termination at {}; draining {} pod(s) by priority and requesting replacement capacity",
                        notice.termination_time.to_rfc3339(),
                        movable.len()
                    ),
                });
                // Replacement for the GPU pods, in this very plan (parallel with the drain),
                // on another instance type or zone of the same pool first.
                let gpu_pods: Vec<&PodView> =
                    movable.iter().copied().filter(|p| p.gpus > 0).collect();
                if !gpu_pods.is_empty() {
                    let exclude_type = n.instance_type.clone();
                    let exclude_zone = n.zone.clone();
                    let shapes = &self.shapes;
                    let avoid: Vec<bool> = shapes
                        .shapes
                        .iter()
                        .map(|s| {
                            Some(s.pool) == pool
                                && exclude_type.as_deref().is_some_and(|t| {
                                    self.pools[s.pool].state.templates[s.template].instance_type
                                        == t
                                })
                                && (s.zone.is_none() || s.zone == exclude_zone)
                        })
                        .collect();
                    let unplaced =
                        self.place_pods(&gpu_pods, ScaleUpCause::Replacement, Some(&avoid), pool);
                    for (pod, why) in unplaced {
                        self.plan.warnings.push(format!(
                            "no replacement capacity for {} from interrupted node {}: {why}",
                            pod.key(),
                            n.name
                        ));
                    }
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // 4. Minimums
    // -----------------------------------------------------------------------------------

    fn minimums(&mut self) {
        for pi in 0..self.pools.len() {
            let pc = &self.pools[pi];
            let live = pc.target.saturating_sub(pc.interrupted);
            let min = pc.state.spec.min_size;
            if live >= min || pc.state.templates.is_empty() {
                continue;
            }
            if pc.in_backoff {
                self.plan.warnings.push(format!(
                    "pool {} is below minSize {min} but backing off until {}",
                    pc.state.spec.name,
                    pc.mem
                        .backoff_until
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default()
                ));
                continue;
            }
            for _ in live..min {
                if !self.has_room(pi) {
                    break;
                }
                let (ti, zone, _) = self.pick_template(pi, None, None);
                self.open(pi, ti, zone, ScaleUpCause::Minimum);
            }
        }
        let min_nodes = self.p.min_nodes;
        loop {
            let live: u32 = self
                .pools
                .iter()
                .map(|p| p.target.saturating_sub(p.interrupted))
                .sum();
            if live >= min_nodes {
                break;
            }
            if self.open_generic(ScaleUpCause::Minimum, None).is_none() {
                self.plan.warnings.push(format!(
                    "below minNodes {min_nodes} but no pool can add a node (limits or back-off)"
                ));
                break;
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // 5. Pending pods
    // -----------------------------------------------------------------------------------

    fn pending_pods(&mut self) {
        let timeout = secs(self.p.pending_pod_timeout_seconds);
        let now = self.now;
        let counted: Vec<&PodView> = self
            .snap
            .pods
            .iter()
            .filter(|p| {
                p.node.is_none()
                    && p.gpus > 0
                    && !p.is_terminal()
                    && p.unschedulable_since.is_some_and(|t| t + timeout <= now)
            })
            .collect();
        if counted.is_empty() {
            return;
        }
        let unplaced = self.place_pods(&counted, ScaleUpCause::PendingPods, None, None);
        for (pod, why) in unplaced {
            self.plan.events.push(PlanEvent {
                object: EventObject::Pod(pod.key()),
                type_: EventType::Warning,
                reason: "NotTriggerScaleUp".into(),
                message: format!("pod didn't trigger scale-up: {why}"),
            });
        }
    }

    /// First-fit decreasing of `pods` onto free room of ready nodes, then onto open bins
    /// (capacity on its way or opened by this plan), then onto new nodes. Returns the pods
    /// that found no place, with the reason.
    fn place_pods(
        &mut self,
        pods: &[&'a PodView],
        cause: ScaleUpCause,
        avoid: Option<&[bool]>,
        prefer_pool: Option<usize>,
    ) -> Vec<(&'a PodView, String)> {
        let mut cache = CompatCache::default();
        let mut items: Vec<(&PodView, usize)> = pods
            .iter()
            .map(|p| (*p, cache.signature(p, &self.shapes)))
            .collect();
        items.sort_by(|(a, _), (b, _)| {
            b.gpus
                .cmp(&a.gpus)
                .then(b.cpu_millis.cmp(&a.cpu_millis))
                .then(b.memory_bytes.cmp(&a.memory_bytes))
                .then_with(|| a.namespace.cmp(&b.namespace))
                .then_with(|| a.name.cmp(&b.name))
        });
        // GPUs still to place per signature: the "least waste" template choice uses it.
        let mut remaining: Vec<u64> = vec![0; cache.compat.len()];
        for (p, sig) in &items {
            remaining[*sig] += u64::from(p.gpus);
        }
        let mut unplaced = Vec::new();
        let mut ready_known: Vec<Vec<u8>> = Vec::new();
        for (pod, sig) in items {
            remaining[sig] = remaining[sig].saturating_sub(u64::from(pod.gpus));
            let need = Res::of_pod(pod);
            let blocked = if self.domain_keys.is_empty() {
                Vec::new()
            } else {
                self.blocked_domains(pod)
            };
            let spread = if self.any_spread && !pod.spread.is_empty() {
                self.spread_counts(pod)
            } else {
                Vec::new()
            };
            // 0. Room on a node that is ready now: the scheduler will put it there.
            if self
                .fit_ready(pod, sig, &need, &mut ready_known, &blocked, &spread)
                .is_some()
            {
                continue;
            }
            let compat = &cache.compat[sig];
            if compat.pools.is_empty() {
                let why = compat
                    .mismatch
                    .map(|m| m.describe())
                    .unwrap_or("no node pool has an instance template");
                unplaced.push((pod, format!("no node pool can ever run it: {why}")));
                continue;
            }
            let ok = |si: usize| compat.shape_ok[si] && avoid.is_none_or(|a| !a[si]);
            // 1. Capacity already on its way or opened by this plan.
            let mut placed = false;
            'pools: for &pi in &compat.pools {
                let mut k = 0;
                while k < self.pools[pi].open_bins.len() {
                    let bi = self.pools[pi].open_bins[k];
                    let spread_ok =
                        spread.is_empty() || spread_allows(&spread, |key| self.bin_domain(bi, key));
                    let b = &mut self.bins[bi];
                    if b.free.gpus == 0 {
                        self.pools[pi].open_bins.swap_remove(k);
                        continue;
                    }
                    let excluded = self.any_anti_affinity
                        && self.bin_pods.get(&bi).is_some_and(|ps| {
                            ps.iter().any(|o| matching::excludes_on_node(pod, o))
                        });
                    let shape = b.shape;
                    if ok(shape)
                        && b.free.fits(&need)
                        && !excluded
                        && spread_ok
                        && domain_allows(&blocked, &self.shapes.shapes[shape].labels)
                    {
                        b.free.take(&need);
                        if let Some(o) = b.opened {
                            self.opened[o].pods.push(pod.key());
                        }
                        if self.any_anti_affinity {
                            self.bin_pods.entry(bi).or_default().push(pod);
                        }
                        if !self.domain_keys.is_empty() {
                            let labels = self.shapes.shapes[shape].labels.clone();
                            self.record_domains(&labels, &[pod]);
                        }
                        if self.any_spread {
                            self.spread_placed.push((pod, Placed::Bin(bi)));
                        }
                        placed = true;
                        break 'pools;
                    }
                    k += 1;
                }
            }
            if placed {
                continue;
            }
            // 2. A new node.
            let allowed: Vec<CapacityType> = allowed_types(pod, compat, &self.shapes);
            // A shape in a blocked domain is out; so is one whose domain is unknown (an "any
            // zone" shape) when its pool also has shapes with a known one, so the new node lands
            // where the pod may run. A pool without any is tried anyway: the cloud picks.
            // Keys whose domain must be known: those blocked, and those of the pod's own terms
            // (else siblings opened in this plan could all land in one unknown zone).
            let must_know: Vec<&str> = blocked
                .iter()
                .map(|(k, _)| *k)
                .chain(
                    pod.anti_affinity
                        .iter()
                        .map(|t| t.topology_key.as_str())
                        .chain(pod.spread.iter().map(|c| c.topology_key.as_str()))
                        .filter(|k| *k != matching::HOSTNAME_TOPOLOGY),
                )
                .collect();
            let shape_domain_ok = |si: usize, shapes: &Shapes| {
                let sh = &shapes.shapes[si];
                let spread_ok = spread.is_empty()
                    || spread_allows(&spread, |k| {
                        if k == matching::HOSTNAME_TOPOLOGY {
                            Domain::Fresh
                        } else {
                            sh.labels
                                .get(k)
                                .map_or(Domain::Unknown, |v| Domain::Known(v.clone()))
                        }
                    });
                spread_ok
                    && domain_allows(&blocked, &sh.labels)
                    && must_know.iter().all(|k| {
                        sh.labels.contains_key(*k)
                            || !shapes.by_pool[sh.pool]
                                .iter()
                                .any(|&o| shapes.shapes[o].labels.contains_key(*k))
                    })
            };
            let fits_shape = |si: usize, shapes: &Shapes| {
                ok(si) && shapes.shapes[si].res.fits(&need) && shape_domain_ok(si, shapes)
            };
            let Some((pi, ti, zone)) = self.choose_new_node(
                &allowed,
                &compat.pools,
                &|si, shapes| fits_shape(si, shapes),
                Some((pod.gpus, remaining[sig])),
                prefer_pool,
            ) else {
                let n_shapes = self.shapes.shapes.len();
                let any_fit = (0..n_shapes).any(|si| fits_shape(si, &self.shapes));
                let fits_but_blocked = !any_fit
                    && (!blocked.is_empty() || !spread.is_empty())
                    && (0..n_shapes).any(|si| ok(si) && self.shapes.shapes[si].res.fits(&need));
                let why = if any_fit {
                    "every pool that could run it is at its maxSize, the policy is at maxNodes, or the pool is backing off after a failure".to_string()
                } else if fits_but_blocked && blocked.is_empty() {
                    "its topology spread constraints (DoNotSchedule) rule out every zone its pools offer".to_string()
                } else if fits_but_blocked {
                    let domains: Vec<String> =
                        blocked.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!(
                        "its required pod anti-affinity rules out every zone its pools offer ({} already taken)",
                        domains.join(", ")
                    )
                } else {
                    format!(
                        "no instance type of a matching pool is large enough ({} GPU, {}m CPU, {} bytes memory)",
                        pod.gpus, pod.cpu_millis, pod.memory_bytes
                    )
                };
                unplaced.push((pod, why));
                continue;
            };
            let bi = self.open(pi, ti, zone, cause);
            let b = &mut self.bins[bi];
            b.free.take(&need);
            if let Some(o) = b.opened {
                self.opened[o].pods.push(pod.key());
            }
            let shape = b.shape;
            if self.any_anti_affinity {
                self.bin_pods.entry(bi).or_default().push(pod);
            }
            if self.any_spread {
                self.spread_placed.push((pod, Placed::Bin(bi)));
            }
            if !self.domain_keys.is_empty() {
                let labels = self.shapes.shapes[shape].labels.clone();
                self.record_domains(&labels, &[pod]);
            }
        }
        unplaced
    }

    /// Whether `pool` may get one more node (pool and global maximum).
    fn has_room(&self, pool: usize) -> bool {
        let pc = &self.pools[pool];
        let total: u32 = self.pools.iter().map(|p| p.target).sum();
        pc.target < pc.state.spec.max_size && total < self.p.max_nodes
    }

    fn fleet_count(&self, ct: CapacityType) -> u32 {
        self.pools
            .iter()
            .filter(|p| p.state.spec.capacity_type == ct)
            .map(|p| p.target)
            .sum()
    }

    /// Pools of `ct` that may take a node, best first: healthier spot pools (rate factor),
    /// then pool priority, then policy order.
    fn pools_of_type(&self, ct: CapacityType, candidates: &[usize]) -> Vec<usize> {
        let mut v: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&pi| {
                let pc = &self.pools[pi];
                pc.state.spec.capacity_type == ct
                    && !pc.in_backoff
                    && !pc.state.templates.is_empty()
                    && (ct != CapacityType::Spot || self.p.enable_spot_instances)
                    && self.has_room(pi)
            })
            .collect();
        v.sort_by(|&a, &b| {
            let (pa, pb) = (&self.pools[a], &self.pools[b]);
            pb.spot_factor
                .partial_cmp(&pa.spot_factor)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(pb.state.spec.priority.cmp(&pa.state.spec.priority))
                .then(a.cmp(&b))
        });
        v
    }

    /// Picks pool, template and zone for a new node. `allowed` is in the pod's preference
    /// order. Reserved pools with room come first; between spot and on-demand the type
    /// furthest below its target share wins (ties: preference order).
    fn choose_new_node(
        &self,
        allowed: &[CapacityType],
        candidates: &[usize],
        fits: &ShapeFilter<'_>,
        demand: Option<(u32, u64)>,
        prefer_pool: Option<usize>,
    ) -> Option<(usize, usize, Option<String>)> {
        let usable = |pi: usize| -> bool {
            self.shapes.by_pool[pi]
                .iter()
                .any(|&si| fits(si, &self.shapes))
        };
        if let Some(pp) = prefer_pool
            && candidates.contains(&pp)
            && !self.pools[pp].in_backoff
            && self.has_room(pp)
            && usable(pp)
        {
            let (ti, zone, _) = self.pick_template(pp, Some(fits), demand);
            return Some((pp, ti, zone));
        }
        let mut order: Vec<CapacityType> = Vec::with_capacity(3);
        if allowed.contains(&CapacityType::Reserved) {
            order.push(CapacityType::Reserved);
        }
        let total: u32 = CapacityType::ALL
            .iter()
            .map(|ct| self.fleet_count(*ct))
            .sum();
        let mut rest: Vec<(usize, CapacityType)> = allowed
            .iter()
            .enumerate()
            .filter(|(_, ct)| **ct != CapacityType::Reserved)
            .map(|(rank, ct)| (rank, *ct))
            .collect();
        rest.sort_by(|(ra, a), (rb, b)| {
            let da = self.shares.of(*a) * f64::from(total + 1) - f64::from(self.fleet_count(*a));
            let db = self.shares.of(*b) * f64::from(total + 1) - f64::from(self.fleet_count(*b));
            db.partial_cmp(&da)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(ra.cmp(rb))
        });
        order.extend(rest.into_iter().map(|(_, ct)| ct));
        for ct in order {
            let usable_pools: Vec<usize> = self
                .pools_of_type(ct, candidates)
                .into_iter()
                .filter(|&pi| usable(pi))
                .collect();
            let Some(&first) = usable_pools.first() else {
                continue;
            };
            // Pools that rank equal (health, priority) compete on price per useful GPU of
            // their best template, when all are priced; otherwise policy order decides.
            let rank = |pi: usize| {
                let pc = &self.pools[pi];
                (pc.spot_factor, pc.state.spec.priority)
            };
            let picks: Vec<(usize, TemplatePick)> = usable_pools
                .iter()
                .copied()
                .take_while(|&pi| rank(pi) == rank(first))
                .map(|pi| (pi, self.pick_template(pi, Some(fits), demand)))
                .collect();
            let all_priced = picks.iter().all(|(_, p)| p.2.is_some());
            let best = if all_priced {
                picks.into_iter().reduce(|a, b| {
                    let (ca, cb) = (a.1.2.unwrap_or(0.0), b.1.2.unwrap_or(0.0));
                    if cb < ca * (1.0 - PRICE_TIE) { b } else { a }
                })
            } else {
                picks.into_iter().next()
            };
            if let Some((pi, (ti, zone, _))) = best {
                return Some((pi, ti, zone));
            }
        }
        None
    }

    /// Template and zone for a new node of `pool`, with the node's price per useful GPU when
    /// every candidate template is priced. See "Template choice" in the module documentation.
    fn pick_template(
        &self,
        pool: usize,
        fits: Option<&ShapeFilter<'_>>,
        demand: Option<(u32, u64)>,
    ) -> TemplatePick {
        let pc = &self.pools[pool];
        let diversify = pc.state.spec.capacity_type == CapacityType::Spot && self.p.spot.diversify;
        let shapes: Vec<usize> = self.shapes.by_pool[pool]
            .iter()
            .copied()
            .filter(|&si| fits.is_none_or(|f| f(si, &self.shapes)))
            .collect();
        let waste = |si: usize| -> u64 {
            let g = u64::from(self.shapes.shapes[si].res.gpus);
            match demand {
                Some((pod, rest)) => g - g.min(u64::from(pod) + rest),
                None => 0,
            }
        };
        // Least waste first; for real demand, then the biggest node (fewer nodes for the same
        // GPUs); then the pool's instance-type preference order.
        let key = |si: usize| {
            let gpus = self.shapes.shapes[si].res.gpus;
            (
                waste(si),
                if demand.is_some() { u32::MAX - gpus } else { 0 },
                self.shapes.shapes[si].template,
            )
        };
        let cost = |si: usize| price_per_useful_gpu(pc.state, &self.shapes.shapes[si], demand);
        // Prices are compared only when all candidates have one: a missing price is not
        // "free", and guessing one would be inventing data.
        let costs: Option<Vec<f64>> = shapes.iter().map(|&si| cost(si)).collect();
        let least_waste = |cands: Vec<usize>| -> Vec<usize> {
            let Some(best_key) = cands.iter().map(|&si| key(si)).min() else {
                return cands;
            };
            cands
                .into_iter()
                .filter(|&si| {
                    let k = key(si);
                    (k.0, k.1) == (best_key.0, best_key.1)
                })
                .collect()
        };
        let best: Vec<usize> = match costs {
            Some(costs) if !costs.is_empty() => {
                let cheapest = costs.iter().copied().fold(f64::INFINITY, f64::min);
                let tolerance = if diversify {
                    DIVERSIFY_PRICE_TOLERANCE
                } else {
                    PRICE_TIE
                };
                let limit = cheapest * (1.0 + tolerance) + f64::EPSILON;
                let within: Vec<usize> = shapes
                    .iter()
                    .zip(&costs)
                    .filter(|(_, c)| **c <= limit)
                    .map(|(si, _)| *si)
                    .collect();
                // Diversified spot spreads over every type within the tolerance (their price
                // per useful GPU already charges for waste); otherwise equal prices fall back
                // to the unpriced order.
                if diversify {
                    within
                } else {
                    least_waste(within)
                }
            }
            _ => least_waste(shapes),
        };
        if best.is_empty() {
            return (0, None, None);
        }
        let zoned: Vec<usize> = best
            .iter()
            .copied()
            .filter(|&si| self.shapes.shapes[si].zone.is_some())
            .collect();
        let pick = if diversify {
            let pool_of = if zoned.is_empty() { &best } else { &zoned };
            pool_of
                .iter()
                .copied()
                .min_by(|&a, &b| {
                    let used = |si: usize| {
                        let s = &self.shapes.shapes[si];
                        pc.usage
                            .get(&(s.template, s.zone.clone()))
                            .copied()
                            .unwrap_or(0)
                    };
                    let price = |si: usize| cost(si).unwrap_or(0.0);
                    used(a)
                        .cmp(&used(b))
                        .then(price(a).total_cmp(&price(b)))
                        .then(a.cmp(&b))
                })
                .unwrap_or(best[0])
        } else {
            // Any-zone shape of the first template if allowed; else the first zone allowed.
            best.iter()
                .copied()
                .find(|&si| self.shapes.shapes[si].zone.is_none())
                .unwrap_or(best[0])
        };
        let s = &self.shapes.shapes[pick];
        (s.template, s.zone.clone(), cost(pick))
    }

    /// Opens a node: raises the pool's target and makes the node a bin.
    fn open(
        &mut self,
        pool: usize,
        template: usize,
        zone: Option<String>,
        cause: ScaleUpCause,
    ) -> usize {
        let shape = self.shape_for(pool, template, zone.as_deref());
        let pc = &mut self.pools[pool];
        pc.target += 1;
        *pc.usage.entry((template, zone.clone())).or_default() += 1;
        let o = self.opened.len();
        self.opened.push(Opened {
            pool,
            template,
            zone,
            cause,
            pods: Vec::new(),
        });
        let free = self.shapes.shapes[shape].res;
        self.add_bin(pool, shape, free, Some(o))
    }

    /// Opens a node for demand that isn't tied to a pod (`want`: GPUs still wanted, for the
    /// template choice); returns its GPUs.
    fn open_generic(&mut self, cause: ScaleUpCause, want: Option<u64>) -> Option<u32> {
        let mut allowed = vec![CapacityType::Reserved, CapacityType::OnDemand];
        if self.p.enable_spot_instances {
            allowed.push(CapacityType::Spot);
        }
        let all: Vec<usize> = (0..self.pools.len()).collect();
        let (pi, ti, zone) =
            self.choose_new_node(&allowed, &all, &|_, _| true, want.map(|w| (0, w)), None)?;
        let gpus = self.pools[pi].state.templates[ti].gpus;
        self.open(pi, ti, zone, cause);
        Some(gpus)
    }

    // -----------------------------------------------------------------------------------
    // 6. Utilization, 7. Predictive
    // -----------------------------------------------------------------------------------

    /// (busy GPUs, allocatable GPUs) over GPU-ready nodes with known utilization.
    fn known_utilization(&self) -> Option<(f64, f64)> {
        let mut busy = 0.0;
        let mut total = 0.0;
        for n in &self.snap.nodes {
            if !gpu_ready(n) || n.interruption.is_some() {
                continue;
            }
            if let Some(u) = self
                .snap
                .utilization
                .nodes
                .get(&n.name)
                .copied()
                .filter(|u| u.is_finite())
            {
                let g = f64::from(n.gpus_allocatable);
                busy += u.clamp(0.0, 1.0) * g;
                total += g;
            }
        }
        (total > 0.0).then_some((busy, total))
    }

    fn scale_up_cooldown_remaining(&self) -> i64 {
        let cd = secs(self.p.scale_up_cooldown_seconds);
        self.mem
            .last_scale_up
            .map(|t| (t + cd - self.now).num_seconds().max(0))
            .unwrap_or(0)
    }

    fn utilization_pressure(&mut self) {
        let Some((busy, total)) = self.known_utilization() else {
            return;
        };
        let thr = self.p.scale_up_threshold;
        let util = busy / total;
        if util <= thr || thr <= 0.0 {
            return;
        }
        let cooldown = self.scale_up_cooldown_remaining();
        if cooldown > 0 {
            self.plan.warnings.push(format!(
                "cluster GPU utilization {util:.2} is above scaleUpThreshold {thr:.2}, but the scale-up cooldown has {cooldown}s left"
            ));
            return;
        }
        // Idle GPUs on their way (not claimed by pending pods) already lower the projection.
        let incoming: f64 = self.bins.iter().map(|b| f64::from(b.free.gpus)).sum();
        let mut needed = (busy / thr - total - incoming).ceil();
        while needed > 0.0 {
            match self.open_generic(ScaleUpCause::Utilization, Some(needed as u64)) {
                Some(g) if g > 0 => needed -= f64::from(g),
                _ => {
                    self.plan.warnings.push(format!(
                        "cluster GPU utilization {util:.2} is above scaleUpThreshold {thr:.2} but no pool can add a node (limits or back-off)"
                    ));
                    break;
                }
            }
        }
    }

    fn predictive(&mut self) {
        let Some(f) = &self.snap.forecast else { return };
        if !self.p.enable_predictive_scaling {
            return;
        }
        let pp = &self.p.predictive;
        if !(f.confidence >= pp.confidence_threshold
            && f.predicted_utilization >= pp.pre_warm_threshold)
        {
            return;
        }
        if !f.predicted_gpus_upper.is_finite() || f.predicted_gpus_upper <= 0.0 {
            return;
        }
        let want = f.predicted_gpus_upper.ceil().min(f64::from(u32::MAX)) as u32;
        let ready: u32 = self
            .snap
            .nodes
            .iter()
            .filter(|n| gpu_ready(n) && n.interruption.is_none() && !self.leaving.contains(&n.name))
            .map(|n| n.gpus_allocatable)
            .sum();
        let incoming: u32 = self
            .bins
            .iter()
            .map(|b| self.shapes.shapes[b.shape].res.gpus)
            .sum();
        let mut have = ready.saturating_add(incoming);
        while have < want {
            match self.open_generic(ScaleUpCause::Predictive, Some(u64::from(want - have))) {
                Some(g) if g > 0 => have += g,
                _ => {
                    self.plan.warnings.push(format!(
                        "pre-warm wants {want} GPUs for {} but limits stop at {have}",
                        f.target_time.to_rfc3339()
                    ));
                    break;
                }
            }
        }
        let hold = PreWarmHold {
            gpus: want,
            hold_until: f.hold_until,
        };
        self.mem.pre_warm = match self.mem.pre_warm.take() {
            Some(h) if h.hold_until >= hold.hold_until && h.gpus >= hold.gpus => Some(h),
            Some(h) => Some(PreWarmHold {
                gpus: h.gpus.max(hold.gpus),
                hold_until: h.hold_until.max(hold.hold_until),
            }),
            None => Some(hold),
        };
    }

    // -----------------------------------------------------------------------------------
    // Emit scale-ups
    // -----------------------------------------------------------------------------------

    fn emit_scale_ups(&mut self) {
        if self.opened.is_empty() {
            return;
        }
        // Group by (pool, template, zone, cause), keeping first-seen order.
        let mut groups: Vec<Group> = Vec::new();
        for o in std::mem::take(&mut self.opened) {
            match groups
                .iter_mut()
                .find(|g| g.0 == o.pool && g.1 == o.template && g.2 == o.zone && g.3 == o.cause)
            {
                Some(g) => {
                    g.4 += 1;
                    g.5.extend(o.pods);
                }
                None => groups.push((o.pool, o.template, o.zone, o.cause, 1, o.pods)),
            }
        }
        let mut running: BTreeMap<usize, u32> = BTreeMap::new();
        let mut pods_events: Vec<(PodKey, String, u32)> = Vec::new();
        let mut per_pool_added: BTreeMap<usize, u32> = BTreeMap::new();
        for g in &groups {
            *per_pool_added.entry(g.0).or_default() += g.4;
        }
        let mut summary = Vec::new();
        for (pi, ti, zone, cause, add, mut pods) in groups {
            let pc = &self.pools[pi];
            // Terminations run after the scale-ups, so targets here still include them.
            let base = (pc.target + pc.terminated).saturating_sub(per_pool_added[&pi]);
            let t = running.entry(pi).or_insert(base);
            *t += add;
            let tpl = &pc.state.templates[ti];
            let name = &pc.state.spec.name;
            pods.sort();
            pods.dedup();
            let reason = match cause {
                ScaleUpCause::Minimum => format!(
                    "pool {name} below its minimum (minSize {}, policy minNodes {})",
                    pc.state.spec.min_size, self.p.min_nodes
                ),
                ScaleUpCause::PendingPods => format!(
                    "{} GPU pod(s) unschedulable for over {}s need {} more {} node(s) after counting capacity already on its way",
                    pods.len(),
                    self.p.pending_pod_timeout_seconds,
                    add,
                    tpl.instance_type
                ),
                ScaleUpCause::Utilization => format!(
                    "cluster GPU utilization above scaleUpThreshold {:.2}: adding {add} node(s) to bring it back under",
                    self.p.scale_up_threshold
                ),
                ScaleUpCause::Replacement => format!(
                    "replacement for {} GPU pod(s) on an interrupted spot node, requested in parallel with the drain",
                    pods.len()
                ),
                ScaleUpCause::Predictive => {
                    let f = self.snap.forecast.as_ref();
                    format!(
                        "pre-warm for predicted demand of {:.1} GPUs at {} (confidence {:.2})",
                        f.map(|f| f.predicted_gpus_upper).unwrap_or(0.0),
                        f.map(|f| f.target_time.to_rfc3339()).unwrap_or_default(),
                        f.map(|f| f.confidence).unwrap_or(0.0)
                    )
                }
            };
            for p in &pods {
                pods_events.push((p.clone(), name.clone(), per_pool_added[&pi]));
            }
            summary.push(format!("{name} +{add} ({:?})", cause));
            self.plan.scale_ups.push(ScaleUp {
                pool: name.clone(),
                capacity_type: pc.state.spec.capacity_type,
                instance_type: Some(tpl.instance_type.clone()),
                zone,
                add,
                new_target: *t,
                cause,
                reason,
                pods,
            });
        }
        for (pod, pool, n) in pods_events {
            self.plan.events.push(PlanEvent {
                object: EventObject::Pod(pod),
                type_: EventType::Normal,
                reason: "TriggeredScaleUp".into(),
                message: format!("triggered scale-up of pool {pool} by {n}"),
            });
        }
        let now = self.now;
        let reason = format!("scale-up: {}", summary.join(", "));
        self.mem.last_scale_up = Some(now);
        self.mem.last_scale_up_reason = Some(reason);
        for su in &self.plan.scale_ups {
            if let Some(&pi) = self.pool_index.get(su.pool.as_str()) {
                self.pools[pi].mem.last_scale_up = Some(now);
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // 8. Scale-down
    // -----------------------------------------------------------------------------------

    fn scale_down(&mut self) {
        let now = self.now;
        if !self.active {
            return;
        }
        // Continue drains started earlier.
        for n in &self.snap.nodes {
            let started = self
                .mem
                .nodes
                .get(&n.name)
                .and_then(|m| m.scale_down_started);
            let Some(started) = started else { continue };
            if n.interruption.is_some() {
                continue; // the interruption path owns it now
            }
            let Some(pi) = self.pool_of(n) else { continue };
            let movable = self.movable_pods(&n.name);
            if movable.is_empty() {
                self.terminate(
                    pi,
                    n,
                    "scale-down: node drained (only DaemonSet/mirror pods left)".into(),
                );
            } else if (now - started).num_seconds() > SCALE_DOWN_DRAIN_TIMEOUT_SECONDS {
                self.plan.uncordons.push(Uncordon {
                    node: n.name.clone(),
                    reason: format!(
                        "scale-down abandoned: {} pod(s) still on the node after {SCALE_DOWN_DRAIN_TIMEOUT_SECONDS}s (PodDisruptionBudget?)",
                        movable.len()
                    ),
                });
                if let Some(m) = self.mem.nodes.get_mut(&n.name) {
                    m.scale_down_started = None;
                }
            } else {
                self.pools[pi].draining += 1;
                if !n.unschedulable {
                    self.plan.cordons.push(Cordon {
                        node: n.name.clone(),
                        reason: "scale-down in progress".into(),
                    });
                }
                self.plan.drains.push(Drain {
                    node: n.name.clone(),
                    cause: DrainCause::ScaleDown,
                    deadline: None,
                    evictions: drain::scale_down_evictions(now, &movable),
                    reason: format!(
                        "scale-down in progress: {} pod(s) left to evict",
                        movable.len()
                    ),
                });
                self.leaving.insert(n.name.clone());
            }
        }
        // New candidates only in a quiet plan, outside the cooldowns.
        if !self.plan.scale_ups.is_empty() {
            return;
        }
        let cd = secs(self.p.scale_down_cooldown_seconds);
        let since = |t: Option<DateTime<Utc>>| t.is_some_and(|t| t + cd > now);
        if since(self.mem.last_scale_down) || since(self.mem.last_scale_up) {
            return;
        }
        let dur = secs(self.p.underutilized_duration_seconds);
        let mut candidates: Vec<(&'a NodeView, usize, f64)> = Vec::new();
        for n in &self.snap.nodes {
            let Some(pi) = self.pool_of(n) else { continue };
            if !gpu_ready(n)
                || n.unschedulable
                || n.interruption.is_some()
                || self.leaving.contains(&n.name)
            {
                continue;
            }
            // Unknown utilization never makes a candidate.
            let Some(u) = self
                .snap
                .utilization
                .nodes
                .get(&n.name)
                .copied()
                .filter(|u| u.is_finite())
            else {
                continue;
            };
            let low_since = self
                .mem
                .nodes
                .get(&n.name)
                .and_then(|m| m.underutilized_since);
            if low_since.is_none_or(|t| t + dur > now) {
                continue;
            }
            if since(self.pools[pi].mem.last_scale_down) {
                continue;
            }
            candidates.push((n, pi, u));
        }
        if candidates.is_empty() {
            return;
        }
        candidates.sort_by(|a, b| {
            a.2.partial_cmp(&b.2)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(
                    self.movable_pods(&a.0.name)
                        .len()
                        .cmp(&self.movable_pods(&b.0.name).len()),
                )
                .then(a.0.name.cmp(&b.0.name))
        });
        // Where pods could go: schedulable, GPU-ready nodes that stay.
        let mut free: BTreeMap<&str, Res> = BTreeMap::new();
        for n in &self.snap.nodes {
            if !gpu_ready(n)
                || n.unschedulable
                || n.interruption.is_some()
                || self.leaving.contains(&n.name)
            {
                continue;
            }
            // The room packing left: pending pods placed on ready nodes are not displaced.
            let Some(&ri) = self.ready_index.get(n.name.as_str()) else {
                continue;
            };
            free.insert(n.name.as_str(), self.ready[ri].free);
        }
        let node_by_name: BTreeMap<&str, &NodeView> = self
            .snap
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n))
            .collect();
        let pending_gpu: Vec<&PodView> = self
            .snap
            .pods
            .iter()
            .filter(|p| {
                p.node.is_none()
                    && p.gpus > 0
                    && !p.is_terminal()
                    && p.unschedulable_since.is_some()
            })
            .collect();
        let busy_total = self.known_utilization();
        let mut removed_gpus = 0u32;
        let hold = self.mem.pre_warm.clone().filter(|h| h.hold_until > now);
        let ready_gpus: u32 = free
            .keys()
            .filter_map(|n| node_by_name.get(n))
            .map(|n| n.gpus_allocatable)
            .sum();
        let mut chosen = Vec::new();
        // Nodes that took pods of an earlier removal in this plan must stay.
        let mut receiving: BTreeSet<&str> = BTreeSet::new();
        for (n, pi, u) in candidates {
            if receiving.contains(n.name.as_str()) {
                continue;
            }
            let pc = &self.pools[pi];
            let staying = |p: &PoolCtx| p.target.saturating_sub(p.draining + p.interrupted);
            if staying(pc) <= pc.state.spec.min_size {
                continue;
            }
            let total: u32 = self.pools.iter().map(staying).sum();
            if total <= self.p.min_nodes {
                break;
            }
            let g = n.gpus_allocatable;
            if let Some(h) = &hold
                && ready_gpus.saturating_sub(removed_gpus + g) < h.gpus
            {
                continue;
            }
            // Removing it must not push the rest over the scale-up threshold (no flapping).
            if let Some((busy, total_g)) = busy_total {
                let left = total_g - f64::from(removed_gpus + g);
                if left <= 0.0 || busy / left >= self.p.scale_up_threshold {
                    continue;
                }
            }
            // Pending GPU pods that could use this node keep it.
            let face = NodeFace {
                labels: &n.labels,
                taints: &n.taints,
                capacity_type: n.capacity_type.or(Some(pc.state.spec.capacity_type)),
                gpu_resource: n.gpu_resource.as_deref(),
            };
            if pending_gpu
                .iter()
                .any(|p| p.gpus <= n.gpus_allocatable && matching::check(p, &face).is_ok())
            {
                continue;
            }
            let pods = self.movable_pods(&n.name);
            if pods.iter().any(|p| !p.safe_to_evict) {
                continue;
            }
            if pods.iter().any(|p| p.owner.is_none()) {
                continue;
            }
            // Simulate: every pod must fit on a remaining node (excluding other removals).
            let mut trial = free.clone();
            trial.remove(n.name.as_str());
            let mut sorted = pods.clone();
            sorted.sort_by(|a, b| b.gpus.cmp(&a.gpus).then(b.cpu_millis.cmp(&a.cpu_millis)));
            let mut all_fit = true;
            let mut dests: Vec<&str> = Vec::new();
            // (destination, pod) moved so far in this trial, for anti-affinity.
            let mut moved: Vec<(&str, &PodView)> = Vec::new();
            for p in &sorted {
                let need = Res::of_pod(p);
                let blocked = if self.domain_keys.is_empty() {
                    Vec::new()
                } else {
                    self.blocked_domains(p)
                };
                // Counted with the pod still at its node: stricter than after the move.
                let spread = if self.any_spread && !p.spread.is_empty() {
                    self.spread_counts(p)
                } else {
                    Vec::new()
                };
                let excluded_at = |name: &str| {
                    self.any_anti_affinity
                        && (self.ready_index.get(name).is_some_and(|&ri| {
                            self.ready_pods[ri]
                                .iter()
                                .any(|o| matching::excludes_on_node(p, o))
                        }) || moved
                            .iter()
                            .any(|(d, o)| *d == name && matching::excludes_on_node(p, o)))
                };
                let dest = trial.iter_mut().find(|(name, r)| {
                    r.fits(&need)
                        && !excluded_at(name)
                        && node_by_name.get(*name).is_some_and(|d| {
                            domain_allows(&blocked, &d.labels)
                                && (spread.is_empty()
                                    || spread_allows(&spread, |k| match Self::node_domain(d, k) {
                                        Some(v) => Domain::Known(v),
                                        None => Domain::Missing,
                                    }))
                        })
                        && node_by_name.get(*name).is_some_and(|d| {
                            matching::check(
                                p,
                                &NodeFace {
                                    labels: &d.labels,
                                    taints: &d.taints,
                                    capacity_type: d.capacity_type.or_else(|| {
                                        d.pool
                                            .as_deref()
                                            .and_then(|pn| self.pool_index.get(pn))
                                            .map(|&i| self.pools[i].state.spec.capacity_type)
                                    }),
                                    gpu_resource: d.gpu_resource.as_deref(),
                                },
                            )
                            .is_ok()
                        })
                });
                match dest {
                    Some((name, r)) => {
                        r.take(&need);
                        dests.push(name);
                        if self.any_anti_affinity {
                            moved.push((name, p));
                        }
                    }
                    None => {
                        all_fit = false;
                        break;
                    }
                }
            }
            if !all_fit {
                continue;
            }
            // Later candidates must see these pods at their new nodes.
            for (name, p) in moved {
                if let Some(&ri) = self.ready_index.get(name) {
                    self.ready_pods[ri].push(p);
                }
            }
            if !self.domain_keys.is_empty() {
                for (p, name) in sorted.iter().zip(&dests) {
                    if let Some(d) = node_by_name.get(name) {
                        let labels: &'a BTreeMap<String, String> = &d.labels;
                        self.record_domains(labels, &[*p]);
                    }
                }
            }
            free = trial;
            receiving.extend(dests);
            removed_gpus += g;
            self.pools[pi].draining += 1;
            self.leaving.insert(n.name.clone());
            chosen.push((n, pi, u, pods));
        }
        if chosen.is_empty() {
            return;
        }
        let mut names = Vec::new();
        for (n, pi, u, pods) in chosen {
            self.pools[pi].mem.last_scale_down = Some(now);
            names.push(n.name.clone());
            let reason = format!(
                "GPU utilization {u:.2} below scaleDownThreshold {:.2} for over {}s and its {} pod(s) fit on other nodes",
                self.p.scale_down_threshold,
                self.p.underutilized_duration_seconds,
                pods.len()
            );
            self.plan.events.push(PlanEvent {
                object: EventObject::Node(n.name.clone()),
                type_: EventType::Normal,
                reason: "ScaleDown".into(),
                message: format!("removing node: {reason}"),
            });
            if pods.is_empty() {
                self.pools[pi].draining -= 1;
                self.terminate(pi, n, format!("scale-down: {reason}; node is empty"));
                continue;
            }
            self.mem
                .nodes
                .entry(n.name.clone())
                .or_default()
                .scale_down_started = Some(now);
            self.plan.cordons.push(Cordon {
                node: n.name.clone(),
                reason: format!("scale-down: {reason}"),
            });
            self.plan.drains.push(Drain {
                node: n.name.clone(),
                cause: DrainCause::ScaleDown,
                deadline: None,
                evictions: drain::scale_down_evictions(now, &pods),
                reason: format!("scale-down: {reason}"),
            });
        }
        self.mem.last_scale_down = Some(now);
        self.mem.last_scale_down_reason = Some(format!("scale-down of {}", names.join(", ")));
    }

    fn terminate(&mut self, pi: usize, n: &NodeView, reason: String) {
        let pc = &mut self.pools[pi];
        pc.target = pc.target.saturating_sub(1);
        pc.terminated += 1;
        self.leaving.insert(n.name.clone());
        self.plan.events.push(PlanEvent {
            object: EventObject::Node(n.name.clone()),
            type_: EventType::Normal,
            reason: "Terminate".into(),
            message: reason.clone(),
        });
        self.plan.terminations.push(Terminate {
            node: n.name.clone(),
            pool: pc.state.spec.name.clone(),
            provider_id: n.provider_id.clone(),
            reason,
        });
    }

    // -----------------------------------------------------------------------------------
    // 9. Status
    // -----------------------------------------------------------------------------------

    fn finish(mut self) -> Plan {
        let now = self.now;
        let mut current = NodeCounts::default();
        let mut desired = NodeCounts::default();
        let mut underutilized = 0;
        let mut warnings = 0;
        for n in &self.snap.nodes {
            if n.interruption.is_some() {
                warnings += 1;
            }
            let Some(pi) = self.pool_of(n) else { continue };
            current.add(
                n.capacity_type
                    .unwrap_or(self.pools[pi].state.spec.capacity_type),
                1,
            );
            if self
                .snap
                .utilization
                .nodes
                .get(&n.name)
                .is_some_and(|u| u.is_finite() && *u < self.p.scale_down_threshold)
            {
                underutilized += 1;
            }
        }
        let (mut last24, mut last7) = (0u32, 0u32);
        let mut pools_status = Vec::new();
        for pc in &self.pools {
            desired.add(pc.state.spec.capacity_type, pc.target);
            let day = now - Duration::days(1);
            last24 += pc.mem.interruptions.iter().filter(|t| **t > day).count() as u32;
            last7 += pc.mem.interruptions.len() as u32;
            pools_status.push(PoolStatus {
                name: pc.state.spec.name.clone(),
                current_nodes: pc.registered,
                desired_nodes: pc.target,
                last_scale_up_time: pc.mem.last_scale_up,
                last_scale_down_time: pc.mem.last_scale_down,
                backoff_until: pc.mem.backoff_until.filter(|t| *t > now),
                consecutive_failures: pc.mem.consecutive_failures,
                last_error: pc.mem.last_error.clone(),
                interruption_rate24h: Some(pc.rate_24h),
                interruption_rate7d: Some(pc.rate_7d),
            });
            self.mem
                .pools
                .insert(pc.state.spec.name.clone(), pc.mem.clone());
        }
        let pending = self
            .snap
            .pods
            .iter()
            .filter(|p| {
                p.node.is_none()
                    && p.gpus > 0
                    && !p.is_terminal()
                    && p.unschedulable_since.is_some()
            })
            .count() as u32;
        let predictive = self.snap.forecast.as_ref().map(|f| PredictiveStatus {
            predicted_utilization: Some(f.predicted_utilization),
            predicted_gpus: Some(f.predicted_gpus_upper),
            confidence: Some(f.confidence),
            pre_warming: self.mem.pre_warm.is_some(),
            hold_until: self.mem.pre_warm.as_ref().map(|h| h.hold_until),
        });
        let cd_down = secs(self.p.scale_down_cooldown_seconds);
        let down_remaining = [self.mem.last_scale_down, self.mem.last_scale_up]
            .into_iter()
            .flatten()
            .map(|t| (t + cd_down - now).num_seconds().max(0))
            .max()
            .unwrap_or(0);
        self.plan.status = PlanStatus {
            current_nodes: current,
            desired_nodes: desired,
            average_gpu_utilization: self.known_utilization().map(|(b, t)| b / t),
            pending_gpu_pods: pending,
            underutilized_nodes: underutilized,
            active_termination_warnings: warnings,
            interruptions_last_24h: last24,
            interruptions_last_7d: last7,
            effective_spot_share: self.shares.spot,
            predictive,
            pools: pools_status,
            scale_up_cooldown_remaining_seconds: u32::try_from(self.scale_up_cooldown_remaining())
                .unwrap_or(u32::MAX),
            scale_down_cooldown_remaining_seconds: u32::try_from(down_remaining)
                .unwrap_or(u32::MAX),
        };
        self.plan.memory = self.mem;
        self.plan
    }
}

/// The capacity types a pod may get, in its preference order (then reliability order).
/// Whether a node or shape with `labels` is outside every blocked (topology key, value).
fn domain_allows(blocked: &[(&str, String)], labels: &BTreeMap<String, String>) -> bool {
    blocked
        .iter()
        .all(|(k, v)| labels.get(*k).is_none_or(|x| x != v))
}

fn allowed_types(
    pod: &PodView,
    compat: &super::pack::Compat,
    shapes: &Shapes,
) -> Vec<CapacityType> {
    let mut present = [false; 3];
    for (si, ok) in compat.shape_ok.iter().enumerate() {
        if *ok {
            let i = CapacityType::ALL
                .iter()
                .position(|c| *c == shapes.shapes[si].capacity_type)
                .unwrap_or(0);
            present[i] = true;
        }
    }
    let mut out: Vec<CapacityType> = pod
        .tier_preference
        .iter()
        .copied()
        .filter(|ct| present[CapacityType::ALL.iter().position(|c| c == ct).unwrap_or(0)])
        .collect();
    for (i, ct) in CapacityType::ALL.iter().enumerate() {
        if present[i] && !out.contains(ct) {
            out.push(*ct);
        }
    }
    out
}

/// USD per hour per GPU that `demand` (this pod's GPUs, GPUs of its kind still to place) can
/// use on a node of `shape`; all the node's GPUs when the demand isn't tied to pods. `None`
/// when the template has no usable price.
fn price_per_useful_gpu(
    pool: &PoolState,
    shape: &Shape,
    demand: Option<(u32, u64)>,
) -> Option<f64> {
    let price = pool
        .templates
        .get(shape.template)?
        .price_per_hour
        .filter(|p| p.is_finite() && *p >= 0.0)?;
    let gpus = u64::from(shape.res.gpus);
    let useful = match demand {
        Some((pod, rest)) => gpus.min(u64::from(pod) + rest),
        None => gpus,
    };
    Some(price / useful.max(1) as f64)
}

fn record_failure(pm: &mut PoolMemory, at: DateTime<Utc>, message: String) {
    if pm.last_failure_at.is_some_and(|t| at <= t) {
        return;
    }
    pm.consecutive_failures = pm.consecutive_failures.saturating_add(1);
    let until = at + Duration::seconds(backoff_seconds(pm.consecutive_failures));
    pm.backoff_until = Some(pm.backoff_until.map_or(until, |t| t.max(until)));
    pm.last_failure_at = Some(at);
    pm.last_error = Some(message);
}
