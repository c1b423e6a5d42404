//! The scaler end to end against a real kube-apiserver and kube-scheduler 1.20, with the
//! `kube` provider simulating the cloud and the controller running in-process:
//! - 20 pending 1-to-8-GPU pods become the right number of nodes and all get bound;
//! - pending-to-provider-call latency (figures printed for docs/scaler-bench.md);
//! - scale-down after low (injected) utilization, through the Eviction API, blocked by a PDB
//!   until it is removed, never below the pool minimum;
//! - a scaler killed mid scale-up and restarted creates no duplicate nodes;
//! - two replicas: only the leader acts, the standby takes over within the lease duration;
//! - injected spot insufficient capacity falls back to on-demand within 60 s;
//! - a policy failing the cross-field rules is reported `Valid=False` and not acted on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use chrono::{DateTime, Utc};
use gpu_autoscaler_api::AutoscalingPolicy;
use gpu_autoscaler_api::keys;
use gpu_autoscaler_scaler::controller::{
    ConfigMapUtilization, LeaseConfig, NoUtilization, Scaler, ScalerConfig, ScalerHandle,
    UtilizationSource, client_without_retries,
};
use gpu_autoscaler_scaler::provider::kube::{KubeProvider, KubeProviderConfig, PoolFault};
use gpu_autoscaler_scaler::provider::{CloudProvider, LaunchHint};
use gpu_autoscaler_testkit::{
    ControlPlane, GpuNodeSpec, GpuPodSpec, create_unique_namespace, wait_for,
};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, CustomResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

const PROVIDER_NS: &str = "kube-system";
const UTIL_CM: &str = "gpu-utilization";

/// Scores nodes by GPUs already allocated, so the scheduler packs the way the engine plans.
const PACKING_SCHEDULER: &str = r#"
apiVersion: kubescheduler.config.k8s.io/v1beta1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
  plugins:
    score:
      disabled:
      - name: NodeResourcesLeastAllocated
      - name: NodeResourcesBalancedAllocation
      enabled:
      - name: NodeResourcesMostAllocated
        weight: 5
  pluginConfig:
  - name: NodeResourcesMostAllocated
    args:
      resources:
      - name: nvidia.com/gpu
        weight: 1
"#;

async fn install_crd(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &AutoscalingPolicy::crd())
        .await?;
    let api: Api<AutoscalingPolicy> = Api::all(client.clone());
    wait_for(Duration::from_secs(30), || {
        let api = api.clone();
        async move { api.list(&Default::default()).await.ok().map(|_| ()) }
    })
    .await?;
    Ok(())
}

struct Env {
    cp: ControlPlane,
    client: Client,
    ns: String,
}

async fn env(policy: serde_json::Value) -> Result<Env> {
    // A config file makes kube-scheduler serve healthz on 0.0.0.0:10251 unless told otherwise,
    // and parallel tests would fight over that port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let scheduler = format!(
        "{PACKING_SCHEDULER}healthzBindAddress: 127.0.0.1:{port}\nmetricsBindAddress: 127.0.0.1:{port}\n"
    );
    let cp = ControlPlane::builder()
        .with_scheduler(scheduler)
        .start()
        .await?;
    let client = cp.client();
    install_crd(&client).await?;
    let policy: AutoscalingPolicy = serde_json::from_value(json!({
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "metadata": { "name": "e2e" },
        "spec": policy,
    }))?;
    Api::<AutoscalingPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await?;
    let ns = create_unique_namespace(&client, "scaler").await?;
    Ok(Env { cp, client, ns })
}

/// Fast thresholds (policy fields are seconds).
fn base_spec(pools: serde_json::Value) -> serde_json::Value {
    json!({
        "pendingPodTimeoutSeconds": 0,
        "scaleUpCooldownSeconds": 0,
        "scaleDownCooldownSeconds": 0,
        "underutilizedDurationSeconds": 3,
        "maxNodeProvisionTimeSeconds": 60,
        "maxNodes": 40,
        "nodePools": pools,
    })
}

