//! kube-scheduler configuration (`kubescheduler.config.k8s.io/v1beta1`, the version 1.20 reads).

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::{DEFAULT_GPU_RESOURCE, Error, Result};

const API_VERSION: &str = "kubescheduler.config.k8s.io/v1beta1";

/// The configuration kube-scheduler starts with.
///
/// Either built here (default profile plus any extenders) or given as YAML by the test. In both
/// cases the control plane fills in `clientConnection.kubeconfig` (only it knows the path) and
/// turns leader election off unless the YAML says otherwise.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Built { extenders: Vec<ExtenderConfig> },
    Yaml(String),
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            source: Source::Built {
                extenders: Vec::new(),
            },
        }
    }
}

impl SchedulerConfig {
    /// The default scheduler profile, no extenders.
    pub fn new() -> Self {
        Self::default()
    }

    /// A full `KubeSchedulerConfiguration` document written by the test.
    pub fn from_yaml(yaml: impl Into<String>) -> Self {
        SchedulerConfig {
            source: Source::Yaml(yaml.into()),
        }
    }

    /// Adds an extender (only for configurations built here; YAML ones are taken as given).
    pub fn extender(mut self, extender: ExtenderConfig) -> Self {
        match &mut self.source {
            Source::Built { extenders } => extenders.push(extender),
            Source::Yaml(_) => {
                tracing::warn!("SchedulerConfig::extender ignored on a YAML configuration")
            }
        }
        self
    }

    /// The YAML document kube-scheduler will read, pointing at `kubeconfig` and serving
    /// healthz and metrics on `127.0.0.1:<healthz_port>` (unless the YAML sets them).
    pub fn render(&self, kubeconfig: &Path, healthz_port: u16) -> Result<String> {
        let mut doc = match &self.source {
            Source::Built { extenders } => {
                let mut doc = json!({
                    "apiVersion": API_VERSION,
                    "kind": "KubeSchedulerConfiguration",
                });
                if !extenders.is_empty() {
                    doc["extenders"] =
                        Value::Array(extenders.iter().map(ExtenderConfig::to_json).collect());
                }
                doc
            }
            Source::Yaml(text) => serde_yaml::from_str::<Value>(text)?,
        };
        let Some(map) = doc.as_object_mut() else {
            return Err(Error::SchedulerConfig(
                "the document is not a YAML mapping".to_string(),
            ));
        };
        match map.get("apiVersion").and_then(Value::as_str) {
            Some(API_VERSION) => {}
            other => {
                return Err(Error::SchedulerConfig(format!(
                    "apiVersion must be {API_VERSION} for kube-scheduler 1.20, got {other:?}"
                )));
            }
        }
        let connection = map.entry("clientConnection").or_insert_with(|| json!({}));
        let Some(connection) = connection.as_object_mut() else {
            return Err(Error::SchedulerConfig(
                "clientConnection is not a mapping".to_string(),
            ));
        };
        connection.insert(
            "kubeconfig".to_string(),
            Value::String(kubeconfig.display().to_string()),
        );
        // With a config file, kube-scheduler 1.20 takes its HTTP healthz/metrics address from
        // the file, ignores --port=0, rejects port 0 and defaults to 0.0.0.0:10251, which
        // parallel tests would fight over. So both go to one picked loopback port.
        let healthz = Value::String(format!("127.0.0.1:{healthz_port}"));
        for key in ["healthzBindAddress", "metricsBindAddress"] {
            map.entry(key).or_insert_with(|| healthz.clone());
        }
        // One scheduler per cluster, and leader election would only add a lease round trip.
        let election = map.entry("leaderElection").or_insert_with(|| json!({}));
        if let Some(election) = election.as_object_mut() {
            election.entry("leaderElect").or_insert(Value::Bool(false));
        }
        Ok(serde_yaml::to_string(&doc)?)
    }
}

impl From<&str> for SchedulerConfig {
    fn from(yaml: &str) -> Self {
        SchedulerConfig::from_yaml(yaml)
    }
}

impl From<String> for SchedulerConfig {
    fn from(yaml: String) -> Self {
        SchedulerConfig::from_yaml(yaml)
    }
}

impl From<ExtenderConfig> for SchedulerConfig {
    fn from(extender: ExtenderConfig) -> Self {
        SchedulerConfig::new().extender(extender)
    }
}

/// One entry of the scheduler's `extenders:` list, defaulting to what our extender serves:
/// `filter` and `prioritize` verbs, weight 1, only consulted for pods that request
/// `nvidia.com/gpu` (which the scheduler still accounts itself), ignorable, 5 s timeout.
#[derive(Debug, Clone)]
pub struct ExtenderConfig {
    pub url_prefix: String,
    pub filter_verb: Option<String>,
    pub prioritize_verb: Option<String>,
    pub preempt_verb: Option<String>,
    pub bind_verb: Option<String>,
    pub weight: i64,
    pub node_cache_capable: bool,
    /// `(resource name, ignoredByScheduler)`.
    pub managed_resources: Vec<(String, bool)>,
    pub ignorable: bool,
    pub http_timeout: Duration,
    pub tls: Option<ExtenderTls>,
}

/// TLS settings for an HTTPS extender (`enableHTTPS: true`).
#[derive(Debug, Clone, Default)]
pub struct ExtenderTls {
    /// PEM CA bundle the scheduler trusts for the extender.
    pub ca_pem: Option<String>,
    pub server_name: Option<String>,
    pub insecure: bool,
}

