//! Persisted memory, policy status, Kubernetes Events and metrics after a plan.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use gpu_autoscaler_api::policy::{Condition, SpotInterruptionStatus};
use gpu_autoscaler_api::{AutoscalingPolicy, AutoscalingPolicyStatus, CapacityType};
use gpu_autoscaler_catalog::HOURS_PER_MONTH;
use k8s_openapi::api::core::v1::{Node, ObjectReference};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType as KubeEventType};
use serde_json::{Value, json};

use super::Context;
use super::convert::{ANNOTATION_SCALE_DOWN_STARTED, ANNOTATION_UNDERUTILIZED_SINCE};
use super::metrics::{CapacityLabels, PoolLabels};
use super::nodecache::CachedNode;
use crate::engine::{EngineMemory, EventObject, EventType, NodeMemory, Plan, PoolMemory, Snapshot};

/// Node annotation: when the engine first handled the node's interruption notice.
pub const ANNOTATION_INTERRUPTION_HANDLED: &str = "gpu-autoscaler.io/interruption-handled";
/// The same Event (object, reason, message) is emitted at most this often.
const EVENT_REPEAT: Duration = Duration::from_secs(300);

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Rebuilds the engine's memory from what earlier leaders persisted.
pub(crate) fn restore_memory(
    policy: &AutoscalingPolicy,
    nodes: &[Arc<CachedNode>],
) -> EngineMemory {
    let status = policy.status.clone().unwrap_or_default();
    let pools = status
        .pools
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                PoolMemory {
                    last_scale_up: p.last_scale_up_time,
                    last_scale_down: p.last_scale_down_time,
                    backoff_until: p.backoff_until,
                    consecutive_failures: p.consecutive_failures,
                    last_failure_at: None,
                    last_error: p.last_error.clone(),
                    interruptions: Vec::new(),
                },
            )
        })
        .collect();
    let node_memory = nodes
        .iter()
        .filter_map(|n| {
            let parse = |s: &Option<String>| {
                s.as_deref()
                    .and_then(|s| DateTime::parse_from_rfc3339(s.trim()).ok())
                    .map(|t| t.with_timezone(&Utc))
            };
            let m = NodeMemory {
                underutilized_since: parse(&n.underutilized_since),
                scale_down_started: parse(&n.scale_down_started),
                interruption_handled: parse(&n.interruption_handled),
            };
            (m != NodeMemory::default()).then(|| (n.name().to_string(), m))
        })
        .collect();
    EngineMemory {
        last_scale_up: status.last_scale_up_time,
        last_scale_up_reason: status.last_scale_up_reason.clone(),
        last_scale_down: status.last_scale_down_time,
        last_scale_down_reason: status.last_scale_down_reason.clone(),
        pools,
        nodes: node_memory,
        // A pre-warm hold outlives a restart: the status shows what was held and until when.
        pre_warm: status.predictive.as_ref().and_then(|p| {
            let gpus = p.predicted_gpus.filter(|g| g.is_finite() && *g > 0.0)?;
            p.pre_warming.then_some(crate::engine::PreWarmHold {
                gpus: gpus.ceil().min(f64::from(u32::MAX)) as u32,
                hold_until: p.hold_until?,
            })
        }),
    }
}

/// Writes per-node memory into node annotations where it changed.
pub(crate) async fn persist_node_memory(
    ctx: &Context,
    nodes: &[Arc<CachedNode>],
    before: &EngineMemory,
    after: &EngineMemory,
) {
    let api: kube::Api<Node> = kube::Api::all(ctx.client.clone());
    for n in nodes {
        let name = n.name();
        let m = after.nodes.get(name).cloned().unwrap_or_default();
        let mut patch = serde_json::Map::new();
        for (key, value, have) in [
            (
                ANNOTATION_UNDERUTILIZED_SINCE,
                m.underutilized_since,
                &n.underutilized_since,
            ),
            (
                ANNOTATION_SCALE_DOWN_STARTED,
                m.scale_down_started,
                &n.scale_down_started,
            ),
            (
                ANNOTATION_INTERRUPTION_HANDLED,
                m.interruption_handled,
                &n.interruption_handled,
            ),
        ] {
            let want = value.map(rfc3339);
            // Compare at the annotation's (second) precision so we don't rewrite every time.
            let have = have.clone();
            if want != have {
                patch.insert(key.to_string(), want.map_or(Value::Null, Value::String));
            }
        }
        if patch.is_empty() {
            continue;
        }
        let _ = before;
        let body = json!({ "metadata": { "annotations": patch } });
        if let Err(e) = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            tracing::warn!(node = name, error = %e, "persisting node memory failed");
        }
    }
}

