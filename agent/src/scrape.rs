//! The scaler side: read the agents' `GET /v1/utilization` concurrently.
//!
//! A node whose agent is down, slow, answers garbage or has no GPU is *unknown* (`None`),
//! never 0: an engine that read a dead agent as an idle node would scale it away.
//!
//! ```no_run
//! # async fn demo() {
//! use std::collections::BTreeMap;
//! use std::time::Duration;
//! use gpu_autoscaler_agent::scrape::UtilizationScraper;
//! let scraper = UtilizationScraper::new(Duration::from_secs(2));
//! let endpoints = BTreeMap::from([("gpu-node-1".to_string(), "http://10.0.0.7:9400".to_string())]);
//! let utilization: BTreeMap<String, Option<f64>> = scraper.scrape(&endpoints).await;
//! # }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;

use crate::gpu::{Status, UtilizationReport};
use crate::http::{HttpClient, HttpError};
use crate::server::UTILIZATION_PATH;

/// The agent's default port (`--listen 0.0.0.0:9400`).
pub const DEFAULT_AGENT_PORT: u16 = 9400;

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{url}: status {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: undecodable report: {reason}")]
    Decode { url: String, reason: String },
    #[error("{url}: report is for node {reported:?}")]
    WrongNode { url: String, reported: String },
}

/// Scrapes agents; cheap to clone (shares connections).
#[derive(Debug, Clone)]
pub struct UtilizationScraper {
    http: HttpClient,
    timeout: Duration,
    concurrency: usize,
}

impl UtilizationScraper {
    /// `timeout` bounds each agent's whole exchange (connect, answer, body).
    pub fn new(timeout: Duration) -> Self {
        UtilizationScraper {
            http: HttpClient::new(),
            timeout,
            concurrency: 64,
        }
    }

    /// At most this many agents are asked at once (default 64).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Node → window-average utilization (0..1), `None` where unknown. Every node in
    /// `endpoints` (node name → agent base URL or full report URL) appears in the answer.
    pub async fn scrape(
        &self,
        endpoints: &BTreeMap<String, String>,
    ) -> BTreeMap<String, Option<f64>> {
        self.scrape_reports(endpoints)
            .await
            .into_iter()
            .map(|(node, report)| {
                let value = match report {
                    Ok(r) => usable_average(&r),
                    Err(e) => {
                        tracing::debug!(node, error = %e, "agent scrape failed");
                        None
                    }
                };
                (node, value)
            })
            .collect()
    }

    /// The full reports, with the reason where one could not be had.
    pub async fn scrape_reports(
        &self,
        endpoints: &BTreeMap<String, String>,
    ) -> BTreeMap<String, Result<UtilizationReport, ScrapeError>> {
        futures::stream::iter(endpoints.iter())
            .map(|(node, base)| async move { (node.clone(), self.fetch(node, base).await) })
            .buffer_unordered(self.concurrency)
            .collect()
            .await
    }

    async fn fetch(&self, node: &str, base: &str) -> Result<UtilizationReport, ScrapeError> {
        let url = utilization_url(base);
        let response = self
            .http
            .get(&url, &[("Accept", "application/json")], self.timeout)
            .await?;
        if !response.status.is_success() {
            return Err(ScrapeError::Status {
                url,
                status: response.status.as_u16(),
            });
        }
        let report: UtilizationReport =
            serde_json::from_slice(&response.body).map_err(|e| ScrapeError::Decode {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        // An endpoint map gone stale (pod IP reused by another node's agent) must not
        // attribute one node's load to another.
        if report.node != node {
            return Err(ScrapeError::WrongNode {
                url,
                reported: report.node,
            });
        }
        Ok(report)
    }
}

/// The average a scaler may use: from a healthy report, finite and in 0..1. Pure.
pub fn usable_average(report: &UtilizationReport) -> Option<f64> {
    if report.status != Status::Ok {
        return None;
    }
    report
        .average
        .filter(|v| v.is_finite() && (0.0..=1.0).contains(v))
}

/// `http://host:port` → `http://host:port/v1/utilization`; a URL with a path is kept.
pub fn utilization_url(base: &str) -> String {
    let trimmed = base.trim_end_matches('/');
    let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
    if after_scheme.contains('/') {
        trimmed.to_string()
    } else {
        format!("{trimmed}{UTILIZATION_PATH}")
    }
}

/// Agent endpoints of nodes from their `InternalIP` (the agent DaemonSet runs with
/// hostNetwork on `port`). Nodes without an InternalIP are left out, so they come out unknown.
pub fn endpoints_from_nodes(nodes: &[Node], port: u16) -> BTreeMap<String, String> {
    nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let ip = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")?
                .address
                .clone();
            let host = if ip.contains(':') {
                format!("[{ip}]")
            } else {
                ip
            };
            Some((name, format!("http://{host}:{port}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            utilization_url("http://10.0.0.1:9400/"),
            "http://10.0.0.1:9400/v1/utilization"
        );
        assert_eq!(
            utilization_url("http://127.0.0.1:1/custom/path"),
            "http://127.0.0.1:1/custom/path"
        );
    }

    #[test]
    fn endpoints_use_internal_ip() {
        let nodes: Vec<Node> = serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "a"}, "status": {"addresses": [
                {"type": "Hostname", "address": "a"}, {"type": "InternalIP", "address": "10.1.2.3"}]}},
            {"metadata": {"name": "b"}, "status": {"addresses": [{"type": "InternalIP", "address": "fd00::1"}]}},
            {"metadata": {"name": "c"}}
        ]))
        .expect("nodes");
        let eps = endpoints_from_nodes(&nodes, 9400);
        assert_eq!(eps["a"], "http://10.1.2.3:9400");
        assert_eq!(eps["b"], "http://[fd00::1]:9400");
        assert!(!eps.contains_key("c"));
    }
}
