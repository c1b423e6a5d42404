//! The `kube` provider: a simulated cloud that runs on any cluster.
//!
//! Each pool is a "group" whose desired size and instance records live in one ConfigMap
//! (`state.json`), written with resourceVersion-guarded replaces. Because the records are
//! the source of truth, a scaler that dies between asking for instances and seeing them
//! register finds them again after a restart and never asks twice.
//!
//! [`KubeProvider::run_simulation`] plays the cloud: after `boot_delay` each requested
//! instance becomes a Node built from the catalogue's spec of its instance type (GPU capacity
//! reported, GPUs not allocatable yet, Ready, without the `not-ready` taint since no node
//! controller runs here); after a further `driver_delay` its GPUs become allocatable, the way
//! a real node waits for its driver and device plugin. Deleted instances lose their Node.
//!
//! Faults for tests and dry runs come from the same ConfigMap's `faults.json`:
//! `{"pools": {"spot-pool": {"insufficientCapacity": true}}}`; see [`PoolFault`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use ::kube::{Api, Client};
use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use gpu_autoscaler_api::policy::{NodePool, PoolTaint};
use gpu_autoscaler_api::{CapacityType, keys};
use gpu_autoscaler_catalog::Catalog;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    CloudProvider, InstanceRef, LaunchHint, NodeGroup, ProviderError, ProviderErrorKind,
    ProviderResult, TargetChange, catalog_price, catalog_templates, template_from_catalog,
};
use crate::engine::{InFlightInstance, InstanceTemplate};

/// Label on every Node this provider creates, so the simulation finds (and cleans) its own.
pub const LABEL_SIMULATED: &str = "gpu-autoscaler.io/simulated-by";
const SIMULATED_VALUE: &str = "kube-provider";
/// The providerID scheme: `kube://<pool>/<instance-id>`.
pub const PROVIDER_ID_PREFIX: &str = "kube://";
const STATE_KEY: &str = "state.json";
const FAULTS_KEY: &str = "faults.json";
const CONFLICT_RETRIES: usize = 20;

/// Settings of the simulated cloud.
#[derive(Debug, Clone)]
pub struct KubeProviderConfig {
    /// Namespace and name of the state ConfigMap.
    pub namespace: String,
    pub configmap: String,
    /// From request to Node registration.
    pub boot_delay: Duration,
    /// From registration to GPUs allocatable.
    pub driver_delay: Duration,
    /// Catalogue region for instance specs and prices.
    pub region: String,
    /// How often the simulation looks at requests.
    pub tick: Duration,
}

impl Default for KubeProviderConfig {
    fn default() -> Self {
        Self {
            namespace: "kube-system".into(),
            configmap: "gpu-autoscaler-kube-provider".into(),
            boot_delay: Duration::from_secs(30),
            driver_delay: Duration::from_secs(15),
            region: "us-east-1".into(),
            tick: Duration::from_millis(500),
        }
    }
}

/// One simulated instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRecord {
    pub id: String,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub requested_at: DateTime<Utc>,
    /// Pool labels and taints at request time (what the launch template would carry).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<PoolTaint>,
}

/// A simulated group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupState {
    pub target: u32,
    #[serde(default)]
    pub instances: Vec<InstanceRecord>,
}

/// The whole simulated cloud (the `state.json` key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloudState {
    #[serde(default)]
    pub next_id: u64,
    #[serde(default)]
    pub pools: BTreeMap<String, GroupState>,
}

/// Injected faults of one pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolFault {
    /// Scale-ups fail with `InsufficientCapacity`.
    #[serde(default)]
    pub insufficient_capacity: bool,
    /// Scale-ups fail with this message; `errorKind` classifies it (`throttled`, `quota`,
    /// `auth`, `not_found`, anything else = other).
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_kind: Option<String>,
    /// Requested instances never register (exercises `maxNodeProvisionTime`).
    #[serde(default)]
    pub stuck: bool,
}