fn provider(client: &Client, boot: Duration) -> Result<Arc<KubeProvider>> {
    Ok(Arc::new(
        KubeProvider::new(
            client.clone(),
            KubeProviderConfig {
                namespace: PROVIDER_NS.into(),
                boot_delay: boot,
                driver_delay: Duration::from_secs(1),
                tick: Duration::from_millis(250),
                ..Default::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    ))
}

/// A running replica: the controller plus its provider's cloud simulation. Dropping the
/// join handles' tasks (abort) is a crash: nothing is released or cleaned up.
struct Replica {
    handle: ScalerHandle,
    task: JoinHandle<()>,
    sim: JoinHandle<()>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Replica {
    fn kill(self) {
        self.task.abort();
        self.sim.abort();
        drop(self.stop);
    }
}

fn replica(
    e: &Env,
    provider: Arc<KubeProvider>,
    utilization: Arc<dyn UtilizationSource>,
    lease: Option<LeaseConfig>,
) -> Replica {
    let client = &e.client;
    let cluster_config = e.cp.kube_config();
    let mut config = ScalerConfig::new("e2e");
    config.interval = Duration::from_secs(2);
    config.debounce = Duration::from_millis(100);
    config.error_requeue = Duration::from_secs(1);
    config.lease = lease;
    let scaler = Scaler::new(
        client.clone(),
        config,
        provider.clone() as Arc<dyn CloudProvider>,
        utilization,
    );
    let scaler = match client_without_retries(cluster_config.clone()) {
        Ok(c) => scaler.with_eviction_client(c),
        Err(_) => scaler,
    };
    let handle = scaler.handle();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        if let Err(e) = scaler
            .run(async move {
                let _ = rx.await;
            })
            .await
        {
            eprintln!("scaler stopped: {e}");
        }
    });
    let sim = tokio::spawn(provider.run_simulation(std::future::pending()));
    Replica {
        handle,
        task,
        sim,
        stop: Some(tx),
    }
}

async fn managed_nodes(client: &Client) -> Result<Vec<Node>> {
    let lp = ListParams::default().labels(keys::LABEL_NODE_POOL);
    Ok(Api::<Node>::all(client.clone()).list(&lp).await?.items)
}

async fn pods(client: &Client, ns: &str) -> Result<Vec<Pod>> {
    Ok(Api::<Pod>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await?
        .items)
}

async fn all_bound(client: &Client, ns: &str, count: usize) -> Option<()> {
    let pods = pods(client, ns).await.ok()?;
    (pods.len() == count
        && pods
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()))
    .then_some(())
}

fn first_fit_decreasing(sizes: &[u32], capacity: u32) -> usize {
    let mut sorted = sizes.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut bins: Vec<u32> = Vec::new();
    for s in sorted {
        match bins.iter_mut().find(|b| **b + s <= capacity) {
            Some(b) => *b += s,
            None => bins.push(s),
        }
    }
    bins.len()
}

fn to_chrono(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.0.as_second(), 0)
}

fn unschedulable_since(p: &Pod) -> Option<DateTime<Utc>> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("Unschedulable"))?
        .last_transition_time
        .as_ref()
        .and_then(to_chrono)
}

async fn events_with_reason(client: &Client, ns: &str, reason: &str) -> Result<Vec<Event>> {
    let events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await?
        .items;
    Ok(events
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect())
}

async fn policy_status(client: &Client) -> Result<gpu_autoscaler_api::AutoscalingPolicyStatus> {
    Ok(Api::<AutoscalingPolicy>::all(client.clone())
        .get("e2e")
        .await?
        .status
        .unwrap_or_default())
}

