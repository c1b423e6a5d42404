//! The extender against a real kube-apiserver and kube-scheduler 1.20: where do pods get bound?
//!
//! One test per extender mode (full NodeList, node cache). Each runs the extender in-process on
//! a loopback port with its real watches against the test cluster, starts kube-scheduler with
//! our shipped `deploy/scheduler/v1beta1-*.yaml` snippet for that mode (`managedResources:
//! nvidia.com/gpu`, `ignorable: true`, weight 5), creates spot and on-demand
//! GPU nodes and pods that carry their own annotations and tolerations, and checks bindings:
//! - a spot-first pod lands on spot;
//! - an on-demand-only pod that tolerates the spot taint still never lands on spot;
//! - two more 1-GPU pods pack onto the on-demand node that already has GPUs in use;
//! - a node with an interruption warning takes no pod, even when it is the only one with room
//!   (the pod stays Pending and its condition carries our reason);
//! - with the extender stopped, scheduling still proceeds (ignorable).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use gpu_autoscaler_api::{GpuResourceNames, keys};
use gpu_autoscaler_extender::server::Extender;
use gpu_autoscaler_extender::{ClusterIndex, Config, router, serve_http};
use gpu_autoscaler_testkit::{
    Component, ControlPlane, GpuNodeSpec, GpuPodSpec, SchedulerConfig, create_namespace,
    pod_node_name, wait_for, wait_for_pod_bound,
};
use k8s_openapi::api::core::v1::{Pod, Toleration};
use kube::{Api, Client};

const NS: &str = "ml";
const BIND_TIMEOUT: Duration = Duration::from_secs(30);

fn spot_toleration() -> Toleration {
    Toleration {
        key: Some(keys::TAINT_SPOT_KEY.to_string()),
        operator: Some("Equal".to_string()),
        value: Some(keys::TAINT_SPOT_VALUE.to_string()),
        effect: Some(keys::TAINT_EFFECT_NO_SCHEDULE.to_string()),
        toleration_seconds: None,
    }
}

/// A 1-GPU pod with its own tier preference; it tolerates the spot taint either way, so only
/// the extender keeps it off spot.
fn pod(name: &str, tiers: &str) -> GpuPodSpec {
    GpuPodSpec::new(name, 1)
        .namespace(NS)
        .cpu("1")
        .memory("1Gi")
        .annotation(keys::ANNOTATION_TIER_PREFERENCE, tiers)
        .annotation(keys::ANNOTATION_EVICTION_PRIORITY, "medium")
        .toleration(spot_toleration())
}

async fn bound(cp: &ControlPlane, client: &Client, name: &str) -> Result<String> {
    wait_for_pod_bound(client, NS, name, BIND_TIMEOUT)
        .await
        .with_context(|| {
            format!(
                "pod {name} not bound; scheduler log:\n{}",
                cp.log_tail(Component::KubeScheduler, 40)
            )
        })
}