/// The `faults.json` key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    #[serde(default)]
    pub pools: BTreeMap<String, PoolFault>,
}

/// The simulated cloud.
pub struct KubeProvider {
    config: KubeProviderConfig,
    catalog: Catalog,
    configmaps: Api<ConfigMap>,
    nodes: Api<Node>,
}

impl std::fmt::Debug for KubeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn kube_err(operation: &'static str, e: ::kube::Error) -> ProviderError {
    let kind = match &e {
        ::kube::Error::Api(s) if s.code == 429 => ProviderErrorKind::Throttled,
        ::kube::Error::Api(s) if s.code == 401 || s.code == 403 => ProviderErrorKind::Auth,
        ::kube::Error::Api(s) if s.code == 404 => ProviderErrorKind::NotFound,
        _ => ProviderErrorKind::Other,
    };
    ProviderError::new(kind, operation, e.to_string())
}

fn is_status(e: &::kube::Error, code: u16) -> bool {
    matches!(e, ::kube::Error::Api(s) if s.code == code)
}

/// The providerID of an instance.
pub fn provider_id(pool: &str, id: &str) -> String {
    format!("{PROVIDER_ID_PREFIX}{pool}/{id}")
}

/// The Node name of an instance.
pub fn node_name(pool: &str, id: &str) -> String {
    format!("{pool}-{id}")
}

impl KubeProvider {
    /// Fails when the catalogue region has no bundled prices.
    pub fn new(client: Client, config: KubeProviderConfig) -> Result<Self, ProviderError> {
        let catalog = Catalog::aws(&config.region).map_err(|e| ProviderError::other("new", e))?;
        Ok(Self {
            configmaps: Api::namespaced(client.clone(), &config.namespace),
            nodes: Api::all(client),
            catalog,
            config,
        })
    }

    pub fn config(&self) -> &KubeProviderConfig {
        &self.config
    }

