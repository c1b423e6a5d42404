//! What a notice does to the Node: annotations, the interruption taint, cordon, an Event.
//!
//! [`plan`] is pure: from the Node as it is and the notice, the merge patch still needed (or
//! none). Applying only what is missing is what makes repeated polls idempotent: the second
//! poll of the same notice finds everything in place, patches nothing and emits no Event.
//! The patch carries the Node's resourceVersion, so a concurrent writer's taint is never
//! dropped by our whole-list taint write; a conflict is retried on a fresh read.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use gpu_autoscaler_api::keys;
use k8s_openapi::api::core::v1::{Event, Node, Pod, Taint};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::cloud::{Notice, NoticeKind};

/// Node annotation (RFC 3339) set on an AWS rebalance recommendation. Not in the shared
/// vocabulary: nothing but humans and dashboards read it, and the scaler's drain must not be
/// triggered by it, which is why the warning annotation is not used for rebalances.
pub const ANNOTATION_REBALANCE_RECOMMENDATION: &str =
    "gpu-autoscaler.io/spot-rebalance-recommendation";
/// Reasons of the Events we emit on the Node.
pub const REASON_INTERRUPTION: &str = "SpotInterruptionWarning";
pub const REASON_REBALANCE: &str = "SpotRebalanceRecommendation";
/// Source component of our Events.
pub const EVENT_COMPONENT: &str = "gpu-autoscaler-agent";
const CONFLICT_RETRIES: usize = 5;

/// What to do on a rebalance recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceAction {
    /// Annotate and taint (no cordon, no drain).
    Annotate,
    /// Count it, log it, touch nothing.
    Ignore,
}

impl std::str::FromStr for RebalanceAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "annotate" => Ok(RebalanceAction::Annotate),
            "ignore" => Ok(RebalanceAction::Ignore),
            other => Err(format!(
                "unknown rebalance action {other:?}: annotate or ignore"
            )),
        }
    }
}

/// RFC 3339 in UTC with a `Z`, seconds precision: what `date -u +%Y-%m-%dT%H:%M:%SZ` writes
/// in the reference document's manual test, so both paths look alike.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The changes a notice still needs on a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodePlan {
    /// Merge patch for the Node (includes resourceVersion).
    pub patch: Value,
    /// Whether this plan cordons (spec.unschedulable goes to true).
    pub cordons: bool,
}

fn interruption_taint() -> Taint {
    Taint {
        key: keys::TAINT_SPOT_INTERRUPTION_KEY.to_string(),
        value: None,
        effect: keys::TAINT_EFFECT_NO_SCHEDULE.to_string(),
        time_added: None,
    }
}

/// The patch still needed for `notice` on `node`; `None` when all is in place. Pure.
pub fn plan(node: &Node, notice: &Notice) -> Option<NodePlan> {
    let annotations = node.metadata.annotations.clone().unwrap_or_default();
    let spec = node.spec.clone().unwrap_or_default();
    let mut wanted: BTreeMap<&str, String> = BTreeMap::new();
    let cordon = notice.kind == NoticeKind::Termination;
    match notice.kind {
        NoticeKind::Termination => {
            wanted.insert(
                keys::ANNOTATION_SPOT_INTERRUPTION_WARNING,
                "true".to_string(),
            );
            wanted.insert(
                keys::ANNOTATION_SPOT_TERMINATION_TIME,
                format_time(notice.time),
            );
        }
        NoticeKind::Rebalance => {
            wanted.insert(
                ANNOTATION_REBALANCE_RECOMMENDATION,
                format_time(notice.time),
            );
        }
    }
    let missing_annotations: BTreeMap<&str, String> = wanted
        .into_iter()
        .filter(|(k, v)| annotations.get(*k) != Some(v))
        .collect();
    let taints = spec.taints.clone().unwrap_or_default();
    let has_taint = taints.iter().any(|t| {
        t.key == keys::TAINT_SPOT_INTERRUPTION_KEY && t.effect == keys::TAINT_EFFECT_NO_SCHEDULE
    });
    let needs_cordon = cordon && spec.unschedulable != Some(true);
    if missing_annotations.is_empty() && has_taint && !needs_cordon {
        return None;
    }
    let mut patch = json!({ "metadata": { "resourceVersion": node.metadata.resource_version } });
    if !missing_annotations.is_empty() {
        patch["metadata"]["annotations"] = json!(missing_annotations);
    }
    if !has_taint {
        let mut all = taints;
        all.push(interruption_taint());
        patch["spec"]["taints"] = serde_json::to_value(all).unwrap_or(Value::Null);
    }
    if needs_cordon {
        patch["spec"]["unschedulable"] = Value::Bool(true);
    }
    Some(NodePlan {
        patch,
        cordons: needs_cordon,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("node {node}: {source}")]
    Kube {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("node {0} not found")]
    NotFound(String),
}

/// What one application of a notice did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Something was patched (false: all was in place already).
    pub changed: bool,
    /// When the apiserver accepted the patch that cordoned the node (`None`: this
    /// application did not cordon). Taken before the Event is written, which is not on the
    /// critical path.
    pub cordoned_at: Option<std::time::Instant>,
    pub event_emitted: bool,
}

