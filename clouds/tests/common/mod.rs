//! Shared by the provider tests: the engine-driven scale-up / scale-down scenario.
//!
//! The scenario plays the controller's part with the real decision engine
//! (`gpu_autoscaler_scaler::engine::plan`) and a real provider talking to its emulator; the
//! mapping of cloud instances to Node objects (what kubelet registration would do) is done
//! here from the emulator's instance list.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::future::BoxFuture;
use gpu_autoscaler_api::AutoscalingPolicySpec;
use gpu_autoscaler_api::keys;
use gpu_autoscaler_api::policy::NodePool;
use gpu_autoscaler_clouds::CloudMetrics;
use gpu_autoscaler_scaler::engine::{
    self, EngineMemory, InstanceTemplate, NodeView, PodPhase, PoolState, ProviderEvent,
    ProviderEventKind, Snapshot, UtilizationView, testing,
};
use gpu_autoscaler_scaler::provider::{CloudProvider, LaunchHint};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// An instance as the emulator reports it.
#[derive(Debug, Clone)]
pub struct CloudInstance {
    pub provider_id: String,
    pub instance_type: String,
    pub zone: Option<String>,
}

/// What the scenario measured.
#[derive(Debug, Default)]
pub struct Figures {
    /// Requests of one reconcile before anything happens (the pool is empty and stays so).
    pub idle_reconcile: u64,
    /// Requests of the reconcile that scales up (reads + write + operation polls).
    pub scale_up_reconcile: u64,
    /// Requests of one reconcile in steady state (nodes registered, nothing to do).
    pub steady_reconcile: u64,
    /// Requests of the reconcile that terminates the idle node.
    pub scale_down_reconcile: u64,
}

pub fn policy(pool: &NodePool) -> Result<AutoscalingPolicySpec, serde_json::Error> {
    serde_json::from_value(serde_json::json!({
        "minNodes": 0,
        "maxNodes": 10,
        "scaleUpThreshold": 0.8,
        "scaleDownThreshold": 0.2,
        "scaleUpCooldownSeconds": 0,
        "scaleDownCooldownSeconds": 0,
        "underutilizedDurationSeconds": 60,
        "pendingPodTimeoutSeconds": 0,
        "enableSpotInstances": false,
        "nodePools": [pool],
    }))
}

/// One reconcile's provider reads for one pool, as the controller does them.
/// Reconciles in these tests follow each other faster than the providers' read cache
/// expires; the e2e configs use a 300 ms cache, so waiting this long makes each reconcile
/// read afresh, as the controller's 10 s interval does.
pub const RECONCILE_GAP: std::time::Duration = std::time::Duration::from_millis(350);

async fn read_pool(
    provider: &dyn CloudProvider,
    pool: &NodePool,
    templates: &Option<Vec<InstanceTemplate>>,
    now: DateTime<Utc>,
) -> Result<(PoolState, Vec<ProviderEvent>), Box<dyn std::error::Error + Send + Sync>> {
    tokio::time::sleep(RECONCILE_GAP).await;
    let target_size = provider.target_size(pool).await?;
    let in_flight = provider.in_flight(pool).await?;
    let failures = provider.launch_failures(pool).await?;
    let events = failures
        .into_iter()
        .map(|e| ProviderEvent {
            pool: pool.name.clone(),
            at: now,
            kind: ProviderEventKind::InsufficientCapacity {
                instance_type: e.instance_type,
                zone: e.zone,
                message: e.message,
            },
        })
        .collect();
    let templates = templates
        .clone()
        .unwrap_or_else(|| provider.templates(pool));
    Ok((
        PoolState {
            spec: pool.clone(),
            templates,
            target_size,
            in_flight,
            interruption_rate_24h: None,
        },
        events,
    ))
}