    async fn get_or_create(&self) -> Result<ConfigMap, ::kube::Error> {
        if let Some(cm) = self.configmaps.get_opt(&self.config.configmap).await? {
            return Ok(cm);
        }
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": { "name": self.config.configmap, "namespace": self.config.namespace },
            "data": { STATE_KEY: "{}", FAULTS_KEY: "{}" },
        }))
        .map_err(::kube::Error::SerdeError)?;
        match self.configmaps.create(&PostParams::default(), &cm).await {
            Ok(cm) => Ok(cm),
            Err(e) if is_status(&e, 409) => self.configmaps.get(&self.config.configmap).await,
            Err(e) => Err(e),
        }
    }

    fn parse<T: for<'de> Deserialize<'de> + Default>(cm: &ConfigMap, key: &str) -> T {
        cm.data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    /// The current simulated cloud state and faults.
    pub async fn read(&self) -> ProviderResult<(CloudState, Faults)> {
        let cm = self
            .get_or_create()
            .await
            .map_err(|e| kube_err("read", e))?;
        Ok((Self::parse(&cm, STATE_KEY), Self::parse(&cm, FAULTS_KEY)))
    }

    /// Replaces one pool's injected faults (`None` clears them).
    pub async fn set_fault(&self, pool: &str, fault: Option<PoolFault>) -> ProviderResult<()> {
        self.modify("set_fault", |_, faults| {
            match &fault {
                Some(f) => faults.pools.insert(pool.to_string(), f.clone()),
                None => faults.pools.remove(pool),
            };
            Ok(())
        })
        .await
    }

    /// Read-modify-write of the ConfigMap, guarded by its resourceVersion.
    async fn modify<R>(
        &self,
        operation: &'static str,
        mut f: impl FnMut(&mut CloudState, &mut Faults) -> ProviderResult<R>,
    ) -> ProviderResult<R> {
        for _ in 0..CONFLICT_RETRIES {
            let mut cm = self
                .get_or_create()
                .await
                .map_err(|e| kube_err(operation, e))?;
            let mut state: CloudState = Self::parse(&cm, STATE_KEY);
            let mut faults: Faults = Self::parse(&cm, FAULTS_KEY);
            let (before_state, before_faults) = (state.clone(), faults.clone());
            let out = f(&mut state, &mut faults)?;
            if state == before_state && faults == before_faults {
                return Ok(out);
            }
            let data = cm.data.get_or_insert_with(BTreeMap::new);
            data.insert(
                STATE_KEY.into(),
                serde_json::to_string(&state).map_err(|e| ProviderError::other(operation, e))?,
            );
            data.insert(
                FAULTS_KEY.into(),
                serde_json::to_string(&faults).map_err(|e| ProviderError::other(operation, e))?,
            );
            match self
                .configmaps
                .replace(&self.config.configmap, &PostParams::default(), &cm)
                .await
            {
                Ok(_) => return Ok(out),
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(kube_err(operation, e)),
            }
        }
        Err(ProviderError::new(
            ProviderErrorKind::Throttled,
            operation,
            "state ConfigMap kept changing under us",
        ))
    }

    async fn registered_nodes(&self, pool: &str) -> ProviderResult<BTreeSet<String>> {
        let lp = ListParams::default().labels(&format!(
            "{}={pool},{LABEL_SIMULATED}={SIMULATED_VALUE}",
            keys::LABEL_NODE_POOL
        ));
        let list = self
            .nodes
            .list_metadata(&lp)
            .await
            .map_err(|e| kube_err("list_nodes", e))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect())
    }

    fn zones_for(&self, pool: &NodePool) -> Vec<String> {
        if pool.availability_zones.is_empty() {
            vec![format!("{}a", self.config.region)]
        } else {
            pool.availability_zones.clone()
        }
    }

    /// Plays the cloud until `shutdown` resolves: registers booted instances as Nodes, makes
    /// their GPUs allocatable after the driver delay, removes Nodes of deleted instances.
    pub async fn run_simulation(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown.fuse());
        loop {
            if let Err(e) = self.simulate_once(Utc::now()).await {
                tracing::warn!(error = %e, "kube provider simulation step failed");
            }
            futures::select! {
                _ = shutdown.as_mut() => return,
                _ = tokio::time::sleep(self.config.tick).fuse() => {}
            }
        }
    }

    /// One step of the simulation at `now`.
    pub async fn simulate_once(&self, now: DateTime<Utc>) -> ProviderResult<()> {
        let (state, faults) = self.read().await?;
        let lp = ListParams::default().labels(&format!("{LABEL_SIMULATED}={SIMULATED_VALUE}"));
        let existing: BTreeMap<String, Node> = self
            .nodes
            .list(&lp)
            .await
            .map_err(|e| kube_err("list_nodes", e))?
            .items
            .into_iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, n)))
            .collect();
        let boot = chrono::Duration::from_std(self.config.boot_delay).unwrap_or_default();
        let driver = chrono::Duration::from_std(self.config.driver_delay).unwrap_or_default();
        let mut wanted = BTreeSet::new();
        for (pool, group) in &state.pools {
            let stuck = faults.pools.get(pool).is_some_and(|f| f.stuck);
            for inst in &group.instances {
                let name = node_name(pool, &inst.id);
                wanted.insert(name.clone());
                let gpu_ready = now >= inst.requested_at + boot + driver;
                match existing.get(&name) {
                    None if !stuck && now >= inst.requested_at + boot => {
                        self.register(pool, inst, gpu_ready).await?;
                    }
                    Some(node) if gpu_ready && !gpus_allocatable(node) => {
                        self.make_gpus_allocatable(&name, inst).await?;
                    }
                    _ => {}
                }
            }
        }
        for name in existing.keys().filter(|n| !wanted.contains(*n)) {
            match self.nodes.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(kube_err("delete_node", e)),
            }
        }
        Ok(())
    }

    fn template(&self, inst: &InstanceRecord) -> ProviderResult<InstanceTemplate> {
        template_from_catalog(&self.catalog, &inst.instance_type, inst.capacity_type, &[])
            .ok_or_else(|| {
                ProviderError::new(
                    ProviderErrorKind::NotFound,
                    "register",
                    format!("no GPU instance spec for {}", inst.instance_type),
                )
            })
    }

    async fn register(
        &self,
        pool: &str,
        inst: &InstanceRecord,
        gpu_ready: bool,
    ) -> ProviderResult<()> {
        let t = self.template(inst)?;
        let name = node_name(pool, &inst.id);
        let mut node = build_node(pool, inst, &name);
        let status = node_status(&t, gpu_ready, Utc::now());
        // Like a kubelet, register with the status in the same request: a Node that exists
        // without capacity would look like a broken machine rather than one still booting.
        node.status = serde_json::from_value(status.clone()).ok();
        let created = match self.nodes.create(&PostParams::default(), &node).await {
            Ok(n) => n,
            // Another replica's simulation (or our previous life) got there first.
            Err(e) if is_status(&e, 409) => return Ok(()),
            Err(e) => return Err(kube_err("create_node", e)),
        };
        if created
            .status
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .is_none()
        {
            self.nodes
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "status": status })),
                )
                .await
                .map_err(|e| kube_err("node_status", e))?;
        }
        self.remove_not_ready_taint(&name).await
    }

    async fn make_gpus_allocatable(&self, name: &str, inst: &InstanceRecord) -> ProviderResult<()> {
        let t = self.template(inst)?;
        let patch =
            json!({ "status": { "allocatable": { t.gpu_resource.clone(): t.gpus.to_string() } } });
        self.nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| kube_err("node_status", e))?;
        Ok(())
    }

    /// The TaintNodesByCondition admission plugin taints every new Node `not-ready`; without
    /// a node controller nothing would remove it once the Node reports Ready.
    async fn remove_not_ready_taint(&self, name: &str) -> ProviderResult<()> {
        for _ in 0..CONFLICT_RETRIES {
            let node = self
                .nodes
                .get(name)
                .await
                .map_err(|e| kube_err("get_node", e))?;
            let taints = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.clone())
                .unwrap_or_default();
            if !taints.iter().any(|t| t.key == keys::TAINT_NOT_READY) {
                return Ok(());
            }
            let kept: Vec<_> = taints
                .into_iter()
                .filter(|t| t.key != keys::TAINT_NOT_READY)
                .collect();
            let patch = json!({
                "metadata": { "resourceVersion": node.metadata.resource_version },
                "spec": { "taints": if kept.is_empty() { Value::Null } else { serde_json::to_value(&kept).unwrap_or(Value::Null) } },
            });
            match self
                .nodes
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(kube_err("untaint_node", e)),
            }
        }
        Err(ProviderError::other("untaint_node", "node kept changing"))
    }
}

