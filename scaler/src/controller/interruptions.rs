//! Spot interruptions, controller side: the per-pool history behind the interruption rates,
//! and the bookkeeping of each interruption drain (detection, cordon, replacement, outcome).
//!
//! # Rates
//! Every node seen with a `spot-interruption-warning` is recorded once, with its pool and
//! instance type, at the time the controller first saw the notice. Records older than 7 days
//! are dropped, and at most [`MAX_RECORDS_PER_POOL`] are kept per pool. The history is
//! persisted in the ConfigMap `gpu-autoscaler-interruptions-<policy>` (one key per pool, one
//! line per interruption: `<unix seconds> <instance type> <node>`), so a restarted or newly
//! elected scaler keeps its rates. From it:
//! - `rate24h = interruptions in the last 24 h / registered nodes of the pool` (interruptions
//!   per node-day, the unit of `spot.interruptionRateThreshold`), fed to the engine as
//!   [`PoolState::interruption_rate_24h`], which lowers the spot share for new capacity by
//!   `threshold / rate24h` while the rate is above the threshold;
//! - `rate7d = interruptions in the last 7 days / (7 × registered nodes)`;
//! - the same per (pool, instance type), with that type's node count, exported as
//!   `gpu_autoscaler_spot_interruption_rate{pool,instance_type,window}`.
//!
//! A notice seen in this reconcile but not recorded yet counts already, so the plan that
//! handles a burst is the first to lower the share.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::Context;
use super::metrics::{InterruptionLabels, RateLabels};
use crate::engine::{DrainCause, EngineMemory, NodeView, Plan, PodKey, PoolState, Snapshot};

/// Interruptions kept per pool (a week of one interruption every 5 minutes).
pub const MAX_RECORDS_PER_POOL: usize = 2016;
/// The long rate window.
pub const HISTORY_DAYS: i64 = 7;
/// Prefix of the history ConfigMap's name; the policy name follows.
pub const HISTORY_CONFIGMAP_PREFIX: &str = "gpu-autoscaler-interruptions-";
const FIELD_MANAGER: &str = "gpu-autoscaler-scaler";
/// Instance type recorded when the node has no instance-type label.
const UNKNOWN_TYPE: &str = "unknown";

/// One interruption notice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InterruptionRecord {
    pub at: DateTime<Utc>,
    pub instance_type: String,
    pub node: String,
}

/// Interruptions per node-day over both windows, with the counts behind them.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates {
    pub count_24h: usize,
    pub count_7d: usize,
    pub nodes: usize,
    pub rate_24h: f64,
    pub rate_7d: f64,
}

impl Rates {
    fn new(count_24h: usize, count_7d: usize, nodes: usize) -> Self {
        let n = nodes.max(1) as f64;
        Rates {
            count_24h,
            count_7d,
            nodes,
            rate_24h: count_24h as f64 / n,
            rate_7d: count_7d as f64 / (HISTORY_DAYS as f64 * n),
        }
    }
}

/// The per-pool interruption history. Pure: every method takes `now`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InterruptionHistory {
    pools: BTreeMap<String, Vec<InterruptionRecord>>,
}

impl InterruptionHistory {
    /// Records a notice unless this node's notice is already recorded. Returns whether it was new.
    pub fn record(
        &mut self,
        pool: &str,
        instance_type: &str,
        node: &str,
        at: DateTime<Utc>,
    ) -> bool {
        if self.contains(pool, node) {
            return false;
        }
        let records = self.pools.entry(pool.to_string()).or_default();
        records.push(InterruptionRecord {
            at,
            instance_type: instance_type.to_string(),
            node: node.to_string(),
        });
        records.sort();
        let excess = records.len().saturating_sub(MAX_RECORDS_PER_POOL);
        records.drain(..excess);
        true
    }

    pub fn contains(&self, pool: &str, node: &str) -> bool {
        self.pools
            .get(pool)
            .is_some_and(|r| r.iter().any(|r| r.node == node))
    }

    /// Drops records older than the long window. Returns whether anything was dropped.
    pub fn prune(&mut self, now: DateTime<Utc>) -> bool {
        let horizon = now - Duration::days(HISTORY_DAYS);
        let mut changed = false;
        for records in self.pools.values_mut() {
            let before = records.len();
            records.retain(|r| r.at > horizon);
            changed |= records.len() != before;
        }
        self.pools.retain(|_, r| !r.is_empty());
        changed
    }

