//! The in-memory cluster index: compact node views and GPU usage, fed by watches.
//!
//! Node watch (cache mode only): one [`NodeView`] per node, replaced on every event.
//! Pod watch (both modes): bound, non-terminated GPU pods, reduced to (node, GPUs, owner), from
//! which each node's GPUs in use and each controller's replica placement are kept current.
//!
//! Requests read under one `RwLock` read guard and borrow the views in place; a 5,000-node
//! decision copies no node. Writers hold the lock only to swap a few small entries (or, after a
//! relist, to swap whole maps built outside the lock).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::StreamExt;
use gpu_autoscaler_api::{GpuResourceNames, PodRequests};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::decide::ReplicaSpread;
use crate::node_table::NodeTable;
use crate::view::{NodeView, OwnerKey};

/// A bound GPU pod, reduced to what scheduling needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: Arc<str>,
    pub gpus: u32,
    pub owner: Option<OwnerKey>,
}

/// Everything behind the lock.
#[derive(Debug, Default)]
pub struct IndexState {
    pub nodes: NodeTable,
    /// Pod key (uid, else namespace/name) -> placement.
    pods: HashMap<String, Placement>,
    /// GPUs in use per node name, kept even for nodes not (yet) in `nodes`.
    usage: HashMap<Arc<str>, u32>,
    /// Controller -> node -> replicas there.
    owners: HashMap<OwnerKey, HashMap<Arc<str>, u32>>,
}

impl IndexState {
    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.get(name)
    }

    /// The views of `names`, in order (`None` for unknown names); see [`NodeTable::get_all`].
    pub fn nodes_named<'s, S: AsRef<str>>(&'s self, names: &[S]) -> Vec<Option<&'s NodeView>> {
        let mut out = Vec::with_capacity(names.len());
        self.nodes.get_all(names, &mut out);
        out
    }

    pub fn gpus_in_use(&self, node: &str) -> u32 {
        self.usage.get(node).copied().unwrap_or(0)
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Where an owner's replicas run, resolved through `lookup` (the index itself in cache
    /// mode; the request's nodes in full mode). Nodes `lookup` does not know are skipped.
    pub fn spread_of<'n>(
        &self,
        owner: &OwnerKey,
        lookup: impl Fn(&str) -> Option<&'n NodeView>,
    ) -> Option<ReplicaSpread> {
        let nodes = self.owners.get(owner)?;
        let spread = ReplicaSpread::from_placements(
            nodes
                .iter()
                .filter_map(|(name, n)| lookup(name).map(|v| (v, *n))),
        );
        (spread.total > 0).then_some(spread)
    }

    fn upsert_node(&mut self, mut view: NodeView) {
        view.gpus_in_use = self.gpus_in_use(&view.name);
        self.nodes.insert(view);
    }

    fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    fn upsert_pod(&mut self, key: String, placement: Option<Placement>) {
        if let Some(old) = self.pods.remove(&key) {
            self.account(&old, false);
        }
        if let Some(new) = placement {
            self.account(&new, true);
            self.pods.insert(key, new);
        }
    }

    fn account(&mut self, p: &Placement, add: bool) {
        let used = self.usage.entry(p.node.clone()).or_insert(0);
        *used = if add {
            used.saturating_add(p.gpus)
        } else {
            used.saturating_sub(p.gpus)
        };
        let used = *used;
        if used == 0 {
            self.usage.remove(&p.node);
        }
        if let Some(view) = self.nodes.get_mut(&p.node) {
            view.gpus_in_use = used;
        }
        if let Some(owner) = &p.owner {
            let per_node = self.owners.entry(owner.clone()).or_default();
            let n = per_node.entry(p.node.clone()).or_insert(0);
            *n = if add {
                n.saturating_add(1)
            } else {
                n.saturating_sub(1)
            };
            if *n == 0 {
                per_node.remove(&p.node);
            }
            if per_node.is_empty() {
                self.owners.remove(owner);
            }
        }
    }

    fn replace_nodes(&mut self, views: Vec<NodeView>) {
        self.nodes = NodeTable::with_capacity(views.len());
        for v in views {
            self.upsert_node(v);
        }
    }

    fn replace_pods(&mut self, pods: Vec<(String, Placement)>) {
        self.pods.clear();
        self.usage.clear();
        self.owners.clear();
        for v in self.nodes.values_mut() {
            v.gpus_in_use = 0;
        }
        for (key, p) in pods {
            self.upsert_pod(key, Some(p));
        }
    }
}

/// The shared index plus its sync flags.
#[derive(Debug)]
pub struct ClusterIndex {
    state: RwLock<IndexState>,
    gpu_names: GpuResourceNames,
    nodes_synced: AtomicBool,
    pods_synced: AtomicBool,
    /// Whether this process watches Nodes (cache mode). Without it, requests must carry Nodes.
    node_cache: bool,
}

