//! Resources, node shapes a pool can create, and the per-pod-signature compatibility cache
//! that keeps bin packing of 10,000 pods cheap.

use std::collections::{BTreeMap, HashMap};

use gpu_autoscaler_api::policy::TaintEffect;
use gpu_autoscaler_api::{CapacityType, keys};

use super::matching::{self, Mismatch, NodeFace};
use super::model::{PodView, PoolState, SelectorTerm, Taint, Toleration};

/// GPU devices, CPU millicores and memory bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Res {
    pub gpus: u32,
    pub cpu: u64,
    pub mem: u64,
}

impl Res {
    pub fn of_pod(p: &PodView) -> Self {
        Self {
            gpus: p.gpus,
            cpu: p.cpu_millis,
            mem: p.memory_bytes,
        }
    }

    pub fn fits(&self, need: &Res) -> bool {
        self.gpus >= need.gpus && self.cpu >= need.cpu && self.mem >= need.mem
    }

    pub fn take(&mut self, need: &Res) {
        self.gpus = self.gpus.saturating_sub(need.gpus);
        self.cpu = self.cpu.saturating_sub(need.cpu);
        self.mem = self.mem.saturating_sub(need.mem);
    }
}

/// A node a pool can create: one template in one zone (or in "any zone", `zone: None`),
/// with the labels and taints it will carry.
#[derive(Debug, Clone)]
pub struct Shape {
    pub pool: usize,
    pub template: usize,
    pub zone: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub capacity_type: CapacityType,
    pub gpu_resource: String,
    pub res: Res,
}

impl Shape {
    pub fn face(&self) -> NodeFace<'_> {
        NodeFace {
            labels: &self.labels,
            taints: &self.taints,
            capacity_type: Some(self.capacity_type),
            gpu_resource: Some(&self.gpu_resource),
        }
    }
}

/// Labels every node of a pool carries: the pool's own, plus the capacity-type, node-pool,
/// instance-type and (when known) zone labels that provisioning sets.
pub fn shape_labels(
    pool: &PoolState,
    instance_type: &str,
    zone: Option<&str>,
) -> BTreeMap<String, String> {
    let mut l = pool.spec.labels.clone();
    l.insert(
        keys::LABEL_CAPACITY_TYPE.into(),
        pool.spec.capacity_type.as_str().into(),
    );
    l.insert(keys::LABEL_NODE_POOL.into(), pool.spec.name.clone());
    l.insert(keys::LABEL_INSTANCE_TYPE.into(), instance_type.into());
    if let Some(z) = zone {
        l.insert(keys::LABEL_ZONE.into(), z.into());
    }
    l
}

/// Taints every node of a pool carries: the pool's own plus the spot taint on spot pools.
pub fn shape_taints(pool: &PoolState) -> Vec<Taint> {
    let mut t: Vec<Taint> = pool
        .spec
        .taints
        .iter()
        .map(|t| Taint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
            effect: t.effect,
        })
        .collect();
    if pool.spec.capacity_type == CapacityType::Spot
        && !t.iter().any(|x| x.key == keys::TAINT_SPOT_KEY)
    {
        t.push(Taint {
            key: keys::TAINT_SPOT_KEY.into(),
            value: keys::TAINT_SPOT_VALUE.into(),
            effect: TaintEffect::NoSchedule,
        });
    }
    t
}

/// The zones a template may launch in: its own list, else the pool's.
pub fn template_zones(pool: &PoolState, template: usize) -> &[String] {
    match pool.templates.get(template) {
        Some(t) if !t.zones.is_empty() => &t.zones,
        _ => &pool.spec.availability_zones,
    }
}

/// All shapes of all pools. Per template: one "any zone" shape, then one per zone.
#[derive(Debug, Default)]
pub struct Shapes {
    pub shapes: Vec<Shape>,
    pub by_pool: Vec<Vec<usize>>,
}

impl Shapes {
    pub fn build(pools: &[&PoolState]) -> Self {
        let mut s = Shapes {
            shapes: Vec::new(),
            by_pool: vec![Vec::new(); pools.len()],
        };
        for (pi, pool) in pools.iter().enumerate() {
            let taints = shape_taints(pool);
            for (ti, t) in pool.templates.iter().enumerate() {
                let mut zones: Vec<Option<String>> = vec![None];
                zones.extend(template_zones(pool, ti).iter().cloned().map(Some));
                for zone in zones {
                    s.by_pool[pi].push(s.shapes.len());
                    s.shapes.push(Shape {
                        pool: pi,
                        template: ti,
                        labels: shape_labels(pool, &t.instance_type, zone.as_deref()),
                        zone,
                        taints: taints.clone(),
                        capacity_type: pool.spec.capacity_type,
                        gpu_resource: t.gpu_resource.clone(),
                        res: Res {
                            gpus: t.gpus,
                            cpu: t.cpu_millis,
                            mem: t.memory_bytes,
                        },
                    });
                }
            }
        }
        s
    }
}

/// What the pods of one scheduling signature may use.
#[derive(Debug, Clone)]
pub struct Compat {
    /// `shape_ok[i]`: shape `i` passes labels, taints, tier and GPU resource.
    pub shape_ok: Vec<bool>,
    /// Pools with at least one compatible shape, in pool order.
    pub pools: Vec<usize>,
    /// When no shape is compatible: the reason seen most.
    pub mismatch: Option<Mismatch>,
}

type SigKey<'a> = (
    &'a BTreeMap<String, String>,
    &'a [SelectorTerm],
    &'a [Toleration],
    &'a [CapacityType],
    Option<&'a str>,
);

/// Interns pod scheduling signatures: pods that differ only in name and size share one
/// compatibility computation.
#[derive(Default)]
pub struct CompatCache<'a> {
    ids: HashMap<SigKey<'a>, usize>,
    pub compat: Vec<Compat>,
}

impl<'a> CompatCache<'a> {
    pub fn signature(&mut self, pod: &'a PodView, shapes: &Shapes) -> usize {
        let key: SigKey<'a> = (
            &pod.node_selector,
            &pod.affinity,
            &pod.tolerations,
            &pod.tier_preference,
            if pod.gpus > 0 {
                pod.gpu_resource.as_deref()
            } else {
                None
            },
        );
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        let mut shape_ok = Vec::with_capacity(shapes.shapes.len());
        let mut pools = Vec::new();
        let mut counts: BTreeMap<u8, (usize, Mismatch)> = BTreeMap::new();
        for s in &shapes.shapes {
            let r = matching::check(pod, &s.face());
            if let Err(m) = r {
                counts.entry(m as u8).or_insert((0, m)).0 += 1;
            } else if pools.last() != Some(&s.pool) {
                pools.push(s.pool);
            }
            shape_ok.push(r.is_ok());
        }
        let mismatch = if pools.is_empty() {
            counts.values().max_by_key(|(n, _)| *n).map(|(_, m)| *m)
        } else {
            None
        };
        let id = self.compat.len();
        self.compat.push(Compat {
            shape_ok,
            pools,
            mismatch,
        });
        self.ids.insert(key, id);
        id
    }
}