    pub fn records(&self, pool: &str) -> &[InterruptionRecord] {
        self.pools.get(pool).map_or(&[], Vec::as_slice)
    }

    /// Merges another history in (a reload after a leader change), deduplicating by node.
    pub fn merge(&mut self, other: &InterruptionHistory) {
        for (pool, records) in &other.pools {
            for r in records {
                self.record(pool, &r.instance_type, &r.node, r.at);
            }
        }
    }

    /// Rates of a pool, or of one instance type in it, given its registered node count.
    pub fn rates(
        &self,
        pool: &str,
        instance_type: Option<&str>,
        nodes: usize,
        now: DateTime<Utc>,
    ) -> Rates {
        let day = now - Duration::days(1);
        let week = now - Duration::days(HISTORY_DAYS);
        let of_type = self
            .records(pool)
            .iter()
            .filter(|r| instance_type.is_none_or(|t| r.instance_type == t));
        let (mut c24, mut c7) = (0, 0);
        for r in of_type {
            if r.at > week {
                c7 += 1;
            }
            if r.at > day {
                c24 += 1;
            }
        }
        Rates::new(c24, c7, nodes)
    }

    /// The ConfigMap data: one key per pool, one `<unix seconds> <instance type> <node>` line
    /// per interruption, oldest first.
    pub fn encode(&self) -> BTreeMap<String, String> {
        self.pools
            .iter()
            .map(|(pool, records)| {
                let lines: Vec<String> = records
                    .iter()
                    .map(|r| format!("{} {} {}", r.at.timestamp(), r.instance_type, r.node))
                    .collect();
                (pool.clone(), lines.join("\n"))
            })
            .collect()
    }

    /// Reads [`encode`](Self::encode)'s format; malformed lines are skipped.
    pub fn decode(data: &BTreeMap<String, String>) -> Self {
        let mut h = InterruptionHistory::default();
        for (pool, text) in data {
            for line in text.lines() {
                let mut parts = line.split_whitespace();
                let (Some(secs), Some(instance_type), Some(node)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let Some(at) = secs
                    .parse::<i64>()
                    .ok()
                    .and_then(|s| DateTime::from_timestamp(s, 0))
                else {
                    continue;
                };
                h.record(pool, instance_type, node, at);
            }
        }
        h
    }
}

/// Registered nodes per pool and per (pool, instance type).
fn node_counts(nodes: &[NodeView]) -> (BTreeMap<String, usize>, BTreeMap<(String, String), usize>) {
    let mut per_pool = BTreeMap::new();
    let mut per_type = BTreeMap::new();
    for n in nodes {
        let Some(pool) = &n.pool else { continue };
        *per_pool.entry(pool.clone()).or_default() += 1;
        let t = n
            .instance_type
            .clone()
            .unwrap_or_else(|| UNKNOWN_TYPE.into());
        *per_type.entry((pool.clone(), t)).or_default() += 1;
    }
    (per_pool, per_type)
}

/// The history plus this reconcile's notices not yet recorded (recorded after the plan, once
/// the engine has acted on them), so the plan that first sees a burst already reacts to it.
pub fn with_unrecorded(
    history: &InterruptionHistory,
    nodes: &[NodeView],
    first_seen: &HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> InterruptionHistory {
    let mut h = history.clone();
    for n in nodes.iter().filter(|n| n.interruption.is_some()) {
        let Some(pool) = &n.pool else { continue };
        let at = first_seen.get(&n.name).copied().unwrap_or(now);
        h.record(
            pool,
            n.instance_type.as_deref().unwrap_or(UNKNOWN_TYPE),
            &n.name,
            at,
        );
    }
    h
}

/// Sets each pool's measured 24 h rate for the engine. Pure.
pub fn apply_rates(
    history: &InterruptionHistory,
    pools: &mut [PoolState],
    nodes: &[NodeView],
    now: DateTime<Utc>,
) {
    let (per_pool, _) = node_counts(nodes);
    for p in pools {
        let count = per_pool.get(&p.spec.name).copied().unwrap_or(0);
        p.interruption_rate_24h = Some(history.rates(&p.spec.name, None, count, now).rate_24h);
    }
}

/// Replaces the engine memory's per-pool interruption times with the history's, so the
/// engine's 7-day figures survive restarts and leader changes.
pub fn fill_memory(history: &InterruptionHistory, memory: &mut EngineMemory) {
    for (pool, records) in &history.pools {
        memory.pools.entry(pool.clone()).or_default().interruptions =
            records.iter().map(|r| r.at).collect();
    }
}

/// An interruption drain being followed.
#[derive(Debug, Clone)]
struct DrainWatch {
    detected: DateTime<Utc>,
    deadline: Option<DateTime<Utc>>,
    started: bool,
    finished: bool,
    cordon_observed: bool,
    replacement_observed: bool,
    deadline_reported: bool,
    /// Evictions of this drain the apiserver accepted, and when.
    evicted: HashMap<PodKey, DateTime<Utc>>,
}

/// Controller state for interruptions (one per replica, in [`Context`]).
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    history: InterruptionHistory,
    /// Whether `history` reflects the ConfigMap (never write before it does).
    loaded: bool,
    dirty: bool,
    drains: HashMap<String, DrainWatch>,
}

impl Tracker {
    /// The first successful cordon of an interrupted node; returns the detection → cordon
    /// latency once per node.
    pub fn cordoned(&mut self, node: &str, at: DateTime<Utc>) -> Option<f64> {
        let d = self.drains.get_mut(node)?;
        if d.cordon_observed {
            return None;
        }
        d.cordon_observed = true;
        Some(seconds(at - d.detected))
    }

