//! Simulation settings, the default policies, and node pools priced from the catalog.

use std::collections::BTreeMap;
use std::path::Path;

use gpu_autoscaler_api::policy::validate;
use gpu_autoscaler_api::{AutoscalingPolicy, AutoscalingPolicySpec, CapacityType, keys};
use gpu_autoscaler_catalog::{Catalog, Cloud};
use serde::Serialize;

use crate::SimError;
use crate::cluster::{CloudTiming, NodeShape};

/// Default boot delay: launch request to a Ready node. EC2 GPU instances with an EKS GPU AMI
/// typically take 1.5–3 min to pass status checks and join; GCE/AKS GPU nodes are similar.
pub const DEFAULT_BOOT_S: i64 = 150;
/// Default GPU-ready delay after the node is Ready: NVIDIA driver load, container toolkit and
/// device plugin registration, typically 1–2 min. Boot + GPU-ready = 4 min, the middle of the
/// 3–5 min commonly seen for a GPU node from request to schedulable GPUs.
pub const DEFAULT_GPU_READY_S: i64 = 90;
/// How often the autoscalers run: the reference CA scan interval, also our scaler's loop.
pub const DEFAULT_TICK_S: i64 = 10;
/// Chart resolution.
pub const DEFAULT_SAMPLE_S: i64 = 3600;
/// After the last trace event the clock runs this much longer so queued pods can finish.
pub const DEFAULT_SETTLE_S: i64 = 6 * 3600;

/// Spot reclaim notice: AWS gives two minutes, GCP preemption and Azure eviction 30 s.
pub fn notice_seconds(cloud: Cloud) -> i64 {
    match cloud {
        Cloud::Aws => 120,
        Cloud::Gcp | Cloud::Azure => 30,
    }
}

/// Everything a run needs besides the workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimConfig {
    pub cloud: Cloud,
    pub region: String,
    pub seed: u64,
    pub tick_s: i64,
    pub sample_s: i64,
    pub settle_s: i64,
    pub boot_s: i64,
    pub gpu_ready_s: i64,
    pub notice_s: i64,
    /// `None`: an interrupted pod loses all work of its run (no checkpoints).
    pub checkpoint_s: Option<i64>,
    /// Where the policy came from (a path, or `default`).
    pub policy_source: String,
    #[serde(skip)]
    pub policy: AutoscalingPolicySpec,
}

impl SimConfig {
    /// The defaults for a cloud, with its bundled default policy.
    pub fn new(cloud: Cloud) -> Result<Self, SimError> {
        Ok(Self {
            cloud,
            region: cloud.default_region().to_string(),
            seed: 1,
            tick_s: DEFAULT_TICK_S,
            sample_s: DEFAULT_SAMPLE_S,
            settle_s: DEFAULT_SETTLE_S,
            boot_s: DEFAULT_BOOT_S,
            gpu_ready_s: DEFAULT_GPU_READY_S,
            notice_s: notice_seconds(cloud),
            checkpoint_s: None,
            policy_source: format!("default ({cloud})"),
            policy: default_policy(cloud)?,
        })
    }

    pub fn timing(&self) -> CloudTiming {
        CloudTiming {
            boot_s: self.boot_s,
            gpu_ready_s: self.gpu_ready_s,
            notice_s: self.notice_s,
            checkpoint_s: self.checkpoint_s,
            seed: self.seed,
        }
    }

    /// Reads and validates a user's AutoscalingPolicy YAML (the whole object or just the spec).
    pub fn load_policy(&mut self, path: &Path) -> Result<(), SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::Policy {
            file: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        self.policy = parse_policy(&path.display().to_string(), &text)?;
        self.policy_source = path.display().to_string();
        Ok(())
    }
}

const DEFAULT_POLICY_AWS: &str = include_str!("../data/default-policy-aws.yaml");
const DEFAULT_POLICY_GCP: &str = include_str!("../data/default-policy-gcp.yaml");

/// The bundled default policy of a cloud. Azure has none: its price table has no GPU counts.
pub fn default_policy(cloud: Cloud) -> Result<AutoscalingPolicySpec, SimError> {
    match cloud {
        Cloud::Aws => parse_policy("default-policy-aws.yaml", DEFAULT_POLICY_AWS),
        Cloud::Gcp => parse_policy("default-policy-gcp.yaml", DEFAULT_POLICY_GCP),
        Cloud::Azure => Err(azure_unsupported()),
    }
}

fn azure_unsupported() -> SimError {
    SimError::Unsupported(
        "--cloud azure: the bundled Azure table (Azure Retail Prices via karpenter-provider-azure) has on-demand \
         prices only, no GPU counts per VM size and no spot prices, so nodes cannot be sized; see docs/simulate.md"
            .into(),
    )
}

