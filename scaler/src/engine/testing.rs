//! A tiny virtual cluster on a virtual clock that applies plans, for multi-step scenarios in
//! tests and for `simulate`.
//!
//! It models what matters to the engine and nothing else: pool targets and launches (nodes
//! register `boot_delay` after the request and expose their GPUs `gpu_ready_delay` later),
//! injected provider failures, a first-fit scheduler that honours the same selector, taint,
//! tier and resource rules as the engine, evictions at their `not_before` time (owned pods
//! come back as pending pods, bare pods vanish), spot interruptions, and utilization either
//! derived from GPU allocation or set per node (a node absent from both is "unknown").

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use gpu_autoscaler_api::{AutoscalingPolicySpec, CapacityType, EvictionPriority, keys};

use super::matching::{self, NodeFace};
use super::model::*;
use super::pack::{Res, shape_labels, shape_taints, template_zones};

/// Real AWS GPU instance specs (vCPU, memory MiB, GPUs) from
/// `shared/data/pricing/aws_gpu_instance_specs.csv`; no prices (none are invented here).
pub const AWS_SPECS: &[(&str, u64, u64, u32)] = &[
    ("g4dn.xlarge", 4, 16_384, 1),
    ("g4dn.2xlarge", 8, 32_768, 1),
    ("g4dn.12xlarge", 48, 196_608, 4),
    ("g5.xlarge", 4, 16_384, 1),
    ("g5.12xlarge", 48, 196_608, 4),
    ("g5.48xlarge", 192, 786_432, 8),
    ("p3.2xlarge", 8, 62_464, 1),
    ("p3.8xlarge", 32, 249_856, 4),
    ("p3.16xlarge", 64, 499_712, 8),
    ("p4d.24xlarge", 96, 1_179_648, 8),
];

/// A template for one of [`AWS_SPECS`] (whole machine as allocatable, `nvidia.com/gpu`).
pub fn aws_template(instance_type: &str) -> Option<InstanceTemplate> {
    AWS_SPECS
        .iter()
        .find(|(t, ..)| *t == instance_type)
        .map(|(t, vcpu, mib, gpus)| InstanceTemplate {
            instance_type: (*t).to_string(),
            gpus: *gpus,
            gpu_resource: "nvidia.com/gpu".into(),
            cpu_millis: vcpu * 1000,
            memory_bytes: mib * 1024 * 1024,
            price_per_hour: None,
            zones: Vec::new(),
        })
}

/// A node pool definition with the usual labels; spot pools get the spot taint from the
/// engine's own rules.
pub fn node_pool(
    name: &str,
    ct: CapacityType,
    min: u32,
    max: u32,
    types: &[&str],
    zones: &[&str],
) -> NodePool {
    NodePool {
        name: name.into(),
        min_size: min,
        max_size: max,
        gpu_type: None,
        instance_types: types.iter().map(|s| s.to_string()).collect(),
        capacity_type: ct,
        spot_percentage: None,
        priority: 0,
        labels: BTreeMap::new(),
        taints: Vec::new(),
        availability_zones: zones.iter().map(|s| s.to_string()).collect(),
    }
}

/// A pool state for `spec` with AWS templates for its instance types.
pub fn pool_state(spec: NodePool) -> PoolState {
    let templates = spec
        .instance_types
        .iter()
        .filter_map(|t| aws_template(t))
        .collect();
    PoolState {
        spec,
        templates,
        target_size: 0,
        in_flight: Vec::new(),
        interruption_rate_24h: None,
    }
}

/// A Deployment-owned GPU pod, unbound, with 1 CPU and 4 GiB per GPU.
pub fn gpu_pod(name: &str, gpus: u32) -> PodView {
    PodView {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        node: None,
        gpus,
        gpu_resource: Some("nvidia.com/gpu".into()),
        cpu_millis: 1000 * u64::from(gpus.max(1)),
        memory_bytes: 4 * 1024 * 1024 * 1024 * u64::from(gpus.max(1)),
        node_selector: BTreeMap::new(),
        labels: Default::default(),
        anti_affinity: Vec::new(),
        spread: Vec::new(),
        affinity: Vec::new(),
        tolerations: Vec::new(),
        tier_preference: Vec::new(),
        eviction_priority: EvictionPriority::Medium,
        unschedulable_since: None,
        owner: Some(OwnerRef {
            kind: "ReplicaSet".into(),
            name: format!("{name}-rs"),
        }),
        is_daemonset: false,
        is_mirror: false,
        safe_to_evict: true,
        termination_grace_seconds: None,
        phase: PodPhase::Pending,
    }
}