    /// A replacement scale-up for pods of `node` went out; returns notice → request latency
    /// once per node.
    pub fn replacement_requested(&mut self, node: &str, at: DateTime<Utc>) -> Option<f64> {
        let d = self.drains.get_mut(node)?;
        if d.replacement_observed {
            return None;
        }
        d.replacement_observed = true;
        Some(seconds(at - d.detected))
    }

    /// The apiserver accepted (or no longer needs) the eviction of `pod` from `node`.
    pub fn evicted(&mut self, node: &str, pod: &PodKey, at: DateTime<Utc>) {
        if let Some(d) = self.drains.get_mut(node) {
            d.evicted.entry(pod.clone()).or_insert(at);
        }
    }

    /// The detection times of the nodes being followed.
    fn first_seen(&self) -> HashMap<String, DateTime<Utc>> {
        self.drains
            .iter()
            .map(|(k, v)| (k.clone(), v.detected))
            .collect()
    }
}

fn seconds(d: Duration) -> f64 {
    d.num_milliseconds().max(0) as f64 / 1000.0
}

fn configmap_name(policy: &str) -> String {
    format!("{HISTORY_CONFIGMAP_PREFIX}{policy}")
}

/// Before planning: (re)load the history if needed, note new notices, feed the rates.
/// `restoring` is true when the engine memory is being rebuilt (start, new leadership): the
/// history is then re-read too, since another replica may have written it meanwhile.
pub(crate) async fn before_plan(
    ctx: &mut Context,
    nodes: &[NodeView],
    pools: &mut [PoolState],
    restoring: bool,
    now: DateTime<Utc>,
) {
    if restoring {
        ctx.interruptions.loaded = false;
    }
    if !ctx.interruptions.loaded {
        let api: kube::Api<ConfigMap> =
            kube::Api::namespaced(ctx.client.clone(), &ctx.config.state_namespace);
        match api.get_opt(&configmap_name(&ctx.config.policy)).await {
            Ok(cm) => {
                let stored =
                    InterruptionHistory::decode(&cm.and_then(|c| c.data).unwrap_or_default());
                let t = &mut ctx.interruptions;
                t.history.merge(&stored);
                // Anything we knew that the ConfigMap lacked must be written back.
                t.dirty |= t.history != stored;
                t.loaded = true;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the interruption history failed; rates use what this replica saw");
            }
        }
    }
    let t = &mut ctx.interruptions;
    t.dirty |= t.history.prune(now);
    // Follow every node under notice; forget nodes that are gone or no longer warned.
    let warned: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| n.interruption.is_some())
        .map(|n| n.name.as_str())
        .collect();
    t.drains.retain(|name, _| warned.contains(name.as_str()));
    for n in nodes {
        let Some(notice) = &n.interruption else {
            continue;
        };
        let w = t
            .drains
            .entry(n.name.clone())
            .or_insert_with(|| DrainWatch {
                detected: notice.noticed_at.unwrap_or(now),
                deadline: None,
                started: false,
                finished: false,
                // Already cordoned when first seen (the agent does it): not ours to time.
                cordon_observed: n.unschedulable,
                replacement_observed: false,
                deadline_reported: false,
                evicted: HashMap::new(),
            });
        if w.cordon_observed && !n.unschedulable {
            w.cordon_observed = false;
        }
    }
    let effective = with_unrecorded(&t.history, nodes, &t.first_seen(), now);
    apply_rates(&effective, pools, nodes, now);
}

