//! A compact node cache: Node watch events converted to engine views as they arrive.
//!
//! Like the [pod cache](super::podcache), this replaces a kube reflector of full objects: a
//! `Node` keeps its capacity maps, conditions and annotations as strings and nested maps,
//! several kilobytes each, while the controller needs the [`NodeView`] plus the three
//! annotations it persists engine memory in. At 5,000 nodes that is the difference between
//! tens of megabytes and a few.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use gpu_autoscaler_api::GpuResourceNames;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher;
use tokio::sync::watch;

use super::convert;
use super::status::ANNOTATION_INTERRUPTION_HANDLED;
use crate::engine::NodeView;

/// One cached node.
#[derive(Debug, Clone)]
pub struct CachedNode {
    /// The engine view. A spot-interruption warning without a termination time is resolved
    /// per reconcile (see [`CachedNode::view_at`]), so `view.interruption` holds the time
    /// computed at arrival only as a placeholder.
    pub view: NodeView,
    /// The warning annotation is set but no termination time is given.
    pub notice_without_time: bool,
    /// The engine-memory annotations as stored (compared verbatim before patching).
    pub underutilized_since: Option<String>,
    pub scale_down_started: Option<String>,
    pub interruption_handled: Option<String>,
    /// Hash of what the engine reads, to tell real changes from kubelet heartbeats.
    signature: u64,
}

impl CachedNode {
    /// The view as of `now` (a warning without a time is assumed to end the default notice
    /// after `now`, as [`convert::node_view`] does).
    pub fn view_at(&self, now: DateTime<Utc>) -> NodeView {
        let mut v = self.view.clone();
        if self.notice_without_time
            && let Some(i) = v.interruption.as_mut()
        {
            i.termination_time = now + chrono::Duration::seconds(convert::DEFAULT_NOTICE_SECONDS);
        }
        v
    }

    pub fn name(&self) -> &str {
        &self.view.name
    }

    fn from_node(node: &Node, names: &GpuResourceNames) -> Option<Self> {
        let view = convert::node_view(node, names, DateTime::UNIX_EPOCH)?;
        let annotations = node.metadata.annotations.as_ref();
        let get = |k: &str| annotations.and_then(|a| a.get(k)).cloned();
        let notice_without_time = view.interruption.is_some()
            && get(gpu_autoscaler_api::keys::ANNOTATION_SPOT_TERMINATION_TIME).is_none();
        let signature = signature(&view);
        Some(Self {
            underutilized_since: get(convert::ANNOTATION_UNDERUTILIZED_SINCE),
            scale_down_started: get(convert::ANNOTATION_SCALE_DOWN_STARTED),
            interruption_handled: get(ANNOTATION_INTERRUPTION_HANDLED),
            view,
            notice_without_time,
            signature,
        })
    }
}

/// Hash of the node fields the engine decides on (status heartbeats don't change it).
fn signature(v: &NodeView) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        v.ready,
        v.gpus_allocatable,
        v.gpus_capacity,
        v.unschedulable,
        &v.pool,
        &v.provider_id,
        v.cpu_millis_allocatable,
        v.memory_bytes_allocatable,
    )
        .hash(&mut h);
    for t in &v.taints {
        (&t.key, &t.value, t.effect as u8).hash(&mut h);
    }
    v.interruption
        .as_ref()
        .map(|i| i.termination_time)
        .hash(&mut h);
    v.labels.hash(&mut h);
    h.finish()
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<String, Arc<CachedNode>>,
    /// Objects of a (re)list in progress; swapped in at `InitDone`.
    relist: Option<HashMap<String, Arc<CachedNode>>>,
}

/// Shared, cheaply clonable node cache.
#[derive(Clone)]
pub struct NodeCache {
    inner: Arc<RwLock<Inner>>,
    names: GpuResourceNames,
    synced: watch::Sender<bool>,
}

impl NodeCache {
    pub fn new(names: GpuResourceNames) -> Self {
        Self {
            inner: Arc::default(),
            names,
            synced: watch::channel(false).0,
        }
    }