#[tokio::test]
async fn twenty_pending_pods_become_the_right_nodes_and_all_bind() -> Result<()> {
    let e = env(base_spec(json!([
        { "name": "od", "maxSize": 20, "instanceTypes": ["p3.16xlarge"], "capacityType": "on-demand" }
    ])))
    .await?;
    let provider = provider(&e.client, Duration::from_secs(2))?;
    let r = replica(&e, provider.clone(), Arc::new(NoUtilization), None);

    let sizes = [8, 8, 7, 6, 6, 5, 5, 4, 4, 4, 3, 3, 2, 2, 2, 1, 1, 1, 1, 1];
    for (i, g) in sizes.iter().enumerate() {
        GpuPodSpec::new(format!("job-{i:02}"), *g)
            .namespace(&e.ns)
            .create(&e.client)
            .await?;
    }
    let expected = first_fit_decreasing(&sizes, 8);
    wait_for(Duration::from_secs(180), || {
        all_bound(&e.client, &e.ns, sizes.len())
    })
    .await
    .context("every pod gets bound")?;

    let nodes = managed_nodes(&e.client).await?;
    ensure!(
        nodes.len() == expected,
        "{} nodes for {expected} expected",
        nodes.len()
    );
    let (state, _) = provider.read().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(
        state.pools["od"].target as usize == expected,
        "target {}",
        state.pools["od"].target
    );
    ensure!(
        state.next_id as usize == expected,
        "{} instances ever requested",
        state.next_id
    );

    // The nodes look like the catalogue's p3.16xlarge, labelled and identified as specified.
    let n = &nodes[0];
    let labels = n.metadata.labels.clone().unwrap_or_default();
    ensure!(labels[keys::LABEL_INSTANCE_TYPE] == "p3.16xlarge");
    ensure!(labels[keys::LABEL_CAPACITY_TYPE] == "on-demand");
    ensure!(labels.contains_key(keys::LABEL_ZONE));
    let spec = n.spec.clone().unwrap_or_default();
    ensure!(
        spec.provider_id
            .as_deref()
            .is_some_and(|p| p.starts_with("kube://od/"))
    );
    ensure!(
        !spec
            .taints
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == keys::TAINT_NOT_READY)
    );

    // Events on the pods, status and metrics.
    let triggered = events_with_reason(&e.client, &e.ns, "TriggeredScaleUp").await?;
    ensure!(!triggered.is_empty(), "no TriggeredScaleUp events");
    ensure!(
        triggered.iter().any(|ev| ev
            .message
            .as_deref()
            .unwrap_or("")
            .contains("triggered scale-up of pool od by")),
        "{:?}",
        triggered
            .iter()
            .map(|e| e.message.clone())
            .collect::<Vec<_>>()
    );
    let status = wait_for(Duration::from_secs(20), || async {
        let s = policy_status(&e.client).await.ok()?;
        (s.current_nodes.on_demand as usize == expected && s.pending_gpu_pods == 0).then_some(s)
    })
    .await
    .context("status catches up")?;
    ensure!(status.last_scale_up_time.is_some());
    ensure!(status.estimated_monthly_cost_usd.is_some_and(|c| c > 0.0));
    for t in ["Valid", "Ready"] {
        ensure!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == t && c.status == "True"),
            "{t} condition: {:?}",
            status.conditions
        );
    }
    let text = r.handle.metrics.encode();
    ensure!(text.contains("gpu_autoscaler_node_count{capacity_type=\"on-demand\"}"));
    ensure!(r.handle.metrics.scale_up_actions() >= 1);

    r.kill();
    Ok(())
}

/// Runs three replicas of one app whose required pod anti-affinity on `topology_key` keeps
/// them apart, on a policy with one 8-GPU on-demand pool over `zones`, until all are bound by
/// the real kube-scheduler; returns the value of `topology_key` of each replica's node and
/// the number of managed nodes.
async fn three_replicas_apart(topology_key: &str, zones: &[&str]) -> Result<(Vec<String>, usize)> {
    let e = env(base_spec(json!([
        { "name": "od", "maxSize": 6, "instanceTypes": ["p3.16xlarge"], "capacityType": "on-demand",
          "availabilityZones": zones }
    ])))
    .await?;
    let provider = provider(&e.client, Duration::from_secs(2))?;
    let r = replica(&e, provider.clone(), Arc::new(NoUtilization), None);
    let api: Api<Pod> = Api::namespaced(e.client.clone(), &e.ns);
    for i in 0..3 {
        let mut pod = GpuPodSpec::new(format!("infer-{i}"), 1)
            .namespace(&e.ns)
            .label("app", "infer")
            .build()?;
        let spec = pod.spec.get_or_insert_with(Default::default);
        spec.affinity = Some(serde_json::from_value(json!({
            "podAntiAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": { "matchLabels": { "app": "infer" } },
                "topologyKey": topology_key }] }
        }))?);
        api.create(&PostParams::default(), &pod).await?;
    }
    wait_for(Duration::from_secs(120), || all_bound(&e.client, &e.ns, 3))
        .await
        .context("every replica gets bound")?;
    let nodes = managed_nodes(&e.client).await?;
    let domain_of = |name: &str| {
        let n = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))?;
        n.metadata.labels.as_ref()?.get(topology_key).cloned()
    };
    let domains = pods(&e.client, &e.ns)
        .await?
        .iter()
        .filter_map(|p| domain_of(p.spec.as_ref()?.node_name.as_deref()?))
        .collect();
    r.kill();
    Ok((domains, nodes.len()))
}