impl ClusterIndex {
    pub fn new(gpu_names: GpuResourceNames, node_cache: bool) -> Self {
        ClusterIndex {
            state: RwLock::new(IndexState::default()),
            gpu_names,
            nodes_synced: AtomicBool::new(false),
            pods_synced: AtomicBool::new(false),
            node_cache,
        }
    }

    pub fn node_cache(&self) -> bool {
        self.node_cache
    }

    /// Ready once every watch this process runs has listed once.
    pub fn is_synced(&self) -> bool {
        self.pods_synced.load(Ordering::Acquire)
            && (!self.node_cache || self.nodes_synced.load(Ordering::Acquire))
    }

    pub fn nodes_synced(&self) -> bool {
        self.node_cache && self.nodes_synced.load(Ordering::Acquire)
    }

    /// Marks both watches as synced (for callers that feed the index themselves).
    pub fn mark_synced(&self) {
        self.nodes_synced.store(true, Ordering::Release);
        self.pods_synced.store(true, Ordering::Release);
    }

    /// A read guard; a poisoned lock (a writer panicked) still yields the data, which every
    /// writer leaves consistent between statements.
    pub fn read(&self) -> RwLockReadGuard<'_, IndexState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, IndexState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn apply_node(&self, node: &Node) {
        if let Some(view) = NodeView::from_node(node, &self.gpu_names) {
            self.write().upsert_node(view);
        }
    }

    pub fn delete_node(&self, name: &str) {
        self.write().remove_node(name);
    }

    pub fn replace_nodes<'a>(&self, nodes: impl IntoIterator<Item = &'a Node>) {
        let views: Vec<NodeView> = nodes
            .into_iter()
            .filter_map(|n| NodeView::from_node(n, &self.gpu_names))
            .collect();
        self.write().replace_nodes(views);
        self.nodes_synced.store(true, Ordering::Release);
    }

    /// Installs ready-made views as the whole node set, keeping their `gpus_in_use` as given,
    /// and marks the index synced. For benchmarks, load generation and offline tools that have
    /// no API server; the watch path never uses it.
    pub fn load_views(&self, views: impl IntoIterator<Item = NodeView>) {
        {
            let mut st = self.write();
            st.nodes = views.into_iter().collect();
        }
        self.mark_synced();
    }

    pub fn apply_pod(&self, pod: &Pod) {
        let placement = placement_of(pod, &self.gpu_names);
        self.write().upsert_pod(pod_key(pod), placement);
    }

    pub fn delete_pod(&self, pod: &Pod) {
        self.write().upsert_pod(pod_key(pod), None);
    }

    pub fn replace_pods<'a>(&self, pods: impl IntoIterator<Item = &'a Pod>) {
        let placements: Vec<(String, Placement)> = pods
            .into_iter()
            .filter_map(|p| placement_of(p, &self.gpu_names).map(|pl| (pod_key(p), pl)))
            .collect();
        self.write().replace_pods(placements);
        self.pods_synced.store(true, Ordering::Release);
    }

    /// Watches Pods (always) and Nodes (cache mode) until the streams end, which they do not
    /// in normal operation: the watcher retries with backoff on its own.
    pub async fn run_watches(self: Arc<Self>, client: Client) {
        let pods = {
            let index = self.clone();
            let api: Api<Pod> = Api::all(client.clone());
            // Only bound pods that can still hold GPUs; a pod leaving this set (finishing)
            // arrives as a deletion.
            let cfg = watcher::Config::default()
                .fields("spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed");
            async move {
                let mut buffer: Vec<Pod> = Vec::new();
                let stream = watcher::watcher(api, cfg).default_backoff();
                futures::pin_mut!(stream);
                loop {
                    match stream.next().await {
                        Some(Ok(ev)) => match ev {
                            Event::Init => buffer.clear(),
                            Event::InitApply(p) => buffer.push(p),
                            Event::InitDone => {
                                index.replace_pods(buffer.iter());
                                tracing::info!(pods = buffer.len(), "pod index synced");
                                buffer = Vec::new();
                            }
                            Event::Apply(p) => index.apply_pod(&p),
                            Event::Delete(p) => index.delete_pod(&p),
                        },
                        Some(Err(e)) => tracing::warn!(error = %e, "pod watch error; retrying"),
                        None => break,
                    }
                }
            }
        };
        let nodes = {
            let index = self.clone();
            let api: Api<Node> = Api::all(client);
            async move {
                if !index.node_cache {
                    return;
                }
                let mut buffer: Vec<Node> = Vec::new();
                let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
                futures::pin_mut!(stream);
                loop {
                    match stream.next().await {
                        Some(Ok(ev)) => match ev {
                            Event::Init => buffer.clear(),
                            Event::InitApply(n) => buffer.push(n),
                            Event::InitDone => {
                                index.replace_nodes(buffer.iter());
                                tracing::info!(nodes = buffer.len(), "node index synced");
                                buffer = Vec::new();
                            }
                            Event::Apply(n) => index.apply_node(&n),
                            Event::Delete(n) => {
                                if let Some(name) = n.metadata.name.as_deref() {
                                    index.delete_node(name)
                                }
                            }
                        },
                        Some(Err(e)) => tracing::warn!(error = %e, "node watch error; retrying"),
                        None => break,
                    }
                }
            }
        };
        futures::join!(pods, nodes);
    }
}