/// Overwrites the engine memory's interruption times with the history's.
pub(crate) fn prepare_memory(ctx: &Context, memory: &mut EngineMemory) {
    fill_memory(&ctx.interruptions.history, memory);
}

/// After executing: record newly handled notices, persist the history, follow drains to
/// their end, export rates.
pub(crate) async fn after_plan(ctx: &mut Context, snap: &Snapshot, plan: &Plan) {
    let now = snap.now;
    // 1. Record notices the engine acted on.
    let first_seen = ctx.interruptions.first_seen();
    for n in snap.nodes.iter().filter(|n| n.interruption.is_some()) {
        let Some(pool) = &n.pool else { continue };
        let handled = plan
            .memory
            .nodes
            .get(&n.name)
            .is_some_and(|m| m.interruption_handled.is_some());
        if !handled {
            continue;
        }
        let at = first_seen.get(&n.name).copied().unwrap_or(now);
        let instance_type = n.instance_type.as_deref().unwrap_or(UNKNOWN_TYPE);
        if ctx
            .interruptions
            .history
            .record(pool, instance_type, &n.name, at)
        {
            ctx.interruptions.dirty = true;
            ctx.metrics
                .spot_interruptions
                .get_or_create(&InterruptionLabels {
                    pool: pool.clone(),
                    instance_type: instance_type.to_string(),
                })
                .inc();
        }
    }
    persist(ctx).await;

    // 2. Drains. One is finished once every pod in it was asked to stop (its eviction
    //    accepted, or the pod already terminating or gone): pods evicted with a grace period
    //    stay on the node until it runs out, which is the point of the grace period.
    let draining: HashMap<&str, &crate::engine::Drain> = plan
        .drains
        .iter()
        .filter(|d| d.cause == DrainCause::Interruption)
        .map(|d| (d.node.as_str(), d))
        .collect();
    let mut finished = Vec::new();
    let mut overdue = Vec::new();
    let pods = &ctx.pods;
    for (node, w) in ctx.interruptions.drains.iter_mut() {
        let Some(d) = draining.get(node.as_str()) else {
            if w.started && !w.finished {
                w.finished = true;
                let at = w.evicted.values().max().copied().unwrap_or(now);
                finished.push((node.clone(), at, w.detected, w.deadline));
            }
            continue;
        };
        w.started = true;
        w.deadline = d.deadline.or(w.deadline);
        if w.finished {
            continue;
        }
        let asked = |e: &crate::engine::Eviction| {
            w.evicted.contains_key(&e.pod)
                || pods.get(&e.pod.namespace, &e.pod.name).is_none_or(|p| {
                    p.deletion.is_some() || p.view.uid != e.uid && !e.uid.is_empty()
                })
        };
        let left: Vec<&crate::engine::Eviction> =
            d.evictions.iter().filter(|e| !asked(e)).collect();
        if left.is_empty() {
            w.finished = true;
            let at = w.evicted.values().max().copied().unwrap_or(now);
            finished.push((node.clone(), at, w.detected, w.deadline));
        } else if let Some(deadline) = w.deadline
            && now > deadline
            && !w.deadline_reported
        {
            w.deadline_reported = true;
            overdue.push((
                node.clone(),
                left.iter().map(|e| e.priority).collect::<Vec<_>>(),
                left.iter()
                    .map(|e| format!("{} ({})", e.pod, e.priority))
                    .collect::<Vec<_>>(),
            ));
        }
    }
    for (node, at, detected, deadline) in finished {
        let took = seconds(at - detected);
        let in_time = deadline.is_none_or(|d| at <= d);
        ctx.metrics
            .interruption_drain_seconds
            .get_or_create(&super::metrics::DrainResultLabels {
                result: if in_time {
                    "before_deadline"
                } else {
                    "after_deadline"
                },
            })
            .observe(took);
        let slack = deadline.map(|d| seconds(d - at)).unwrap_or(0.0);
        tracing::info!(%node, seconds = took, in_time, slack_seconds = slack, "interruption drain finished");
        super::status::publish(
            ctx,
            super::status::node_ref(&node),
            !in_time,
            "InterruptionDrained",
            format!(
                "every pod was asked to stop {took:.1}s after the notice was seen{}",
                deadline.map_or(String::new(), |d| if in_time {
                    format!(", {slack:.1}s before the drain deadline {}", d.to_rfc3339())
                } else {
                    format!(", after the drain deadline {}", d.to_rfc3339())
                })
            ),
            "Drain",
        )
        .await;
    }
    for (node, priorities, left) in overdue {
        for p in priorities {
            ctx.metrics
                .drain_evictions
                .get_or_create(&super::metrics::DrainLabels {
                    cause: "interruption",
                    priority: p.as_str(),
                    outcome: "deadline_missed",
                })
                .inc();
        }
        tracing::warn!(%node, pods = ?left, "interruption drain deadline passed with pods not evicted");
        super::status::publish(
            ctx,
            super::status::node_ref(&node),
            true,
            "DrainDeadlineMissed",
            format!(
                "the drain deadline passed before these pods could be evicted (still retried until the node goes): {}",
                left.join(", ")
            ),
            "Drain",
        )
        .await;
    }

    // 3. Rates per pool and instance type.
    let (per_pool, per_type) = node_counts(&snap.nodes);
    let h = &ctx.interruptions.history;
    let mut series: Vec<(String, String, Rates)> = Vec::new();
    for pool in snap.pools.iter().map(|p| p.spec.name.clone()) {
        let count = per_pool.get(&pool).copied().unwrap_or(0);
        series.push((pool.clone(), "all".into(), h.rates(&pool, None, count, now)));
        let types: BTreeSet<String> = h
            .records(&pool)
            .iter()
            .map(|r| r.instance_type.clone())
            .chain(
                per_type
                    .keys()
                    .filter(|(p, _)| *p == pool)
                    .map(|(_, t)| t.clone()),
            )
            .collect();
        for t in types {
            let count = per_type
                .get(&(pool.clone(), t.clone()))
                .copied()
                .unwrap_or(0);
            series.push((
                pool.clone(),
                t.clone(),
                h.rates(&pool, Some(&t), count, now),
            ));
        }
    }
    for (pool, instance_type, r) in series {
        for (window, v) in [("24h", r.rate_24h), ("7d", r.rate_7d)] {
            ctx.metrics
                .spot_interruption_rate
                .get_or_create(&RateLabels {
                    pool: pool.clone(),
                    instance_type: instance_type.clone(),
                    window,
                })
                .set(v);
        }
    }
}

