//! Spot interruptions end to end: a real kube-apiserver and kube-scheduler 1.20, the `kube`
//! provider simulating the cloud, the scaler controller in-process, and the notice set by
//! hand exactly as the reference document's "Test Eviction Handling" does
//! (`kubectl annotate node <node> gpu-autoscaler.io/spot-interruption-warning=true
//! gpu-autoscaler.io/spot-termination-time=<now + 2 min, %Y-%m-%dT%H:%M:%SZ>`; no agent).
//!
//! Eviction times come from the apiserver's audit log (one `create pods/eviction` entry per
//! accepted eviction, microsecond timestamps), so the order is the server's, not ours.
//! Asserted for a 120 s and a 30 s notice: low → medium → high, every eviction accepted
//! before the drain deadline (termination − safety margin), high-priority pods given the
//! longest grace period, the replacement requested before the drain finished, the node
//! cordoned and no new pod landing on it; plus the interruption history, rates and metrics.
//! `thirty_pods_on_one_node_drain_inside_the_notice` prints the figures of
//! docs/interruptions.md (`INTERRUPTION_NOTICE_SECONDS` picks the notice, default 30).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use chrono::{DateTime, Utc};
use gpu_autoscaler_api::policy::NodePool;
use gpu_autoscaler_api::{AutoscalingPolicy, CapacityType, keys};
use gpu_autoscaler_scaler::controller::{
    NoUtilization, Scaler, ScalerConfig, ScalerHandle, client_without_retries,
};
use gpu_autoscaler_scaler::provider::kube::{KubeProvider, KubeProviderConfig};
use gpu_autoscaler_scaler::provider::{CloudProvider, LaunchHint};
use gpu_autoscaler_testkit::{
    ControlPlane, GpuPodSpec, create_unique_namespace, mark_pod_running, wait_for,
};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod, Toleration};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::json;
use tokio::task::JoinHandle;

const PROVIDER_NS: &str = "kube-system";
const MARGIN_SECONDS: i64 = 10;

/// Only accepted-or-refused evictions are audited; everything else is noise.
const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["create"]
  resources:
  - group: ""
    resources: ["pods/eviction"]
- level: None
"#;

struct Env {
    _cp: ControlPlane,
    _audit_dir: tempfile::TempDir,
    audit_log: PathBuf,
    client: Client,
    ns: String,
    provider: Arc<KubeProvider>,
    sim: JoinHandle<()>,
}

fn spot_pool() -> NodePool {
    NodePool {
        name: "spot".into(),
        min_size: 0,
        max_size: 6,
        gpu_type: None,
        instance_types: vec![
            "p3.8xlarge".into(),
            "g5.12xlarge".into(),
            "p3.16xlarge".into(),
        ],
        capacity_type: CapacityType::Spot,
        spot_percentage: None,
        priority: 0,
        labels: BTreeMap::new(),
        taints: vec![],
        availability_zones: vec![],
    }
}