/// One-per-node replicas: the real kube-scheduler puts one on the first 8-GPU node and leaves
/// the others pending although that node has room; the engine must see that they can't go
/// there and add a node for each.
#[tokio::test]
async fn one_per_node_replicas_get_a_node_each() -> Result<()> {
    let (hosts, nodes) = three_replicas_apart("kubernetes.io/hostname", &[]).await?;
    let distinct: std::collections::BTreeSet<&String> = hosts.iter().collect();
    ensure!(
        hosts.len() == 3 && distinct.len() == 3,
        "replicas share nodes: {hosts:?}"
    );
    ensure!(nodes == 3, "{nodes} nodes for 3 one-per-node replicas");
    Ok(())
}

/// One-per-zone replicas on a pool over three zones: each gets a node in a zone of its own.
#[tokio::test]
async fn one_per_zone_replicas_get_a_zone_each() -> Result<()> {
    let (zones, nodes) =
        three_replicas_apart(keys::LABEL_ZONE, &["zone-a", "zone-b", "zone-c"]).await?;
    let distinct: std::collections::BTreeSet<&String> = zones.iter().collect();
    ensure!(
        zones.len() == 3 && distinct.len() == 3,
        "replicas share zones: {zones:?}"
    );
    ensure!(nodes == 3, "{nodes} nodes for 3 one-per-zone replicas");
    Ok(())
}

/// Hard zone spread (max skew 1) with a full node in each of two zones: four replicas need
/// new room in both zones, two each. A single new node would take one or two of them and
/// leave the rest pending beside its free GPUs.
#[tokio::test]
async fn zone_spread_replicas_get_room_in_every_zone() -> Result<()> {
    let e = env(base_spec(json!([
        { "name": "od", "maxSize": 6, "instanceTypes": ["p3.16xlarge"], "capacityType": "on-demand",
          "availabilityZones": ["zone-a", "zone-b"] }
    ])))
    .await?;
    // Two nodes outside any pool, one per zone, each filled by an 8-GPU pod.
    for zone in ["zone-a", "zone-b"] {
        GpuNodeSpec::new(format!("static-{zone}"))
            .zone(zone)
            .create(&e.client)
            .await?;
    }
    let fillers = create_unique_namespace(&e.client, "fillers").await?;
    for i in 0..2 {
        GpuPodSpec::new(format!("filler-{i}"), 8)
            .namespace(&fillers)
            .create(&e.client)
            .await?;
    }
    wait_for(Duration::from_secs(60), || {
        all_bound(&e.client, &fillers, 2)
    })
    .await
    .context("fillers bound")?;

    let provider = provider(&e.client, Duration::from_secs(2))?;
    let r = replica(&e, provider.clone(), Arc::new(NoUtilization), None);
    let api: Api<Pod> = Api::namespaced(e.client.clone(), &e.ns);
    for i in 0..4 {
        let mut pod = GpuPodSpec::new(format!("infer-{i}"), 1)
            .namespace(&e.ns)
            .label("app", "infer")
            .build()?;
        let spec = pod.spec.get_or_insert_with(Default::default);
        spec.topology_spread_constraints = Some(serde_json::from_value(json!([{
            "maxSkew": 1, "topologyKey": keys::LABEL_ZONE, "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": { "matchLabels": { "app": "infer" } } }]))?);
        api.create(&PostParams::default(), &pod).await?;
    }
    wait_for(Duration::from_secs(120), || all_bound(&e.client, &e.ns, 4))
        .await
        .context("every replica gets bound")?;
    let nodes: Vec<Node> = Api::<Node>::all(e.client.clone())
        .list(&Default::default())
        .await?
        .items;
    let mut per_zone: BTreeMap<String, u32> = BTreeMap::new();
    for p in pods(&e.client, &e.ns).await? {
        let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
        let zone = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(node.as_str()))
            .and_then(|n| n.metadata.labels.as_ref()?.get(keys::LABEL_ZONE).cloned())
            .unwrap_or_default();
        *per_zone.entry(zone).or_default() += 1;
    }
    ensure!(
        per_zone == BTreeMap::from([("zone-a".to_string(), 2), ("zone-b".to_string(), 2)]),
        "replicas per zone: {per_zone:?}"
    );
    let managed = managed_nodes(&e.client).await?;
    ensure!(
        managed.len() == 2,
        "{} new nodes for two zones",
        managed.len()
    );
    r.kill();
    Ok(())
}

