//! Namespaces and GPU pods for tests.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Toleration};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::{DEFAULT_GPU_RESOURCE, Result, wait_for};

/// Creates a namespace; an existing one is returned as is.
pub async fn create_namespace(client: &Client, name: &str) -> Result<Namespace> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name },
    }))?;
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(namespaces.get(name).await?),
        Err(e) => Err(e.into()),
    }
}

/// Creates a namespace named `<prefix><random suffix>` and returns its name.
pub async fn create_unique_namespace(client: &Client, prefix: &str) -> Result<String> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "generateName": prefix },
    }))?;
    let created = namespaces.create(&PostParams::default(), &ns).await?;
    Ok(created.metadata.name.unwrap_or_default())
}

/// A single-container pod requesting (and limiting) `gpus` of a GPU resource.
#[derive(Debug, Clone)]
pub struct GpuPodSpec {
    pub name: String,
    pub namespace: String,
    pub gpus: u32,
    pub gpu_resource: String,
    pub cpu: Option<String>,
    pub memory: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub scheduler_name: Option<String>,
    pub node_name: Option<String>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub priority_class_name: Option<String>,
    pub image: String,
}

impl GpuPodSpec {
    /// Pod `name` in namespace `default` requesting `gpus` × `nvidia.com/gpu` (none if 0).
    pub fn new(name: impl Into<String>, gpus: u32) -> Self {
        GpuPodSpec {
            name: name.into(),
            namespace: "default".to_string(),
            gpus,
            gpu_resource: DEFAULT_GPU_RESOURCE.to_string(),
            cpu: None,
            memory: None,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            scheduler_name: None,
            node_name: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            priority_class_name: None,
            // Never pulled: no kubelet runs.
            image: "registry.k8s.io/pause:3.2".to_string(),
        }
    }

    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    pub fn gpu_resource(mut self, resource: impl Into<String>) -> Self {
        self.gpu_resource = resource.into();
        self
    }

    pub fn cpu(mut self, cpu: impl Into<String>) -> Self {
        self.cpu = Some(cpu.into());
        self
    }

    pub fn memory(mut self, memory: impl Into<String>) -> Self {
        self.memory = Some(memory.into());
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

    pub fn scheduler_name(mut self, scheduler: impl Into<String>) -> Self {
        self.scheduler_name = Some(scheduler.into());
        self
    }

    /// Pre-binds the pod (`spec.nodeName`), bypassing the scheduler.
    pub fn node_name(mut self, node: impl Into<String>) -> Self {
        self.node_name = Some(node.into());
        self
    }

    pub fn node_selector(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node_selector.insert(key.into(), value.into());
        self
    }

    pub fn toleration(mut self, toleration: Toleration) -> Self {
        self.tolerations.push(toleration);
        self
    }

    pub fn priority_class_name(mut self, class: impl Into<String>) -> Self {
        self.priority_class_name = Some(class.into());
        self
    }

    pub fn build(&self) -> Result<Pod> {
        let mut requests = serde_json::Map::new();
        if self.gpus > 0 {
            requests.insert(
                self.gpu_resource.clone(),
                Value::String(self.gpus.to_string()),
            );
        }
        // Extended resources must have limits equal to requests; cpu/memory only request.
        let limits = requests.clone();
        if let Some(cpu) = &self.cpu {
            requests.insert("cpu".to_string(), Value::String(cpu.clone()));
        }
        if let Some(memory) = &self.memory {
            requests.insert("memory".to_string(), Value::String(memory.clone()));
        }
        let mut spec = json!({
            "containers": [{
                "name": "main",
                "image": self.image,
                "resources": { "requests": requests, "limits": limits },
            }],
            "terminationGracePeriodSeconds": 0,
        });
        if let Some(s) = &self.scheduler_name {
            spec["schedulerName"] = Value::String(s.clone());
        }
        if let Some(n) = &self.node_name {
            spec["nodeName"] = Value::String(n.clone());
        }
        if !self.node_selector.is_empty() {
            spec["nodeSelector"] = serde_json::to_value(&self.node_selector)?;
        }
        if !self.tolerations.is_empty() {
            spec["tolerations"] = serde_json::to_value(&self.tolerations)?;
        }
        if let Some(p) = &self.priority_class_name {
            spec["priorityClassName"] = Value::String(p.clone());
        }
        Ok(serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": self.labels,
                "annotations": self.annotations,
            },
            "spec": spec,
        }))?)
    }

    pub async fn create(&self, client: &Client) -> Result<Pod> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.namespace);
        Ok(pods.create(&PostParams::default(), &self.build()?).await?)
    }
}

/// Plays the kubelet for a bound pod: phase `Running`, Ready, started now. Without it pods
/// stay `Pending` forever, and 1.20's eviction API ignores PDBs for pending pods.
pub async fn mark_pod_running(client: &Client, namespace: &str, pod: &str) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition =
        |type_: &str| json!({"type": type_, "status": "True", "lastTransitionTime": now});
    let patch = json!({
        "status": {
            "phase": "Running",
            "startTime": now,
            "conditions": [
                condition("Initialized"),
                condition("ContainersReady"),
                condition("Ready"),
                condition("PodScheduled"),
            ],
        }
    });
    Ok(pods
        .patch_status(pod, &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
}

/// `spec.nodeName` of a pod (`None` while unscheduled).
pub async fn pod_node_name(client: &Client, namespace: &str, pod: &str) -> Result<Option<String>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    Ok(pods.get(pod).await?.spec.and_then(|s| s.node_name))
}

/// Waits until the pod is bound to a node and returns the node's name.
pub async fn wait_for_pod_bound(
    client: &Client,
    namespace: &str,
    pod: &str,
    timeout: Duration,
) -> Result<String> {
    wait_for(timeout, || async {
        pod_node_name(client, namespace, pod).await.ok().flatten()
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn gpu_pod_requests_and_limits_gpus() {
        let pod = GpuPodSpec::new("p", 2)
            .namespace("ml")
            .annotation("gpu-autoscaler.io/eviction-priority", "low")
            .label("gpu-autoscaler.io/workload-type", "training")
            .scheduler_name("custom")
            .cpu("1")
            .build()
            .expect("builds");
        assert_eq!(pod.metadata.namespace.as_deref(), Some("ml"));
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.scheduler_name.as_deref(), Some("custom"));
        let resources = spec.containers[0].resources.clone().expect("resources");
        let requests = resources.requests.unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        assert_eq!(requests["nvidia.com/gpu"], Quantity("2".to_string()));
        assert_eq!(requests["cpu"], Quantity("1".to_string()));
        assert_eq!(limits["nvidia.com/gpu"], Quantity("2".to_string()));
        assert!(!limits.contains_key("cpu"));
    }

    #[test]
    fn zero_gpu_pod_requests_no_gpu() {
        let pod = GpuPodSpec::new("p", 0).build().expect("builds");
        let resources = pod.spec.expect("spec").containers[0]
            .resources
            .clone()
            .expect("resources");
        assert!(resources.requests.unwrap_or_default().is_empty());
    }
}
