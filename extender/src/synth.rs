//! Deterministic synthetic clusters and pods for tests, benchmarks and the load generator.
//!
//! Not used by the serving path. The shapes follow what real GPU nodes carry (capacity-type,
//! pool, instance type, zone and region labels; GPU, CPU and memory allocatable; conditions,
//! addresses and node info), so full-NodeList request sizes are realistic.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use gpu_autoscaler_api::CapacityType;
use serde_json::{Value, json};

use crate::view::NodeView;

/// Instance types used for spot nodes (all present in the bundled Spot Advisor extract) and
/// their GPU counts.
pub const SPOT_TYPES: [(&str, u32); 4] = [
    ("g5.12xlarge", 4),
    ("p4d.24xlarge", 8),
    ("g6e.12xlarge", 4),
    ("p5en.48xlarge", 8),
];
pub const ZONES: [&str; 3] = ["us-east-1a", "us-east-1b", "us-east-1c"];

/// The `i`-th node of a synthetic cluster, as a view. Every 4th node is on-demand, every 8th
/// reserved, the rest spot; every 50th spot node carries an interruption warning, every 97th
/// node is cordoned, and every 70th spot node has a termination time 5 minutes after `now`.
pub fn node_view(i: usize, now: DateTime<Utc>) -> NodeView {
    let capacity = match i % 8 {
        0 => CapacityType::Reserved,
        4 => CapacityType::OnDemand,
        _ => CapacityType::Spot,
    };
    let (itype, gpus) = match capacity {
        CapacityType::Spot => SPOT_TYPES[i % SPOT_TYPES.len()],
        _ => ("p4d.24xlarge", 8),
    };
    let spot = capacity == CapacityType::Spot;
    NodeView {
        name: Arc::from(format!("gpu-node-{i:05}")),
        capacity: Some(capacity),
        pool: Some(Arc::from(format!("pool-{}", capacity.as_str()))),
        instance_type: Some(Arc::from(itype)),
        zone: Some(Arc::from(ZONES[i % ZONES.len()])),
        region: Some(Arc::from("us-east-1")),
        interruption_warning: spot && i % 50 == 1,
        termination_time: (spot && i % 70 == 3).then(|| now + chrono::Duration::minutes(5)),
        unschedulable: i % 97 == 5,
        allocatable_gpus: gpus,
        gpus_in_use: ((i * 3) % (gpus as usize + 1)) as u32,
    }
}

/// `n` synthetic nodes.
pub fn cluster(n: usize, now: DateTime<Utc>) -> Vec<NodeView> {
    (0..n).map(|i| node_view(i, now)).collect()
}