/// Waves of pods, each becoming unschedulable at its own time; prints the latency figures.
#[tokio::test]
async fn pending_to_provider_latency_stays_under_ten_seconds() -> Result<()> {
    let e = env(base_spec(json!([
        { "name": "od", "maxSize": 40, "instanceTypes": ["p3.2xlarge"], "capacityType": "on-demand" }
    ])))
    .await?;
    let provider = provider(&e.client, Duration::from_secs(30))?;
    let r = replica(&e, provider.clone(), Arc::new(NoUtilization), None);
    wait_for(Duration::from_secs(30), || async { r.handle.is_ready() }).await?;
    let waves = 10;
    for w in 0..waves {
        for i in 0..3 {
            GpuPodSpec::new(format!("w{w}-{i}"), 1)
                .namespace(&e.ns)
                .create(&e.client)
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // Every pod gets an instance requested (boot is slow on purpose: no pod binds meanwhile).
    let state = wait_for(Duration::from_secs(60), || async {
        let (s, _) = provider.read().await.ok()?;
        (s.pools.get("od")?.target >= waves * 3).then_some(s)
    })
    .await
    .context("one instance per pod")?;
    let mut requests: Vec<DateTime<Utc>> = state.pools["od"]
        .instances
        .iter()
        .map(|i| i.requested_at)
        .collect();
    requests.sort();
    let mut lat = Vec::new();
    for p in pods(&e.client, &e.ns).await? {
        let since = unschedulable_since(&p).context("pod is unschedulable")?;
        // Transition times have second precision: a request within the same second counts.
        if let Some(req) = requests
            .iter()
            .find(|r| **r + chrono::Duration::seconds(1) >= since)
        {
            lat.push((*req - since).num_milliseconds().max(0) as f64 / 1000.0);
        }
    }
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| lat[((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1];
    println!(
        "BENCH pending-to-provider latency (external, 1 s resolution): n={} p50={:.2}s p99={:.2}s max={:.2}s",
        lat.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    let internal = r.handle.metrics.encode();
    for line in internal
        .lines()
        .filter(|l| l.starts_with("gpu_autoscaler_pending_to_scale_up_seconds_"))
    {
        if line.contains("_sum") || line.contains("_count") {
            println!("BENCH {line}");
        }
    }
    ensure!(
        lat.len() == (waves * 3) as usize,
        "{} of {} pods measured",
        lat.len(),
        waves * 3
    );
    ensure!(pct(0.99) <= 10.0, "p99 {} s", pct(0.99));
    r.kill();
    Ok(())
}

fn owned_pod(name: &str, ns: &str, node: &str, gpus: u32) -> Result<Pod> {
    let mut pod = GpuPodSpec::new(name, gpus)
        .namespace(ns)
        .node_name(node)
        .label("app", "train")
        .build()?;
    // A controller would recreate it elsewhere; bare pods are never drained.
    pod.metadata.owner_references = Some(vec![serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "train-rs",
        "uid": "00000000-0000-0000-0000-000000000001", "controller": true,
    }))?]);
    Ok(pod)
}

fn pdb_api(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy", "v1beta1", "PodDisruptionBudget"),
        "poddisruptionbudgets",
    );
    Api::namespaced_with(client.clone(), ns, &ar)
}

#[tokio::test]
async fn low_utilization_scales_down_through_the_eviction_api() -> Result<()> {
    let e = env(base_spec(json!([
        { "name": "od", "minSize": 1, "maxSize": 5, "instanceTypes": ["p3.16xlarge"], "capacityType": "on-demand" }
    ])))
    .await?;
    let provider = provider(&e.client, Duration::from_secs(1))?;
    let od = gpu_autoscaler_api::policy::NodePool {
        name: "od".into(),
        min_size: 1,
        max_size: 5,
        gpu_type: None,
        instance_types: vec!["p3.16xlarge".into()],
        capacity_type: gpu_autoscaler_api::CapacityType::OnDemand,
        spot_percentage: None,
        priority: 0,
        labels: BTreeMap::new(),
        taints: vec![],
        availability_zones: vec![],
    };
    // Two nodes, one small pod each, before the scaler starts.
    provider
        .set_target_size(
            &od,
            2,
            &[LaunchHint {
                instance_type: None,
                zone: None,
                count: 2,
            }],
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sim = tokio::spawn(provider.clone().run_simulation(std::future::pending()));
    let nodes = wait_for(Duration::from_secs(30), || async {
        let n = managed_nodes(&e.client).await.ok()?;
        (n.len() == 2).then_some(n)
    })
    .await?;
    sim.abort();
    let names: Vec<String> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let pods_api: Api<Pod> = Api::namespaced(e.client.clone(), &e.ns);
    for (i, node) in names.iter().enumerate() {
        let name = format!("train-{i}");
        pods_api
            .create(&PostParams::default(), &owned_pod(&name, &e.ns, node, 1)?)
            .await?;
        // No kubelet runs: report the pod Running ourselves, since the apiserver skips PDB
        // checks for Pending pods.
        let status = json!({ "status": { "phase": "Running", "conditions": [
            { "type": "Ready", "status": "True" }, { "type": "PodScheduled", "status": "True" } ] } });
        pods_api
            .patch_status(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&status),
            )
            .await?;
    }
    // A PDB that allows no disruption (no disruption controller runs, so it never relents).
    pdb_api(&e.client, &e.ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget",
                "metadata": { "name": "train", "namespace": e.ns },
                "spec": { "maxUnavailable": 0, "selector": { "matchLabels": { "app": "train" } } },
            }))?,
        )
        .await?;

    let util: Arc<dyn UtilizationSource> = Arc::new(ConfigMapUtilization::new(
        e.client.clone(),
        PROVIDER_NS,
        UTIL_CM,
    ));
    let r = replica(&e, provider.clone(), util, None);
    wait_for(Duration::from_secs(30), || async { r.handle.is_ready() }).await?;

    // Utilization unknown: nothing is removed, however long we wait.
    tokio::time::sleep(Duration::from_secs(6)).await;
    ensure!(
        managed_nodes(&e.client).await?.len() == 2,
        "unknown utilization must not scale down"
    );

    // Both nodes idle: after underutilizedDuration one is drained (the minimum keeps the other).
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": UTIL_CM, "namespace": PROVIDER_NS },
        "data": { names[0].clone(): "0.05", names[1].clone(): "0.05", "window-seconds": "60" },
    }))?;
    Api::<ConfigMap>::namespaced(e.client.clone(), PROVIDER_NS)
        .create(&PostParams::default(), &cm)
        .await?;

    // The PDB answers 429: retried, never bypassed, so both pods stay.
    wait_for(Duration::from_secs(60), || async {
        r.handle.metrics.evictions_with("pdb_blocked") >= 2
    })
    .await
    .with_context(|| {
        let m = r.handle.metrics.encode();
        let lines: Vec<&str> = m
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && (l.contains("eviction")
                        || l.contains("underutilized")
                        || l.contains("utilization")
                        || l.contains("reconcile_errors")
                        || l.contains("cooldown"))
            })
            .collect();
        format!(
            "evictions refused by the PDB; metrics:\n{}",
            lines.join("\n")
        )
    })?;
    ensure!(
        pods(&e.client, &e.ns).await?.len() == 2,
        "a PDB-blocked pod was removed"
    );
    ensure!(managed_nodes(&e.client).await?.len() == 2);
    let cordoned = managed_nodes(&e.client)
        .await?
        .into_iter()
        .filter(|n| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true))
        .count();
    ensure!(cordoned == 1, "{cordoned} nodes cordoned");

    // Lift the PDB: the eviction goes through and the emptied node is terminated.
    pdb_api(&e.client, &e.ns)
        .delete("train", &DeleteParams::default())
        .await?;
    wait_for(Duration::from_secs(60), || async {
        let n = managed_nodes(&e.client).await.ok()?;
        let p = pods(&e.client, &e.ns).await.ok()?;
        (n.len() == 1 && p.len() == 1).then_some(())
    })
    .await
    .context("one node drained and terminated")?;
    ensure!(r.handle.metrics.evictions_with("evicted") >= 1);
    let evicted = events_with_reason(&e.client, &e.ns, "Evicted").await?;
    ensure!(
        evicted
            .iter()
            .any(|ev| ev.message.as_deref().unwrap_or("").contains("Eviction API")),
        "no eviction event"
    );
    let (state, _) = provider.read().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(
        state.pools["od"].target == 1,
        "target {}",
        state.pools["od"].target
    );

    // Stays low: the pool minimum holds although the last node is idle too.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let left = managed_nodes(&e.client).await?;
    ensure!(left.len() == 1, "{} nodes left", left.len());
    // The survivor's underutilized clock is persisted on the node.
    let annotated = left[0]
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("gpu-autoscaler.io/underutilized-since"));
    ensure!(annotated, "underutilized-since annotation missing");
    let status = policy_status(&e.client).await?;
    ensure!(status.last_scale_down_time.is_some(), "{status:?}");
    r.kill();
    Ok(())
}

