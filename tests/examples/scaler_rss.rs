//! Controller memory with 5,000 nodes and 50,000 pods in its caches (manual benchmark; takes a
//! few minutes, so it is not part of the CI test run).
//!
//! ```text
//! cargo build -p gpu-autoscaler            # the binary under test
//! cargo run -p gpu-autoscaler-testkit --example scaler_rss [-- NODES PODS]
//! ```
//!
//! Starts a private kube-apiserver 1.20, creates the nodes (8 GPUs each, in a pool of the
//! policy) and the pods (bound, one GPU each, with the labels, annotations and owner a real
//! workload pod carries), then runs `target/debug/gpu-autoscaler scaler --provider kube` as a
//! separate process and reads its VmRSS / VmHWM from /proc once its caches are synced and a
//! few reconciles have run. Override the binary with `GPU_AUTOSCALER_BIN`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::{StreamExt, TryStreamExt};
use gpu_autoscaler_api::AutoscalingPolicy;
use gpu_autoscaler_testkit::{ControlPlane, GpuNodeSpec, GpuPodSpec, create_namespace, wait_for};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;

fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    Some(out)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5_000);
    let pods: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(50_000);
    let bin = std::env::var_os("GPU_AUTOSCALER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/gpu-autoscaler")
        });
    anyhow::ensure!(
        bin.is_file(),
        "{} missing: cargo build -p gpu-autoscaler",
        bin.display()
    );

    let cp = ControlPlane::builder()
        .apiserver_arg("--max-requests-inflight=2000")
        .apiserver_arg("--max-mutating-requests-inflight=1000")
        .start()
        .await?;
    let client = cp.client();
    Api::<CustomResourceDefinition>::all(client.clone())
        .create(&PostParams::default(), &AutoscalingPolicy::crd())
        .await?;
    let policies: Api<AutoscalingPolicy> = Api::all(client.clone());
    wait_for(Duration::from_secs(30), || {
        let p = policies.clone();
        async move { p.list(&Default::default()).await.ok().map(|_| ()) }
    })
    .await?;
    let policy: AutoscalingPolicy = serde_json::from_value(json!({
        "apiVersion": "gpu-autoscaler.io/v1alpha1", "kind": "AutoscalingPolicy",
        "metadata": { "name": "bench" },
        "spec": { "maxNodes": 10000, "nodePools": [
            { "name": "od", "maxSize": 10000, "instanceTypes": ["p3.16xlarge"], "capacityType": "on-demand" } ] },
    }))?;
    policies.create(&PostParams::default(), &policy).await?;
    create_namespace(&client, "bench").await?;

    let started = Instant::now();
    let node_api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..nodes)
        .map(|i| {
            let api = node_api.clone();
            async move {
                let node = GpuNodeSpec::new(format!("gpu-{i:05}"))
                    .pool("od")
                    .capacity_type("on-demand")
                    .instance_type("p3.16xlarge")
                    .zone("us-east-1a")
                    .provider_id(format!("kube://od/i-{i:08x}"))
                    .build()?;
                api.create(&PostParams::default(), &node).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    println!("created {nodes} nodes in {:?}", started.elapsed());
    let started = Instant::now();
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), "bench");
    futures::stream::iter(0..pods)
        .map(|i| {
            let api = pod_api.clone();
            async move {
                let mut pod = GpuPodSpec::new(format!("job-{i:06}"), 1)
                    .namespace("bench")
                    .node_name(format!("gpu-{:05}", i % nodes.max(1)))
                    .label("app", format!("job-{}", i / 10))
                    .label("gpu-autoscaler.io/workload-type", "training")
                    .annotation("gpu-autoscaler.io/eviction-priority", "high")
                    .annotation("gpu-autoscaler.io/tier-preference", "spot,on-demand")
                    .cpu("4")
                    .memory("16Gi")
                    .build()?;
                pod.metadata.owner_references = Some(vec![serde_json::from_value(json!({
                    "apiVersion": "batch/v1", "kind": "Job", "name": format!("job-{}", i / 10),
                    "uid": "00000000-0000-0000-0000-000000000001", "controller": true,
                }))?]);
                api.create(&PostParams::default(), &pod).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<_>>()
        .await?;
    println!("created {pods} pods in {:?}", started.elapsed());

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(&bin)
        .args([
            "scaler",
            "--provider",
            "kube",
            "--policy",
            "bench",
            "--no-leader-election",
        ])
        .args(["--interval", "5s", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--kubeconfig")
        .arg(cp.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .context("starting the scaler")?;
    let pid = child.id().context("scaler pid")?;
    let synced_at = Instant::now();
    wait_for(Duration::from_secs(600), || async {
        http_get(port, "/readyz")
            .await
            .is_some_and(|r| r.starts_with("HTTP/1.1 200") || r.starts_with("HTTP/1.0 200"))
    })
    .await
    .context("scaler never became ready")?;
    println!("scaler caches synced in {:?}", synced_at.elapsed());
    // A few reconciles over the full caches.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let metrics = http_get(port, "/metrics").await.unwrap_or_default();
    for line in metrics.lines().filter(|l| {
        l.starts_with("gpu_autoscaler_cached_")
            || l.starts_with("gpu_autoscaler_reconciles_total")
            || l.starts_with("gpu_autoscaler_plan_duration_seconds_sum")
            || l.starts_with("gpu_autoscaler_plan_duration_seconds_count")
            || l.starts_with("gpu_autoscaler_reconcile_duration_seconds_sum")
            || l.starts_with("gpu_autoscaler_reconcile_duration_seconds_count")
            || l.starts_with("gpu_autoscaler_node_count")
    }) {
        println!("  {line}");
    }
    let rss = proc_kib(pid, "VmRSS:").unwrap_or(0);
    let hwm = proc_kib(pid, "VmHWM:").unwrap_or(0);
    println!(
        "BENCH scaler RSS with {nodes} nodes and {pods} pods cached: VmRSS {:.1} MiB, VmHWM (peak) {:.1} MiB",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let _ = child.kill().await;
    Ok(())
}