/// Writes notices onto one Node.
#[derive(Clone)]
pub struct NodeActions {
    client: Client,
    node: String,
    rebalance: RebalanceAction,
    /// Namespace of the Events (kubectl and the kubelet put Node events in `default`).
    event_namespace: String,
}

impl std::fmt::Debug for NodeActions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeActions")
            .field("node", &self.node)
            .field("rebalance", &self.rebalance)
            .finish()
    }
}

impl NodeActions {
    pub fn new(client: Client, node: impl Into<String>, rebalance: RebalanceAction) -> Self {
        NodeActions {
            client,
            node: node.into(),
            rebalance,
            event_namespace: "default".to_string(),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn kube_err(&self, source: kube::Error) -> NodeError {
        NodeError::Kube {
            node: self.node.clone(),
            source,
        }
    }

    /// Brings the Node in line with `notice`; emits an Event only when something changed.
    pub async fn apply(&self, notice: &Notice) -> Result<Applied, NodeError> {
        if notice.kind == NoticeKind::Rebalance && self.rebalance == RebalanceAction::Ignore {
            return Ok(Applied::default());
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut tries = 0;
        let (node, plan, patched_at) = loop {
            let current = nodes
                .get_opt(&self.node)
                .await
                .map_err(|e| self.kube_err(e))?
                .ok_or_else(|| NodeError::NotFound(self.node.clone()))?;
            let Some(plan) = plan(&current, notice) else {
                return Ok(Applied::default());
            };
            match nodes
                .patch(
                    &self.node,
                    &PatchParams::default(),
                    &Patch::Merge(&plan.patch),
                )
                .await
            {
                Ok(updated) => break (updated, plan, std::time::Instant::now()),
                Err(kube::Error::Api(status)) if status.code == 409 && tries < CONFLICT_RETRIES => {
                    tries += 1;
                }
                Err(e) => return Err(self.kube_err(e)),
            }
        };
        // The node is cordoned and tainted by now; the Event is informational, so a failure
        // to write it is logged, not retried in the hot path.
        let event_emitted = match self.emit_event(&node, notice).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(node = %self.node, error = %e, "emitting the interruption Event");
                false
            }
        };
        Ok(Applied {
            changed: true,
            cordoned_at: plan.cordons.then_some(patched_at),
            event_emitted,
        })
    }

    async fn emit_event(&self, node: &Node, notice: &Notice) -> Result<(), kube::Error> {
        let now = Utc::now();
        let (reason, action, message) = match notice.kind {
            NoticeKind::Termination => (
                REASON_INTERRUPTION,
                "Cordon",
                format!(
                    "{} spot interruption notice ({}): instance reclaimed at {}; node tainted {}:NoSchedule and cordoned",
                    notice.cloud,
                    notice.action,
                    format_time(notice.time),
                    keys::TAINT_SPOT_INTERRUPTION_KEY
                ),
            ),
            NoticeKind::Rebalance => (
                REASON_REBALANCE,
                "Taint",
                format!(
                    "{} rebalance recommendation issued at {}: node tainted {}:NoSchedule",
                    notice.cloud,
                    format_time(notice.time),
                    keys::TAINT_SPOT_INTERRUPTION_KEY
                ),
            ),
        };
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": format!("{}.{:x}", self.node, now.timestamp_nanos_opt().unwrap_or_default()),
                "namespace": self.event_namespace,
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Node",
                "name": self.node,
                "uid": node.metadata.uid,
            },
            "reason": reason,
            "message": message,
            "type": "Warning",
            "count": 1,
            "firstTimestamp": format_time(now),
            "lastTimestamp": format_time(now),
            "eventTime": Value::Null,
            "source": { "component": EVENT_COMPONENT, "host": self.node },
            "reportingComponent": EVENT_COMPONENT,
            "reportingInstance": self.node,
            "action": action,
        });
        let event: Event = serde_json::from_value(event).map_err(kube::Error::SerdeError)?;
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.event_namespace);
        events.create(&PostParams::default(), &event).await?;
        Ok(())
    }

    /// Pods on this node that a drain still has to move: not DaemonSet-managed, not static
    /// (mirror) pods, not finished.
    pub async fn evictable_pods(&self) -> Result<usize, NodeError> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let list = pods
            .list(&ListParams::default().fields(&format!("spec.nodeName={}", self.node)))
            .await
            .map_err(|e| self.kube_err(e))?;
        Ok(list.items.iter().filter(|p| is_evictable(p)).count())
    }
}

