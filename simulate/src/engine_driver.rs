//! gpu-autoscaler itself on the virtual clock: every tick the cluster is turned into the
//! engine's [`Snapshot`], [`engine::plan`] decides, and the plan is executed on the simulated
//! cloud in the controller's order. Nothing here decides anything: all scaling logic is the
//! engine's, shared with the live scaler.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use gpu_autoscaler_api::policy::TaintEffect;
use gpu_autoscaler_api::{AutoscalingPolicySpec, CapacityType, keys};
use gpu_autoscaler_scaler::engine::{
    self, EngineMemory, InFlightInstance, InstanceTemplate, InterruptionNotice, NodeView, OwnerRef,
    PodPhase, PodView, PoolState, Snapshot, Taint, Toleration, TolerationOp, UtilizationView,
};
use serde_json::json;

use crate::baselines::Autoscaler;
use crate::cluster::{Cluster, Node, Pod, PodState};
use crate::config::PoolDef;
use crate::forecast::PredictiveFeed;

/// The resource the simulated GPUs appear as.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// One log line of what the engine did, for the report and tests.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EngineLogEntry {
    pub t: i64,
    pub what: String,
}

/// Runs the shared decision engine.
pub struct EngineAutoscaler {
    pub policy: AutoscalingPolicySpec,
    pub pools: Vec<PoolDef>,
    pub interval_s: i64,
    /// Virtual time 0 as a UTC instant (the trace has no date; see docs/simulate.md).
    pub epoch: DateTime<Utc>,
    memory: EngineMemory,
    forecaster: Option<PredictiveFeed>,
    pub plans: u64,
    /// Plans that received a forecast from the predictor.
    pub forecasts: u64,
    pub scale_up_nodes: u64,
    pub terminations: u64,
    pub drains: u64,
    /// Plan event reasons (`TriggeredScaleUp`, `ScaleDown`, ...) and how often they came.
    pub event_reasons: BTreeMap<String, u64>,
    pub warnings: BTreeMap<String, u64>,
    /// The first `LOG_LIMIT` actions, in order.
    pub log: Vec<EngineLogEntry>,
    /// node name -> node id (names are unique for the run).
    by_name: BTreeMap<String, usize>,
    /// The previous snapshot, reused, with the cluster ids of its nodes and pods.
    spare: Option<Snapshot>,
    node_ids: Vec<usize>,
    /// (pod id, attempt the view's uid was made for).
    pod_ids: Vec<(usize, u32)>,
}

const LOG_LIMIT: usize = 500;

impl EngineAutoscaler {
    pub fn new(
        policy: AutoscalingPolicySpec,
        pools: Vec<PoolDef>,
        interval_s: i64,
        epoch: DateTime<Utc>,
    ) -> Self {
        Self {
            policy,
            pools,
            interval_s,
            epoch,
            memory: EngineMemory::default(),
            forecaster: None,
            plans: 0,
            forecasts: 0,
            scale_up_nodes: 0,
            terminations: 0,
            drains: 0,
            event_reasons: BTreeMap::new(),
            warnings: BTreeMap::new(),
            log: Vec::new(),
            by_name: BTreeMap::new(),
            spare: None,
            node_ids: Vec::new(),
            pod_ids: Vec::new(),
        }
    }

    pub fn with_forecaster(mut self, f: PredictiveFeed) -> Self {
        self.forecaster = Some(f);
        self
    }

    fn at(&self, t: i64) -> DateTime<Utc> {
        self.epoch + Duration::seconds(t)
    }

    fn secs(&self, t: DateTime<Utc>) -> i64 {
        (t - self.epoch).num_seconds()
    }

    fn note(&mut self, t: i64, what: String) {
        if self.log.len() < LOG_LIMIT {
            self.log.push(EngineLogEntry { t, what });
        }
    }