#[tokio::test]
async fn a_scaler_killed_mid_scale_up_creates_no_duplicates_after_restart() -> Result<()> {
    let e = env(base_spec(json!([
        { "name": "od", "maxSize": 20, "instanceTypes": ["p3.16xlarge"], "capacityType": "on-demand" }
    ])))
    .await?;
    for i in 0..6 {
        GpuPodSpec::new(format!("big-{i}"), 8)
            .namespace(&e.ns)
            .create(&e.client)
            .await?;
    }
    let p1 = provider(&e.client, Duration::from_secs(8))?;
    let first = replica(&e, p1.clone(), Arc::new(NoUtilization), None);
    wait_for(Duration::from_secs(60), || async {
        let (s, _) = p1.read().await.ok()?;
        (s.pools.get("od")?.target == 6).then_some(())
    })
    .await
    .context("first scaler requests 6 instances")?;
    first.kill();
    ensure!(
        managed_nodes(&e.client).await?.is_empty(),
        "nodes registered before the crash"
    );

    let p2 = provider(&e.client, Duration::from_secs(8))?;
    let second = replica(&e, p2.clone(), Arc::new(NoUtilization), None);
    wait_for(Duration::from_secs(120), || all_bound(&e.client, &e.ns, 6))
        .await
        .context("pods bound after restart")?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let nodes = managed_nodes(&e.client).await?;
    let (s, _) = p2.read().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(nodes.len() == 6, "{} nodes", nodes.len());
    ensure!(
        s.pools["od"].target == 6 && s.next_id == 6,
        "target {} after {} requests",
        s.pools["od"].target,
        s.next_id
    );
    second.kill();
    Ok(())
}