fn gpus_allocatable(node: &Node) -> bool {
    let names = gpu_autoscaler_api::GpuResourceNames::default();
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .is_some_and(|a| {
            a.iter().any(|(k, q)| {
                names.is_gpu(k) && gpu_autoscaler_api::quantity::parse(&q.0).is_ok_and(|v| v > 0.0)
            })
        })
}

fn build_node(pool: &str, inst: &InstanceRecord, name: &str) -> Node {
    let mut labels = inst.labels.clone();
    for (k, v) in [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        (keys::LABEL_CAPACITY_TYPE, inst.capacity_type.as_str()),
        (keys::LABEL_NODE_POOL, pool),
        (keys::LABEL_INSTANCE_TYPE, inst.instance_type.as_str()),
        (keys::LABEL_ZONE, inst.zone.as_str()),
        (LABEL_SIMULATED, SIMULATED_VALUE),
    ] {
        labels.insert(k.to_string(), v.to_string());
    }
    let mut taints: Vec<Value> = inst
        .taints
        .iter()
        .map(|t| json!({ "key": t.key, "value": t.value, "effect": t.effect }))
        .collect();
    if inst.capacity_type == CapacityType::Spot {
        taints.push(json!({
            "key": keys::TAINT_SPOT_KEY,
            "value": keys::TAINT_SPOT_VALUE,
            "effect": keys::TAINT_EFFECT_NO_SCHEDULE,
        }));
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": labels },
        "spec": { "providerID": provider_id(pool, &inst.id), "taints": taints },
    }))
    .unwrap_or_default()
}

