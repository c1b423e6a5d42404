//! The controller: watches the cluster, runs the engine, executes its plans.
//!
//! Shape (after kube-rs' controller-rs): a [`Context`] with the client, caches, provider,
//! metrics and the engine's memory; [`reconcile`](Scaler::run) builds a
//! [`Snapshot`](crate::engine::Snapshot), plans and executes; errors go through an error
//! policy that counts them by class in `gpu_autoscaler_reconcile_errors_total` and retries
//! soon. Reconciles run on watch events (debounced, so a burst of pod creations is one plan),
//! on an interval, and at the times the plan asks for (staggered evictions).
//!
//! Only the replica holding the Lease ([`lease`]) reconciles; every replica keeps its caches
//! warm and answers `/readyz`, so a standby takes over without a cold start.
//!
//! What survives a restart or a leader change: pool cooldowns and back-offs (policy status,
//! `pools[]`), the global last scale-up/down (status), each node's underutilized-since and
//! scale-down start (node annotations), and the provider's own targets (the cloud). The
//! in-process engine memory is rebuilt from those when a replica becomes leader. The demand
//! forecaster's history and the measured node lead time live in a ConfigMap ([`predictor`]).
//!
//! Caches: Pods and Nodes are converted to engine views as their watch events arrive
//! ([`podcache`], [`nodecache`]); no full object is kept (memory: `docs/scaler-bench.md`).

pub mod agent_utilization;
pub mod convert;
mod execute;
pub mod http;
pub mod interruptions;
pub mod lease;
pub mod metrics;
pub mod nodecache;
pub mod podcache;
pub mod predictor;
mod status;
pub mod utilization;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use gpu_autoscaler_api::{AutoscalingPolicy, GpuResourceNames, keys};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{Notify, watch};

use crate::engine::{self, EngineMemory, PoolState, ProviderEvent, ProviderEventKind, Snapshot};
use crate::provider::{CloudProvider, ProviderError, ProviderErrorKind};
pub use agent_utilization::AgentUtilization;
pub use execute::EvictionVersion;
pub use lease::{Leadership, LeaseConfig};
pub use metrics::Metrics;
pub use utilization::{ConfigMapUtilization, NoUtilization, StaticUtilization, UtilizationSource};

/// Settings of one scaler replica.
#[derive(Debug, Clone)]
pub struct ScalerConfig {
    /// The AutoscalingPolicy (cluster-scoped) this replica executes.
    pub policy: String,
    /// Reconcile at least this often.
    pub interval: Duration,
    /// Wait this long after a watch event before planning, to batch bursts.
    pub debounce: Duration,
    /// Leader election; `None` acts as the only replica.
    pub lease: Option<LeaseConfig>,
    /// Resources counted as GPUs.
    pub gpu_resources: GpuResourceNames,
    /// Name in Events' `reportingController`.
    pub reporter: String,
    /// Retry delay after a failed reconcile.
    pub error_requeue: Duration,
    /// Namespace of the controller's own state (the interruption history ConfigMap).
    pub state_namespace: String,
    /// Offset of the business-hours time zone the demand forecaster learns weekdays and hours
    /// in (a fixed offset; see `forecast::DemandForecaster`).
    pub forecast_clock: crate::forecast::ForecastClock,
    /// The predictor's state ConfigMap is written at most this often.
    pub forecast_persist_every: Duration,
}

impl ScalerConfig {
    pub fn new(policy: impl Into<String>) -> Self {
        Self {
            policy: policy.into(),
            interval: Duration::from_secs(10),
            debounce: Duration::from_millis(200),
            lease: None,
            gpu_resources: GpuResourceNames::default(),
            reporter: "gpu-autoscaler-scaler".into(),
            error_requeue: Duration::from_secs(5),
            state_namespace: "kube-system".into(),
            forecast_clock: crate::forecast::ForecastClock::default(),
            forecast_persist_every: Duration::from_secs(180),
        }
    }
}

/// Why a reconcile failed; the class is the `error` label of the error counter.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("provider: {0}")]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Utilization(#[from] utilization::UtilizationError),
    #[error("encoding: {0}")]
    Serialize(#[from] serde_json::Error),
}

impl ReconcileError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Provider(_) => "provider",
            Self::Utilization(_) => "utilization",
            Self::Serialize(_) => "serialize",
        }
    }
}