#[tokio::test]
async fn only_the_leader_acts_and_the_standby_takes_over() -> Result<()> {
    let e = env(base_spec(json!([
        { "name": "od", "maxSize": 20, "instanceTypes": ["p3.16xlarge"], "capacityType": "on-demand" }
    ])))
    .await?;
    let lease = |id: &str| Some(LeaseConfig::new("gpu-autoscaler-scaler", PROVIDER_NS, id));
    let a = replica(
        &e,
        provider(&e.client, Duration::from_secs(1))?,
        Arc::new(NoUtilization),
        lease("a"),
    );
    let b = replica(
        &e,
        provider(&e.client, Duration::from_secs(1))?,
        Arc::new(NoUtilization),
        lease("b"),
    );
    wait_for(Duration::from_secs(30), || async {
        a.handle.is_ready() && b.handle.is_ready() && (a.handle.is_leader() != b.handle.is_leader())
    })
    .await
    .context("one leader, one ready standby")?;
    let (leader, standby) = if a.handle.is_leader() { (a, b) } else { (b, a) };

    for i in 0..2 {
        GpuPodSpec::new(format!("first-{i}"), 8)
            .namespace(&e.ns)
            .create(&e.client)
            .await?;
    }
    wait_for(Duration::from_secs(90), || all_bound(&e.client, &e.ns, 2)).await?;
    ensure!(leader.handle.metrics.scale_up_actions() >= 1);
    ensure!(
        standby.handle.metrics.scale_up_actions() == 0,
        "the standby acted"
    );
    ensure!(!standby.handle.is_leader());

    // The leader dies without releasing the Lease.
    leader.kill();
    let killed = Instant::now();
    for i in 0..2 {
        GpuPodSpec::new(format!("second-{i}"), 8)
            .namespace(&e.ns)
            .create(&e.client)
            .await?;
    }
    wait_for(Duration::from_secs(30), || async {
        standby.handle.is_leader()
    })
    .await
    .context("standby takes over")?;
    let takeover = killed.elapsed();
    println!("BENCH standby takeover after leader kill: {takeover:?}");
    // Lease duration 15 s, plus one standby retry period (2 s) and scheduling slack.
    ensure!(
        takeover <= Duration::from_secs(19),
        "takeover took {takeover:?}"
    );
    wait_for(Duration::from_secs(90), || all_bound(&e.client, &e.ns, 4)).await?;
    ensure!(standby.handle.metrics.scale_up_actions() >= 1);
    ensure!(managed_nodes(&e.client).await?.len() == 4);
    standby.kill();
    Ok(())
}