pub(crate) fn pod_ref(namespace: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(namespace.into()),
        name: Some(name.into()),
        uid: (!uid.is_empty()).then(|| uid.to_string()),
        ..Default::default()
    }
}

pub(crate) fn node_ref(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn policy_ref(policy: &AutoscalingPolicy) -> ObjectReference {
    ObjectReference {
        api_version: Some("gpu-autoscaler.io/v1alpha1".into()),
        kind: Some("AutoscalingPolicy".into()),
        name: policy.metadata.name.clone(),
        uid: policy.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Publishes one Event, at most once per [`EVENT_REPEAT`] for the same object, reason and message.
pub(crate) async fn publish(
    ctx: &mut Context,
    reference: ObjectReference,
    warning: bool,
    reason: &str,
    message: String,
    action: &str,
) {
    let key = (
        format!(
            "{}/{}/{}",
            reference.kind.as_deref().unwrap_or(""),
            reference.namespace.as_deref().unwrap_or(""),
            reference.name.as_deref().unwrap_or("")
        ),
        reason.to_string(),
        message.clone(),
    );
    let now = Instant::now();
    if ctx
        .emitted
        .get(&key)
        .is_some_and(|t| now.duration_since(*t) < EVENT_REPEAT)
    {
        return;
    }
    ctx.emitted
        .retain(|_, t| now.duration_since(*t) < EVENT_REPEAT);
    ctx.emitted.insert(key, now);
    let ev = Event {
        type_: if warning {
            KubeEventType::Warning
        } else {
            KubeEventType::Normal
        },
        reason: reason.to_string(),
        note: Some(message.chars().take(1000).collect()),
        action: action.to_string(),
        secondary: None,
    };
    // kube-apiserver before 1.22 rejects events.k8s.io/v1 Events about cluster-scoped objects
    // ("involvedObject.namespace does not match event.namespace"), so Node events go through
    // core/v1 in `default`, where `kubectl describe node` finds them on every version.
    let published = if reference.kind.as_deref() == Some("Node") {
        publish_core_event(ctx, &reference, &ev).await
    } else {
        ctx.recorder.publish(&ev, &reference).await
    };
    if let Err(e) = published {
        tracing::debug!(error = %e, reason, "publishing event failed");
    }
}

async fn publish_core_event(
    ctx: &Context,
    reference: &ObjectReference,
    ev: &Event,
) -> Result<(), kube::Error> {
    let now = Utc::now();
    let name = format!(
        "{}.{:x}",
        reference.name.as_deref().unwrap_or("node"),
        now.timestamp_nanos_opt().unwrap_or_default()
    );
    let event: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
        "metadata": { "name": name, "namespace": "default" },
        "involvedObject": reference,
        "reason": ev.reason,
        "message": ev.note,
        "action": ev.action,
        "type": if ev.type_ == KubeEventType::Warning { "Warning" } else { "Normal" },
        "firstTimestamp": rfc3339(now),
        "lastTimestamp": rfc3339(now),
        "count": 1,
        "source": { "component": ctx.config.reporter },
        "reportingComponent": ctx.config.reporter,
        "reportingInstance": ctx.config.lease.as_ref().map_or(ctx.config.reporter.as_str(), |l| l.identity.as_str()),
    }))
    .map_err(kube::Error::SerdeError)?;
    kube::Api::<k8s_openapi::api::core::v1::Event>::namespaced(ctx.client.clone(), "default")
        .create(&PostParams::default(), &event)
        .await?;
    Ok(())
}

/// Emits the plan's events.
pub(crate) async fn emit_events(ctx: &mut Context, plan: &Plan, policy: &AutoscalingPolicy) {
    for e in &plan.events {
        let reference = match &e.object {
            EventObject::Pod(key) => {
                let uid = ctx
                    .pods
                    .get(&key.namespace, &key.name)
                    .map(|p| p.view.uid.clone())
                    .unwrap_or_default();
                pod_ref(&key.namespace, &key.name, &uid)
            }
            EventObject::Node(name) => node_ref(name),
            EventObject::Policy => policy_ref(policy),
        };
        let action = match e.reason.as_str() {
            "TriggeredScaleUp" | "NotTriggerScaleUp" => "ScaleUp",
            "ScaleDown" | "Terminate" => "ScaleDown",
            other => other,
        }
        .to_string();
        publish(
            ctx,
            reference,
            e.type_ == EventType::Warning,
            &e.reason,
            e.message.clone(),
            &action,
        )
        .await;
    }
}

