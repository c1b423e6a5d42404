//! Executing a plan: provider calls, cordons, evictions, terminations.
//!
//! Everything here is safe to repeat. Scale-ups are absolute targets written only after
//! re-reading the current target (a changed target means someone else acted: re-plan instead);
//! evictions carry the pod's UID as a precondition, so a pod recreated under the same name is
//! never hit; an instance is terminated only when the node holds nothing but DaemonSet and
//! mirror pods (checked again here, not just trusted from the plan).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use gpu_autoscaler_api::EvictionPriority;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::Context;
use super::metrics::{
    ActionLabels, DirectionLabels, DrainLabels, OperationLabels, ProviderErrorLabels, ResultLabels,
};
use crate::engine::{
    DrainCause, Eviction, Plan, ProviderEvent, ProviderEventKind, ScaleUp, ScaleUpCause, Snapshot,
};
use crate::provider::{LaunchHint, ProviderError, ProviderErrorKind, ProviderResult};

/// Which Eviction API the apiserver speaks (`policy/v1` from Kubernetes 1.22).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionVersion {
    V1,
    V1Beta1,
}

impl EvictionVersion {
    pub fn api_version(self) -> &'static str {
        match self {
            Self::V1 => "policy/v1",
            Self::V1Beta1 => "policy/v1beta1",
        }
    }
}

/// How soon to look again while drains wait on pods or PDBs.
const DRAIN_POLL: Duration = Duration::from_secs(2);
const PDB_RETRY: Duration = Duration::from_secs(5);
/// Longest wait for one eviction on a client that retries 429 by itself.
const EVICTION_CUTOFF: Duration = Duration::from_secs(5);
/// Concurrent eviction calls.
const EVICTION_CONCURRENCY: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct Outcome {
    pub requeue: Option<Duration>,
    /// The last provider failure, for the Ready condition.
    pub provider_error: Option<String>,
}

impl Outcome {
    fn requeue_within(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }
}

/// Runs a provider call, recording its latency.
pub(crate) async fn timed<T>(
    ctx: &Context,
    operation: &'static str,
    fut: impl Future<Output = ProviderResult<T>>,
) -> ProviderResult<T> {
    let started = Instant::now();
    let r = fut.await;
    ctx.metrics
        .provider_request_duration
        .get_or_create(&OperationLabels { operation })
        .observe(started.elapsed().as_secs_f64());
    r
}

pub(crate) fn count_provider_error(ctx: &Context, e: &ProviderError) {
    tracing::warn!(provider = ctx.provider.name(), operation = e.operation, kind = e.kind.as_str(), error = %e.message, "provider call failed");
    ctx.metrics
        .provider_errors
        .get_or_create(&ProviderErrorLabels {
            provider: ctx.provider.name(),
            operation: e.operation,
            kind: e.kind.as_str(),
        })
        .inc();
}

/// Finds which Eviction API version the apiserver serves for `pods/eviction`.
pub async fn discover_eviction_version(client: &kube::Client) -> EvictionVersion {
    match client.list_core_api_resources("v1").await {
        Ok(list) => {
            let version = list
                .resources
                .iter()
                .find(|r| r.name == "pods/eviction")
                .and_then(|r| r.version.clone());
            match version.as_deref() {
                Some("v1beta1") => EvictionVersion::V1Beta1,
                _ => EvictionVersion::V1,
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "eviction API discovery failed; assuming policy/v1");
            EvictionVersion::V1
        }
    }
}

/// Result of one eviction request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionResult {
    Evicted,
    /// 429: a PodDisruptionBudget doesn't allow it now; retried later, never bypassed.
    PdbBlocked,
    /// The pod is gone or was replaced (404, or the UID precondition failed).
    Gone,
    Error,
}

impl EvictionResult {
    fn label(self) -> &'static str {
        match self {
            Self::Evicted => "evicted",
            Self::PdbBlocked => "pdb_blocked",
            Self::Gone => "gone",
            Self::Error => "error",
        }
    }
}

/// The Eviction body for `version` (the UID precondition protects a same-named successor).
pub fn eviction_body(
    version: EvictionVersion,
    namespace: &str,
    name: &str,
    uid: &str,
    grace_seconds: Option<u32>,
) -> serde_json::Value {
    let mut delete_options = json!({});
    if let Some(g) = grace_seconds {
        delete_options["gracePeriodSeconds"] = json!(g);
    }
    if !uid.is_empty() {
        delete_options["preconditions"] = json!({ "uid": uid });
    }
    json!({
        "apiVersion": version.api_version(),
        "kind": "Eviction",
        "metadata": { "name": name, "namespace": namespace },
        "deleteOptions": delete_options,
    })
}