fn pod_key(pod: &Pod) -> String {
    match pod.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => uid.to_string(),
        _ => format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or(""),
            pod.metadata.name.as_deref().unwrap_or("")
        ),
    }
}

/// A pod's placement if it is bound, not finished and requests GPUs.
fn placement_of(pod: &Pod, gpu_names: &GpuResourceNames) -> Option<Placement> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.as_deref().filter(|n| !n.is_empty())?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return None;
    }
    let gpus = PodRequests::of(spec).gpu_count(gpu_names);
    (gpus > 0).then(|| Placement {
        node: Arc::from(node),
        gpus,
        owner: OwnerKey::of(pod),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, gpus: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"gpu-autoscaler.io/capacity-type": "spot",
                                                   "topology.kubernetes.io/zone": "z1"}},
            "status": {"allocatable": {"nvidia.com/gpu": gpus}}
        }))
        .unwrap()
    }

    fn pod(uid: &str, node: Option<&str>, gpus: &str, phase: &str, owner: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "ns", "uid": uid,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                              "name": "rs", "uid": owner, "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn usage_follows_pod_lifecycle_and_survives_node_arriving_late() {
        let idx = ClusterIndex::new(GpuResourceNames::default(), true);
        assert!(!idx.is_synced());
        idx.replace_pods([&pod("a", Some("n1"), "2", "Running", "o")]);
        idx.replace_nodes([&node("n1", "8")]);
        assert!(idx.is_synced());
        assert_eq!(idx.read().node("n1").unwrap().gpus_in_use, 2);

        idx.apply_pod(&pod("b", Some("n1"), "1", "Pending", "o"));
        assert_eq!(idx.read().node("n1").unwrap().gpus_in_use, 3);
        // Unbound and non-GPU pods hold nothing.
        idx.apply_pod(&pod("c", None, "1", "Pending", "o"));
        idx.apply_pod(&pod("d", Some("n1"), "0", "Running", "o"));
        assert_eq!(idx.read().node("n1").unwrap().gpus_in_use, 3);
        // Finishing releases, deleting releases, re-applying does not double count.
        idx.apply_pod(&pod("a", Some("n1"), "2", "Succeeded", "o"));
        idx.apply_pod(&pod("b", Some("n1"), "1", "Running", "o"));
        assert_eq!(idx.read().node("n1").unwrap().gpus_in_use, 1);
        idx.delete_pod(&pod("b", Some("n1"), "1", "Running", "o"));
        assert_eq!(idx.read().node("n1").unwrap().gpus_in_use, 0);

        // A pod on a node the index has not seen yet is counted once the node arrives.
        idx.apply_pod(&pod("e", Some("n2"), "4", "Running", "o"));
        idx.apply_node(&node("n2", "8"));
        assert_eq!(idx.read().node("n2").unwrap().gpus_in_use, 4);
        idx.apply_node(&node("n2", "8"));
        assert_eq!(
            idx.read().node("n2").unwrap().gpus_in_use,
            4,
            "node update keeps usage"
        );
        idx.delete_node("n2");
        assert!(idx.read().node("n2").is_none());
    }

    #[test]
    fn owner_spread_counts_replicas_by_zone_and_spot_type() {
        let idx = ClusterIndex::new(GpuResourceNames::default(), true);
        idx.replace_nodes([&node("n1", "8"), &node("n2", "8")]);
        idx.replace_pods([
            &pod("a", Some("n1"), "1", "Running", "o"),
            &pod("b", Some("n1"), "1", "Running", "o"),
            &pod("c", Some("n2"), "1", "Running", "other"),
        ]);
        let st = idx.read();
        let spread = st
            .spread_of(&OwnerKey(Arc::from("o")), |n| st.node(n))
            .unwrap();
        assert_eq!(spread.total, 2);
        assert_eq!(spread.by_zone.get("z1"), Some(&2));
        assert!(
            st.spread_of(&OwnerKey(Arc::from("none")), |n| st.node(n))
                .is_none()
        );
    }

    #[test]
    fn relist_replaces_stale_entries() {
        let idx = ClusterIndex::new(GpuResourceNames::default(), true);
        idx.replace_nodes([&node("old", "8")]);
        idx.replace_pods([&pod("a", Some("old"), "8", "Running", "o")]);
        idx.replace_nodes([&node("new", "8")]);
        idx.replace_pods([&pod("b", Some("new"), "2", "Running", "o")]);
        let st = idx.read();
        assert!(st.node("old").is_none());
        assert_eq!(st.gpus_in_use("old"), 0);
        assert_eq!(st.node("new").unwrap().gpus_in_use, 2);
        assert_eq!(st.pod_count(), 1);
    }
}