fn node_for(
    pool: &NodePool,
    templates: &[InstanceTemplate],
    i: &CloudInstance,
    now: DateTime<Utc>,
) -> Option<NodeView> {
    let t = templates
        .iter()
        .find(|t| t.instance_type == i.instance_type)
        .or_else(|| templates.first())?;
    let name = i.provider_id.rsplit('/').next()?.to_string();
    let mut labels = pool.labels.clone();
    labels.insert(keys::LABEL_NODE_POOL.into(), pool.name.clone());
    labels.insert(
        keys::LABEL_CAPACITY_TYPE.into(),
        pool.capacity_type.as_str().into(),
    );
    labels.insert(keys::LABEL_INSTANCE_TYPE.into(), t.instance_type.clone());
    if let Some(z) = &i.zone {
        labels.insert(keys::LABEL_ZONE.into(), z.clone());
    }
    Some(NodeView {
        name,
        pool: Some(pool.name.clone()),
        capacity_type: Some(pool.capacity_type),
        instance_type: Some(t.instance_type.clone()),
        zone: i.zone.clone(),
        created: now,
        ready: true,
        gpus_capacity: t.gpus,
        gpus_allocatable: t.gpus,
        gpu_resource: Some(t.gpu_resource.clone()),
        cpu_millis_allocatable: t.cpu_millis,
        memory_bytes_allocatable: t.memory_bytes,
        labels,
        taints: Vec::new(),
        unschedulable: false,
        interruption: None,
        provider_id: Some(i.provider_id.clone()),
    })
}