/// Writes the history when it changed and reflects the ConfigMap (server-side apply, so a
/// crash between two writes leaves the last complete one).
async fn persist(ctx: &mut Context) {
    let t = &ctx.interruptions;
    if !t.dirty || !t.loaded {
        return;
    }
    let name = configmap_name(&ctx.config.policy);
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": ctx.config.state_namespace,
            "labels": { "app.kubernetes.io/managed-by": "gpu-autoscaler" },
        },
        "data": t.history.encode(),
    });
    let api: kube::Api<ConfigMap> =
        kube::Api::namespaced(ctx.client.clone(), &ctx.config.state_namespace);
    // Apply replaces the keys this manager owns: pools that aged out disappear too.
    match api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
    {
        Ok(_) => ctx.interruptions.dirty = false,
        Err(e) => {
            tracing::warn!(error = %e, "persisting the interruption history failed; retrying next reconcile")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::InterruptionNotice;
    use crate::engine::testing::{node_pool, pool_state};
    use chrono::TimeZone;
    use gpu_autoscaler_api::CapacityType;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn node(name: &str, pool: &str, instance_type: &str, warned: bool) -> NodeView {
        let mut n: NodeView = serde_json::from_value(json!({
            "name": name, "pool": pool, "capacity_type": null, "instance_type": instance_type,
            "zone": null, "created": t0(), "ready": true, "gpus_capacity": 4,
            "gpus_allocatable": 4, "gpu_resource": null, "cpu_millis_allocatable": 0,
            "memory_bytes_allocatable": 0, "labels": {}, "taints": [], "unschedulable": false,
            "interruption": null, "provider_id": null,
        }))
        .expect("node view");
        if warned {
            n.interruption = Some(InterruptionNotice {
                termination_time: t0() + Duration::seconds(120),
                noticed_at: None,
            });
        }
        n
    }

    #[test]
    fn history_round_trips_dedupes_prunes_and_bounds() {
        let mut h = InterruptionHistory::default();
        assert!(h.record("spot", "p3.8xlarge", "n1", t0() - Duration::hours(2)));
        assert!(
            !h.record("spot", "p3.8xlarge", "n1", t0()),
            "one notice per node"
        );
        assert!(h.record("spot", "g5.12xlarge", "n2", t0() - Duration::days(3)));
        assert!(h.record("spot", "g5.12xlarge", "n3", t0() - Duration::days(8)));
        let data = h.encode();
        assert_eq!(data.len(), 1);
        assert!(data["spot"].lines().all(|l| l.split(' ').count() == 3));
        let mut back = InterruptionHistory::decode(&data);
        assert_eq!(back, h);
        assert!(back.prune(t0()));
        assert_eq!(back.records("spot").len(), 2);
        assert!(!back.prune(t0()));
        // Garbage lines are skipped, not fatal.
        let junk = BTreeMap::from([("spot".to_string(), "x y z\n12\n100 t n".to_string())]);
        assert_eq!(InterruptionHistory::decode(&junk).records("spot").len(), 1);
        // Bounded per pool.
        let mut big = InterruptionHistory::default();
        for i in 0..(MAX_RECORDS_PER_POOL + 10) {
            big.record(
                "p",
                "t",
                &format!("n{i}"),
                t0() - Duration::seconds(i as i64),
            );
        }
        assert_eq!(big.records("p").len(), MAX_RECORDS_PER_POOL);
        // The newest are kept.
        assert!(big.records("p").iter().any(|r| r.at == t0()));
    }

    #[test]
    fn rates_per_pool_and_instance_type() {
        let mut h = InterruptionHistory::default();
        h.record("spot", "a", "n1", t0() - Duration::hours(1));
        h.record("spot", "a", "n2", t0() - Duration::hours(30));
        h.record("spot", "b", "n3", t0() - Duration::hours(2));
        let pool = h.rates("spot", None, 10, t0());
        assert_eq!((pool.count_24h, pool.count_7d), (2, 3));
        assert!((pool.rate_24h - 0.2).abs() < 1e-12);
        assert!((pool.rate_7d - 3.0 / 70.0).abs() < 1e-12);
        let a = h.rates("spot", Some("a"), 4, t0());
        assert_eq!((a.count_24h, a.count_7d), (1, 2));
        assert!((a.rate_24h - 0.25).abs() < 1e-12);
        // No node registered: divided by one, never by zero.
        assert!((h.rates("spot", Some("b"), 0, t0()).rate_24h - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_controller_feeds_rates_including_this_reconciles_notices() {
        let mut nodes: Vec<NodeView> = (0..10)
            .map(|i| node(&format!("n{i}"), "spot", "p3.8xlarge", false))
            .collect();
        let mut pools = vec![pool_state(node_pool(
            "spot",
            CapacityType::Spot,
            0,
            10,
            &["p3.8xlarge"],
            &[],
        ))];
        let h = InterruptionHistory::default();
        apply_rates(&h, &mut pools, &nodes, t0());
        assert_eq!(pools[0].interruption_rate_24h, Some(0.0));
        // Three notices arrive: counted in this very reconcile, before they are recorded.
        for n in nodes.iter_mut().take(3) {
            *n = node(&n.name, "spot", "p3.8xlarge", true);
        }
        let effective = with_unrecorded(&h, &nodes, &HashMap::new(), t0());
        apply_rates(&effective, &mut pools, &nodes, t0());
        let rate = pools[0].interruption_rate_24h.unwrap_or_default();
        assert!((rate - 0.3).abs() < 1e-12, "{rate}");
        // And the engine memory gets the same times (7-day figures survive restarts).
        let mut memory = EngineMemory::default();
        fill_memory(&effective, &mut memory);
        assert_eq!(memory.pools["spot"].interruptions.len(), 3);
    }
}