/// kube-scheduler's configuration: our shipped v1beta1 snippet for the mode
/// (`deploy/scheduler/`), pointed at the in-process extender, so the snippets themselves are
/// what the real 1.20 scheduler loads here.
///
/// Also, the testkit's generated configuration leaves kube-scheduler 1.20 on its fixed insecure
/// healthz/metrics port 10251 (`--port=0` is ignored once `--config` is given, and the
/// configuration refuses port 0), so two schedulers in one test binary would collide; each gets
/// a free loopback port instead.
fn scheduler_config(url: &str, node_cache: bool) -> Result<SchedulerConfig> {
    let file = if node_cache {
        "v1beta1-node-cache.yaml"
    } else {
        "v1beta1-full-nodelist.yaml"
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/scheduler")
        .join(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: serde_json::Value = serde_yaml::from_str(&text)?;
    let map = doc
        .as_object_mut()
        .context("scheduler config is not a mapping")?;
    // The harness fills in its kubeconfig and (absent our setting) turns leader election off.
    map.remove("clientConnection");
    map.remove("leaderElection");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    map.insert("healthzBindAddress".into(), addr.clone().into());
    map.insert("metricsBindAddress".into(), addr.into());
    let extender = doc["extenders"]
        .get_mut(0)
        .context("snippet has no extender")?;
    ensure!(
        extender["nodeCacheCapable"] == node_cache,
        "{file}: wrong nodeCacheCapable"
    );
    ensure!(
        extender["ignorable"] == true,
        "{file}: extender must be ignorable"
    );
    extender["urlPrefix"] = url.into();
    Ok(SchedulerConfig::from_yaml(serde_yaml::to_string(&doc)?))
}

async fn run_scenario(node_cache: bool) -> Result<()> {
    // The port must be known before kube-scheduler starts; connections queue until we serve.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let cp = ControlPlane::builder()
        .with_scheduler(scheduler_config(&url, node_cache)?)
        .start()
        .await?;
    let client = cp.client();

    let index = Arc::new(ClusterIndex::new(GpuResourceNames::default(), node_cache));
    let watches = tokio::spawn(index.clone().run_watches(client.clone()));
    let ext = Arc::new(Extender::new(Config::default(), index.clone()));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_http(listener, router(ext.clone()), async move {
        let _ = stop_rx.await;
    }));

    // spot-1 has room for exactly two 1-GPU pods; spot-warned has plenty but is being reclaimed.
    GpuNodeSpec::new("spot-1")
        .gpus(2)
        .capacity_type("spot")
        .pool("gpu-spot")
        .instance_type("g5.12xlarge")
        .zone("us-east-1a")
        .spot_taint()
        .create(&client)
        .await?;
    GpuNodeSpec::new("spot-warned")
        .gpus(8)
        .capacity_type("spot")
        .pool("gpu-spot")
        .instance_type("g5.12xlarge")
        .zone("us-east-1b")
        .spot_taint()
        .annotation(keys::ANNOTATION_SPOT_INTERRUPTION_WARNING, "true")
        .create(&client)
        .await?;
    for name in ["od-1", "od-2"] {
        GpuNodeSpec::new(name)
            .gpus(8)
            .capacity_type("on-demand")
            .pool("gpu-on-demand")
            .instance_type("p4d.24xlarge")
            .zone("us-east-1a")
            .create(&client)
            .await?;
    }
    create_namespace(&client, NS).await?;
    wait_for(Duration::from_secs(20), || async {
        index.is_synced() && (!node_cache || index.read().nodes.len() == 4)
    })
    .await
    .context("extender index did not sync")?;

    // 1. Spot-first lands on spot (the healthy one).
    pod("spot-first", "spot,on-demand").create(&client).await?;
    let node = bound(&cp, &client, "spot-first").await?;
    ensure!(
        node == "spot-1",
        "spot-first bound to {node}, expected spot-1"
    );

    // 2. On-demand only never lands on spot, though it tolerates the taint and spot has room.
    pod("od-only", "on-demand").create(&client).await?;
    let od_node = bound(&cp, &client, "od-only").await?;
    ensure!(od_node.starts_with("od-"), "od-only bound to {od_node}");

    // 3. Two 1-GPU pods pack onto the on-demand node that already has GPUs in use.
    for (i, name) in ["pack-1", "pack-2"].into_iter().enumerate() {
        let want_in_use = i as u32 + 1;
        wait_for(Duration::from_secs(10), || async {
            index.read().gpus_in_use(&od_node) == want_in_use
        })
        .await
        .with_context(|| format!("extender never saw {want_in_use} GPU(s) in use on {od_node}"))?;
        pod(name, "on-demand").create(&client).await?;
        let node = bound(&cp, &client, name).await?;
        ensure!(
            node == od_node,
            "{name} bound to {node}, expected to pack onto {od_node}"
        );
    }

    // 4. Spot-only fills spot-1; the next one must not go to the warned node: it stays Pending
    //    with our reason in its PodScheduled condition.
    wait_for(Duration::from_secs(10), || async {
        index.read().gpus_in_use("spot-1") == 1
    })
    .await
    .context("extender never saw spot-first on spot-1")?;
    pod("spot-only", "spot").create(&client).await?;
    let node = bound(&cp, &client, "spot-only").await?;
    ensure!(
        node == "spot-1",
        "spot-only bound to {node}, expected spot-1"
    );
    pod("spot-only-2", "spot").create(&client).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let message = wait_for(BIND_TIMEOUT, || async {
        let p = pods.get("spot-only-2").await.ok()?;
        let cond = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
        cond.message
            .filter(|m| m.contains("spot interruption warning"))
    })
    .await
    .with_context(|| {
        format!(
            "spot-only-2 never reported the interruption warning; scheduler log:\n{}",
            cp.log_tail(Component::KubeScheduler, 40)
        )
    })?;
    ensure!(
        pod_node_name(&client, NS, "spot-only-2").await?.is_none(),
        "spot-only-2 was bound despite: {message}"
    );
    let text = ext.metrics.encode()?;
    ensure!(
        text.contains(
            r#"gpu_autoscaler_extender_filtered_nodes_total{reason="interruption_warning"}"#
        ),
        "metrics lack the interruption filter count:\n{text}"
    );

    // 5. Extender down: scheduling proceeds without it (ignorable).
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .context("extender did not stop")???;
    GpuPodSpec::new("while-down", 1)
        .namespace(NS)
        .annotation(keys::ANNOTATION_TIER_PREFERENCE, "on-demand")
        .create(&client)
        .await?;
    let node = bound(&cp, &client, "while-down").await?;
    ensure!(node.starts_with("od-"), "while-down bound to {node}");

    watches.abort();
    cp.stop();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extender_full_nodelist_mode_places_pods() -> Result<()> {
    run_scenario(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extender_node_cache_mode_places_pods() -> Result<()> {
    run_scenario(true).await
}

/// The v1 snippets (current clusters, the chart) cannot be loaded by the 1.20 scheduler; check
/// that they say the same as the v1beta1 ones that the tests above do load.
#[test]
fn v1_snippets_match_the_tested_v1beta1_ones() -> Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/scheduler");
    for mode in ["full-nodelist", "node-cache"] {
        let load = |v: &str| -> Result<serde_json::Value> {
            let p = dir.join(format!("{v}-{mode}.yaml"));
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            Ok(serde_yaml::from_str(&text)?)
        };
        let (v1, beta) = (load("v1")?, load("v1beta1")?);
        ensure!(
            v1["apiVersion"] == "kubescheduler.config.k8s.io/v1",
            "{mode}"
        );
        ensure!(
            beta["apiVersion"] == "kubescheduler.config.k8s.io/v1beta1",
            "{mode}"
        );
        ensure!(
            v1["extenders"] == beta["extenders"],
            "{mode}: extender settings differ"
        );
        ensure!(
            v1["profiles"][0]["schedulerName"] == "gpu-autoscaler",
            "{mode}"
        );
        let ext = &v1["extenders"][0];
        ensure!(
            ext["managedResources"][0]["name"] == "nvidia.com/gpu",
            "{mode}"
        );
        ensure!(
            ext["ignorable"] == true && ext["filterVerb"] == "filter",
            "{mode}"
        );
        ensure!(ext["prioritizeVerb"] == "prioritize", "{mode}");
        ensure!(ext["nodeCacheCapable"] == (mode == "node-cache"), "{mode}");
    }
    Ok(())
}