type Lister<'a> = &'a (dyn Fn() -> BoxFuture<'static, Vec<CloudInstance>> + Send + Sync);

/// Pending GPU pod -> engine scales up through the provider -> the emulator's instance becomes
/// a Node running the pod -> pod finishes -> engine cordons and terminates the idle node
/// through the provider. `templates` overrides the provider's (clouds whose catalogue lacks
/// GPU counts). Returns the API requests per reconcile at each stage.
pub async fn scale_up_then_down(
    provider: Arc<dyn CloudProvider>,
    metrics: &CloudMetrics,
    pool: &NodePool,
    templates: Option<Vec<InstanceTemplate>>,
    list: Lister<'_>,
) -> Result<Figures, Box<dyn std::error::Error + Send + Sync>> {
    let mut figures = Figures::default();
    let spec = policy(pool)?;
    let t0: DateTime<Utc> =
        DateTime::parse_from_rfc3339("2025-06-01T12:00:00Z")?.with_timezone(&Utc);
    let mut now = t0;
    let mut memory = EngineMemory::default();
    let templates_now = templates
        .clone()
        .unwrap_or_else(|| provider.templates(pool));
    if templates_now.is_empty() {
        return Err(format!("no templates for pool {}", pool.name).into());
    }

    // A node already running a job (the engine never removes a pool's last node).
    provider.set_target_size(pool, 1, &[]).await?;
    let base_instances = list().await;
    let base_node = base_instances
        .first()
        .and_then(|i| node_for(pool, &templates_now, i, now))
        .ok_or("no base instance in the emulator")?;
    let mut base_pod = testing::gpu_pod("base", 1);
    base_pod.node = Some(base_node.name.clone());
    base_pod.phase = PodPhase::Running;
    let busy = |nodes: &[NodeView], v: f64| UtilizationView {
        window_seconds: 60,
        nodes: nodes
            .iter()
            .map(|n| {
                (
                    n.name.clone(),
                    if n.name == base_node.name { 0.5 } else { v },
                )
            })
            .collect::<BTreeMap<_, _>>(),
    };

    // Idle reconcile: nothing pending.
    let before = metrics.total_calls();
    let (state, events) = read_pool(provider.as_ref(), pool, &templates, now).await?;
    let plan = engine::plan(&Snapshot {
        now,
        policy: spec.clone(),
        pools: vec![state],
        nodes: vec![base_node.clone()],
        pods: vec![base_pod.clone()],
        utilization: busy(std::slice::from_ref(&base_node), 0.5),
        forecast: None,
        provider_events: events,
        memory: memory.clone(),
    });
    memory = plan.memory.clone();
    figures.idle_reconcile = metrics.total_calls() - before;
    if !plan.scale_ups.is_empty() {
        return Err(format!("idle plan scaled up: {:?}", plan.scale_ups).into());
    }

    // Scale-up reconcile.
    now += Duration::seconds(10);
    let mut pod = testing::gpu_pod("train", 1);
    pod.unschedulable_since = Some(now - Duration::seconds(120));
    let before = metrics.total_calls();
    let (state, events) = read_pool(provider.as_ref(), pool, &templates, now).await?;
    let start_target = state.target_size;
    let plan = engine::plan(&Snapshot {
        now,
        policy: spec.clone(),
        pools: vec![state],
        nodes: vec![base_node.clone()],
        pods: vec![base_pod.clone(), pod.clone()],
        utilization: busy(std::slice::from_ref(&base_node), 0.5),
        forecast: None,
        provider_events: events,
        memory: memory.clone(),
    });
    memory = plan.memory.clone();
    let up = plan
        .scale_ups
        .last()
        .ok_or_else(|| format!("no scale-up planned: {:?}", plan.warnings))?;
    let hints: Vec<LaunchHint> = plan
        .scale_ups
        .iter()
        .map(|u| LaunchHint {
            instance_type: u.instance_type.clone(),
            zone: u.zone.clone(),
            count: u.add,
        })
        .collect();
    // Read before write, as the controller does.
    let current = provider.target_size(pool).await?;
    if current != start_target {
        return Err("target moved under us".into());
    }
    let change = provider
        .set_target_size(pool, up.new_target, &hints)
        .await?;
    figures.scale_up_reconcile = metrics.total_calls() - before;
    if change.target != start_target + 1 || change.previous != start_target {
        return Err(format!("unexpected change {change:?} from {start_target}").into());
    }
    // The same call again (a controller restarted before it saw the result) changes nothing.
    let again = provider
        .set_target_size(pool, up.new_target, &hints)
        .await?;
    if again.added() != 0 {
        return Err(format!("repeated set_target_size added {}", again.added()).into());
    }

    // The instance registers as a Node and the pod runs on it.
    let instances = list().await;
    if instances.len() != (start_target + 1) as usize {
        return Err(format!("emulator has {} instances after scale-up", instances.len()).into());
    }
    let mut nodes: Vec<NodeView> = instances
        .iter()
        .filter_map(|i| node_for(pool, &templates_now, i, now))
        .collect();
    let node_name = nodes
        .iter()
        .map(|n| n.name.clone())
        .find(|n| *n != base_node.name)
        .ok_or("no new node")?;
    pod.node = Some(node_name.clone());
    pod.phase = PodPhase::Running;
    pod.unschedulable_since = None;

    // Steady state: busy node, nothing to do.
    now += Duration::seconds(30);
    let before = metrics.total_calls();
    let (state, events) = read_pool(provider.as_ref(), pool, &templates, now).await?;
    let plan = engine::plan(&Snapshot {
        now,
        policy: spec.clone(),
        pools: vec![state],
        nodes: nodes.clone(),
        pods: vec![base_pod.clone(), pod.clone()],
        utilization: busy(&nodes, 0.5),
        forecast: None,
        provider_events: events,
        memory: memory.clone(),
    });
    memory = plan.memory.clone();
    figures.steady_reconcile = metrics.total_calls() - before;
    if !plan.scale_ups.is_empty() || !plan.terminations.is_empty() {
        return Err(format!(
            "steady plan acted: {:?} {:?}",
            plan.scale_ups, plan.terminations
        )
        .into());
    }

    // The pod finishes; the node idles until the engine terminates it.
    for _ in 0..20 {
        now += Duration::seconds(61);
        let before = metrics.total_calls();
        let (state, events) = read_pool(provider.as_ref(), pool, &templates, now).await?;
        let plan = engine::plan(&Snapshot {
            now,
            policy: spec.clone(),
            pools: vec![state],
            nodes: nodes.clone(),
            pods: vec![base_pod.clone()],
            utilization: busy(&nodes, 0.0),
            forecast: None,
            provider_events: events,
            memory: memory.clone(),
        });
        memory = plan.memory.clone();
        for c in &plan.cordons {
            if let Some(n) = nodes.iter_mut().find(|n| n.name == c.node) {
                n.unschedulable = true;
            }
        }
        if plan.terminations.is_empty() {
            continue;
        }
        for t in &plan.terminations {
            let pid = t
                .provider_id
                .as_deref()
                .ok_or("termination without providerID")?;
            let inst = provider
                .instance_for_provider_id(&t.pool, pid)
                .ok_or("providerID not ours")?;
            provider
                .delete_instances(pool, std::slice::from_ref(&inst))
                .await?;
        }
        figures.scale_down_reconcile = metrics.total_calls() - before;
        let left = list().await;
        if left.iter().any(|i| i.provider_id.ends_with(&node_name)) {
            return Err(format!("{node_name} still in the group after termination").into());
        }
        let target = provider.target_size(pool).await?;
        if target != start_target {
            return Err(format!("target after scale-down is {target}, want {start_target}").into());
        }
        return Ok(figures);
    }
    Err("the engine never terminated the idle node".into())
}
