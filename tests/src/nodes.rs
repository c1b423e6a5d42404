//! Nodes that look like healthy GPU machines although no kubelet runs.

use std::collections::BTreeMap;

use gpu_autoscaler_api::keys;
use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::{DEFAULT_GPU_RESOURCE, Result};

/// How often a taint update is retried when another writer changed the Node in between.
const CONFLICT_RETRIES: usize = 10;

/// A Node to create: capacity, labels, taints; see [`GpuNodeSpec::create`].
#[derive(Debug, Clone)]
pub struct GpuNodeSpec {
    pub name: String,
    pub gpus: u32,
    /// Allocatable GPUs when it differs from `gpus` (e.g. a GPU marked unhealthy).
    pub allocatable_gpus: Option<u32>,
    pub gpu_resource: String,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub ephemeral_storage: String,
    pub capacity_type: Option<String>,
    pub pool: Option<String>,
    pub instance_type: Option<String>,
    pub zone: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub provider_id: Option<String>,
    pub unschedulable: bool,
}

impl GpuNodeSpec {
    /// An 8-GPU, 96-CPU, 1 TiB node without capacity-type or pool labels.
    pub fn new(name: impl Into<String>) -> Self {
        GpuNodeSpec {
            name: name.into(),
            gpus: 8,
            allocatable_gpus: None,
            gpu_resource: DEFAULT_GPU_RESOURCE.to_string(),
            cpu: "96".to_string(),
            memory: "1Ti".to_string(),
            pods: 110,
            ephemeral_storage: "500Gi".to_string(),
            capacity_type: None,
            pool: None,
            instance_type: None,
            zone: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            taints: Vec::new(),
            provider_id: None,
            unschedulable: false,
        }
    }

    pub fn gpus(mut self, gpus: u32) -> Self {
        self.gpus = gpus;
        self
    }

    pub fn allocatable_gpus(mut self, gpus: u32) -> Self {
        self.allocatable_gpus = Some(gpus);
        self
    }

    /// The extended resource the GPUs are advertised as (default `nvidia.com/gpu`).
    pub fn gpu_resource(mut self, resource: impl Into<String>) -> Self {
        self.gpu_resource = resource.into();
        self
    }

    /// CPU quantity, e.g. `"32"` or `"7500m"`.
    pub fn cpu(mut self, cpu: impl Into<String>) -> Self {
        self.cpu = cpu.into();
        self
    }

    /// Memory quantity, e.g. `"256Gi"`.
    pub fn memory(mut self, memory: impl Into<String>) -> Self {
        self.memory = memory.into();
        self
    }

    pub fn pods(mut self, pods: u32) -> Self {
        self.pods = pods;
        self
    }

    /// Sets `gpu-autoscaler.io/capacity-type` (`spot`, `on-demand`, `reserved`).
    pub fn capacity_type(mut self, capacity_type: impl Into<String>) -> Self {
        self.capacity_type = Some(capacity_type.into());
        self
    }

    /// Sets `gpu-autoscaler.io/node-pool`.
    pub fn pool(mut self, pool: impl Into<String>) -> Self {
        self.pool = Some(pool.into());
        self
    }

    /// Sets `node.kubernetes.io/instance-type`.
    pub fn instance_type(mut self, instance_type: impl Into<String>) -> Self {
        self.instance_type = Some(instance_type.into());
        self
    }

    /// Sets `topology.kubernetes.io/zone`.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Adds a taint; `value` may be empty.
    pub fn taint(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        effect: impl Into<String>,
    ) -> Self {
        let value: String = value.into();
        self.taints.push(Taint {
            key: key.into(),
            value: (!value.is_empty()).then_some(value),
            effect: effect.into(),
            time_added: None,
        });
        self
    }

    /// Adds the `gpu-autoscaler.io/capacity-type=spot:NoSchedule` taint spot nodes carry.
    pub fn spot_taint(self) -> Self {
        self.taint(
            keys::TAINT_SPOT_KEY,
            keys::TAINT_SPOT_VALUE,
            keys::TAINT_EFFECT_NO_SCHEDULE,
        )
    }