    /// The pools, policy and templates: fixed for the run, built once.
    fn base_snapshot(&self) -> Snapshot {
        let pools = self
            .pools
            .iter()
            .zip(&self.policy.node_pools)
            .map(|(def, spec)| PoolState {
                spec: spec.clone(),
                templates: def
                    .shapes
                    .iter()
                    .map(|s| InstanceTemplate {
                        instance_type: s.instance_type.clone(),
                        gpus: s.gpus,
                        gpu_resource: GPU_RESOURCE.into(),
                        cpu_millis: s.cpu_millis,
                        memory_bytes: s.memory_bytes,
                        price_per_hour: Some(s.price_per_hour),
                        zones: Vec::new(),
                    })
                    .collect(),
                target_size: 0,
                in_flight: Vec::new(),
                interruption_rate_24h: None,
            })
            .collect();
        Snapshot {
            now: self.epoch,
            policy: self.policy.clone(),
            pools,
            nodes: Vec::new(),
            pods: Vec::new(),
            utilization: UtilizationView {
                window_seconds: u32::try_from(self.interval_s).unwrap_or(u32::MAX),
                nodes: BTreeMap::new(),
            },
            forecast: None,
            provider_events: Vec::new(),
            memory: EngineMemory::default(),
        }
    }

    fn node_view(&self, n: &Node, now: i64) -> NodeView {
        NodeView {
            name: n.name.clone(),
            pool: Some(n.pool.clone()),
            capacity_type: Some(n.capacity),
            instance_type: Some(n.shape.instance_type.clone()),
            zone: None,
            created: self.at(n.registered_at),
            ready: true,
            gpus_capacity: n.shape.gpus,
            gpus_allocatable: 0,
            gpu_resource: Some(GPU_RESOURCE.into()),
            cpu_millis_allocatable: n.shape.cpu_millis,
            memory_bytes_allocatable: n.shape.memory_bytes,
            labels: n.labels.clone(),
            taints: node_taints(n),
            unschedulable: n.unschedulable,
            interruption: None,
            provider_id: Some(format!("sim:///{}", n.name)),
        }
        .refreshed(n, now, self)
    }

    fn pod_view(&self, p: &Pod) -> PodView {
        PodView {
            namespace: "default".into(),
            name: p.name.clone(),
            uid: String::new(),
            phase: PodPhase::Pending,
            node: None,
            gpus: p.gpus,
            gpu_resource: Some(GPU_RESOURCE.into()),
            cpu_millis: p.cpu_millis,
            memory_bytes: p.memory_bytes,
            node_selector: BTreeMap::new(),
            labels: Default::default(),
            anti_affinity: Vec::new(),
            spread: Vec::new(),
            affinity: Vec::new(),
            // The webhook adds the spot toleration exactly when the tier preference allows spot.
            tolerations: if p.tolerates_spot() {
                vec![Toleration {
                    key: Some(keys::TAINT_SPOT_KEY.into()),
                    operator: TolerationOp::Equal,
                    value: keys::TAINT_SPOT_VALUE.into(),
                    effect: Some(TaintEffect::NoSchedule),
                }]
            } else {
                Vec::new()
            },
            tier_preference: p.tier.clone(),
            eviction_priority: p.priority,
            unschedulable_since: None,
            owner: Some(OwnerRef {
                kind: "Job".into(),
                name: p.name.clone(),
            }),
            is_daemonset: false,
            is_mirror: false,
            safe_to_evict: true,
            termination_grace_seconds: None,
        }
    }

