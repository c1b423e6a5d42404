//! A compact pod cache: the watch stream converted to engine views as it arrives.
//!
//! A Kubernetes `Pod` struct costs kilobytes in memory even with most fields empty; at 50,000
//! pods a reflector of full objects alone would blow the controller's memory budget. The
//! engine needs only [`PodView`] plus the deletion time, so that is all we keep.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use gpu_autoscaler_api::GpuResourceNames;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use tokio::sync::watch;

use super::convert;
use crate::engine::PodView;

/// One cached pod.
#[derive(Debug, Clone)]
pub struct CachedPod {
    pub view: PodView,
    /// `metadata.deletionTimestamp`: when the pod's grace period ends.
    pub deletion: Option<DateTime<Utc>>,
}

type Key = (String, String);

#[derive(Default)]
struct Inner {
    pods: HashMap<Key, Arc<CachedPod>>,
    /// Objects of a (re)list in progress; swapped in at `InitDone`.
    relist: Option<HashMap<Key, Arc<CachedPod>>>,
}

/// Shared, cheaply clonable pod cache.
#[derive(Clone)]
pub struct PodCache {
    inner: Arc<RwLock<Inner>>,
    names: GpuResourceNames,
    synced: watch::Sender<bool>,
}

fn key_of(pod: &Pod) -> Option<Key> {
    Some((
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone()?,
    ))
}

impl PodCache {
    pub fn new(names: GpuResourceNames) -> Self {
        Self {
            inner: Arc::default(),
            names,
            synced: watch::channel(false).0,
        }
    }

    fn convert(&self, pod: &Pod) -> Option<Arc<CachedPod>> {
        Some(Arc::new(CachedPod {
            view: convert::pod_view(pod, &self.names)?,
            deletion: pod
                .metadata
                .deletion_timestamp
                .as_ref()
                .and_then(convert::to_chrono),
        }))
    }

    /// Applies one watch event; returns whether it matters to the engine (a GPU pod changed,
    /// a pod is being deleted or gone, a list completed).
    pub fn apply(&self, event: watcher::Event<Pod>) -> bool {
        let Ok(mut inner) = self.inner.write() else {
            return false;
        };
        match event {
            watcher::Event::Init => {
                inner.relist = Some(HashMap::new());
                false
            }
            watcher::Event::InitApply(p) => {
                if let (Some(k), Some(v)) = (key_of(&p), self.convert(&p)) {
                    inner.relist.get_or_insert_with(HashMap::new).insert(k, v);
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = inner.relist.take() {
                    inner.pods = fresh;
                }
                self.synced.send_replace(true);
                true
            }
            watcher::Event::Apply(p) => {
                let (Some(k), Some(v)) = (key_of(&p), self.convert(&p)) else {
                    return false;
                };
                let relevant = v.view.gpus > 0 || v.deletion.is_some();
                inner.pods.insert(k, v);
                relevant
            }
            watcher::Event::Delete(p) => {
                if let Some(k) = key_of(&p) {
                    inner.pods.remove(&k);
                }
                true
            }
        }
    }

    /// Every cached pod.
    pub fn all(&self) -> Vec<Arc<CachedPod>> {
        self.inner
            .read()
            .map(|i| i.pods.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<CachedPod>> {
        let inner = self.inner.read().ok()?;
        inner
            .pods
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.inner.read().map(|i| i.pods.len()).unwrap_or(0)
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

    fn pod(name: &str, gpus: u32, deleting: bool) -> Pod {
        let mut v = json!({
            "metadata": { "name": name, "namespace": "ns", "uid": format!("uid-{name}") },
            "spec": { "containers": [{ "name": "c", "resources": { "limits": { "nvidia.com/gpu": gpus.to_string() } } }] },
        });
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2024-05-01T10:00:00Z");
        }
        serde_json::from_value(v).expect("valid pod")
    }

    #[test]
    fn relists_swap_and_events_report_relevance() {
        let c = PodCache::new(GpuResourceNames::default());
        assert!(!c.apply(watcher::Event::Init));
        assert!(!c.apply(watcher::Event::InitApply(pod("a", 1, false))));
        assert!(c.is_empty(), "a list in progress is not visible");
        assert!(c.apply(watcher::Event::InitDone));
        assert_eq!(c.len(), 1);
        assert!(
            !c.apply(watcher::Event::Apply(pod("cpu", 0, false))),
            "CPU pods don't trigger"
        );
        assert!(
            c.apply(watcher::Event::Apply(pod("cpu", 0, true))),
            "deletions do"
        );
        assert!(c.get("ns", "cpu").is_some_and(|p| p.deletion.is_some()));
        assert!(c.apply(watcher::Event::Delete(pod("a", 1, false))));
        assert!(c.get("ns", "a").is_none());
        // A relist drops what disappeared meanwhile.
        c.apply(watcher::Event::Init);
        c.apply(watcher::Event::InitApply(pod("b", 2, false)));
        c.apply(watcher::Event::InitDone);
        assert_eq!(c.len(), 1);
        assert_eq!(c.get("ns", "b").map(|p| p.view.gpus), Some(2));
    }
}