/// Whether a drain would move this pod. Pure.
pub fn is_evictable(pod: &Pod) -> bool {
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let daemon = pod
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|o| o.iter().any(|r| r.kind == "DaemonSet"));
    !(finished || mirror || daemon)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::Cloud;

    fn node(value: Value) -> Node {
        serde_json::from_value(value).expect("node")
    }

    fn termination() -> Notice {
        Notice {
            cloud: Cloud::Aws,
            kind: NoticeKind::Termination,
            action: "terminate".to_string(),
            time: DateTime::parse_from_rfc3339("2026-03-01T12:02:00Z")
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
            event_id: None,
        }
    }

    #[test]
    fn termination_annotates_taints_and_cordons_keeping_other_taints() {
        let n = node(json!({
            "metadata": {"name": "n1", "resourceVersion": "7"},
            "spec": {"taints": [{"key": "gpu-autoscaler.io/capacity-type", "value": "spot", "effect": "NoSchedule"}]}
        }));
        let p = plan(&n, &termination()).expect("plan");
        assert!(p.cordons);
        assert_eq!(p.patch["metadata"]["resourceVersion"], "7");
        assert_eq!(
            p.patch["metadata"]["annotations"][keys::ANNOTATION_SPOT_TERMINATION_TIME],
            "2026-03-01T12:02:00Z"
        );
        assert_eq!(
            p.patch["metadata"]["annotations"][keys::ANNOTATION_SPOT_INTERRUPTION_WARNING],
            "true"
        );
        let taints = p.patch["spec"]["taints"].as_array().expect("taints");
        assert_eq!(taints.len(), 2);
        assert_eq!(taints[1]["key"], keys::TAINT_SPOT_INTERRUPTION_KEY);
        assert_eq!(p.patch["spec"]["unschedulable"], true);
    }

    #[test]
    fn nothing_to_do_once_applied() {
        let n = node(json!({
            "metadata": {"name": "n1", "annotations": {
                keys::ANNOTATION_SPOT_INTERRUPTION_WARNING: "true",
                keys::ANNOTATION_SPOT_TERMINATION_TIME: "2026-03-01T12:02:00Z"
            }},
            "spec": {"unschedulable": true, "taints": [{"key": keys::TAINT_SPOT_INTERRUPTION_KEY, "effect": "NoSchedule"}]}
        }));
        assert_eq!(plan(&n, &termination()), None);
    }

    #[test]
    fn rebalance_taints_without_cordon_or_warning() {
        let mut notice = termination();
        notice.kind = NoticeKind::Rebalance;
        let n = node(json!({"metadata": {"name": "n1"}}));
        let p = plan(&n, &notice).expect("plan");
        assert!(!p.cordons);
        assert!(p.patch["spec"].get("unschedulable").is_none());
        let annotations = p.patch["metadata"]["annotations"].as_object().expect("ann");
        assert!(annotations.contains_key(ANNOTATION_REBALANCE_RECOMMENDATION));
        assert!(!annotations.contains_key(keys::ANNOTATION_SPOT_INTERRUPTION_WARNING));
        // A later termination on the tainted node still cordons and warns.
        let tainted = node(json!({
            "metadata": {"name": "n1"},
            "spec": {"taints": [{"key": keys::TAINT_SPOT_INTERRUPTION_KEY, "effect": "NoSchedule"}]}
        }));
        let p = plan(&tainted, &termination()).expect("plan");
        assert!(p.cordons && p.patch["spec"].get("taints").is_none());
    }

    #[test]
    fn evictable_excludes_daemonsets_mirrors_and_finished() {
        let pod = |v: Value| -> Pod { serde_json::from_value(v).expect("pod") };
        assert!(is_evictable(&pod(json!({"metadata": {"name": "a"}}))));
        assert!(!is_evictable(&pod(json!({"metadata": {"name": "a",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": "u"}]}}))));
        assert!(!is_evictable(&pod(json!({"metadata": {"name": "a",
            "annotations": {"kubernetes.io/config.mirror": "x"}}}))));
        assert!(!is_evictable(&pod(
            json!({"metadata": {"name": "a"}, "status": {"phase": "Succeeded"}})
        )));
    }
}