fn node_status(t: &InstanceTemplate, gpu_ready: bool, now: DateTime<Utc>) -> Value {
    let cpu = (t.cpu_millis / 1000).to_string();
    let memory = format!("{}Ki", t.memory_bytes / 1024);
    let capacity = json!({
        "cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "500Gi",
        t.gpu_resource.clone(): t.gpus.to_string(),
    });
    let mut allocatable = capacity.clone();
    if !gpu_ready {
        // Capacity is known from the hardware; the device plugin hasn't advertised yet.
        allocatable[t.gpu_resource.as_str()] = Value::String("0".into());
    }
    let now = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let cond = |type_: &str, status: &str, reason: &str| {
        json!({ "type": type_, "status": status, "reason": reason, "message": reason,
                "lastHeartbeatTime": now, "lastTransitionTime": now })
    };
    json!({
        "capacity": capacity,
        "allocatable": allocatable,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID"),
            cond("Ready", "True", "KubeletReady"),
        ],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "5.15.0",
            "osImage": "simulated", "containerRuntimeVersion": "containerd://1.6.0",
            "kubeletVersion": "v1.20.2", "kubeProxyVersion": "v1.20.2",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    })
}

fn fault_error(fault: &PoolFault, pool: &str) -> Option<ProviderError> {
    if fault.insufficient_capacity {
        return Some(ProviderError::new(
            ProviderErrorKind::InsufficientCapacity,
            "set_target_size",
            format!("injected: no capacity for pool {pool}"),
        ));
    }
    let message = fault.error.as_ref()?;
    let kind = match fault.error_kind.as_deref() {
        Some("throttled") => ProviderErrorKind::Throttled,
        Some("quota") => ProviderErrorKind::Quota,
        Some("auth") => ProviderErrorKind::Auth,
        Some("not_found") => ProviderErrorKind::NotFound,
        Some("insufficient_capacity") => ProviderErrorKind::InsufficientCapacity,
        _ => ProviderErrorKind::Other,
    };
    Some(ProviderError::new(
        kind,
        "set_target_size",
        format!("injected: {message}"),
    ))
}