/// The toleration the webhook adds to pods whose tier preference allows spot.
pub fn spot_toleration() -> Toleration {
    Toleration {
        key: Some(keys::TAINT_SPOT_KEY.into()),
        operator: TolerationOp::Equal,
        value: keys::TAINT_SPOT_VALUE.into(),
        effect: Some(gpu_autoscaler_api::policy::TaintEffect::NoSchedule),
    }
}

/// Sets a tier preference the way the webhook would (toleration included when spot allowed).
pub fn with_tiers(mut pod: PodView, tiers: &[CapacityType]) -> PodView {
    pod.tier_preference = tiers.to_vec();
    if tiers.contains(&CapacityType::Spot) && !pod.tolerations.contains(&spot_toleration()) {
        pod.tolerations.push(spot_toleration());
    }
    pod
}

/// How a pool's provider misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureMode {
    /// Scale-ups are refused with an insufficient-capacity event.
    InsufficientCapacity,
    /// Scale-ups are refused with an API error event.
    Error,
    /// The target is accepted but no instance ever registers.
    Silent,
}

#[derive(Debug, Clone)]
struct Launch {
    instance_type: Option<String>,
    zone: Option<String>,
    requested_at: DateTime<Utc>,
}

/// A provider group in the virtual cloud.
#[derive(Debug, Clone)]
pub struct VirtualPool {
    pub state: PoolState,
    pub failure: Option<FailureMode>,
    launches: VecDeque<Launch>,
}

/// Something the virtual cluster did, for assertions.
#[derive(Debug, Clone, PartialEq)]
pub enum Happening {
    ScaleUpRequested {
        pool: String,
        add: u32,
        cause: ScaleUpCause,
    },
    ScaleUpRefused {
        pool: String,
    },
    NodeRegistered {
        node: String,
        pool: String,
    },
    Evicted {
        pod: PodKey,
        node: String,
        priority: EvictionPriority,
        grace_seconds: Option<u32>,
    },
    Terminated {
        node: String,
        pool: String,
    },
    Reclaimed {
        node: String,
    },
}

/// The virtual cluster.
#[derive(Debug, Clone)]
pub struct VirtualCluster {
    pub now: DateTime<Utc>,
    pub policy: AutoscalingPolicySpec,
    pub pools: Vec<VirtualPool>,
    pub nodes: Vec<NodeView>,
    pub pods: Vec<PodView>,
    pub boot_delay: Duration,
    pub gpu_ready_delay: Duration,
    /// Derive a node's utilization from its allocated GPUs (allocated / allocatable).
    pub utilization_from_allocation: bool,
    /// Per-node utilization that wins over the derived one; `None` = unknown.
    pub utilization_overrides: BTreeMap<String, Option<f64>>,
    pub forecast: Option<ForecastView>,
    pub memory: EngineMemory,
    /// Events delivered with the next snapshot.
    pub provider_events: Vec<ProviderEvent>,
    /// Everything that happened, with its time.
    pub log: Vec<(DateTime<Utc>, Happening)>,
    scheduled_evictions: Vec<(DateTime<Utc>, String, Eviction)>,
    seq: u64,
}

impl VirtualCluster {
    pub fn new(now: DateTime<Utc>, policy: AutoscalingPolicySpec, pools: Vec<PoolState>) -> Self {
        Self {
            now,
            policy,
            pools: pools
                .into_iter()
                .map(|state| VirtualPool {
                    state,
                    failure: None,
                    launches: VecDeque::new(),
                })
                .collect(),
            nodes: Vec::new(),
            pods: Vec::new(),
            boot_delay: Duration::seconds(90),
            gpu_ready_delay: Duration::seconds(30),
            utilization_from_allocation: true,
            utilization_overrides: BTreeMap::new(),
            forecast: None,
            memory: EngineMemory::default(),
            provider_events: Vec::new(),
            log: Vec::new(),
            scheduled_evictions: Vec::new(),
            seq: 0,
        }
    }

    pub fn pool_mut(&mut self, name: &str) -> Option<&mut VirtualPool> {
        self.pools.iter_mut().find(|p| p.state.spec.name == name)
    }

    pub fn pool(&self, name: &str) -> Option<&VirtualPool> {
        self.pools.iter().find(|p| p.state.spec.name == name)
    }

    /// Adds a pod (unbound pods are picked up by the scheduler on the next `advance`).
    pub fn add_pod(&mut self, pod: PodView) {
        self.pods.push(pod);
    }