    /// The cluster as the controller would see it through the Kubernetes API. The snapshot
    /// is kept between ticks and brought up to date in place (views of unchanged pods and
    /// nodes are reused), which keeps a months-long replay fast.
    pub fn snapshot(&mut self, cluster: &Cluster) -> Snapshot {
        let now = cluster.now;
        let mut snap = self.spare.take().unwrap_or_else(|| self.base_snapshot());
        snap.now = self.at(now);
        snap.memory = std::mem::take(&mut self.memory);

        for (pool, def) in snap.pools.iter_mut().zip(&self.pools) {
            pool.target_size = 0;
            pool.in_flight.clear();
            for n in cluster.alive_nodes().filter(|n| n.pool == def.name) {
                pool.target_size += 1;
                if !n.registered(now) {
                    pool.in_flight.push(InFlightInstance {
                        instance_type: Some(n.shape.instance_type.clone()),
                        zone: None,
                        requested_at: Some(self.epoch + Duration::seconds(n.requested_at)),
                    });
                }
            }
        }

        // Nodes: reuse the previous views, in cluster order.
        let mut old_nodes: BTreeMap<usize, NodeView> = std::mem::take(&mut snap.nodes)
            .into_iter()
            .zip(std::mem::take(&mut self.node_ids))
            .map(|(v, id)| (id, v))
            .collect();
        for n in cluster.alive_nodes().filter(|n| n.registered(now)) {
            let view = match old_nodes.remove(&n.id) {
                Some(v) => v.refreshed(n, now, self),
                None => {
                    self.by_name.entry(n.name.clone()).or_insert(n.id);
                    self.node_view(n, now)
                }
            };
            snap.nodes.push(view);
            self.node_ids.push(n.id);
        }
        // Utilization proxy: the GPU shares the running pods asked for, on GPU-ready nodes.
        let util = &mut snap.utilization.nodes;
        util.retain(|name, _| {
            self.by_name
                .get(name)
                .is_some_and(|&id| cluster.nodes[id].gpus_allocatable(now))
        });
        for n in cluster.alive_nodes().filter(|n| n.gpus_allocatable(now)) {
            let u = n.used_share_milli as f64 / 1000.0 / f64::from(n.shape.gpus.max(1));
            match util.get_mut(&n.name) {
                Some(v) => *v = u,
                None => {
                    util.insert(n.name.clone(), u);
                }
            }
        }

        // Pods: same reuse.
        let mut old_pods: std::collections::HashMap<usize, (PodView, u32)> =
            std::mem::take(&mut snap.pods)
                .into_iter()
                .zip(std::mem::take(&mut self.pod_ids))
                .map(|(v, (id, attempt))| (id, (v, attempt)))
                .collect();
        for p in cluster.active_pods() {
            let (mut v, seen_attempt) = old_pods
                .remove(&p.id)
                .unwrap_or_else(|| (self.pod_view(p), u32::MAX));
            let node = match p.state {
                PodState::Running { node, .. } => Some(&cluster.nodes[node].name),
                _ => None,
            };
            if v.node.as_ref() != node {
                v.node = node.cloned();
            }
            v.phase = if node.is_some() {
                PodPhase::Running
            } else {
                PodPhase::Pending
            };
            // A restarted pod is a new pod object (new uid), as a Job controller would make.
            if seen_attempt != p.attempt {
                v.uid = format!("{}-{}", p.name, p.attempt);
            }
            v.unschedulable_since = p.unschedulable_since.map(|t| self.at(t));
            snap.pods.push(v);
            self.pod_ids.push((p.id, p.attempt));
        }

        snap.forecast = self.forecaster.as_mut().map(|f| f.view(&snap));
        snap
    }