    pub fn provider_id(mut self, provider_id: impl Into<String>) -> Self {
        self.provider_id = Some(provider_id.into());
        self
    }

    /// Cordoned: `spec.unschedulable` plus the `node.kubernetes.io/unschedulable` taint that
    /// the node controller would add in a real cluster.
    pub fn unschedulable(mut self, yes: bool) -> Self {
        self.unschedulable = yes;
        self
    }

    fn all_labels(&self) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), self.name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), "amd64".to_string()),
        ]);
        for (key, value) in [
            (keys::LABEL_CAPACITY_TYPE, &self.capacity_type),
            (keys::LABEL_NODE_POOL, &self.pool),
            (keys::LABEL_INSTANCE_TYPE, &self.instance_type),
            (keys::LABEL_ZONE, &self.zone),
        ] {
            if let Some(value) = value {
                labels.insert(key.to_string(), value.clone());
            }
        }
        labels.extend(self.labels.clone());
        labels
    }

    fn all_taints(&self) -> Vec<Taint> {
        let mut taints = self.taints.clone();
        if self.unschedulable
            && !taints
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unschedulable")
        {
            taints.push(Taint {
                key: "node.kubernetes.io/unschedulable".to_string(),
                value: None,
                effect: "NoSchedule".to_string(),
                time_added: None,
            });
        }
        taints
    }

    /// The Node object as created, before the apiserver adds its not-ready taint.
    pub fn build(&self) -> Result<Node> {
        let spec = {
            let mut spec = json!({});
            if let Some(id) = &self.provider_id {
                spec["providerID"] = Value::String(id.clone());
            }
            if self.unschedulable {
                spec["unschedulable"] = Value::Bool(true);
            }
            let taints = self.all_taints();
            if !taints.is_empty() {
                spec["taints"] = serde_json::to_value(taints)?;
            }
            spec
        };
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.name,
                "labels": self.all_labels(),
                "annotations": self.annotations,
            },
            "spec": spec,
            "status": self.status(Timestamp::now()),
        });
        Ok(serde_json::from_value(node)?)
    }

    fn status(&self, now: Timestamp) -> Value {
        let capacity = json!({
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": self.pods.to_string(),
            "ephemeral-storage": self.ephemeral_storage,
            self.gpu_resource.clone(): self.gpus.to_string(),
        });
        let mut allocatable = capacity.clone();
        allocatable[self.gpu_resource.as_str()] =
            Value::String(self.allocatable_gpus.unwrap_or(self.gpus).to_string());
        json!({
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": conditions(true, now),
            "addresses": [
                {"type": "Hostname", "address": self.name},
            ],
            "nodeInfo": {
                "machineID": format!("{}-machine", self.name),
                "systemUUID": format!("{}-uuid", self.name),
                "bootID": format!("{}-boot", self.name),
                "kernelVersion": "5.15.0",
                "osImage": "Ubuntu 22.04 LTS",
                "containerRuntimeVersion": "containerd://1.6.0",
                "kubeletVersion": "v1.20.2",
                "kubeProxyVersion": "v1.20.2",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        })
    }

    /// Creates the Node, writes its status (Ready, capacity, allocatable) through the status
    /// subresource and removes the `node.kubernetes.io/not-ready` taint that the
    /// TaintNodesByCondition admission plugin put on it: with no node controller running,
    /// nothing else would.
    pub async fn create(&self, client: &Client) -> Result<Node> {
        let nodes: Api<Node> = Api::all(client.clone());
        let node = self.build()?;
        nodes.create(&PostParams::default(), &node).await?;
        let status = json!({ "status": self.status(Timestamp::now()) });
        nodes
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        remove_not_ready_taint(client, &self.name).await
    }
}

