//! Where per-node GPU utilization comes from.
//!
//! The engine wants one number per node in 0..1, averaged over a window. A node missing from
//! the answer has *unknown* utilization, which the engine never treats as idle. Sources:
//! - [`ConfigMapUtilization`]: a ConfigMap of `node-name: "0.42"` entries (tests, dry runs,
//!   or any exporter that can write a ConfigMap); the optional `window-seconds` key gives the
//!   averaging window.
//! - [`StaticUtilization`]: an in-memory map, for library users and unit tests.
//! - [`NoUtilization`]: always unknown (pending-pod scaling only).
//!
//! The node agent's NVML scraper implements the same trait.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use crate::engine::UtilizationView;

/// Key of the averaging window in a utilization ConfigMap.
pub const WINDOW_KEY: &str = "window-seconds";
const DEFAULT_WINDOW_SECONDS: u32 = 300;

#[derive(Debug, thiserror::Error)]
pub enum UtilizationError {
    #[error("reading utilization: {0}")]
    Kube(#[from] kube::Error),
    #[error("utilization source: {0}")]
    Other(String),
}

/// A source of per-node GPU utilization.
pub trait UtilizationSource: Send + Sync {
    /// Utilization of the given nodes (others may be included and are ignored). Nodes without
    /// data are left out, never reported as 0.
    fn fetch<'a>(
        &'a self,
        nodes: &'a [String],
    ) -> BoxFuture<'a, Result<UtilizationView, UtilizationError>>;
}

/// Parses a utilization value: a fraction in 0..1, or a percentage with a `%` suffix.
/// Anything else (empty, NaN, out of range) is unknown.
pub fn parse_utilization(s: &str) -> Option<f64> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().ok()? / 100.0,
        None => s.parse::<f64>().ok()?,
    };
    (v.is_finite() && (0.0..=1.0).contains(&v)).then_some(v)
}

/// Builds a view from `key -> value` pairs, keeping only the asked-for nodes.
pub fn view_from_entries(entries: &BTreeMap<String, String>, nodes: &[String]) -> UtilizationView {
    let window_seconds = entries
        .get(WINDOW_KEY)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_WINDOW_SECONDS);
    let nodes = nodes
        .iter()
        .filter_map(|n| Some((n.clone(), parse_utilization(entries.get(n)?)?)))
        .collect();
    UtilizationView {
        window_seconds,
        nodes,
    }
}

/// Reads utilization from a ConfigMap (`<node>: <0..1 or N%>`). A missing ConfigMap means
/// every node is unknown.
pub struct ConfigMapUtilization {
    api: Api<ConfigMap>,
    name: String,
}

impl ConfigMapUtilization {
    pub fn new(client: kube::Client, namespace: &str, name: impl Into<String>) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
        }
    }
}

impl UtilizationSource for ConfigMapUtilization {
    fn fetch<'a>(
        &'a self,
        nodes: &'a [String],
    ) -> BoxFuture<'a, Result<UtilizationView, UtilizationError>> {
        async move {
            let data = self
                .api
                .get_opt(&self.name)
                .await?
                .and_then(|cm| cm.data)
                .unwrap_or_default();
            Ok(view_from_entries(&data, nodes))
        }
        .boxed()
    }
}

/// In-memory utilization, settable at run time.
#[derive(Debug, Default, Clone)]
pub struct StaticUtilization {
    values: Arc<RwLock<BTreeMap<String, f64>>>,
}

impl StaticUtilization {
    pub fn set(&self, node: impl Into<String>, value: Option<f64>) {
        if let Ok(mut v) = self.values.write() {
            match value {
                Some(x) => v.insert(node.into(), x),
                None => v.remove(&node.into()),
            };
        }
    }
}

impl UtilizationSource for StaticUtilization {
    fn fetch<'a>(
        &'a self,
        nodes: &'a [String],
    ) -> BoxFuture<'a, Result<UtilizationView, UtilizationError>> {
        let values = self.values.read().map(|v| v.clone()).unwrap_or_default();
        let view = UtilizationView {
            window_seconds: DEFAULT_WINDOW_SECONDS,
            nodes: nodes
                .iter()
                .filter_map(|n| Some((n.clone(), *values.get(n)?)))
                .filter(|(_, v)| v.is_finite() && (0.0..=1.0).contains(v))
                .collect(),
        };
        futures::future::ready(Ok(view)).boxed()
    }
}

/// Utilization is never known.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoUtilization;

impl UtilizationSource for NoUtilization {
    fn fetch<'a>(
        &'a self,
        _nodes: &'a [String],
    ) -> BoxFuture<'a, Result<UtilizationView, UtilizationError>> {
        futures::future::ready(Ok(UtilizationView {
            window_seconds: DEFAULT_WINDOW_SECONDS,
            nodes: BTreeMap::new(),
        }))
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_missing_is_unknown() {
        assert_eq!(parse_utilization("0.25"), Some(0.25));
        assert_eq!(parse_utilization(" 80% "), Some(0.8));
        assert_eq!(parse_utilization("1.5"), None);
        assert_eq!(parse_utilization("NaN"), None);
        assert_eq!(parse_utilization(""), None);
        let entries = BTreeMap::from([
            ("a".to_string(), "0.1".to_string()),
            ("b".to_string(), "junk".to_string()),
            (WINDOW_KEY.to_string(), "60".to_string()),
        ]);
        let v = view_from_entries(&entries, &["a".into(), "b".into(), "c".into()]);
        assert_eq!(v.window_seconds, 60);
        assert_eq!(
            v.nodes.len(),
            1,
            "unparseable and absent nodes are unknown, not 0"
        );
        assert_eq!(v.nodes["a"], 0.1);
    }

    #[test]
    fn static_source_reports_only_known_nodes() {
        let s = StaticUtilization::default();
        s.set("a", Some(0.5));
        s.set("b", Some(2.0));
        let v = futures::executor::block_on(s.fetch(&["a".into(), "b".into(), "c".into()]))
            .expect("static");
        assert_eq!(v.nodes.len(), 1);
        s.set("a", None);
        let v = futures::executor::block_on(s.fetch(&["a".into()])).expect("static");
        assert!(v.nodes.is_empty());
        let v = futures::executor::block_on(NoUtilization.fetch(&["a".into()])).expect("none");
        assert!(v.nodes.is_empty());
    }
}