async fn env(first_node_type: &str) -> Result<Env> {
    let audit_dir = tempfile::tempdir()?;
    let policy_path = audit_dir.path().join("audit-policy.yaml");
    std::fs::write(&policy_path, AUDIT_POLICY)?;
    let audit_log = audit_dir.path().join("audit.log");
    let cp = ControlPlane::builder()
        .with_default_scheduler()
        .apiserver_arg(format!("--audit-policy-file={}", policy_path.display()))
        .apiserver_arg(format!("--audit-log-path={}", audit_log.display()))
        .apiserver_arg("--audit-log-mode=blocking")
        .start()
        .await?;
    let client = cp.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &AutoscalingPolicy::crd())
        .await?;
    let policies: Api<AutoscalingPolicy> = Api::all(client.clone());
    wait_for(Duration::from_secs(30), || {
        let api = policies.clone();
        async move { api.list(&Default::default()).await.ok().map(|_| ()) }
    })
    .await?;
    let spec = json!({
        "pendingPodTimeoutSeconds": 0,
        "scaleUpCooldownSeconds": 0,
        "scaleDownCooldownSeconds": 0,
        "underutilizedDurationSeconds": 3600,
        "maxNodeProvisionTimeSeconds": 60,
        "maxNodes": 20,
        "spot": { "drainSafetyMarginSeconds": MARGIN_SECONDS },
        "nodePools": [
            serde_json::to_value(spot_pool())?,
            { "name": "od", "maxSize": 4, "instanceTypes": ["p3.8xlarge"], "capacityType": "on-demand" },
        ],
    });
    let policy: AutoscalingPolicy = serde_json::from_value(json!({
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "metadata": { "name": "e2e" },
        "spec": spec,
    }))?;
    policies.create(&PostParams::default(), &policy).await?;
    let ns = create_unique_namespace(&client, "spot").await?;
    let provider = Arc::new(
        KubeProvider::new(
            client.clone(),
            KubeProviderConfig {
                namespace: PROVIDER_NS.into(),
                boot_delay: Duration::from_secs(2),
                driver_delay: Duration::from_secs(1),
                tick: Duration::from_millis(200),
                ..Default::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    // The first spot node, as if an earlier scale-up had made it.
    provider
        .set_target_size(
            &spot_pool(),
            1,
            &[LaunchHint {
                instance_type: Some(first_node_type.into()),
                zone: None,
                count: 1,
            }],
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sim = tokio::spawn(provider.clone().run_simulation(std::future::pending()));
    Ok(Env {
        _cp: cp,
        _audit_dir: audit_dir,
        audit_log,
        client,
        ns,
        provider,
        sim,
    })
}

/// The controller in-process, as `gpu-autoscaler scaler --provider kube` runs it.
fn start_scaler(e: &Env) -> Result<(ScalerHandle, JoinHandle<()>)> {
    let mut config = ScalerConfig::new("e2e");
    config.interval = Duration::from_secs(2);
    config.debounce = Duration::from_millis(100);
    config.error_requeue = Duration::from_secs(1);
    let scaler = Scaler::new(
        e.client.clone(),
        config,
        e.provider.clone() as Arc<dyn CloudProvider>,
        Arc::new(NoUtilization),
    )
    .with_eviction_client(client_without_retries(e._cp.kube_config())?);
    let handle = scaler.handle();
    let task = tokio::spawn(async move {
        if let Err(e) = scaler.run(std::future::pending()).await {
            eprintln!("scaler stopped: {e}");
        }
    });
    Ok((handle, task))
}

fn spot_toleration() -> Result<Toleration> {
    Ok(serde_json::from_value(json!({
        "key": keys::TAINT_SPOT_KEY, "operator": "Equal", "value": keys::TAINT_SPOT_VALUE,
        "effect": "NoSchedule",
    }))?)
}

/// A pod for the real scheduler to place, with its eviction priority and own grace period.
async fn create_pod(e: &Env, name: &str, gpus: u32, priority: &str, grace: i64) -> Result<()> {
    let mut pod = GpuPodSpec::new(name, gpus)
        .namespace(&e.ns)
        .annotation(keys::ANNOTATION_EVICTION_PRIORITY, priority)
        .label("app", "train")
        .toleration(spot_toleration()?)
        .build()?;
    if let Some(spec) = pod.spec.as_mut() {
        spec.termination_grace_period_seconds = Some(grace);
    }
    Api::<Pod>::namespaced(e.client.clone(), &e.ns)
        .create(&PostParams::default(), &pod)
        .await?;
    Ok(())
}

async fn gpu_ready_spot_node(client: &Client) -> Result<String> {
    wait_for(Duration::from_secs(60), || async {
        let lp = ListParams::default().labels(&format!("{}=spot", keys::LABEL_NODE_POOL));
        let nodes = Api::<Node>::all(client.clone()).list(&lp).await.ok()?;
        nodes.items.iter().find_map(|n| {
            let alloc = n.status.as_ref()?.allocatable.as_ref()?;
            let gpus = alloc.get("nvidia.com/gpu")?.0.parse::<u32>().ok()?;
            (gpus > 0).then(|| n.metadata.name.clone()).flatten()
        })
    })
    .await
    .context("the first spot node registers with GPUs")
}

/// Places the pods through the scheduler and plays the kubelet (Running), since the
/// apiserver skips PDB checks for Pending pods and nothing else would run them.
async fn bind_all(e: &Env, names: &[String], node: &str) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(e.client.clone(), &e.ns);
    for name in names {
        let bound = wait_for(Duration::from_secs(60), || async {
            api.get(name).await.ok()?.spec?.node_name
        })
        .await
        .with_context(|| format!("{name} is bound"))?;
        ensure!(bound == node, "{name} bound to {bound}, not {node}");
        mark_pod_running(&e.client, &e.ns, name).await?;
    }
    Ok(())
}

/// `kubectl annotate node <node> ...-warning=true ...-termination-time=$(date -u +"%Y-%m-%dT%H:%M:%SZ" -d "+N seconds")`.
async fn annotate_like_the_reference(
    client: &Client,
    node: &str,
    notice: i64,
) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let now = Utc::now();
    let termination = (now + chrono::Duration::seconds(notice))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let patch = json!({ "metadata": { "annotations": {
        keys::ANNOTATION_SPOT_INTERRUPTION_WARNING: "true",
        keys::ANNOTATION_SPOT_TERMINATION_TIME: termination,
    }}});
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let termination = DateTime::parse_from_rfc3339(&termination)?.with_timezone(&Utc);
    Ok((now, termination))
}

/// Accepted evictions from the audit log: pod name → time the apiserver answered.
fn audited_evictions(log: &Path, ns: &str) -> Result<BTreeMap<String, DateTime<Utc>>> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let obj = &ev["objectRef"];
        if obj["subresource"] != "eviction"
            || obj["namespace"] != ns
            || ev["stage"] != "ResponseComplete"
        {
            continue;
        }
        let code = ev["responseStatus"]["code"].as_i64().unwrap_or(0);
        if !(200..300).contains(&code) {
            continue;
        }
        let (Some(name), Some(at)) = (obj["name"].as_str(), ev["stageTimestamp"].as_str()) else {
            continue;
        };
        let at = DateTime::parse_from_rfc3339(at)?.with_timezone(&Utc);
        out.entry(name.to_string()).or_insert(at);
    }
    Ok(out)
}