fn conditions(ready: bool, now: Timestamp) -> Value {
    let now = now.to_string();
    let cond = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        })
    };
    let ready = if ready {
        cond(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        )
    } else {
        cond(
            "Ready",
            "False",
            "KubeletNotReady",
            "container runtime is down",
        )
    };
    json!([
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        cond(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        ready,
    ])
}

/// Removes `node.kubernetes.io/not-ready` from the Node's taints (other taints stay).
pub async fn remove_not_ready_taint(client: &Client, node: &str) -> Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut tries = 0;
    loop {
        let current = nodes.get(node).await?;
        let taints: Vec<Taint> = current
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        if !taints.iter().any(|t| t.key == keys::TAINT_NOT_READY) {
            return Ok(current);
        }
        let kept: Vec<Taint> = taints
            .into_iter()
            .filter(|t| t.key != keys::TAINT_NOT_READY)
            .collect();
        // resourceVersion makes this a compare-and-swap: a concurrent writer's taint is never
        // silently dropped.
        let patch = json!({
            "metadata": { "resourceVersion": current.metadata.resource_version },
            "spec": { "taints": if kept.is_empty() { Value::Null } else { serde_json::to_value(&kept)? } },
        });
        match nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => return Ok(updated),
            Err(kube::Error::Api(status)) if status.code == 409 && tries < CONFLICT_RETRIES => {
                tries += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sets the Node's Ready condition (with a fresh heartbeat) through the status subresource.
/// Calling it with `true` again is a heartbeat.
pub async fn mark_node_ready(client: &Client, node: &str, ready: bool) -> Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    // Strategic merge keys conditions by `type`, so the other conditions stay.
    let patch = json!({ "status": { "conditions": conditions(ready, Timestamp::now()) } });
    Ok(nodes
        .patch_status(node, &PatchParams::default(), &Patch::Strategic(&patch))
        .await?)
}

/// Sets `status.allocatable[resource]` (capacity unchanged).
pub async fn set_allocatable(
    client: &Client,
    node: &str,
    resource: &str,
    quantity: &str,
) -> Result<Node> {
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({ "status": { "allocatable": { resource: quantity } } });
    Ok(nodes
        .patch_status(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
}

/// Sets the Node's allocatable `nvidia.com/gpu` to `gpus`.
pub async fn set_gpus_allocatable(client: &Client, node: &str, gpus: u32) -> Result<Node> {
    set_allocatable(client, node, DEFAULT_GPU_RESOURCE, &gpus.to_string()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn built_node_has_labels_gpus_and_ready_condition() {
        let node = GpuNodeSpec::new("gpu-1")
            .gpus(4)
            .allocatable_gpus(3)
            .capacity_type("spot")
            .pool("a100")
            .instance_type("p4d.24xlarge")
            .zone("us-east-1a")
            .label("team", "ml")
            .spot_taint()
            .unschedulable(true)
            .build()
            .expect("builds");
        let labels = node.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels[keys::LABEL_CAPACITY_TYPE], "spot");
        assert_eq!(labels[keys::LABEL_NODE_POOL], "a100");
        assert_eq!(labels[keys::LABEL_INSTANCE_TYPE], "p4d.24xlarge");
        assert_eq!(labels[keys::LABEL_ZONE], "us-east-1a");
        assert_eq!(labels["team"], "ml");
        let status = node.status.clone().unwrap_or_default();
        assert_eq!(
            status.capacity.unwrap_or_default()["nvidia.com/gpu"],
            Quantity("4".to_string())
        );
        assert_eq!(
            status.allocatable.unwrap_or_default()["nvidia.com/gpu"],
            Quantity("3".to_string())
        );
        let conditions = status.conditions.unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
        let spec = node.spec.unwrap_or_default();
        assert_eq!(spec.unschedulable, Some(true));
        let taint_keys: Vec<String> = spec
            .taints
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.key)
            .collect();
        assert_eq!(
            taint_keys,
            vec![
                keys::TAINT_SPOT_KEY.to_string(),
                "node.kubernetes.io/unschedulable".to_string()
            ]
        );
    }
}