/// Errors that stop the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("watch cache never synced: {0}")]
    CacheSync(String),
}

/// What HTTP handlers and tests can see of a running replica.
#[derive(Clone)]
pub struct ScalerHandle {
    pub metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    leadership: Leadership,
}

impl ScalerHandle {
    /// Caches synced: ready to serve as leader or standby.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn is_leader(&self) -> bool {
        self.leadership.is_leader()
    }
}

/// The controller's shared state for one reconcile.
pub(crate) struct Context {
    pub client: Client,
    /// Client for Eviction calls, without the default retry-on-429 layer (see
    /// [`Scaler::with_eviction_client`]).
    pub eviction_client: Option<Client>,
    pub config: ScalerConfig,
    pub provider: Arc<dyn CloudProvider>,
    pub utilization: Arc<dyn UtilizationSource>,
    pub metrics: Arc<Metrics>,
    pub pods: podcache::PodCache,
    pub nodes: nodecache::NodeCache,
    pub policies: Store<AutoscalingPolicy>,
    pub recorder: Recorder,
    /// Engine memory; `None` until rebuilt from persisted state (start, new leadership).
    pub memory: Option<EngineMemory>,
    /// Provider outcomes not yet shown to the engine.
    pub provider_events: Vec<ProviderEvent>,
    pub eviction_version: Option<EvictionVersion>,
    /// Event dedupe: (object, reason, message) -> last emitted.
    pub emitted: HashMap<(String, String, String), Instant>,
    /// Scale-up request times per pool, oldest first, for the scaling-duration metric.
    pub scale_up_requests: BTreeMap<String, VecDeque<Instant>>,
    /// Nodes already seen with GPUs allocatable.
    pub gpu_ready_seen: Option<HashSet<String>>,
    /// Nodes whose drain was announced with an Event.
    pub drains_announced: HashSet<String>,
    /// Interruption history (rates) and drain bookkeeping.
    pub interruptions: interruptions::Tracker,
    /// Demand forecasts for predictive scaling, persisted in a ConfigMap.
    pub predictor: predictor::Predictor,
}

/// A scaler replica: build it, take a [`handle`](Scaler::handle), then [`run`](Scaler::run).
pub struct Scaler {
    client: Client,
    eviction_client: Option<Client>,
    config: ScalerConfig,
    provider: Arc<dyn CloudProvider>,
    utilization: Arc<dyn UtilizationSource>,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    leader_tx: watch::Sender<bool>,
    leadership: Leadership,
}

impl Scaler {
    pub fn new(
        client: Client,
        config: ScalerConfig,
        provider: Arc<dyn CloudProvider>,
        utilization: Arc<dyn UtilizationSource>,
    ) -> Self {
        let (leader_tx, leadership) = if config.lease.is_some() {
            lease::channel()
        } else {
            lease::always_leader()
        };
        Self {
            client,
            eviction_client: None,
            config,
            provider,
            utilization,
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
            leader_tx,
            leadership,
        }
    }

    /// Shares a metrics registry (e.g. one the CLI also serves other metrics from).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// A client for the Eviction API that does not retry 429 answers itself. kube's default
    /// client retries 429 for minutes, which would park the controller on a PodDisruptionBudget
    /// instead of retrying on its own schedule; build it with [`client_without_retries`].
    /// Without one, eviction calls on the main client are cut off after a few seconds.
    pub fn with_eviction_client(mut self, client: Client) -> Self {
        self.eviction_client = Some(client);
        self
    }