/// What one interruption did, for assertions and the printed figures.
struct Outcome {
    noticed: DateTime<Utc>,
    deadline: DateTime<Utc>,
    cordoned_after: f64,
    evictions: BTreeMap<String, DateTime<Utc>>,
    replacement_at: DateTime<Utc>,
    replacement_type: String,
    node: String,
}

impl Outcome {
    fn drain_finished(&self) -> DateTime<Utc> {
        self.evictions
            .values()
            .max()
            .copied()
            .unwrap_or(self.noticed)
    }
}

fn secs(d: chrono::Duration) -> f64 {
    d.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}

/// Annotates `node`, waits for the cordon and every eviction, and collects the timings.
async fn interrupt(e: &Env, node: &str, notice: i64, pods: &[String]) -> Result<Outcome> {
    let (noticed, termination) = annotate_like_the_reference(&e.client, node, notice).await?;
    let deadline = termination - chrono::Duration::seconds(MARGIN_SECONDS);
    let nodes: Api<Node> = Api::all(e.client.clone());
    let started = Instant::now();
    wait_for(Duration::from_secs(20), || async {
        nodes
            .get(node)
            .await
            .ok()?
            .spec?
            .unschedulable
            .filter(|u| *u)
    })
    .await
    .context("the warned node is cordoned")?;
    let cordoned_after = started.elapsed().as_secs_f64();
    let evictions = wait_for(Duration::from_secs(notice as u64 + 30), || async {
        let got = audited_evictions(&e.audit_log, &e.ns).ok()?;
        pods.iter().all(|p| got.contains_key(p)).then_some(got)
    })
    .await
    .with_context(|| {
        format!(
            "every pod evicted; audited so far: {:?}",
            audited_evictions(&e.audit_log, &e.ns).map(|m| m.into_keys().collect::<Vec<_>>())
        )
    })?;
    let (state, _) = e
        .provider
        .read()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let replacement = state
        .pools
        .values()
        .flat_map(|g| g.instances.iter())
        .filter(|i| i.requested_at > noticed)
        .min_by_key(|i| i.requested_at)
        .context("a replacement instance was requested after the notice")?;
    Ok(Outcome {
        noticed,
        deadline,
        cordoned_after,
        evictions,
        replacement_at: replacement.requested_at,
        replacement_type: format!(
            "{} ({})",
            replacement.instance_type,
            replacement.capacity_type.as_str()
        ),
        node: node.to_string(),
    })
}

async fn pod(e: &Env, name: &str) -> Result<Option<Pod>> {
    Ok(Api::<Pod>::namespaced(e.client.clone(), &e.ns)
        .get_opt(name)
        .await?)
}