/// POSTs an Eviction to the pod's `eviction` subresource.
pub async fn evict(
    client: &kube::Client,
    version: EvictionVersion,
    namespace: &str,
    name: &str,
    uid: &str,
    grace_seconds: Option<u32>,
) -> (EvictionResult, Option<String>) {
    let body = eviction_body(version, namespace, name, uid, grace_seconds);
    let url = format!("/api/v1/namespaces/{namespace}/pods/{name}/eviction");
    let req = match serde_json::to_vec(&body)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            http::Request::post(url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(b)
                .map_err(|e| e.to_string())
        }) {
        Ok(r) => r,
        Err(e) => return (EvictionResult::Error, Some(e)),
    };
    match client.request::<serde_json::Value>(req).await {
        Ok(_) => (EvictionResult::Evicted, None),
        Err(kube::Error::Api(s)) if s.code == 429 => {
            (EvictionResult::PdbBlocked, Some(s.message.clone()))
        }
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => (EvictionResult::Gone, None),
        Err(e) => (EvictionResult::Error, Some(e.to_string())),
    }
}

/// The grace period of an eviction, shortened so the pod is gone by the deadline.
pub fn effective_grace(ev: &Eviction, own_grace: Option<u32>, now: DateTime<Utc>) -> Option<u32> {
    match ev.deadline {
        None => ev.grace_seconds,
        Some(deadline) => {
            let left = (deadline - now).num_seconds().clamp(0, i64::from(u32::MAX)) as u32;
            let wanted = ev
                .grace_seconds
                .or(own_grace)
                .unwrap_or(crate::engine::DEFAULT_GRACE_SECONDS);
            Some(wanted.min(left))
        }
    }
}