/// Monthly cost by capacity type and monthly savings against on-demand, at catalogue prices.
pub(crate) fn costs(ctx: &Context, snap: &Snapshot) -> (BTreeMap<CapacityType, f64>, f64, f64) {
    let mut cost: BTreeMap<CapacityType, f64> =
        CapacityType::ALL.iter().map(|c| (*c, 0.0)).collect();
    let mut savings = 0.0;
    let (mut spot_paid, mut spot_on_demand) = (0.0, 0.0);
    for n in snap.nodes.iter().filter(|n| n.pool.is_some()) {
        let (Some(it), Some(ct)) = (n.instance_type.as_deref(), n.capacity_type) else {
            continue;
        };
        let price = ctx.provider.price(it, ct);
        let on_demand = ctx.provider.price(it, CapacityType::OnDemand);
        if let Some(p) = price {
            *cost.entry(ct).or_default() += p * HOURS_PER_MONTH;
        }
        if let (Some(p), Some(od)) = (price, on_demand)
            && ct != CapacityType::OnDemand
        {
            savings += (od - p).max(0.0) * HOURS_PER_MONTH;
            if ct == CapacityType::Spot {
                spot_paid += p;
                spot_on_demand += od;
            }
        }
    }
    let spot_pct = if spot_on_demand > 0.0 {
        100.0 * (spot_on_demand - spot_paid) / spot_on_demand
    } else {
        0.0
    };
    (cost, savings, spot_pct)
}

pub(crate) fn update_metrics(
    ctx: &mut Context,
    snap: &Snapshot,
    plan: &Plan,
    _before: &EngineMemory,
) {
    let m = &ctx.metrics;
    let s = &plan.status;
    for ct in CapacityType::ALL {
        let label = CapacityLabels {
            capacity_type: ct.as_str(),
        };
        m.node_count
            .get_or_create(&label)
            .set(i64::from(s.current_nodes.get(ct)));
        m.desired_node_count
            .get_or_create(&label)
            .set(i64::from(s.desired_nodes.get(ct)));
    }
    m.cluster_utilization
        .set(s.average_gpu_utilization.unwrap_or(f64::NAN));
    m.pending_pods.set(i64::from(s.pending_gpu_pods));
    m.underutilized_nodes.set(i64::from(s.underutilized_nodes));
    m.spot_termination_warnings
        .set(i64::from(s.active_termination_warnings));
    // gpu_autoscaler_spot_interruptions_total is counted per pool and instance type in
    // `interruptions::after_plan`, where each node's notice is recorded once.
    let (cost, savings, spot_pct) = costs(ctx, snap);
    for (ct, c) in &cost {
        m.estimated_monthly_cost
            .get_or_create(&CapacityLabels {
                capacity_type: ct.as_str(),
            })
            .set(*c);
    }
    m.estimated_monthly_savings.set(savings);
    m.spot_savings_percentage.set(spot_pct);
    let (pu, pc) = s
        .predictive
        .as_ref()
        .map_or((None, None), |p| (p.predicted_utilization, p.confidence));
    m.predicted_utilization.set(pu.unwrap_or(f64::NAN));
    m.prediction_confidence.set(pc.unwrap_or(f64::NAN));
    m.scale_up_cooldown_remaining
        .set(f64::from(s.scale_up_cooldown_remaining_seconds));
    m.scale_down_cooldown_remaining
        .set(f64::from(s.scale_down_cooldown_remaining_seconds));
    for p in &s.pools {
        let label = PoolLabels {
            pool: p.name.clone(),
        };
        m.pool_current_nodes
            .get_or_create(&label)
            .set(i64::from(p.current_nodes));
        m.pool_desired_nodes
            .get_or_create(&label)
            .set(i64::from(p.desired_nodes));
        m.pool_consecutive_failures
            .get_or_create(&label)
            .set(i64::from(p.consecutive_failures));
        let backoff = p.backoff_until.map_or(0.0, |t| {
            ((t - snap.now).num_milliseconds().max(0) as f64) / 1000.0
        });
        m.pool_backoff_remaining.get_or_create(&label).set(backoff);
    }

    // Scale-up duration: a node newly seen with allocatable GPUs completes the oldest request
    // of its pool. Nodes present at the first reconcile are not counted.
    let ready_now: Vec<(String, String)> = snap
        .nodes
        .iter()
        .filter(|n| n.ready && n.gpus_allocatable > 0)
        .filter_map(|n| Some((n.name.clone(), n.pool.clone()?)))
        .collect();
    match ctx.gpu_ready_seen.as_mut() {
        None => ctx.gpu_ready_seen = Some(ready_now.into_iter().map(|(n, _)| n).collect()),
        Some(seen) => {
            for (node, pool) in ready_now {
                if seen.insert(node)
                    && let Some(requested) = ctx
                        .scale_up_requests
                        .get_mut(&pool)
                        .and_then(|q| q.pop_front())
                {
                    m.scaling_duration
                        .get_or_create(&super::metrics::DirectionLabels {
                            direction: "scale-up",
                        })
                        .observe(requested.elapsed().as_secs_f64());
                }
            }
            let present: std::collections::HashSet<&str> =
                snap.nodes.iter().map(|n| n.name.as_str()).collect();
            seen.retain(|n| present.contains(n.as_str()));
        }
    }
}

fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time)
        .or(Some(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time,
        observed_generation: generation,
    }
}

async fn patch_status(
    ctx: &Context,
    policy: &AutoscalingPolicy,
    status: AutoscalingPolicyStatus,
) -> Result<(), kube::Error> {
    if policy.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let Some(name) = policy.metadata.name.as_deref() else {
        return Ok(());
    };
    let api: kube::Api<AutoscalingPolicy> = kube::Api::all(ctx.client.clone());
    // A merge patch replaces lists wholesale, which is what pools and conditions need.
    let body = json!({ "status": status });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

/// `Valid=False`: the policy is reported and not acted on.
pub(crate) async fn write_invalid(
    ctx: &Context,
    policy: &AutoscalingPolicy,
    message: &str,
) -> Result<(), kube::Error> {
    let now = Utc::now();
    let mut status = policy.status.clone().unwrap_or_default();
    let previous = status.conditions.clone();
    let generation = policy.metadata.generation;
    status.observed_generation = generation;
    status.conditions = vec![
        condition(
            &previous,
            "Valid",
            false,
            "InvalidSpec",
            message,
            generation,
            now,
        ),
        condition(
            &previous,
            "Ready",
            false,
            "InvalidSpec",
            "scaling stopped until the policy is valid",
            generation,
            now,
        ),
    ];
    patch_status(ctx, policy, status).await
}

pub(crate) async fn write(
    ctx: &Context,
    policy: &AutoscalingPolicy,
    snap: &Snapshot,
    plan: &Plan,
    before: &EngineMemory,
    problem: Option<&str>,
) -> Result<(), kube::Error> {
    let now = snap.now;
    let previous = policy.status.clone().unwrap_or_default();
    let s = &plan.status;
    let mem = &plan.memory;
    let new_notices = mem
        .nodes
        .iter()
        .filter(|(n, m)| {
            m.interruption_handled.is_some()
                && before
                    .nodes
                    .get(*n)
                    .and_then(|b| b.interruption_handled)
                    .is_none()
        })
        .count() as u64;
    let (cost, savings, _) = costs(ctx, snap);
    let generation = policy.metadata.generation;
    let ready = condition(
        &previous.conditions,
        "Ready",
        problem.is_none(),
        if problem.is_none() {
            if policy.spec.enabled {
                "Reconciled"
            } else {
                "Disabled"
            }
        } else {
            "ProviderError"
        },
        problem.unwrap_or(if policy.spec.enabled {
            "the latest plan was executed"
        } else {
            "spec.enabled is false: observing and reporting only"
        }),
        generation,
        now,
    );
    let status = AutoscalingPolicyStatus {
        observed_generation: generation,
        current_nodes: s.current_nodes.clone(),
        desired_nodes: s.desired_nodes.clone(),
        average_gpu_utilization: s
            .average_gpu_utilization
            .map(|u| (u * 1000.0).round() / 1000.0),
        pending_gpu_pods: s.pending_gpu_pods,
        last_scale_up_time: mem.last_scale_up,
        last_scale_up_reason: mem.last_scale_up_reason.clone(),
        last_scale_down_time: mem.last_scale_down,
        last_scale_down_reason: mem.last_scale_down_reason.clone(),
        spot_interruptions: SpotInterruptionStatus {
            total: previous.spot_interruptions.total + new_notices,
            last24h: s.interruptions_last_24h,
            last7d: s.interruptions_last_7d,
            active_warnings: s.active_termination_warnings,
        },
        estimated_monthly_cost_usd: Some((cost.values().sum::<f64>() * 100.0).round() / 100.0),
        estimated_monthly_savings_usd: Some((savings * 100.0).round() / 100.0),
        predictive: s.predictive.clone(),
        pools: s.pools.clone(),
        conditions: vec![
            condition(
                &previous.conditions,
                "Valid",
                true,
                "Valid",
                "the policy passed validation",
                generation,
                now,
            ),
            ready,
        ],
    };
    patch_status(ctx, policy, status).await
}