impl CloudProvider for KubeProvider {
    fn name(&self) -> &'static str {
        "kube"
    }

    fn node_groups<'a>(
        &'a self,
        pools: &'a [NodePool],
    ) -> BoxFuture<'a, ProviderResult<Vec<NodeGroup>>> {
        async move {
            Ok(pools
                .iter()
                .map(|p| NodeGroup {
                    pool: p.name.clone(),
                    id: format!(
                        "{}/{}#{}",
                        self.config.namespace, self.config.configmap, p.name
                    ),
                    min_size: p.min_size,
                    max_size: p.max_size,
                })
                .collect())
        }
        .boxed()
    }

    fn target_size<'a>(&'a self, pool: &'a NodePool) -> BoxFuture<'a, ProviderResult<u32>> {
        async move {
            let (state, _) = self.read().await?;
            Ok(state.pools.get(&pool.name).map_or(0, |g| g.target))
        }
        .boxed()
    }

    fn set_target_size<'a>(
        &'a self,
        pool: &'a NodePool,
        target: u32,
        hints: &'a [LaunchHint],
    ) -> BoxFuture<'a, ProviderResult<TargetChange>> {
        async move {
            if target > pool.max_size {
                return Err(ProviderError::new(
                    ProviderErrorKind::Quota,
                    "set_target_size",
                    format!(
                        "pool {} max size is {}, asked for {target}",
                        pool.name, pool.max_size
                    ),
                ));
            }
            let registered = self.registered_nodes(&pool.name).await?;
            let zones = self.zones_for(pool);
            let now = Utc::now();
            self.modify("set_target_size", |state, faults| {
                let next_id = &mut state.next_id;
                let group = state.pools.entry(pool.name.clone()).or_default();
                let previous = group.target;
                if target > previous {
                    if let Some(e) = faults
                        .pools
                        .get(&pool.name)
                        .and_then(|f| fault_error(f, &pool.name))
                    {
                        return Err(e);
                    }
                    let mut choices: Vec<(String, Option<String>)> = Vec::new();
                    for h in hints {
                        for _ in 0..h.count {
                            choices.push((
                                h.instance_type
                                    .clone()
                                    .unwrap_or_else(|| pool.instance_types[0].clone()),
                                h.zone.clone(),
                            ));
                        }
                    }
                    for i in 0..(target - previous) as usize {
                        let (instance_type, zone) = choices.get(i).cloned().unwrap_or_else(|| {
                            (
                                pool.instance_types.first().cloned().unwrap_or_default(),
                                None,
                            )
                        });
                        if template_from_catalog(
                            &self.catalog,
                            &instance_type,
                            pool.capacity_type,
                            &[],
                        )
                        .is_none()
                        {
                            return Err(ProviderError::new(
                                ProviderErrorKind::NotFound,
                                "set_target_size",
                                format!(
                                    "no GPU instance spec for {instance_type:?} in {}",
                                    self.config.region
                                ),
                            ));
                        }
                        *next_id += 1;
                        let zone = zone
                            .unwrap_or_else(|| zones[(*next_id as usize) % zones.len()].clone());
                        group.instances.push(InstanceRecord {
                            id: format!("i-{:08x}", *next_id),
                            instance_type,
                            zone,
                            capacity_type: pool.capacity_type,
                            requested_at: now,
                            labels: pool.labels.clone(),
                            taints: pool.taints.clone(),
                        });
                    }
                } else if target < previous {
                    // Scale-in drops launches that haven't registered first, newest first.
                    let mut excess = (group.instances.len() as u32).saturating_sub(target);
                    for registered_pass in [false, true] {
                        let mut i = group.instances.len();
                        while excess > 0 && i > 0 {
                            i -= 1;
                            let is_registered =
                                registered.contains(&node_name(&pool.name, &group.instances[i].id));
                            if is_registered == registered_pass {
                                group.instances.remove(i);
                                excess -= 1;
                            }
                        }
                    }
                }
                group.target = target;
                Ok(TargetChange { previous, target })
            })
            .await
        }
        .boxed()
    }

    fn delete_instances<'a>(
        &'a self,
        pool: &'a NodePool,
        instances: &'a [InstanceRef],
    ) -> BoxFuture<'a, ProviderResult<()>> {
        async move {
            let ids: BTreeSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();
            self.modify("delete_instances", |state, _| {
                if let Some(group) = state.pools.get_mut(&pool.name) {
                    let before = group.instances.len();
                    group.instances.retain(|i| !ids.contains(i.id.as_str()));
                    let removed = (before - group.instances.len()) as u32;
                    group.target = group.target.saturating_sub(removed);
                }
                Ok(())
            })
            .await?;
            for id in ids {
                match self
                    .nodes
                    .delete(&node_name(&pool.name, id), &DeleteParams::default())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => return Err(kube_err("delete_instances", e)),
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn in_flight<'a>(
        &'a self,
        pool: &'a NodePool,
    ) -> BoxFuture<'a, ProviderResult<Vec<InFlightInstance>>> {
        async move {
            let (state, _) = self.read().await?;
            let Some(group) = state.pools.get(&pool.name) else {
                return Ok(Vec::new());
            };
            let registered = self.registered_nodes(&pool.name).await?;
            Ok(group
                .instances
                .iter()
                .filter(|i| !registered.contains(&node_name(&pool.name, &i.id)))
                .map(|i| InFlightInstance {
                    instance_type: Some(i.instance_type.clone()),
                    zone: Some(i.zone.clone()),
                    requested_at: Some(i.requested_at),
                })
                .collect())
        }
        .boxed()
    }

    fn instance_for_provider_id(&self, pool: &str, provider_id: &str) -> Option<InstanceRef> {
        let rest = provider_id.strip_prefix(PROVIDER_ID_PREFIX)?;
        let (p, id) = rest.split_once('/')?;
        (p == pool && !id.is_empty()).then(|| InstanceRef {
            pool: pool.to_string(),
            id: id.to_string(),
            provider_id: provider_id.to_string(),
        })
    }

    fn templates(&self, pool: &NodePool) -> Vec<InstanceTemplate> {
        catalog_templates(&self.catalog, pool)
    }

    fn price(&self, instance_type: &str, capacity_type: CapacityType) -> Option<f64> {
        catalog_price(&self.catalog, instance_type, capacity_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_round_trip() {
        let id = provider_id("spot-pool", "i-0000002a");
        assert_eq!(id, "kube://spot-pool/i-0000002a");
        let rest = id.strip_prefix(PROVIDER_ID_PREFIX).expect("prefix");
        assert_eq!(rest.split_once('/'), Some(("spot-pool", "i-0000002a")));
    }

    #[test]
    fn spot_nodes_get_the_spot_taint_and_labels() {
        let catalog = Catalog::aws("us-east-1").expect("catalogue");
        let t = template_from_catalog(&catalog, "g5.12xlarge", CapacityType::Spot, &[])
            .expect("template");
        let inst = InstanceRecord {
            id: "i-1".into(),
            instance_type: "g5.12xlarge".into(),
            zone: "us-east-1b".into(),
            capacity_type: CapacityType::Spot,
            requested_at: Utc::now(),
            labels: BTreeMap::from([("team".to_string(), "ml".to_string())]),
            taints: vec![],
        };
        let node = build_node("spot", &inst, "spot-i-1");
        let labels = node.metadata.labels.unwrap_or_default();
        assert_eq!(labels[keys::LABEL_CAPACITY_TYPE], "spot");
        assert_eq!(labels[keys::LABEL_NODE_POOL], "spot");
        assert_eq!(labels[keys::LABEL_INSTANCE_TYPE], "g5.12xlarge");
        assert_eq!(labels[keys::LABEL_ZONE], "us-east-1b");
        assert_eq!(labels["team"], "ml");
        let spec = node.spec.unwrap_or_default();
        assert_eq!(spec.provider_id.as_deref(), Some("kube://spot/i-1"));
        let taints = spec.taints.unwrap_or_default();
        assert!(
            taints
                .iter()
                .any(|t| t.key == keys::TAINT_SPOT_KEY && t.effect == "NoSchedule")
        );
        let status = node_status(&t, false, Utc::now());
        assert_eq!(status["capacity"]["nvidia.com/gpu"], "4");
        assert_eq!(status["allocatable"]["nvidia.com/gpu"], "0");
        let status = node_status(&t, true, Utc::now());
        assert_eq!(status["allocatable"]["nvidia.com/gpu"], "4");
    }

    #[test]
    fn faults_classify() {
        let f = PoolFault {
            insufficient_capacity: true,
            ..Default::default()
        };
        assert_eq!(
            fault_error(&f, "p").map(|e| e.kind),
            Some(ProviderErrorKind::InsufficientCapacity)
        );
        let f = PoolFault {
            error: Some("slow down".into()),
            error_kind: Some("throttled".into()),
            ..Default::default()
        };
        assert_eq!(
            fault_error(&f, "p").map(|e| e.kind),
            Some(ProviderErrorKind::Throttled)
        );
        assert!(fault_error(&PoolFault::default(), "p").is_none());
    }
}
