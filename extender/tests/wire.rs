//! Wire tests through the axum router (`oneshot`): request shapes as kube-scheduler 1.20 sends
//! them in both modes, old lowercase keys, bad bodies, probes and metrics.

use std::sync::Arc;

use axum::body::Body;
use chrono::{DateTime, TimeZone, Utc};
use gpu_autoscaler_api::GpuResourceNames;
use gpu_autoscaler_extender::server::Extender;
use gpu_autoscaler_extender::wire::read;
use gpu_autoscaler_extender::{ClusterIndex, Config, router};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};
use tower::ServiceExt;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 28, 12, 0, 0).unwrap()
}

/// A Pod exactly as kube-scheduler 1.20 serialises it into ExtenderArgs (apiserver-defaulted,
/// managedFields included).
fn pod_120(name: &str, tier: Option<&str>, gpus: &str) -> Value {
    let mut annotations = json!({"kubernetes.io/psp": "eks.privileged"});
    if let Some(t) = tier {
        annotations["gpu-autoscaler.io/tier-preference"] = json!(t);
        annotations["gpu-autoscaler.io/eviction-priority"] = json!("medium");
    }
    json!({
        "metadata": {
            "name": name, "namespace": "ml", "uid": format!("uid-{name}"), "resourceVersion": "4711",
            "creationTimestamp": "2025-06-28T11:59:58Z", "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "trainer-5c7f",
                                 "uid": "rs-uid-1", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                               "time": "2025-06-28T11:59:58Z", "fieldsType": "FieldsV1",
                               "fieldsV1": {"f:metadata": {"f:generateName": {}}}}]
        },
        "spec": {
            "volumes": [{"name": "default-token-x", "secret": {"secretName": "default-token-x", "defaultMode": 420}}],
            "containers": [{"name": "main", "image": "nvcr.io/nvidia/pytorch:25.01-py3",
                            "resources": {"limits": {"nvidia.com/gpu": gpus}, "requests": {"nvidia.com/gpu": gpus}},
                            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                            "imagePullPolicy": "IfNotPresent"}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default", "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [{"key": "gpu-autoscaler.io/capacity-type", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}],
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort"}
    })
}

fn node_120(
    name: &str,
    capacity: &str,
    gpus: &str,
    annotations: Value,
    unschedulable: bool,
) -> Value {
    json!({
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "12",
                     "creationTimestamp": "2025-06-28T10:00:00Z",
                     "labels": {"kubernetes.io/hostname": name, "gpu-autoscaler.io/capacity-type": capacity,
                                "gpu-autoscaler.io/node-pool": format!("pool-{capacity}"),
                                "node.kubernetes.io/instance-type": "p4d.24xlarge",
                                "topology.kubernetes.io/zone": "us-east-1a",
                                "topology.kubernetes.io/region": "us-east-1"},
                     "annotations": annotations},
        "spec": {"unschedulable": unschedulable},
        "status": {"capacity": {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": gpus},
                   "allocatable": {"cpu": "96", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": gpus},
                   "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "2025-06-28T11:59:00Z",
                                   "lastTransitionTime": "2025-06-28T10:00:00Z", "reason": "KubeletReady",
                                   "message": "kubelet is posting ready status"}],
                   "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                                "osImage": "", "containerRuntimeVersion": "", "kubeletVersion": "v1.20.2",
                                "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64"}}
    })
}

fn nodes() -> Vec<Value> {
    vec![
        node_120("spot-a", "spot", "8", json!({}), false),
        node_120("od-a", "on-demand", "8", json!({}), false),
        node_120(
            "spot-warned",
            "spot",
            "8",
            json!({"gpu-autoscaler.io/spot-interruption-warning": "true"}),
            false,
        ),
        node_120(
            "spot-ending",
            "spot",
            "8",
            json!({"gpu-autoscaler.io/spot-termination-time": "2025-06-28T12:03:00Z"}),
            false,
        ),
        node_120("od-cordoned", "on-demand", "8", json!({}), true),
        node_120("od-busy", "on-demand", "8", json!({}), false),
    ]
}