    fn node_id(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Executes a plan in the controller's order.
    fn execute(&mut self, cluster: &mut Cluster, plan: engine::Plan) {
        let now = cluster.now;
        for r in &plan.target_reductions {
            // Drop the newest requests still in flight.
            let mut in_flight: Vec<usize> = cluster
                .alive_nodes()
                .filter(|n| n.pool == r.pool && !n.registered(now))
                .map(|n| n.id)
                .collect();
            in_flight.sort_by_key(|id| std::cmp::Reverse(cluster.nodes[*id].requested_at));
            for id in in_flight.into_iter().take(r.remove as usize) {
                cluster.terminate(id);
            }
            self.note(
                now,
                format!("target-reduction {} -{}: {}", r.pool, r.remove, r.reason),
            );
        }
        for su in &plan.scale_ups {
            let Some(def) = self.pools.iter().find(|p| p.name == su.pool).cloned() else {
                *self
                    .warnings
                    .entry(format!("scale-up for unknown pool {}", su.pool))
                    .or_default() += 1;
                continue;
            };
            let shape = su
                .instance_type
                .as_ref()
                .and_then(|t| def.shapes.iter().find(|s| &s.instance_type == t))
                .or_else(|| def.shapes.first())
                .cloned();
            let Some(shape) = shape else { continue };
            for _ in 0..su.add {
                cluster.launch(&def.name, def.capacity, &shape, def.node_labels(&shape));
            }
            self.scale_up_nodes += u64::from(su.add);
            self.note(
                now,
                format!(
                    "scale-up {} +{} {} ({:?}): {}",
                    su.pool, su.add, shape.instance_type, su.cause, su.reason
                ),
            );
        }
        for c in &plan.cordons {
            if let Some(id) = self.node_id(&c.node) {
                cluster.set_cordon(id, true);
            }
        }
        for d in &plan.drains {
            let for_interruption = d.cause == engine::DrainCause::Interruption;
            let mut first = true;
            for e in &d.evictions {
                if let Some(p) = cluster.pod_by_name(&e.pod.name) {
                    let was = cluster.pods[p].eviction_requested;
                    cluster.request_eviction(p, self.secs(e.not_before), for_interruption);
                    if first && !was {
                        self.drains += 1;
                        self.note(
                            now,
                            format!("drain {} ({:?}): {}", d.node, d.cause, d.reason),
                        );
                        first = false;
                    }
                }
            }
        }
        for t in &plan.terminations {
            if let Some(id) = self.node_id(&t.node) {
                cluster.terminate(id);
                self.terminations += 1;
                self.note(now, format!("terminate {}: {}", t.node, t.reason));
            }
        }
        for u in &plan.uncordons {
            if let Some(id) = self.node_id(&u.node) {
                cluster.set_cordon(id, false);
            }
        }
        for ev in &plan.events {
            *self.event_reasons.entry(ev.reason.clone()).or_default() += 1;
        }
        for w in &plan.warnings {
            *self.warnings.entry(w.clone()).or_default() += 1;
        }
        self.memory = plan.memory;
    }
}

impl Autoscaler for EngineAutoscaler {
    fn name(&self) -> &'static str {
        "gpu-autoscaler"
    }
    fn interval_s(&self) -> i64 {
        self.interval_s
    }
    fn tick(&mut self, cluster: &mut Cluster) {
        let snap = self.snapshot(cluster);
        let plan = engine::plan(&snap);
        self.plans += 1;
        self.forecasts += u64::from(snap.forecast.is_some());
        self.spare = Some(snap);
        self.execute(cluster, plan);
    }
    fn diagnostics(&self) -> serde_json::Value {
        json!({
            "plans": self.plans,
            "plans_with_forecast": self.forecasts,
            "nodes_requested": self.scale_up_nodes,
            "terminations": self.terminations,
            "drains": self.drains,
            "event_reasons": self.event_reasons,
            "warnings": self.warnings,
        })
    }
}

/// Taints a node carries: the spot taint on spot nodes, and the agent's interruption taint
/// once a reclaim notice is known.
fn node_taints(n: &Node) -> Vec<Taint> {
    let mut taints = Vec::new();
    if n.capacity == CapacityType::Spot {
        taints.push(Taint {
            key: keys::TAINT_SPOT_KEY.into(),
            value: keys::TAINT_SPOT_VALUE.into(),
            effect: TaintEffect::NoSchedule,
        });
    }
    if n.notice.is_some() {
        taints.push(Taint {
            key: keys::TAINT_SPOT_INTERRUPTION_KEY.into(),
            value: "true".into(),
            effect: TaintEffect::NoSchedule,
        });
    }
    taints
}

trait Refresh {
    fn refreshed(self, n: &Node, now: i64, e: &EngineAutoscaler) -> Self;
}

impl Refresh for NodeView {
    /// Updates what changes over a node's life: GPU readiness, cordon and reclaim notice.
    fn refreshed(mut self, n: &Node, now: i64, e: &EngineAutoscaler) -> Self {
        self.gpus_allocatable = if n.gpus_allocatable(now) {
            n.shape.gpus
        } else {
            0
        };
        self.unschedulable = n.unschedulable;
        let notice = match (n.notice, n.reclaim_at) {
            (Some(seen), Some(end)) => Some(InterruptionNotice {
                termination_time: e.at(end),
                noticed_at: Some(e.at(seen)),
            }),
            _ => None,
        };
        if notice != self.interruption {
            self.interruption = notice;
            self.taints = node_taints(n);
        }
        self
    }
}