impl ExtenderConfig {
    /// An extender at `url_prefix` (e.g. `http://127.0.0.1:8888`) with the defaults above.
    pub fn new(url_prefix: impl Into<String>) -> Self {
        ExtenderConfig {
            url_prefix: url_prefix.into(),
            filter_verb: Some("filter".to_string()),
            prioritize_verb: Some("prioritize".to_string()),
            preempt_verb: None,
            bind_verb: None,
            weight: 1,
            node_cache_capable: false,
            managed_resources: vec![(DEFAULT_GPU_RESOURCE.to_string(), false)],
            ignorable: true,
            http_timeout: Duration::from_secs(5),
            tls: None,
        }
    }

    pub fn filter_verb(mut self, verb: Option<&str>) -> Self {
        self.filter_verb = verb.map(str::to_string);
        self
    }

    pub fn prioritize_verb(mut self, verb: Option<&str>) -> Self {
        self.prioritize_verb = verb.map(str::to_string);
        self
    }

    pub fn weight(mut self, weight: i64) -> Self {
        self.weight = weight;
        self
    }

    pub fn node_cache_capable(mut self, yes: bool) -> Self {
        self.node_cache_capable = yes;
        self
    }

    /// Replaces the managed resources with `(name, ignoredByScheduler)` pairs; an empty list
    /// makes the scheduler call the extender for every pod.
    pub fn managed_resources(mut self, resources: Vec<(String, bool)>) -> Self {
        self.managed_resources = resources;
        self
    }

    pub fn ignorable(mut self, yes: bool) -> Self {
        self.ignorable = yes;
        self
    }

    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.http_timeout = timeout;
        self
    }

    pub fn tls(mut self, tls: ExtenderTls) -> Self {
        self.tls = Some(tls);
        self
    }

    fn to_json(&self) -> Value {
        let mut e = json!({
            "urlPrefix": self.url_prefix,
            "weight": self.weight,
            "nodeCacheCapable": self.node_cache_capable,
            "ignorable": self.ignorable,
            "httpTimeout": format!("{}ms", self.http_timeout.as_millis()),
        });
        for (key, verb) in [
            ("filterVerb", &self.filter_verb),
            ("prioritizeVerb", &self.prioritize_verb),
            ("preemptVerb", &self.preempt_verb),
            ("bindVerb", &self.bind_verb),
        ] {
            if let Some(verb) = verb {
                e[key] = Value::String(verb.clone());
            }
        }
        if !self.managed_resources.is_empty() {
            e["managedResources"] = self
                .managed_resources
                .iter()
                .map(|(name, ignored)| json!({"name": name, "ignoredByScheduler": ignored}))
                .collect();
        }
        if let Some(tls) = &self.tls {
            e["enableHTTPS"] = Value::Bool(true);
            let mut t = json!({ "insecure": tls.insecure });
            if let Some(ca) = &tls.ca_pem {
                // []byte fields are base64 in JSON/YAML.
                t["caData"] = Value::String(base64::engine::general_purpose::STANDARD.encode(ca));
            }
            if let Some(name) = &tls.server_name {
                t["serverName"] = Value::String(name.clone());
            }
            e["tlsConfig"] = t;
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_config_has_extender_and_kubeconfig() {
        let yaml = SchedulerConfig::new()
            .extender(ExtenderConfig::new("http://127.0.0.1:9999").weight(3))
            .render(Path::new("/tmp/kc"), 10999)
            .expect("renders");
        let doc: Value = serde_yaml::from_str(&yaml).expect("valid yaml");
        assert_eq!(doc["clientConnection"]["kubeconfig"], "/tmp/kc");
        assert_eq!(doc["leaderElection"]["leaderElect"], false);
        assert_eq!(doc["healthzBindAddress"], "127.0.0.1:10999");
        assert_eq!(doc["metricsBindAddress"], "127.0.0.1:10999");
        let ext = &doc["extenders"][0];
        assert_eq!(ext["urlPrefix"], "http://127.0.0.1:9999");
        assert_eq!(ext["filterVerb"], "filter");
        assert_eq!(ext["prioritizeVerb"], "prioritize");
        assert_eq!(ext["weight"], 3);
        assert_eq!(ext["ignorable"], true);
        assert_eq!(ext["httpTimeout"], "5000ms");
        assert_eq!(ext["managedResources"][0]["name"], "nvidia.com/gpu");
        assert_eq!(ext["managedResources"][0]["ignoredByScheduler"], false);
    }

    #[test]
    fn yaml_config_keeps_explicit_leader_election_and_sets_kubeconfig() {
        let yaml = "apiVersion: kubescheduler.config.k8s.io/v1beta1\nkind: KubeSchedulerConfiguration\nleaderElection:\n  leaderElect: true\nclientConnection:\n  kubeconfig: /elsewhere\n";
        let out = SchedulerConfig::from(yaml)
            .render(Path::new("/tmp/kc"), 10999)
            .expect("renders");
        let doc: Value = serde_yaml::from_str(&out).expect("valid yaml");
        assert_eq!(doc["clientConnection"]["kubeconfig"], "/tmp/kc");
        assert_eq!(doc["leaderElection"]["leaderElect"], true);
    }

    #[test]
    fn wrong_api_version_is_rejected() {
        let err = SchedulerConfig::from(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n",
        )
        .render(Path::new("/tmp/kc"), 10999)
        .expect_err("v1 is not understood by 1.20");
        assert!(err.to_string().contains("v1beta1"), "{err}");
    }

    #[test]
    fn https_extender_carries_ca_data() {
        let ext = ExtenderConfig::new("https://127.0.0.1:1").tls(ExtenderTls {
            ca_pem: Some("PEM".to_string()),
            server_name: Some("ext.local".to_string()),
            insecure: false,
        });
        let v = ext.to_json();
        assert_eq!(v["enableHTTPS"], true);
        assert_eq!(v["tlsConfig"]["caData"], "UEVN");
        assert_eq!(v["tlsConfig"]["serverName"], "ext.local");
    }
}