/// An extender whose index knows the nodes above (cache mode) and one bound 6-GPU pod on
/// `od-busy`.
fn extender(node_cache: bool) -> Arc<Extender> {
    let index = Arc::new(ClusterIndex::new(GpuResourceNames::default(), node_cache));
    let typed: Vec<Node> = nodes()
        .into_iter()
        .map(|n| serde_json::from_value(n).unwrap())
        .collect();
    index.replace_nodes(typed.iter());
    let mut bound = pod_120("running", Some("on-demand"), "6");
    bound["spec"]["nodeName"] = json!("od-busy");
    bound["status"]["phase"] = json!("Running");
    let bound: Pod = serde_json::from_value(bound).unwrap();
    index.replace_pods([&bound]);
    Arc::new(Extender::new(Config::default(), index).with_clock(Arc::new(now)))
}

async fn call(
    ext: &Arc<Extender>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = router(ext.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, bytes)
}

async fn post_json(ext: &Arc<Extender>, path: &str, body: Value) -> (StatusCode, Value) {
    let (status, bytes) = call(ext, "POST", path, serde_json::to_vec(&body).unwrap()).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

fn item_names(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test]
async fn filter_full_nodelist_mode_answers_with_filtered_nodelist() {
    let ext = extender(false);
    let body = json!({"Pod": pod_120("p", Some("spot"), "1"), "Nodes": {"metadata": {}, "items": nodes()}, "NodeNames": null});
    let (status, v) = post_json(&ext, "/filter", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["Error"], "");
    assert_eq!(item_names(&v["Nodes"]), vec!["spot-a"]);
    // Passing nodes come back verbatim.
    assert_eq!(v["Nodes"]["items"][0], nodes()[0]);
    assert!(v["NodeNames"].is_null());
    let failed = v["FailedAndUnresolvableNodes"].as_object().unwrap();
    let mut keys: Vec<&str> = failed.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "od-a",
            "od-busy",
            "od-cordoned",
            "spot-ending",
            "spot-warned"
        ]
    );
    assert_eq!(
        failed["spot-warned"],
        "gpu-autoscaler: node has a spot interruption warning"
    );
    assert!(
        failed["spot-ending"]
            .as_str()
            .unwrap()
            .contains("2025-06-28T12:03:00+00:00")
    );
    assert!(
        failed["od-a"]
            .as_str()
            .unwrap()
            .contains("capacity type on-demand is not in the pod's tier-preference (spot)")
    );
    // Listed in both maps: 1.20 only reads FailedNodes, 1.21+ lets the unresolvable map win.
    assert_eq!(v["FailedNodes"], v["FailedAndUnresolvableNodes"]);
}