#[tokio::test]
async fn spot_insufficient_capacity_falls_back_to_on_demand_within_60s() -> Result<()> {
    let e = env(base_spec(json!([
        { "name": "spot", "maxSize": 10, "instanceTypes": ["p3.8xlarge"], "capacityType": "spot", "priority": 10 },
        { "name": "od", "maxSize": 10, "instanceTypes": ["p3.8xlarge"], "capacityType": "on-demand", "priority": 5 }
    ])))
    .await?;
    let provider = provider(&e.client, Duration::from_secs(2))?;
    provider
        .set_fault(
            "spot",
            Some(PoolFault {
                insufficient_capacity: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let r = replica(&e, provider.clone(), Arc::new(NoUtilization), None);
    wait_for(Duration::from_secs(30), || async { r.handle.is_ready() }).await?;

    let toleration = serde_json::from_value(json!({
        "key": keys::TAINT_SPOT_KEY, "operator": "Equal", "value": keys::TAINT_SPOT_VALUE, "effect": "NoSchedule",
    }))?;
    GpuPodSpec::new("flex", 4)
        .namespace(&e.ns)
        .annotation(keys::ANNOTATION_TIER_PREFERENCE, "spot,on-demand")
        .toleration(toleration)
        .create(&e.client)
        .await?;
    let node = wait_for(Duration::from_secs(90), || async {
        let p = Api::<Pod>::namespaced(e.client.clone(), &e.ns)
            .get("flex")
            .await
            .ok()?;
        p.spec?.node_name
    })
    .await
    .context("pod bound")?;
    let pod = Api::<Pod>::namespaced(e.client.clone(), &e.ns)
        .get("flex")
        .await?;
    // From creation (at or before it became unschedulable): a strict bound.
    let since = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(to_chrono)
        .context("creation time")?;
    let (state, _) = provider.read().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let od_request = state
        .pools
        .get("od")
        .and_then(|g| g.instances.first())
        .map(|i| i.requested_at)
        .context("on-demand request")?;
    let fallback = (od_request - since).num_milliseconds() as f64 / 1000.0;
    println!(
        "BENCH spot->on-demand fallback: {fallback:.1} s from unschedulable to the on-demand request"
    );
    ensure!(fallback <= 60.0, "fallback took {fallback} s");
    let labels = Api::<Node>::all(e.client.clone())
        .get(&node)
        .await?
        .metadata
        .labels
        .unwrap_or_default();
    ensure!(
        labels[keys::LABEL_NODE_POOL] == "od",
        "bound to {node} ({labels:?})"
    );
    ensure!(
        state.pools.get("spot").is_none_or(|g| g.target == 0),
        "spot target moved"
    );
    let text = r.handle.metrics.encode();
    ensure!(
        text.lines()
            .any(|l| l.starts_with("gpu_autoscaler_provider_errors_total")
                && l.contains("insufficient_capacity")),
        "provider error not counted"
    );
    let status = wait_for(Duration::from_secs(20), || async {
        let s = policy_status(&e.client).await.ok()?;
        s.pools
            .iter()
            .any(|p| p.name == "spot" && p.consecutive_failures >= 1)
            .then_some(s)
    })
    .await
    .context("spot pool back-off in status")?;
    ensure!(
        status
            .pools
            .iter()
            .any(|p| p.name == "spot" && p.backoff_until.is_some())
    );
    r.kill();
    Ok(())
}

/// A policy the schema accepts but the cross-field rules reject (minNodes > maxNodes) is
/// reported `Valid=False` with the precise reason, and nothing is scaled for it.
#[tokio::test]
async fn invalid_policy_is_reported_and_not_acted_on() -> Result<()> {
    let mut spec = base_spec(json!([{
        "name": "od", "minSize": 1, "maxSize": 4, "capacityType": "on-demand",
        "instanceTypes": ["p3.8xlarge"]
    }]));
    spec["minNodes"] = json!(5);
    spec["maxNodes"] = json!(3);
    let e = env(spec).await?;
    let r = replica(
        &e,
        provider(&e.client, Duration::from_millis(500))?,
        Arc::new(NoUtilization),
        None,
    );
    let valid = wait_for(Duration::from_secs(30), || {
        let client = e.client.clone();
        async move {
            let st = policy_status(&client).await.ok()?;
            st.conditions.into_iter().find(|c| c.type_ == "Valid")
        }
    })
    .await?;
    ensure!(valid.status == "False", "Valid condition: {valid:?}");
    let message = valid.message.clone().unwrap_or_default();
    ensure!(
        message.contains("spec.minNodes: must not exceed spec.maxNodes (5 > 3)"),
        "the reason must name the fields and values: {message:?}"
    );
    // The pool's minSize would ask for a node if the policy were acted on: it must not be.
    tokio::time::sleep(Duration::from_secs(5)).await;
    ensure!(
        managed_nodes(&e.client).await?.is_empty(),
        "an invalid policy must not scale"
    );
    r.kill();
    Ok(())
}