pub(crate) async fn execute(
    ctx: &mut Context,
    snap: &Snapshot,
    plan: &Plan,
    terminating: &HashMap<(String, String), DateTime<Utc>>,
) -> Outcome {
    let mut out = Outcome::default();
    let now = snap.now;
    let pool_of = |name: &str| snap.pools.iter().find(|p| p.spec.name == name);

    // 1. Drop requests that failed or timed out.
    let mut reduced: HashMap<&str, u32> = HashMap::new();
    for r in &plan.target_reductions {
        let Some(pool) = pool_of(&r.pool) else {
            continue;
        };
        match timed(
            ctx,
            "set_target_size",
            ctx.provider.set_target_size(&pool.spec, r.new_target, &[]),
        )
        .await
        {
            Ok(change) => {
                reduced.insert(r.pool.as_str(), change.target);
                tracing::info!(pool = %r.pool, from = change.previous, to = change.target, reason = %r.reason, "pool target reduced");
            }
            Err(e) => {
                count_provider_error(ctx, &e);
                out.provider_error = Some(e.to_string());
            }
        }
    }

    // 2. Scale-ups, one absolute target per pool.
    let mut order: Vec<&str> = Vec::new();
    let mut by_pool: HashMap<&str, Vec<&ScaleUp>> = HashMap::new();
    for su in &plan.scale_ups {
        by_pool
            .entry(su.pool.as_str())
            .or_insert_with(|| {
                order.push(su.pool.as_str());
                Vec::new()
            })
            .push(su);
    }
    for name in order {
        let ups = &by_pool[name];
        let (Some(pool), Some(last)) = (pool_of(name), ups.last()) else {
            continue;
        };
        let expected = reduced.get(name).copied().unwrap_or(pool.target_size);
        // Read before write: if the target moved since the snapshot, someone else acted and
        // our arithmetic is stale. Re-plan rather than overwrite.
        match timed(ctx, "target_size", ctx.provider.target_size(&pool.spec)).await {
            Ok(current) if current != expected => {
                tracing::info!(
                    pool = name,
                    current,
                    expected,
                    "pool target changed under us; re-planning"
                );
                out.requeue_within(Duration::from_millis(200));
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                count_provider_error(ctx, &e);
                out.provider_error = Some(e.to_string());
                continue;
            }
        }
        let hints: Vec<LaunchHint> = ups
            .iter()
            .map(|u| LaunchHint {
                instance_type: u.instance_type.clone(),
                zone: u.zone.clone(),
                count: u.add,
            })
            .collect();
        let called_at = Utc::now();
        match timed(
            ctx,
            "set_target_size",
            ctx.provider
                .set_target_size(&pool.spec, last.new_target, &hints),
        )
        .await
        {
            Ok(change) => {
                ctx.metrics
                    .scaling_actions
                    .get_or_create(&ActionLabels {
                        direction: "scale-up",
                        pool: name.to_string(),
                        capacity_type: pool.spec.capacity_type.as_str().to_string(),
                    })
                    .inc();
                let queue = ctx.scale_up_requests.entry(name.to_string()).or_default();
                for _ in 0..change.added() {
                    queue.push_back(Instant::now());
                }
                for u in ups {
                    for key in &u.pods {
                        let since = snap
                            .pods
                            .iter()
                            .find(|p| p.namespace == key.namespace && p.name == key.name)
                            .and_then(|p| p.unschedulable_since);
                        if let Some(since) = since {
                            let secs =
                                (called_at - since).num_milliseconds().max(0) as f64 / 1000.0;
                            ctx.metrics.pending_to_scale_up.observe(secs);
                        }
                    }
                }
                // Replacement for interrupted nodes: notice → request latency, once per node.
                for u in ups.iter().filter(|u| u.cause == ScaleUpCause::Replacement) {
                    for key in &u.pods {
                        let node = snap
                            .pods
                            .iter()
                            .find(|p| p.namespace == key.namespace && p.name == key.name)
                            .and_then(|p| p.node.clone());
                        if let Some(secs) = node
                            .and_then(|n| ctx.interruptions.replacement_requested(&n, called_at))
                        {
                            ctx.metrics.interruption_replacement_latency.observe(secs);
                        }
                    }
                }
                tracing::info!(pool = name, from = change.previous, to = change.target, reason = %last.reason, "scaled up");
            }
            Err(e) => {
                count_provider_error(ctx, &e);
                out.provider_error = Some(e.to_string());
                if e.kind != ProviderErrorKind::Throttled {
                    let kind = if e.kind == ProviderErrorKind::InsufficientCapacity {
                        ProviderEventKind::InsufficientCapacity {
                            instance_type: e
                                .instance_type
                                .clone()
                                .or_else(|| last.instance_type.clone()),
                            zone: e.zone.clone().or_else(|| last.zone.clone()),
                            message: e.message.clone(),
                        }
                    } else {
                        ProviderEventKind::ScaleUpFailed {
                            message: e.to_string(),
                        }
                    };
                    ctx.provider_events.push(ProviderEvent {
                        pool: name.to_string(),
                        at: called_at,
                        kind,
                    });
                }
                out.requeue_within(Duration::from_millis(100));
            }
        }
    }

    // 3. Cordons.
    for c in &plan.cordons {
        match set_unschedulable(ctx, &c.node, true).await {
            Ok(()) => {
                if let Some(secs) = ctx.interruptions.cordoned(&c.node, Utc::now()) {
                    ctx.metrics.interruption_detection_to_cordon.observe(secs);
                }
            }
            Err(e) => tracing::warn!(node = %c.node, error = %e, "cordon failed"),
        }
    }

    // 4. Drains through the Eviction API.
    if !plan.drains.is_empty() {
        out.requeue_within(DRAIN_POLL);
        let version = match ctx.eviction_version {
            Some(v) => v,
            None => {
                let v = discover_eviction_version(&ctx.client).await;
                tracing::info!(api = v.api_version(), "eviction API");
                ctx.eviction_version = Some(v);
                v
            }
        };
        let mut calls = Vec::new();
        for d in &plan.drains {
            for ev in &d.evictions {
                if ev.not_before > now {
                    let wait = (ev.not_before - now).to_std().unwrap_or_default();
                    out.requeue_within(wait);
                    continue;
                }
                let key = (ev.pod.namespace.clone(), ev.pod.name.clone());
                if terminating.contains_key(&key) {
                    continue;
                }
                let Some(pod) = ctx.pods.get(&ev.pod.namespace, &ev.pod.name) else {
                    continue;
                };
                if !ev.uid.is_empty() && !pod.view.uid.is_empty() && pod.view.uid != ev.uid {
                    continue;
                }
                let own = pod.view.termination_grace_seconds;
                calls.push((
                    d.node.clone(),
                    d.cause,
                    ev.clone(),
                    effective_grace(ev, own, now),
                ));
            }
        }
        let (client, cut_off) = match &ctx.eviction_client {
            Some(c) => (c.clone(), None),
            None => (ctx.client.clone(), Some(EVICTION_CUTOFF)),
        };
        // Waves of one priority at a time, low first: evictions of several priorities can
        // fall due in the same pass (a late reconcile, a notice inside the margin), and a
        // higher-priority pod must still never be asked before a lower one.
        let mut results = Vec::with_capacity(calls.len());
        for priority in EvictionPriority::ALL {
            let wave: Vec<_> = calls
                .iter()
                .filter(|(_, _, ev, _)| ev.priority == priority)
                .cloned()
                .collect();
            if wave.is_empty() {
                continue;
            }
            let answered: Vec<_> = futures::stream::iter(wave)
                .map(|(node, cause, ev, grace)| {
                    let client = client.clone();
                    async move {
                        let call = evict(
                            &client,
                            version,
                            &ev.pod.namespace,
                            &ev.pod.name,
                            &ev.uid,
                            grace,
                        );
                        let r = match cut_off {
                            None => call.await,
                            // A retrying client sits on a 429 for minutes; treat the wait as one.
                            Some(d) => tokio::time::timeout(d, call).await.unwrap_or((
                                EvictionResult::PdbBlocked,
                                Some("no answer in time (client retrying a 429?)".into()),
                            )),
                        };
                        (node, cause, ev, r, Utc::now())
                    }
                })
                .buffer_unordered(EVICTION_CONCURRENCY)
                .collect()
                .await;
            results.extend(answered);
        }
        for (node, cause, ev, (result, message), answered_at) in results {
            if cause == DrainCause::Interruption
                && matches!(result, EvictionResult::Evicted | EvictionResult::Gone)
            {
                ctx.interruptions.evicted(&node, &ev.pod, answered_at);
            }
            ctx.metrics
                .evictions
                .get_or_create(&ResultLabels {
                    result: result.label(),
                })
                .inc();
            ctx.metrics
                .drain_evictions
                .get_or_create(&DrainLabels {
                    cause: match cause {
                        DrainCause::ScaleDown => "scale-down",
                        DrainCause::Interruption => "interruption",
                    },
                    priority: ev.priority.as_str(),
                    outcome: result.label(),
                })
                .inc();
            let why = match cause {
                DrainCause::ScaleDown => "scale-down",
                DrainCause::Interruption => "spot interruption",
            };
            match result {
                EvictionResult::Evicted => {
                    tracing::info!(pod = %ev.pod, %node, why, "evicted");
                    super::status::publish(
                        ctx,
                        super::status::pod_ref(&ev.pod.namespace, &ev.pod.name, &ev.uid),
                        false,
                        "Evicted",
                        format!("evicted from node {node} ({why}) through the Eviction API"),
                        "Drain",
                    )
                    .await;
                    if ctx.drains_announced.insert(node.clone()) {
                        super::status::publish(
                            ctx,
                            super::status::node_ref(&node),
                            false,
                            "Draining",
                            format!("draining node for {why}: evicting pods in priority order"),
                            "Drain",
                        )
                        .await;
                    }
                }
                EvictionResult::PdbBlocked => {
                    tracing::info!(pod = %ev.pod, %node, reason = message.as_deref().unwrap_or(""), "eviction refused by a PodDisruptionBudget; will retry");
                    out.requeue_within(PDB_RETRY);
                }
                EvictionResult::Gone => {}
                EvictionResult::Error => {
                    tracing::warn!(pod = %ev.pod, %node, error = message.as_deref().unwrap_or(""), "eviction failed");
                    out.requeue_within(PDB_RETRY);
                }
            }
        }
    }

    // 5. Terminations, only of nodes that hold nothing but node-bound infrastructure.
    for t in &plan.terminations {
        let busy = snap.pods.iter().any(|p| {
            p.node.as_deref() == Some(t.node.as_str())
                && !p.is_node_bound_infrastructure()
                && !p.is_terminal()
        });
        if busy {
            out.requeue_within(DRAIN_POLL);
            continue;
        }
        let Some(pool) = pool_of(&t.pool) else {
            continue;
        };
        let provider_id = t.provider_id.clone().or_else(|| {
            snap.nodes
                .iter()
                .find(|n| n.name == t.node)
                .and_then(|n| n.provider_id.clone())
        });
        let Some(instance) = provider_id
            .as_deref()
            .and_then(|pid| ctx.provider.instance_for_provider_id(&t.pool, pid))
        else {
            tracing::warn!(node = %t.node, pool = %t.pool, ?provider_id, "node has no instance of this provider; not terminating");
            continue;
        };
        match timed(
            ctx,
            "delete_instances",
            ctx.provider
                .delete_instances(&pool.spec, std::slice::from_ref(&instance)),
        )
        .await
        {
            Ok(()) => {
                ctx.metrics
                    .scaling_actions
                    .get_or_create(&ActionLabels {
                        direction: "scale-down",
                        pool: t.pool.clone(),
                        capacity_type: pool.spec.capacity_type.as_str().to_string(),
                    })
                    .inc();
                let started = snap
                    .memory
                    .nodes
                    .get(&t.node)
                    .and_then(|m| m.scale_down_started)
                    .or_else(|| {
                        plan.memory
                            .nodes
                            .get(&t.node)
                            .and_then(|m| m.scale_down_started)
                    });
                if let Some(s) = started {
                    ctx.metrics
                        .scaling_duration
                        .get_or_create(&DirectionLabels {
                            direction: "scale-down",
                        })
                        .observe((now - s).num_milliseconds().max(0) as f64 / 1000.0);
                }
                ctx.drains_announced.remove(&t.node);
                tracing::info!(node = %t.node, pool = %t.pool, instance = %instance.id, reason = %t.reason, "terminated");
            }
            Err(e) => {
                count_provider_error(ctx, &e);
                out.provider_error = Some(e.to_string());
                out.requeue_within(PDB_RETRY);
            }
        }
    }

    // 6. Give back nodes the engine no longer wants to remove.
    for u in &plan.uncordons {
        if let Err(e) = set_unschedulable(ctx, &u.node, false).await {
            tracing::warn!(node = %u.node, error = %e, "uncordon failed");
        }
    }
    out
}