/// A full Node object matching [`node_view`] (GPU usage is not part of a Node).
pub fn node_json(i: usize, now: DateTime<Utc>) -> Value {
    let v = node_view(i, now);
    let mut annotations = json!({
        "node.alpha.kubernetes.io/ttl": "0",
        "volumes.kubernetes.io/controller-managed-attach-detach": "true"
    });
    if v.interruption_warning {
        annotations["gpu-autoscaler.io/spot-interruption-warning"] = json!("true");
    }
    if let Some(t) = v.termination_time {
        annotations["gpu-autoscaler.io/spot-termination-time"] = json!(t.to_rfc3339());
    }
    let capacity = v.capacity.map(CapacityType::as_str).unwrap_or("on-demand");
    let mut taints = vec![];
    if capacity == "spot" {
        taints.push(json!({"key": "gpu-autoscaler.io/capacity-type", "value": "spot", "effect": "NoSchedule"}));
    }
    let gpus = v.allocatable_gpus.to_string();
    json!({
        "metadata": {
            "name": &*v.name,
            "uid": format!("00000000-0000-4000-8000-{i:012}"),
            "resourceVersion": format!("{}", 1000 + i),
            "creationTimestamp": "2025-06-28T00:00:00Z",
            "labels": {
                "beta.kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": &*v.name,
                "kubernetes.io/os": "linux",
                "gpu-autoscaler.io/capacity-type": capacity,
                "gpu-autoscaler.io/node-pool": v.pool.as_deref(),
                "node.kubernetes.io/instance-type": v.instance_type.as_deref(),
                "topology.kubernetes.io/zone": v.zone.as_deref(),
                "topology.kubernetes.io/region": "us-east-1",
                "nvidia.com/gpu.present": "true"
            },
            "annotations": annotations
        },
        "spec": {
            "providerID": format!("aws:///{}/i-{i:017x}", v.zone.as_deref().unwrap_or("")),
            "unschedulable": v.unschedulable,
            "taints": taints
        },
        "status": {
            "capacity": {"cpu": "96", "memory": "1176893616Ki", "pods": "110", "nvidia.com/gpu": gpus,
                         "ephemeral-storage": "209702892Ki"},
            "allocatable": {"cpu": "95690m", "memory": "1166187696Ki", "pods": "110", "nvidia.com/gpu": gpus,
                            "ephemeral-storage": "192188443124"},
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                 "lastHeartbeatTime": "2025-06-28T00:00:00Z", "lastTransitionTime": "2025-06-28T00:00:00Z",
                 "message": "kubelet has sufficient memory available"},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
                 "lastHeartbeatTime": "2025-06-28T00:00:00Z", "lastTransitionTime": "2025-06-28T00:00:00Z",
                 "message": "kubelet has no disk pressure"},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
                 "lastHeartbeatTime": "2025-06-28T00:00:00Z", "lastTransitionTime": "2025-06-28T00:00:00Z",
                 "message": "kubelet has sufficient PID available"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "lastHeartbeatTime": "2025-06-28T00:00:00Z", "lastTransitionTime": "2025-06-28T00:00:00Z",
                 "message": "kubelet is posting ready status"}
            ],
            "addresses": [
                {"type": "InternalIP", "address": format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256)},
                {"type": "Hostname", "address": &*v.name}
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("{i:032x}"), "systemUUID": format!("ec2{i:029x}"),
                "bootID": format!("{:032x}", i * 7919), "kernelVersion": "6.1.140-154.222.amzn2023.x86_64",
                "osImage": "Amazon Linux 2023", "containerRuntimeVersion": "containerd://1.7.27",
                "kubeletVersion": "v1.33.1-eks-b9364f6", "kubeProxyVersion": "v1.33.1-eks-b9364f6",
                "operatingSystem": "linux", "architecture": "amd64"
            },
            "images": [
                {"names": ["nvcr.io/nvidia/k8s-device-plugin@sha256:0f3b9a2c", "nvcr.io/nvidia/k8s-device-plugin:v0.17.1"], "sizeBytes": 183_000_000},
                {"names": ["602401143452.dkr.ecr.us-east-1.amazonaws.com/amazon-k8s-cni@sha256:1a2b", "602401143452.dkr.ecr.us-east-1.amazonaws.com/amazon-k8s-cni:v1.19.2"], "sizeBytes": 61_000_000},
                {"names": ["602401143452.dkr.ecr.us-east-1.amazonaws.com/eks/kube-proxy@sha256:3c4d", "602401143452.dkr.ecr.us-east-1.amazonaws.com/eks/kube-proxy:v1.33.0"], "sizeBytes": 35_000_000}
            ]
        }
    })
}

/// A GPU pod as kube-scheduler sends it (already defaulted by the apiserver).
pub fn pod_json(
    name: &str,
    gpus: u32,
    tier_preference: Option<&str>,
    eviction_priority: Option<&str>,
    owner_uid: Option<&str>,
) -> Value {
    let mut annotations = json!({});
    if let Some(t) = tier_preference {
        annotations["gpu-autoscaler.io/tier-preference"] = json!(t);
    }
    if let Some(p) = eviction_priority {
        annotations["gpu-autoscaler.io/eviction-priority"] = json!(p);
    }
    let mut meta = json!({
        "name": name, "namespace": "default", "uid": format!("pod-uid-{name}"),
        "resourceVersion": "1", "creationTimestamp": "2025-06-28T00:00:00Z",
        "annotations": annotations
    });
    if let Some(uid) = owner_uid {
        meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": "trainer-7d9f", "uid": uid, "controller": true, "blockOwnerDeletion": true}]);
    }
    json!({
        "metadata": meta,
        "spec": {
            "containers": [{
                "name": "main", "image": "nvcr.io/nvidia/pytorch:25.01-py3",
                "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()},
                              "requests": {"nvidia.com/gpu": gpus.to_string(), "cpu": "8", "memory": "64Gi"}},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default", "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "gpu-autoscaler.io/capacity-type", "operator": "Equal", "value": "spot", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            ],
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"}
    })
}

/// A cache-mode request body: `{"Pod": ..., "Nodes": null, "NodeNames": [...]}`.
pub fn cache_request(pod: &Value, names: impl IntoIterator<Item = String>) -> Vec<u8> {
    let names: Vec<String> = names.into_iter().collect();
    serde_json::to_vec(&json!({"Pod": pod, "Nodes": null, "NodeNames": names})).unwrap_or_default()
}

/// A full-NodeList request body: `{"Pod": ..., "Nodes": {"items": [...]}, "NodeNames": null}`.
pub fn full_request(pod: &Value, nodes: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "Pod": pod,
        "Nodes": {"metadata": {}, "items": nodes},
        "NodeNames": null
    }))
    .unwrap_or_default()
}