/// The three-pod scenario for one notice length.
async fn low_medium_high(notice: i64) -> Result<()> {
    let e = env("p3.8xlarge").await?;
    let node = gpu_ready_spot_node(&e.client).await?;
    // Own grace periods: low and medium 30 s, high only 10 s, yet high must get the most.
    let pods: Vec<String> = ["low", "medium", "high"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (name, grace) in pods.iter().zip([30, 30, 10]) {
        create_pod(&e, name, 1, name, grace).await?;
    }
    bind_all(&e, &pods, &node).await?;
    let (handle, task) = start_scaler(&e)?;
    wait_for(Duration::from_secs(30), || async { handle.is_ready() }).await?;
    // Let it see the steady cluster first: nothing to do.
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        handle.metrics.scale_up_actions() == 0,
        "steady cluster scaled up"
    );

    let o = interrupt(&e, &node, notice, &pods).await?;

    // Order, from the apiserver's own timestamps.
    let (l, m, h) = (
        o.evictions["low"],
        o.evictions["medium"],
        o.evictions["high"],
    );
    ensure!(l < m && m < h, "eviction order low {l} medium {m} high {h}");
    // Everyone asked before the deadline.
    ensure!(
        o.drain_finished() < o.deadline,
        "last eviction {} after the deadline {}",
        o.drain_finished(),
        o.deadline
    );
    // Grace periods: every pod gone by the deadline, the high one given the longest window.
    let mut graces = BTreeMap::new();
    for p in &pods {
        if let Some(pod) = pod(&e, p).await? {
            let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
            let gone_by = pod
                .metadata
                .deletion_timestamp
                .as_ref()
                .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
                .context("an evicted pod still present is terminating")?;
            ensure!(
                gone_by <= o.deadline + chrono::Duration::seconds(1),
                "{p} terminates at {gone_by}, after the deadline {}",
                o.deadline
            );
            graces.insert(p.clone(), grace);
        } else {
            graces.insert(p.clone(), 0);
        }
    }
    ensure!(
        graces["high"] >= graces["medium"]
            && graces["high"] >= graces["low"]
            && graces["high"] > 10,
        "high-priority pod's window is the longest and beyond its own 10 s: {graces:?}"
    );
    // The replacement went out before the drain finished (in parallel, not after).
    ensure!(
        o.replacement_at < o.drain_finished(),
        "replacement requested at {}, drain finished at {}",
        o.replacement_at,
        o.drain_finished()
    );

    // No new pod lands on the warned node.
    create_pod(&e, "late", 1, "medium", 0).await?;
    let late_node = wait_for(Duration::from_secs(90), || async {
        pod(&e, "late").await.ok()??.spec?.node_name
    })
    .await
    .context("the late pod binds somewhere")?;
    ensure!(late_node != node, "a new pod landed on the warned node");
    let all = Api::<Pod>::all(e.client.clone())
        .list(&ListParams::default())
        .await?;
    for p in &all.items {
        let on_warned = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node.as_str());
        let created = p
            .metadata
            .creation_timestamp
            .as_ref()
            .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0));
        if on_warned && created.is_some_and(|c| c > o.noticed + chrono::Duration::seconds(1)) {
            bail!(
                "pod {:?} created after the notice is on the warned node",
                p.metadata.name
            );
        }
    }

    // Events, history, status and metrics.
    let events = Api::<Event>::all(e.client.clone())
        .list(&ListParams::default())
        .await?;
    ensure!(
        events
            .items
            .iter()
            .any(|ev| ev.reason.as_deref() == Some("SpotInterruption")
                && ev.involved_object.name.as_deref() == Some(node.as_str())),
        "no SpotInterruption event on the node; events: {:?}",
        events
            .items
            .iter()
            .map(|ev| (
                ev.reason.clone(),
                ev.involved_object.name.clone(),
                ev.message.clone()
            ))
            .collect::<Vec<_>>()
    );
    let history = wait_for(Duration::from_secs(20), || async {
        let cm = Api::<ConfigMap>::namespaced(e.client.clone(), PROVIDER_NS)
            .get_opt("gpu-autoscaler-interruptions-e2e")
            .await
            .ok()??;
        let spot = cm.data?.get("spot")?.clone();
        spot.contains(&node).then_some(spot)
    })
    .await
    .context("the interruption is in the persisted history")?;
    ensure!(history.contains("p3.8xlarge"), "{history}");
    let status = wait_for(Duration::from_secs(20), || async {
        let s = Api::<AutoscalingPolicy>::all(e.client.clone())
            .get("e2e")
            .await
            .ok()?
            .status?;
        let spot = s.pools.iter().find(|p| p.name == "spot")?.clone();
        spot.interruption_rate24h
            .filter(|r| *r > 0.0)
            .map(|_| (s, spot))
    })
    .await
    .context("status carries the spot pool's interruption rate")?;
    ensure!(status.0.spot_interruptions.last24h >= 1);
    let text = handle.metrics.encode();
    for want in [
        "gpu_autoscaler_spot_interruptions_total{pool=\"spot\",instance_type=\"p3.8xlarge\"} 1".to_string(),
        "gpu_autoscaler_drain_evictions_total{cause=\"interruption\",priority=\"low\",outcome=\"evicted\"} 1".to_string(),
        "gpu_autoscaler_drain_evictions_total{cause=\"interruption\",priority=\"high\",outcome=\"evicted\"} 1".to_string(),
        "gpu_autoscaler_interruption_drain_seconds_count{result=\"before_deadline\"} 1".to_string(),
        "gpu_autoscaler_spot_interruption_rate{pool=\"spot\",instance_type=\"p3.8xlarge\",window=\"24h\"}".to_string(),
    ] {
        ensure!(text.contains(&want), "missing {want} in:\n{}", interesting(&text));
    }
    ensure!(
        !text.contains("outcome=\"deadline_missed\""),
        "{}",
        interesting(&text)
    );

    println!(
        "FIGURES notice={notice}s node={} cordon_seen_after={:.2}s replacement_after_notice={:.2}s ({}) \
         evictions_after_notice low={:.2}s medium={:.2}s high={:.2}s drain_done_before_deadline_by={:.2}s graces={graces:?}",
        o.node,
        o.cordoned_after,
        secs(o.replacement_at - o.noticed),
        o.replacement_type,
        secs(l - o.noticed),
        secs(m - o.noticed),
        secs(h - o.noticed),
        secs(o.deadline - o.drain_finished()),
    );
    task.abort();
    e.sim.abort();
    Ok(())
}