    pub fn handle(&self) -> ScalerHandle {
        ScalerHandle {
            metrics: self.metrics.clone(),
            ready: self.ready.clone(),
            leadership: self.leadership.clone(),
        }
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ControllerError> {
        let Scaler {
            client,
            eviction_client,
            config,
            provider,
            utilization,
            metrics,
            ready,
            leader_tx,
            mut leadership,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let trigger = Arc::new(Notify::new());
        let names = config.gpu_resources.clone();

        // Pods: everything not finished, converted to engine views on arrival.
        let pods = podcache::PodCache::new(names.clone());
        let pod_stream = watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed"),
        )
        .default_backoff();
        let pod_trigger = trigger.clone();
        let pod_cache = pods.clone();
        let pod_task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(pod_stream);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ev) => {
                        if pod_cache.apply(ev) {
                            pod_trigger.notify_one();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "pod watch error (retrying)"),
                }
            }
        });

        // Nodes: converted to compact views on arrival like pods (no reflector of full
        // objects); trigger only when something the engine looks at changed (not heartbeats).
        let nodes = nodecache::NodeCache::new(names.clone());
        let node_stream =
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff();
        let node_trigger = trigger.clone();
        let node_cache = nodes.clone();
        let node_task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(node_stream);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ev) => {
                        if node_cache.apply(ev) {
                            node_trigger.notify_one();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "node watch error (retrying)"),
                }
            }
        });

        // The policy: trigger on spec changes (generation), not on our own status writes.
        let (policies, policy_writer) = reflector::store::<AutoscalingPolicy>();
        let policy_stream = watcher(
            Api::<AutoscalingPolicy>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={}", config.policy)),
        )
        .default_backoff()
        .reflect(policy_writer);
        let policy_trigger = trigger.clone();
        let mut last_generation: Option<i64> = None;
        let policy_task = tokio::spawn(drive(policy_stream, move |ev| match ev {
            watcher::Event::Apply(p) | watcher::Event::InitApply(p) => {
                let g = p.metadata.generation;
                if g != last_generation {
                    last_generation = g;
                    policy_trigger.notify_one();
                }
            }
            watcher::Event::Delete(_) | watcher::Event::InitDone => policy_trigger.notify_one(),
            watcher::Event::Init => {}
        }));

        let lease_task = config.lease.clone().map(|lc| {
            let api: Api<Lease> = Api::namespaced(client.clone(), &lc.namespace);
            let mut rx = stop_rx.clone();
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            tokio::spawn(lease::run(api, lc, leader_tx.clone(), stop))
        });

        // Dropping `run` (a crash in tests, a cancelled task) must stop the watches and the
        // election too, without releasing the Lease: that is what a killed process does.
        let _guard = AbortOnDrop(
            [&pod_task, &node_task, &policy_task]
                .into_iter()
                .map(|t| t.abort_handle())
                .chain(lease_task.as_ref().map(|t| t.abort_handle()))
                .collect(),
        );
        let mut shutdown = Box::pin(shutdown);
        let synced = async {
            pods.wait_until_ready().await;
            nodes.wait_until_ready().await;
            policies.wait_until_ready().await
        };
        tokio::select! {
            r = synced => {
                if let Err(e) = r {
                    return Err(ControllerError::CacheSync(e.to_string()));
                }
            }
            _ = &mut shutdown => {
                let _ = stop_tx.send(true);
                for t in [pod_task, node_task, policy_task] { t.abort(); }
                return Ok(());
            }
        }
        ready.store(true, Ordering::Relaxed);
        metrics.caches_synced.set(1);
        tracing::info!(policy = %config.policy, provider = provider.name(), "caches synced");

        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: config.reporter.clone(),
                instance: config.lease.as_ref().map(|l| l.identity.clone()),
            },
        );
        let predictor = predictor::Predictor::new(
            predictor::StateStore::ConfigMap(Box::new(Api::namespaced(
                client.clone(),
                &config.state_namespace,
            ))),
            &config.policy,
            config.forecast_clock,
            config.forecast_persist_every,
        );
        let mut ctx = Context {
            client,
            eviction_client,
            config,
            provider,
            utilization,
            metrics: metrics.clone(),
            pods,
            nodes,
            policies,
            recorder,
            memory: None,
            provider_events: Vec::new(),
            eviction_version: None,
            emitted: HashMap::new(),
            scale_up_requests: BTreeMap::new(),
            gpu_ready_seen: None,
            drains_announced: HashSet::new(),
            interruptions: interruptions::Tracker::default(),
            predictor,
        };

        let mut next_at = tokio::time::Instant::now();
        loop {
            let leader = leadership.is_leader();
            metrics.leader.set(i64::from(leader));
            if !leader {
                // A future leadership starts from persisted state, not from stale memory.
                ctx.memory = None;
                ctx.provider_events.clear();
                ctx.predictor.reset();
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = trigger.notified() => {
                    tokio::time::sleep(ctx.config.debounce).await;
                }
                _ = tokio::time::sleep_until(next_at) => {}
                _ = leadership.changed() => {}
            }
            if !leadership.is_leader() {
                next_at = tokio::time::Instant::now() + ctx.config.interval;
                continue;
            }
            metrics.leader.set(1);
            let started = Instant::now();
            metrics.reconciles.inc();
            let requeue = match reconcile(&mut ctx).await {
                Ok(requeue) => requeue
                    .unwrap_or(ctx.config.interval)
                    .min(ctx.config.interval),
                Err(e) => error_policy(&ctx, &e),
            };
            metrics
                .reconcile_duration
                .observe(started.elapsed().as_secs_f64());
            next_at = tokio::time::Instant::now() + requeue;
        }
        let _ = stop_tx.send(true);
        if let Some(t) = lease_task {
            // Let the election release the Lease so a standby takes over at once.
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        for t in [pod_task, node_task, policy_task] {
            t.abort();
        }
        Ok(())
    }
}