    /// Registers a ready, GPU-ready node of `pool` right now (a pre-existing node).
    pub fn add_ready_node(
        &mut self,
        pool: &str,
        instance_type: &str,
        zone: Option<&str>,
    ) -> Option<String> {
        let pi = self.pools.iter().position(|p| p.state.spec.name == pool)?;
        let name = self.register(
            pi,
            Some(instance_type.to_string()),
            zone.map(str::to_string),
            true,
        )?;
        self.pools[pi].state.target_size += 1;
        Some(name)
    }

    /// Announces a spot interruption for `node`, `notice` from now.
    pub fn interrupt(&mut self, node: &str, notice: Duration) {
        let now = self.now;
        if let Some(n) = self.nodes.iter_mut().find(|n| n.name == node) {
            n.interruption = Some(InterruptionNotice {
                termination_time: now + notice,
                noticed_at: Some(now),
            });
            n.taints.push(Taint {
                key: keys::TAINT_SPOT_INTERRUPTION_KEY.into(),
                value: String::new(),
                effect: gpu_autoscaler_api::policy::TaintEffect::NoSchedule,
            });
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut util = BTreeMap::new();
        for n in &self.nodes {
            let v = match self.utilization_overrides.get(&n.name) {
                Some(v) => *v,
                None if self.utilization_from_allocation && n.gpus_allocatable > 0 => {
                    let used: u32 = self
                        .pods
                        .iter()
                        .filter(|p| p.node.as_deref() == Some(n.name.as_str()))
                        .map(|p| p.gpus)
                        .sum();
                    Some(f64::from(used.min(n.gpus_allocatable)) / f64::from(n.gpus_allocatable))
                }
                None => None,
            };
            if let Some(v) = v {
                util.insert(n.name.clone(), v);
            }
        }
        Snapshot {
            now: self.now,
            policy: self.policy.clone(),
            pools: self
                .pools
                .iter()
                .map(|p| {
                    let mut s = p.state.clone();
                    s.in_flight = p
                        .launches
                        .iter()
                        .map(|l| InFlightInstance {
                            instance_type: l.instance_type.clone(),
                            zone: l.zone.clone(),
                            requested_at: Some(l.requested_at),
                        })
                        .collect();
                    s
                })
                .collect(),
            nodes: self.nodes.clone(),
            pods: self.pods.clone(),
            utilization: UtilizationView {
                window_seconds: 60,
                nodes: util,
            },
            forecast: self.forecast.clone(),
            provider_events: self.provider_events.clone(),
            memory: self.memory.clone(),
        }
    }

    /// Applies a plan at the current time (evictions due later wait for `advance`).
    pub fn apply(&mut self, plan: &Plan) {
        let now = self.now;
        self.provider_events.clear();
        for r in &plan.target_reductions {
            if let Some(p) = self.pool_mut(&r.pool) {
                for _ in 0..r.remove {
                    p.launches.pop_back();
                }
                p.state.target_size = r.new_target;
            }
        }
        for su in &plan.scale_ups {
            let Some(pi) = self.pools.iter().position(|p| p.state.spec.name == su.pool) else {
                continue;
            };
            let p = &mut self.pools[pi];
            if let Some(mode @ (FailureMode::InsufficientCapacity | FailureMode::Error)) = p.failure
            {
                let kind = if mode == FailureMode::Error {
                    ProviderEventKind::ScaleUpFailed {
                        message: "simulated API error".into(),
                    }
                } else {
                    ProviderEventKind::InsufficientCapacity {
                        instance_type: su.instance_type.clone(),
                        zone: su.zone.clone(),
                        message: "simulated insufficient capacity".into(),
                    }
                };
                self.provider_events.push(ProviderEvent {
                    pool: su.pool.clone(),
                    at: now,
                    kind,
                });
                self.log.push((
                    now,
                    Happening::ScaleUpRefused {
                        pool: su.pool.clone(),
                    },
                ));
                continue;
            }
            p.state.target_size += su.add;
            for _ in 0..su.add {
                p.launches.push_back(Launch {
                    instance_type: su.instance_type.clone(),
                    zone: su.zone.clone(),
                    requested_at: now,
                });
            }
            self.log.push((
                now,
                Happening::ScaleUpRequested {
                    pool: su.pool.clone(),
                    add: su.add,
                    cause: su.cause,
                },
            ));
        }
        for c in &plan.cordons {
            if let Some(n) = self.nodes.iter_mut().find(|n| n.name == c.node) {
                n.unschedulable = true;
            }
        }
        for d in &plan.drains {
            for e in &d.evictions {
                let dup = self
                    .scheduled_evictions
                    .iter()
                    .any(|(_, node, x)| node == &d.node && x.pod == e.pod);
                if !dup {
                    self.scheduled_evictions
                        .push((e.not_before, d.node.clone(), e.clone()));
                }
            }
        }
        self.run_due_evictions();
        for t in &plan.terminations {
            self.remove_node(&t.node);
            if let Some(p) = self.pool_mut(&t.pool) {
                p.state.target_size = p.state.target_size.saturating_sub(1);
            }
            self.log.push((
                now,
                Happening::Terminated {
                    node: t.node.clone(),
                    pool: t.pool.clone(),
                },
            ));
        }
        for u in &plan.uncordons {
            if let Some(n) = self.nodes.iter_mut().find(|n| n.name == u.node) {
                n.unschedulable = false;
            }
        }
        self.memory = plan.memory.clone();
    }

    /// Moves the clock: due evictions, reclaimed spot nodes, registrations, GPU readiness,
    /// then one scheduling pass.
    pub fn advance(&mut self, dt: Duration) {
        self.now += dt;
        let now = self.now;
        self.run_due_evictions();
        let reclaimed: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| {
                n.interruption
                    .as_ref()
                    .is_some_and(|i| i.termination_time <= now)
            })
            .map(|n| n.name.clone())
            .collect();
        for name in reclaimed {
            let pool = self
                .nodes
                .iter()
                .find(|n| n.name == name)
                .and_then(|n| n.pool.clone());
            self.remove_node(&name);
            if let Some(p) = pool
                .as_deref()
                .and_then(|p| self.pools.iter_mut().find(|x| x.state.spec.name == p))
            {
                p.state.target_size = p.state.target_size.saturating_sub(1);
            }
            self.log.push((now, Happening::Reclaimed { node: name }));
        }
        for pi in 0..self.pools.len() {
            if self.pools[pi].failure == Some(FailureMode::Silent) {
                continue;
            }
            while let Some(l) = self.pools[pi].launches.front().cloned() {
                if l.requested_at + self.boot_delay > now {
                    break;
                }
                self.pools[pi].launches.pop_front();
                let at = l.requested_at + self.boot_delay;
                if let Some(name) = self.register(pi, l.instance_type, l.zone, false)
                    && let Some(n) = self.nodes.iter_mut().find(|n| n.name == name)
                {
                    n.created = at;
                }
            }
        }
        let gpu_delay = self.gpu_ready_delay;
        for n in &mut self.nodes {
            if n.gpus_allocatable < n.gpus_capacity && n.created + gpu_delay <= now {
                n.gpus_allocatable = n.gpus_capacity;
            }
        }
        self.schedule();
    }