/// Parses a policy as a full `AutoscalingPolicy` object, or a bare spec, and validates it
/// with the same function the webhook and the scaler use.
pub fn parse_policy(file: &str, text: &str) -> Result<AutoscalingPolicySpec, SimError> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| SimError::Policy {
        file: file.into(),
        message: e.to_string(),
    })?;
    let spec = if value.get("kind").is_some() || value.get("spec").is_some() {
        serde_yaml::from_value::<AutoscalingPolicy>(value).map(|p| p.spec)
    } else {
        serde_yaml::from_value::<AutoscalingPolicySpec>(value)
    }
    .map_err(|e| SimError::Policy {
        file: file.into(),
        message: e.to_string(),
    })?;
    validate(&spec).map_err(|e| SimError::Policy {
        file: file.into(),
        message: format!("invalid policy: {e}"),
    })?;
    if spec.node_pools.is_empty() {
        return Err(SimError::Policy {
            file: file.into(),
            message: "spec.nodePools is empty: nothing to scale".into(),
        });
    }
    Ok(spec)
}

/// A node pool priced and sized from the catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolDef {
    pub name: String,
    pub capacity: CapacityType,
    pub shapes: Vec<NodeShape>,
    pub min_size: u32,
    pub max_size: u32,
    pub priority: i32,
    pub labels: BTreeMap<String, String>,
    /// Notes for the report (e.g. reserved priced at on-demand).
    pub notes: Vec<String>,
}

impl PoolDef {
    /// Node labels, as provisioning would set them.
    pub fn node_labels(&self, shape: &NodeShape) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert(keys::LABEL_CAPACITY_TYPE.into(), self.capacity.to_string());
        l.insert(keys::LABEL_NODE_POOL.into(), self.name.clone());
        l.insert(
            keys::LABEL_INSTANCE_TYPE.into(),
            shape.instance_type.clone(),
        );
        l
    }
}

/// Prices and sizes every pool of the policy. Unknown instance types name the known ones.
pub fn build_pools(cfg: &SimConfig) -> Result<Vec<PoolDef>, SimError> {
    if cfg.cloud == Cloud::Azure {
        return Err(azure_unsupported());
    }
    let catalog = Catalog::for_cloud(cfg.cloud, &cfg.region)?;
    let mut pools = Vec::new();
    for np in &cfg.policy.node_pools {
        let mut notes = Vec::new();
        let mut shapes = Vec::new();
        for ty in &np.instance_types {
            let it = catalog.get(ty)?;
            let gpus = it.whole_gpus().ok_or_else(|| {
                SimError::Unsupported(format!(
                    "pool {}: instance type {ty} has {:?} GPUs in the catalog; simulate needs whole GPUs",
                    np.name, it.gpus
                ))
            })?;
            let price = match (np.capacity_type, it.price(np.capacity_type)) {
                (_, Some(p)) => p,
                (CapacityType::Reserved, None) => {
                    notes.push(format!(
                        "{ty}: no reserved price in the bundled {} data; reserved priced at on-demand",
                        cfg.cloud
                    ));
                    it.on_demand_usd_per_hour
                }
                (ct, None) => {
                    return Err(SimError::Unsupported(format!(
                        "pool {}: {ty} has no {ct} price in the bundled {} {} data",
                        np.name, cfg.cloud, cfg.region
                    )));
                }
            };
            let hourly_interruption = (np.capacity_type == CapacityType::Spot)
                .then(|| it.interruption.as_ref().map(|i| i.hourly_probability))
                .flatten();
            if np.capacity_type == CapacityType::Spot && hourly_interruption.is_none() {
                notes.push(format!(
                    "{ty}: no interruption data; never reclaimed in the simulation"
                ));
            }
            shapes.push(NodeShape {
                instance_type: ty.clone(),
                gpus,
                cpu_millis: u64::from(it.vcpu.unwrap_or(0)) * 1000,
                memory_bytes: it.memory_mib.unwrap_or(0) * 1024 * 1024,
                price_per_hour: price,
                hourly_interruption,
            });
        }
        pools.push(PoolDef {
            name: np.name.clone(),
            capacity: np.capacity_type,
            shapes,
            min_size: np.min_size,
            max_size: np.max_size,
            priority: np.priority,
            labels: np.labels.clone(),
            notes,
        });
    }
    Ok(pools)
}

/// The on-demand pools the baselines use: the policy's on-demand pools, or, when it has none,
/// every pool's instance types re-priced on demand. Highest priority first.
pub fn on_demand_pools(cfg: &SimConfig, pools: &[PoolDef]) -> Result<Vec<PoolDef>, SimError> {
    let mut od: Vec<PoolDef> = pools
        .iter()
        .filter(|p| p.capacity == CapacityType::OnDemand)
        .cloned()
        .collect();
    if od.is_empty() {
        let catalog = Catalog::for_cloud(cfg.cloud, &cfg.region)?;
        for p in pools {
            let mut q = p.clone();
            q.name = format!("{}-on-demand", p.name);
            q.capacity = CapacityType::OnDemand;
            for s in &mut q.shapes {
                s.price_per_hour = catalog.get(&s.instance_type)?.on_demand_usd_per_hour;
                s.hourly_interruption = None;
            }
            od.push(q);
        }
    }
    od.sort_by_key(|p| std::cmp::Reverse(p.priority));
    Ok(od)
}