fn interesting(text: &str) -> String {
    text.lines()
        .filter(|l| {
            !l.starts_with('#')
                && (l.contains("interruption") || l.contains("drain") || l.contains("evictions"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn aws_120s_notice_drains_low_medium_high_before_the_deadline() -> Result<()> {
    low_medium_high(120).await
}

#[tokio::test]
async fn gcp_azure_30s_notice_drains_low_medium_high_before_the_deadline() -> Result<()> {
    low_medium_high(30).await
}

/// 30 pods (8 GPU pods, 22 CPU-only; 10 of each priority) on one 8-GPU node.
#[tokio::test]
async fn thirty_pods_on_one_node_drain_inside_the_notice() -> Result<()> {
    let notice: i64 = std::env::var("INTERRUPTION_NOTICE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let e = env("p3.16xlarge").await?;
    let node = gpu_ready_spot_node(&e.client).await?;
    let priorities = ["low", "medium", "high"];
    let mut names = Vec::new();
    for i in 0..30 {
        let name = format!("pod-{i:02}");
        let gpus = u32::from(i < 8);
        create_pod(&e, &name, gpus, priorities[i % 3], 30).await?;
        names.push(name);
    }
    bind_all(&e, &names, &node).await?;
    let (handle, task) = start_scaler(&e)?;
    wait_for(Duration::from_secs(30), || async { handle.is_ready() }).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let o = interrupt(&e, &node, notice, &names).await?;
    let prio = |name: &str| {
        let i: usize = name.trim_start_matches("pod-").parse().unwrap_or(0);
        i % 3
    };
    // Every low eviction before every medium one, every medium before every high one.
    for a in &names {
        for b in &names {
            if prio(a) < prio(b) {
                ensure!(
                    o.evictions[a] < o.evictions[b],
                    "{a} ({}) evicted at {} after {b} ({}) at {}",
                    priorities[prio(a)],
                    o.evictions[a],
                    priorities[prio(b)],
                    o.evictions[b]
                );
            }
        }
    }
    ensure!(o.drain_finished() < o.deadline, "drain missed the deadline");
    // The controller has seen every answer once it times the drain.
    wait_for(Duration::from_secs(20), || async {
        handle
            .metrics
            .encode()
            .contains(
                "gpu_autoscaler_interruption_drain_seconds_count{result=\"before_deadline\"} 1",
            )
            .then_some(())
    })
    .await
    .context("the controller times the finished drain")?;
    ensure!(
        o.replacement_at < o.drain_finished(),
        "replacement after the drain"
    );
    let wave_end = |p: usize| {
        names
            .iter()
            .filter(|n| prio(n) == p)
            .map(|n| o.evictions[n])
            .max()
            .map_or(0.0, |t| secs(t - o.noticed))
    };
    println!(
        "FIGURES 30 pods notice={notice}s window={:.1}s cordon_seen_after={:.2}s replacement_after_notice={:.2}s ({}) \
         waves_done_after_notice low={:.2}s medium={:.2}s high={:.2}s drain_done_before_deadline_by={:.2}s",
        secs(o.deadline - o.noticed),
        o.cordoned_after,
        secs(o.replacement_at - o.noticed),
        o.replacement_type,
        wave_end(0),
        wave_end(1),
        wave_end(2),
        secs(o.deadline - o.drain_finished()),
    );
    println!(
        "FIGURES scaler metrics:\n{}",
        interesting(&handle.metrics.encode())
            .lines()
            .filter(|l| !l.contains("_bucket"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    task.abort();
    e.sim.abort();
    Ok(())
}