async fn set_unschedulable(ctx: &Context, node: &str, value: bool) -> Result<(), kube::Error> {
    let current = ctx.nodes.get(node).is_some_and(|n| n.view.unschedulable);
    if current == value {
        return Ok(());
    }
    let api: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(ctx.client.clone());
    api.patch(
        node,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "unschedulable": value } })),
    )
    .await?;
    tracing::info!(node, unschedulable = value, "node schedulability changed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::PodKey;
    use gpu_autoscaler_api::EvictionPriority;

    fn eviction(grace: Option<u32>, deadline_in: Option<i64>, now: DateTime<Utc>) -> Eviction {
        Eviction {
            pod: PodKey::new("ns", "p"),
            uid: "u".into(),
            priority: EvictionPriority::Low,
            not_before: now,
            grace_seconds: grace,
            deadline: deadline_in.map(|s| now + chrono::Duration::seconds(s)),
        }
    }

    #[test]
    fn grace_is_cut_to_the_deadline() {
        let now = Utc::now();
        assert_eq!(
            effective_grace(&eviction(None, None, now), Some(60), now),
            None
        );
        assert_eq!(
            effective_grace(&eviction(Some(90), Some(40), now), None, now),
            Some(40)
        );
        assert_eq!(
            effective_grace(&eviction(None, Some(100), now), Some(20), now),
            Some(20)
        );
        assert_eq!(
            effective_grace(&eviction(Some(10), Some(-5), now), None, now),
            Some(0)
        );
    }

    #[test]
    fn eviction_bodies_name_the_version_and_protect_successors() {
        let b = eviction_body(EvictionVersion::V1Beta1, "ns", "p", "uid-1", Some(5));
        assert_eq!(b["apiVersion"], "policy/v1beta1");
        assert_eq!(b["kind"], "Eviction");
        assert_eq!(b["deleteOptions"]["gracePeriodSeconds"], 5);
        assert_eq!(b["deleteOptions"]["preconditions"]["uid"], "uid-1");
        let b = eviction_body(EvictionVersion::V1, "ns", "p", "", None);
        assert_eq!(b["apiVersion"], "policy/v1");
        assert!(b["deleteOptions"].get("preconditions").is_none());
    }
}