    /// Applies one watch event; returns whether the engine should look again (something it
    /// reads changed, a node appeared or went, a list completed). Heartbeat-only updates
    /// replace the entry (annotations may have changed) but return `false`.
    pub fn apply(&self, event: watcher::Event<Node>) -> bool {
        let Ok(mut inner) = self.inner.write() else {
            return false;
        };
        match event {
            watcher::Event::Init => {
                inner.relist = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(n) => {
                if let Some(c) = CachedNode::from_node(&n, &self.names) {
                    inner
                        .relist
                        .get_or_insert_with(HashMap::new)
                        .insert(c.view.name.clone(), Arc::new(c));
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = inner.relist.take() {
                    inner.nodes = fresh;
                }
                self.synced.send_replace(true);
                true
            }
            watcher::Event::Apply(n) => {
                let Some(c) = CachedNode::from_node(&n, &self.names) else {
                    return false;
                };
                let sig = c.signature;
                let old = inner.nodes.insert(c.view.name.clone(), Arc::new(c));
                old.is_none_or(|o| o.signature != sig)
            }
            watcher::Event::Delete(n) => {
                if let Some(name) = n.metadata.name.as_deref() {
                    inner.nodes.remove(name);
                }
                true
            }
        }
    }

    /// Every cached node, in name order (plans are deterministic for a given cluster).
    pub fn all(&self) -> Vec<Arc<CachedNode>> {
        let mut v: Vec<Arc<CachedNode>> = self
            .inner
            .read()
            .map(|i| i.nodes.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.view.name.cmp(&b.view.name));
        v
    }

    pub fn get(&self, name: &str) -> Option<Arc<CachedNode>> {
        self.inner.read().ok()?.nodes.get(name).cloned()
    }

    pub fn len(&self) -> usize {
        self.inner.read().map(|i| i.nodes.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once the first list has completed.
    pub async fn wait_until_ready(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, gpus: u32, heartbeat: &str, annotations: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": name, "labels": { "gpu-autoscaler.io/node-pool": "od" },
                          "annotations": annotations,
                          "managedFields": [{ "manager": "kubelet", "operation": "Update" }] },
            "status": {
                "capacity": { "nvidia.com/gpu": gpus.to_string(), "cpu": "8", "memory": "32Gi" },
                "allocatable": { "nvidia.com/gpu": gpus.to_string(), "cpu": "8", "memory": "32Gi" },
                "conditions": [
                    { "type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat },
                    { "type": "MemoryPressure", "status": "False", "lastHeartbeatTime": heartbeat },
                ],
                "images": [{ "names": ["registry/some-image:1"], "sizeBytes": 1000 }],
            },
        }))
        .expect("valid node")
    }

    #[test]
    fn heartbeats_do_not_trigger_but_real_changes_do() {
        let c = NodeCache::new(GpuResourceNames::default());
        c.apply(watcher::Event::Init);
        c.apply(watcher::Event::InitApply(node(
            "a",
            4,
            "2024-05-01T10:00:00Z",
            json!({}),
        )));
        assert!(c.is_empty(), "a list in progress is not visible");
        assert!(c.apply(watcher::Event::InitDone));
        assert_eq!(c.len(), 1);
        assert!(!c.apply(watcher::Event::Apply(node(
            "a",
            4,
            "2024-05-01T10:00:10Z",
            json!({})
        ))));
        // An annotation the controller persists memory in is kept without a trigger.
        assert!(!c.apply(watcher::Event::Apply(node(
            "a",
            4,
            "2024-05-01T10:00:20Z",
            json!({ "gpu-autoscaler.io/underutilized-since": "2024-05-01T09:00:00Z" })
        ))));
        let a = &c.all()[0];
        assert_eq!(
            a.underutilized_since.as_deref(),
            Some("2024-05-01T09:00:00Z")
        );
        assert_eq!(a.view.gpus_allocatable, 4);
        assert!(a.view.ready);
        assert!(c.apply(watcher::Event::Apply(node(
            "a",
            8,
            "2024-05-01T10:00:30Z",
            json!({})
        ))));
        assert!(c.apply(watcher::Event::Apply(node(
            "b",
            8,
            "2024-05-01T10:00:30Z",
            json!({})
        ))));
        assert_eq!(
            c.all()
                .iter()
                .map(|n| n.name().to_string())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert!(c.apply(watcher::Event::Delete(node(
            "a",
            8,
            "2024-05-01T10:00:40Z",
            json!({})
        ))));
        assert_eq!(c.len(), 1);
        // A relist drops what disappeared meanwhile.
        c.apply(watcher::Event::Init);
        c.apply(watcher::Event::InitApply(node(
            "c",
            2,
            "2024-05-01T10:01:00Z",
            json!({}),
        )));
        c.apply(watcher::Event::InitDone);
        assert_eq!(c.all().iter().map(|n| n.name()).collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn a_warning_without_time_is_resolved_per_reconcile() {
        let c = NodeCache::new(GpuResourceNames::default());
        c.apply(watcher::Event::Apply(node(
            "s",
            4,
            "2024-05-01T10:00:00Z",
            json!({ gpu_autoscaler_api::keys::ANNOTATION_SPOT_INTERRUPTION_WARNING: "true" }),
        )));
        let n = &c.all()[0];
        let now = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time");
        let v = n.view_at(now);
        assert_eq!(
            v.interruption.map(|i| i.termination_time),
            Some(now + chrono::Duration::seconds(convert::DEFAULT_NOTICE_SECONDS))
        );
    }
}