    /// One engine step: snapshot, plan, apply, then advance the clock by `dt`.
    pub fn step(&mut self, dt: Duration) -> Plan {
        let plan = super::plan(&self.snapshot());
        self.apply(&plan);
        self.advance(dt);
        plan
    }

    /// Unbound, non-terminal GPU pods.
    pub fn pending_gpu_pods(&self) -> usize {
        self.pods
            .iter()
            .filter(|p| p.node.is_none() && p.gpus > 0 && !p.is_terminal())
            .count()
    }

    pub fn nodes_of(&self, pool: &str) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.pool.as_deref() == Some(pool))
            .count()
    }

    fn register(
        &mut self,
        pi: usize,
        instance_type: Option<String>,
        zone: Option<String>,
        gpu_ready: bool,
    ) -> Option<String> {
        let pool = &self.pools[pi].state;
        let ti = instance_type
            .as_deref()
            .and_then(|t| pool.templates.iter().position(|x| x.instance_type == t))
            .unwrap_or(0);
        let t = pool.templates.get(ti)?.clone();
        let zone = zone.or_else(|| template_zones(pool, ti).first().cloned());
        self.seq += 1;
        let name = format!("{}-{}", pool.spec.name, self.seq);
        self.nodes.push(NodeView {
            name: name.clone(),
            pool: Some(pool.spec.name.clone()),
            capacity_type: Some(pool.spec.capacity_type),
            instance_type: Some(t.instance_type.clone()),
            zone: zone.clone(),
            created: self.now,
            ready: true,
            gpus_capacity: t.gpus,
            gpus_allocatable: if gpu_ready { t.gpus } else { 0 },
            gpu_resource: Some(t.gpu_resource.clone()),
            cpu_millis_allocatable: t.cpu_millis,
            memory_bytes_allocatable: t.memory_bytes,
            labels: shape_labels(pool, &t.instance_type, zone.as_deref()),
            taints: shape_taints(pool),
            unschedulable: false,
            interruption: None,
            provider_id: Some(format!("virtual:///{name}")),
        });
        self.log.push((
            self.now,
            Happening::NodeRegistered {
                node: name.clone(),
                pool: pool.spec.name.clone(),
            },
        ));
        Some(name)
    }

    fn remove_node(&mut self, name: &str) {
        self.nodes.retain(|n| n.name != name);
        let now = self.now;
        self.pods.retain_mut(|p| {
            if p.node.as_deref() != Some(name) {
                return true;
            }
            if p.is_node_bound_infrastructure() || p.owner.is_none() {
                return false;
            }
            // The controller recreates it; it is pending again.
            p.node = None;
            p.phase = PodPhase::Pending;
            p.unschedulable_since = None;
            p.uid = format!("{}-{}", p.uid, now.timestamp());
            true
        });
        self.scheduled_evictions.retain(|(_, n, _)| n != name);
    }

    fn run_due_evictions(&mut self) {
        let now = self.now;
        let mut due = Vec::new();
        self.scheduled_evictions.retain(|(at, node, e)| {
            if *at <= now {
                due.push((node.clone(), e.clone()));
                false
            } else {
                true
            }
        });
        for (node, e) in due {
            let Some(i) = self
                .pods
                .iter()
                .position(|p| p.key() == e.pod && p.node.as_deref() == Some(node.as_str()))
            else {
                continue;
            };
            self.log.push((
                now,
                Happening::Evicted {
                    pod: e.pod.clone(),
                    node: node.clone(),
                    priority: e.priority,
                    grace_seconds: e.grace_seconds,
                },
            ));
            if self.pods[i].owner.is_none() {
                self.pods.remove(i);
                continue;
            }
            let p = &mut self.pods[i];
            p.node = None;
            p.phase = PodPhase::Pending;
            p.unschedulable_since = None;
        }
    }

    /// First-fit scheduler: largest GPU pods first, onto ready, schedulable nodes.
    fn schedule(&mut self) {
        let now = self.now;
        let mut free: Vec<Res> = self
            .nodes
            .iter()
            .map(|n| {
                let mut r = Res {
                    gpus: n.gpus_allocatable,
                    cpu: n.cpu_millis_allocatable,
                    mem: n.memory_bytes_allocatable,
                };
                for p in self
                    .pods
                    .iter()
                    .filter(|p| p.node.as_deref() == Some(n.name.as_str()))
                {
                    r.take(&Res::of_pod(p));
                }
                r
            })
            .collect();
        let mut order: Vec<usize> = (0..self.pods.len())
            .filter(|&i| self.pods[i].node.is_none() && !self.pods[i].is_terminal())
            .collect();
        order.sort_by(|&a, &b| self.pods[b].gpus.cmp(&self.pods[a].gpus).then(a.cmp(&b)));
        for i in order {
            let need = Res::of_pod(&self.pods[i]);
            let dest = self.nodes.iter().enumerate().position(|(ni, n)| {
                n.ready
                    && !n.unschedulable
                    && (need.gpus == 0 || n.gpus_allocatable > 0)
                    && free[ni].fits(&need)
                    && matching::check(
                        &self.pods[i],
                        &NodeFace {
                            labels: &n.labels,
                            taints: &n.taints,
                            capacity_type: n.capacity_type,
                            gpu_resource: n.gpu_resource.as_deref(),
                        },
                    )
                    .is_ok()
                    // Required anti-affinity, both directions, as kube-scheduler: per node, and
                    // per zone or any other label both nodes carry with the same value.
                    && !self.pods.iter().enumerate().any(|(j, o)| {
                        let Some(m) = o
                            .node
                            .as_deref()
                            .and_then(|on| self.nodes.iter().find(|x| x.name == on))
                        else {
                            return false;
                        };
                        j != i
                            && (if m.name == n.name {
                                matching::excludes_on_node(&self.pods[i], o)
                            } else {
                                o.anti_affinity
                                    .iter()
                                    .chain(self.pods[i].anti_affinity.iter())
                                    .map(|t| t.topology_key.as_str())
                                    .filter(|k| *k != matching::HOSTNAME_TOPOLOGY)
                                    .any(|k| {
                                        n.labels.contains_key(k)
                                            && n.labels.get(k) == m.labels.get(k)
                                            && matching::excludes_on(&self.pods[i], o, k)
                                    })
                            })
                    })
            });
            let p = &mut self.pods[i];
            match dest {
                Some(ni) => {
                    free[ni].take(&need);
                    p.node = Some(self.nodes[ni].name.clone());
                    p.phase = PodPhase::Running;
                    p.unschedulable_since = None;
                }
                None => {
                    p.unschedulable_since.get_or_insert(now);
                }
            }
        }
    }
}