/// A client like the one `config` gives, minus kube's retry-on-429/503 layer.
pub fn client_without_retries(mut config: kube::Config) -> Result<Client, kube::Error> {
    config.default_retry = false;
    Client::try_from(config)
}

struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// Drives a reflected watch stream, calling `on_event` for each event; errors are logged
/// (the stream backs off and re-lists by itself).
async fn drive<K, S>(stream: S, mut on_event: impl FnMut(&watcher::Event<K>) + Send)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream.into_stream());
    while let Some(item) = stream.next().await {
        match item {
            Ok(ev) => on_event(&ev),
            Err(e) => tracing::warn!(error = %e, "watch stream error (retrying)"),
        }
    }
    let _ = stream.try_next().await;
}

fn error_policy(ctx: &Context, e: &ReconcileError) -> Duration {
    tracing::warn!(error = %e, "reconcile failed");
    ctx.metrics
        .reconcile_errors
        .get_or_create(&metrics::ErrorLabels {
            error: e.metric_label(),
        })
        .inc();
    ctx.config.error_requeue
}

/// One reconcile. Returns when to come back (None: the regular interval).
async fn reconcile(ctx: &mut Context) -> Result<Option<Duration>, ReconcileError> {
    let now = Utc::now();
    let Some(policy) = ctx.policies.get(&ObjectRef::new(&ctx.config.policy)) else {
        tracing::debug!(policy = %ctx.config.policy, "policy not found; nothing to do");
        return Ok(None);
    };
    if let Err(errors) = gpu_autoscaler_api::policy::validate(&policy.spec) {
        tracing::warn!(policy = %ctx.config.policy, %errors, "policy invalid; not scaling");
        status::write_invalid(ctx, &policy, &errors.to_string()).await?;
        return Ok(None);
    }
    let spec = policy.spec.clone();

    // Pools as the provider sees them. A pool whose group can't be read is left out of the
    // snapshot (the engine then never scales it) and makes the Ready condition False.
    let mut pools = Vec::with_capacity(spec.node_pools.len());
    let mut provider_problem: Option<String> = None;
    for pool in &spec.node_pools {
        let state = async {
            let target_size =
                execute::timed(ctx, "target_size", ctx.provider.target_size(pool)).await?;
            let in_flight = execute::timed(ctx, "in_flight", ctx.provider.in_flight(pool)).await?;
            Ok::<_, ProviderError>(PoolState {
                spec: pool.clone(),
                templates: ctx.provider.templates(pool),
                target_size,
                in_flight,
                interruption_rate_24h: None,
            })
        }
        .await;
        match state {
            Ok(s) => pools.push(s),
            Err(e) => {
                execute::count_provider_error(ctx, &e);
                provider_problem = Some(format!("pool {}: {e}", pool.name));
            }
        }
        // Scale-ups the cloud accepted but could not fill (AWS scaling activities, MIG
        // instance errors, VMSS allocation failures) become provider events now, so the
        // engine backs the pool off and falls back without waiting for the provision timeout.
        match execute::timed(ctx, "launch_failures", ctx.provider.launch_failures(pool)).await {
            Ok(failures) => {
                for e in failures {
                    let kind = match e.kind {
                        ProviderErrorKind::InsufficientCapacity => {
                            ProviderEventKind::InsufficientCapacity {
                                instance_type: e.instance_type.clone(),
                                zone: e.zone.clone(),
                                message: e.message.clone(),
                            }
                        }
                        _ => ProviderEventKind::ScaleUpFailed {
                            message: e.to_string(),
                        },
                    };
                    ctx.provider_events.push(ProviderEvent {
                        pool: pool.name.clone(),
                        at: now,
                        kind,
                    });
                }
            }
            Err(e) => execute::count_provider_error(ctx, &e),
        }
    }

    let node_objs = ctx.nodes.all();
    let nodes: Vec<_> = node_objs.iter().map(|n| n.view_at(now)).collect();
    let pod_objs = ctx.pods.all();
    ctx.metrics.cached_pods.set(pod_objs.len() as i64);
    ctx.metrics.cached_nodes.set(node_objs.len() as i64);
    let mut terminating: HashMap<(String, String), chrono::DateTime<Utc>> = HashMap::new();
    let mut pods = Vec::with_capacity(pod_objs.len());
    for p in &pod_objs {
        let view = &p.view;
        if view.is_terminal() {
            continue;
        }
        if let Some(t) = p.deletion {
            // An unbound pod being deleted is no demand; a bound one holds its node until its
            // grace period ends (after that, only a dead kubelet keeps the object around).
            if view.node.is_none() || t <= now {
                continue;
            }
            terminating.insert((view.namespace.clone(), view.name.clone()), t);
        }
        pods.push(view.clone());
    }
    drop(pod_objs);

    let managed: Vec<String> = nodes
        .iter()
        .filter(|n| n.pool.is_some())
        .map(|n| n.name.clone())
        .collect();
    let utilization = ctx.utilization.fetch(&managed).await?;

    let restoring_memory = ctx.memory.is_none();
    if restoring_memory {
        ctx.memory = Some(status::restore_memory(&policy, &node_objs));
    }
    let mut memory = ctx.memory.clone().unwrap_or_default();
    // Interruption rates (controller/interruptions.rs): persisted history → pools and memory.
    interruptions::before_plan(ctx, &nodes, &mut pools, restoring_memory, now).await;
    interruptions::prepare_memory(ctx, &mut memory);
    let mut snapshot = Snapshot {
        now,
        policy: spec.clone(),
        pools,
        nodes,
        pods,
        utilization,
        forecast: None,
        provider_events: std::mem::take(&mut ctx.provider_events),
        memory: memory.clone(),
    };
    // Observe demand and forecast (only with enablePredictiveScaling; see predictor.rs).
    let capacity = crate::forecast::capacity_gpus(&snapshot);
    snapshot.forecast = ctx
        .predictor
        .tick(now, &spec, &snapshot.nodes, &snapshot.pods, capacity)
        .await;
    let plan_started = Instant::now();
    let plan = engine::plan(&snapshot);
    ctx.metrics
        .plan_duration
        .observe(plan_started.elapsed().as_secs_f64());
    for w in &plan.warnings {
        tracing::warn!(warning = %w, "engine");
    }

    let outcome = if spec.enabled {
        execute::execute(ctx, &snapshot, &plan, &terminating).await
    } else {
        execute::Outcome::default()
    };
    interruptions::after_plan(ctx, &snapshot, &plan).await;
    ctx.predictor.persist(now).await;

    ctx.memory = Some(plan.memory.clone());
    status::persist_node_memory(ctx, &node_objs, &memory, &plan.memory).await;
    status::emit_events(ctx, &plan, &policy).await;
    status::update_metrics(ctx, &snapshot, &plan, &memory);
    let ready_problem = provider_problem.or(outcome.provider_error.clone());
    status::write(
        ctx,
        &policy,
        &snapshot,
        &plan,
        &memory,
        ready_problem.as_deref(),
    )
    .await?;

    let mut next = outcome.requeue;
    if !ctx.provider_events.is_empty() {
        // Re-plan at once so the engine can fall back to another pool.
        next = Some(Duration::from_millis(100));
    }
    Ok(next)
}

/// Node annotation keys the controller writes (for docs and tests).
pub const NODE_ANNOTATIONS: [&str; 3] = [
    convert::ANNOTATION_UNDERUTILIZED_SINCE,
    convert::ANNOTATION_SCALE_DOWN_STARTED,
    status::ANNOTATION_INTERRUPTION_HANDLED,
];

/// Re-exported so callers needn't depend on the api crate for the pool label.
pub const LABEL_NODE_POOL: &str = keys::LABEL_NODE_POOL;