#[tokio::test]
async fn filter_cache_mode_answers_with_node_names() {
    let ext = extender(true);
    let all: Vec<String> = nodes()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let body =
        json!({"Pod": pod_120("p", Some("spot,on-demand"), "1"), "Nodes": null, "NodeNames": all});
    let (status, v) = post_json(&ext, "/filter", body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["Error"], "");
    assert!(v["Nodes"].is_null());
    assert_eq!(names(&v["NodeNames"]), vec!["spot-a", "od-a", "od-busy"]);
    let failed: Vec<&String> = v["FailedAndUnresolvableNodes"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(failed, ["od-cordoned", "spot-ending", "spot-warned"]);
}

#[tokio::test]
async fn old_lowercase_keys_are_read() {
    let ext = extender(true);
    let body =
        json!({"pod": pod_120("p", Some("on-demand"), "1"), "nodenames": ["spot-a", "od-a"]});
    let (_, v) = post_json(&ext, "/filter", body).await;
    assert_eq!(names(&v["NodeNames"]), vec!["od-a"]);
    let body = json!({"POD": pod_120("p", Some("on-demand"), "1"), "nodes": {"items": [nodes()[1].clone()]}});
    let (_, v) = post_json(&ext, "/filter", body).await;
    assert_eq!(item_names(&v["Nodes"]), vec!["od-a"]);
}

#[tokio::test]
async fn pass_through_pods_keep_every_node() {
    let ext = extender(true);
    for pod in [
        pod_120("no-tier", None, "1"),
        pod_120("cpu-only", Some("on-demand"), "0"),
    ] {
        let body = json!({"Pod": pod, "Nodes": {"items": nodes()}, "NodeNames": null});
        let (_, v) = post_json(&ext, "/filter", body).await;
        assert_eq!(item_names(&v["Nodes"]).len(), 6);
        assert_eq!(v["FailedAndUnresolvableNodes"], json!({}));
        // Pass-through needs no cache knowledge: unknown names go through too.
        let body = json!({"Pod": pod, "NodeNames": ["spot-warned", "not-in-cache"]});
        let (_, v) = post_json(&ext, "/filter", body).await;
        assert_eq!(names(&v["NodeNames"]), vec!["spot-warned", "not-in-cache"]);
        let (status, v) = post_json(
            &ext,
            "/prioritize",
            json!({"Pod": pod, "NodeNames": ["spot-a", "od-a"]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            v,
            json!([{"Host": "spot-a", "Score": 0}, {"Host": "od-a", "Score": 0}])
        );
    }
}

#[tokio::test]
async fn prioritize_both_modes_pack_and_follow_tiers() {
    for cache in [false, true] {
        let ext = extender(cache);
        let pod = pod_120("p", Some("on-demand,spot"), "2");
        let body = if cache {
            json!({"Pod": pod, "Nodes": null, "NodeNames": ["spot-a", "od-a", "od-busy"]})
        } else {
            json!({"Pod": pod, "Nodes": {"items": [nodes()[0], nodes()[1], nodes()[5]]}, "NodeNames": null})
        };
        let (status, v) = post_json(&ext, "/prioritize", body).await;
        assert_eq!(status, StatusCode::OK, "cache={cache}");
        let s = read::scores(&v);
        assert_eq!(s.len(), 3);
        // od-busy has 6 of 8 GPUs in use: a 2-GPU pod fills it exactly. (It also holds a
        // sibling replica, which the light spreading weight only slightly discounts.)
        assert!(
            s["od-busy"] >= 9 && s["od-busy"] > s["od-a"],
            "cache={cache} {s:?}"
        );
        assert!(s["od-a"] > s["spot-a"], "cache={cache} {s:?}");
        assert!(
            v.as_array()
                .unwrap()
                .iter()
                .all(|hp| hp.get("Host").is_some() && hp.get("Score").is_some())
        );
    }
}

#[tokio::test]
async fn bad_bodies_get_error_answers_not_panics() {
    let ext = extender(true);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", b"{not json".to_vec()),
        ("empty", Vec::new()),
        ("array", b"[]".to_vec()),
        ("no pod", br#"{"NodeNames":["spot-a"]}"#.to_vec()),
        ("null pod", br#"{"Pod":null,"NodeNames":["spot-a"]}"#.to_vec()),
        ("pod wrong type", br#"{"Pod":"x","NodeNames":["spot-a"]}"#.to_vec()),
        ("names wrong type", br#"{"Pod":{},"NodeNames":"spot-a"}"#.to_vec()),
        ("node without name", serde_json::to_vec(&json!({"Pod": pod_120("p", Some("spot"), "1"), "Nodes": {"items": [{"metadata": {}}]}})).unwrap()),
        ("neither", serde_json::to_vec(&json!({"Pod": pod_120("p", Some("spot"), "1")})).unwrap()),
    ];
    for (what, body) in cases {
        let (status, bytes) = call(&ext, "POST", "/filter", body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{what}");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(
            v["Error"]
                .as_str()
                .is_some_and(|e| e.starts_with("gpu-autoscaler:")),
            "{what}: {v}"
        );
        assert!(v["NodeNames"].is_null() && v["Nodes"].is_null(), "{what}");
        let (status, bytes) = call(&ext, "POST", "/prioritize", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{what}");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["Error"].as_str().is_some(), "{what}");
    }
    let text = ext.metrics.encode().unwrap();
    assert!(
        text.contains(
            r#"gpu_autoscaler_extender_requests_total{verb="filter",result="bad_request"} 9"#
        ),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_node_in_cache_mode_is_an_error() {
    let ext = extender(true);
    let body = json!({"Pod": pod_120("p", Some("spot"), "1"), "NodeNames": ["spot-a", "ghost"]});
    let (status, v) = post_json(&ext, "/filter", body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["Error"],
        "gpu-autoscaler: 1 node(s) unknown to the extender's node cache: ghost"
    );
    let (status, _) = post_json(&ext, "/prioritize", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn cache_mode_needs_node_cache_and_sync() {
    // Without --node-cache, NodeNames-only requests are refused with a hint.
    let ext = extender(false);
    let body = json!({"Pod": pod_120("p", Some("spot"), "1"), "NodeNames": ["spot-a"]});
    let (_, v) = post_json(&ext, "/filter", body.clone()).await;
    assert!(
        v["Error"]
            .as_str()
            .unwrap()
            .contains("nodeCacheCapable: false"),
        "{v}"
    );

    let index = Arc::new(ClusterIndex::new(GpuResourceNames::default(), true));
    let ext = Arc::new(Extender::new(Config::default(), index.clone()));
    let (status, _) = call(&ext, "GET", "/readyz", vec![]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (_, v) = post_json(&ext, "/filter", body.clone()).await;
    assert_eq!(v["Error"], "gpu-autoscaler: node index not synced yet");
    let (status, _) = post_json(&ext, "/prioritize", body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    index.mark_synced();
    let (status, _) = call(&ext, "GET", "/readyz", vec![]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn probes_and_metrics() {
    let ext = extender(true);
    let (status, body) = call(&ext, "GET", "/healthz", vec![]).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, b"ok".as_slice())
    );
    let body = json!({"Pod": pod_120("p", Some("spot"), "1"), "NodeNames": ["spot-a", "spot-warned", "od-a"]});
    post_json(&ext, "/filter", body.clone()).await;
    post_json(&ext, "/prioritize", body).await;
    let (status, bytes) = call(&ext, "GET", "/metrics", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(bytes).unwrap();
    for want in [
        r#"gpu_autoscaler_extender_requests_total{verb="filter",result="ok"} 1"#,
        r#"gpu_autoscaler_extender_requests_total{verb="prioritize",result="ok"} 1"#,
        r#"gpu_autoscaler_extender_filtered_nodes_total{reason="interruption_warning"} 1"#,
        r#"gpu_autoscaler_extender_filtered_nodes_total{reason="capacity_type"} 1"#,
        r#"gpu_autoscaler_extender_request_duration_seconds_count{verb="filter"} 1"#,
        "gpu_autoscaler_extender_index_nodes 6",
        "gpu_autoscaler_extender_index_gpu_pods 1",
        "gpu_autoscaler_extender_index_synced 1",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
}

#[tokio::test]
async fn large_full_nodelist_request_is_accepted() {
    // 5,000 realistic nodes are far above axum's default 2 MB body limit.
    let ext = extender(false);
    let pod =
        gpu_autoscaler_extender::synth::pod_json("big", 1, Some("spot,on-demand"), None, None);
    let items: Vec<Value> = (0..5000)
        .map(|i| gpu_autoscaler_extender::synth::node_json(i, now()))
        .collect();
    let body = gpu_autoscaler_extender::synth::full_request(&pod, items);
    assert!(body.len() > 2 * 1024 * 1024, "{}", body.len());
    let (status, bytes) = call(&ext, "POST", "/filter", body).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["Error"], "");
    let passed = v["Nodes"]["items"].as_array().unwrap().len();
    let failed = v["FailedAndUnresolvableNodes"].as_object().unwrap().len();
    assert_eq!(passed + failed, 5000);
    // The same decision as the pure core on the same synthetic cluster.
    let views = gpu_autoscaler_extender::synth::cluster(5000, now());
    let pod_view = gpu_autoscaler_extender::PodView::from_pod(
        &serde_json::from_value(gpu_autoscaler_extender::synth::pod_json(
            "big",
            1,
            Some("spot,on-demand"),
            None,
            None,
        ))
        .unwrap(),
        &GpuResourceNames::default(),
    );
    let want_failed =
        gpu_autoscaler_extender::filter(&pod_view, views.iter(), now(), &Config::default())
            .iter()
            .filter(|v| v.is_some())
            .count();
    assert_eq!(failed, want_failed);
    assert!(failed >= 625, "all reserved nodes fail");
}
