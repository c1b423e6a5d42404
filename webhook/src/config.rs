//! The webhook's configuration: a YAML file (usually a mounted ConfigMap) that flags may override.
//!
//! Every key is optional; an empty file means the documented defaults (docs/webhook.md).
//! Unknown keys are rejected so a typo in the ConfigMap fails the rollout instead of silently
//! falling back to a default.

use std::collections::BTreeMap;

use gpu_autoscaler_api::{CapacityType, EvictionPriority, GpuResourceNames, TierPreference};
use serde::Deserialize;

/// A problem in the configuration file or flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("webhook config: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("webhook config: {key}: {message}")]
    Invalid { key: String, message: String },
}

/// Priority thresholds: how a pod's numeric priority (from its PriorityClass) maps to an
/// eviction priority when neither the annotation nor the workload-type label decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriorityThresholds {
    /// A priority at or above this value is `high`.
    pub high_at_or_above: i32,
    /// A priority below this value is `low`. Everything in between is `medium`.
    pub low_below: i32,
}

impl Default for PriorityThresholds {
    /// `high` from 1,000,000 up (which includes the system-* classes at 2,000,000,000+),
    /// `low` for negative priorities (the convention for preemptible and overprovisioning
    /// classes); 0 (no PriorityClass) and ordinary user classes are `medium`.
    fn default() -> Self {
        Self {
            high_at_or_above: 1_000_000,
            low_below: 0,
        }
    }
}

impl PriorityThresholds {
    pub fn classify(&self, priority: i32) -> EvictionPriority {
        if priority >= self.high_at_or_above {
            EvictionPriority::High
        } else if priority < self.low_below {
            EvictionPriority::Low
        } else {
            EvictionPriority::Medium
        }
    }
}

/// The validated, ready-to-use configuration. Build it with [`Config::from_yaml`] or
/// [`Config::default`], then apply flag overrides with the `with_*` methods.
#[derive(Debug, Clone)]
pub struct Config {
    /// The eviction priority of a GPU pod that neither annotation, label nor priority decides.
    pub default_eviction_priority: EvictionPriority,
    /// Eviction priority -> tier preference written when the user set none.
    pub tier_preferences: BTreeMap<EvictionPriority, TierPreference>,
    pub priority_thresholds: PriorityThresholds,
    /// PriorityClass name -> eviction priority; wins over the numeric thresholds.
    pub priority_classes: BTreeMap<String, EvictionPriority>,
    /// The names counted as GPUs (defaults plus `extraGpuResources`).
    pub gpu_resources: GpuResourceNames,
    /// Namespaces whose pods are never touched.
    pub excluded_namespaces: Vec<String>,
    /// When set, GPU pods that use the default scheduler are sent to this scheduler profile.
    pub scheduler_name: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            default_eviction_priority: EvictionPriority::Medium,
            tier_preferences: default_tier_preferences(),
            priority_thresholds: PriorityThresholds::default(),
            priority_classes: BTreeMap::new(),
            gpu_resources: GpuResourceNames::default(),
            excluded_namespaces: vec!["kube-system".to_string()],
            scheduler_name: None,
        }
    }
}

/// The default mapping from eviction priority to tier preference (see docs/webhook.md):
/// - low (development, batch): spot first; on-demand when no spot is available. Cheap to
///   redo, so they should soak up the discount.
/// - medium (inference, serving): on-demand first, spot as overflow. Replicas absorb a lost
///   node, but a whole serving fleet on spot can be reclaimed at once in one zone.
/// - high (training): reserved, then on-demand, and spot last. Training still runs on spot
///   when nothing else is free, since it gets the longest eviction window to checkpoint.
pub fn default_tier_preferences() -> BTreeMap<EvictionPriority, TierPreference> {
    use CapacityType::*;
    BTreeMap::from([
        (EvictionPriority::Low, TierPreference::new([Spot, OnDemand])),
        (
            EvictionPriority::Medium,
            TierPreference::new([OnDemand, Spot]),
        ),
        (
            EvictionPriority::High,
            TierPreference::new([Reserved, OnDemand, Spot]),
        ),
    ])
}

/// The file format, camelCase like every Kubernetes-adjacent YAML.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConfigFile {
    default_eviction_priority: Option<String>,
    #[serde(default)]
    tier_preferences: BTreeMap<String, String>,
    priority_thresholds: Option<ThresholdsFile>,
    #[serde(default)]
    priority_classes: BTreeMap<String, String>,
    #[serde(default)]
    extra_gpu_resources: Vec<String>,
    excluded_namespaces: Option<Vec<String>>,
    scheduler_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ThresholdsFile {
    high_at_or_above: Option<i32>,
    low_below: Option<i32>,
}

fn invalid(key: impl Into<String>, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.to_string(),
    }
}

impl Config {
    /// Parses the YAML file format. An empty document yields the defaults.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let file: ConfigFile = if text.trim().is_empty() {
            ConfigFile::default()
        } else {
            serde_yaml::from_str::<Option<ConfigFile>>(text)?.unwrap_or_default()
        };
        let mut cfg = Config::default();
        if let Some(p) = file.default_eviction_priority {
            cfg.default_eviction_priority = p.parse().map_err(|_| {
                invalid(
                    "defaultEvictionPriority",
                    format!("{p:?} is not one of low, medium, high"),
                )
            })?;
        }
        for (level, pref) in file.tier_preferences {
            let level: EvictionPriority = level.parse().map_err(|_| {
                invalid(
                    "tierPreferences",
                    format!("key {level:?} is not one of low, medium, high"),
                )
            })?;
            let pref: TierPreference = pref
                .parse()
                .map_err(|e| invalid(format!("tierPreferences.{level}"), e))?;
            cfg.tier_preferences.insert(level, pref);
        }
        if let Some(t) = file.priority_thresholds {
            if let Some(v) = t.high_at_or_above {
                cfg.priority_thresholds.high_at_or_above = v;
            }
            if let Some(v) = t.low_below {
                cfg.priority_thresholds.low_below = v;
            }
        }
        for (class, level) in file.priority_classes {
            let level: EvictionPriority = level.parse().map_err(|_| {
                invalid(
                    format!("priorityClasses.{class}"),
                    format!("{level:?} is not one of low, medium, high"),
                )
            })?;
            cfg.priority_classes.insert(class, level);
        }
        cfg.gpu_resources = GpuResourceNames::default().with_extra(&file.extra_gpu_resources);
        if let Some(ns) = file.excluded_namespaces {
            cfg.excluded_namespaces = ns;
        }
        cfg.scheduler_name = file.scheduler_name.filter(|s| !s.trim().is_empty());
        cfg.validate()?;
        Ok(cfg)
    }

    /// Cross-checks that a file or flags can break.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = self.priority_thresholds;
        if t.low_below > t.high_at_or_above {
            return Err(invalid(
                "priorityThresholds",
                format!(
                    "lowBelow ({}) must not exceed highAtOrAbove ({})",
                    t.low_below, t.high_at_or_above
                ),
            ));
        }
        for level in EvictionPriority::ALL {
            match self.tier_preferences.get(&level) {
                Some(p) if !p.is_empty() => {}
                _ => {
                    return Err(invalid(
                        format!("tierPreferences.{level}"),
                        "must list at least one capacity type",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The tier preference for an eviction priority (validated to exist).
    pub fn tier_preference(&self, level: EvictionPriority) -> TierPreference {
        self.tier_preferences
            .get(&level)
            .cloned()
            .unwrap_or_else(|| {
                default_tier_preferences()
                    .remove(&level)
                    .unwrap_or_else(|| TierPreference::new([CapacityType::OnDemand]))
            })
    }

    pub fn is_excluded_namespace(&self, namespace: &str) -> bool {
        self.excluded_namespaces.iter().any(|n| n == namespace)
    }

    /// Adds GPU resource names (flag `--gpu-resource`, repeatable; `prefix*` allowed).
    pub fn with_extra_gpu_resources<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        extra: I,
    ) -> Self {
        self.gpu_resources = self.gpu_resources.with_extra(extra);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CapacityType::*;

    #[test]
    fn empty_file_is_the_defaults() {
        for text in ["", "   \n", "---\n", "{}"] {
            let c = Config::from_yaml(text).unwrap();
            assert_eq!(
                c.default_eviction_priority,
                EvictionPriority::Medium,
                "{text:?}"
            );
            assert_eq!(c.tier_preferences, default_tier_preferences());
            assert_eq!(c.excluded_namespaces, vec!["kube-system"]);
            assert_eq!(c.scheduler_name, None);
        }
    }

    #[test]
    fn every_key_parses() {
        let c = Config::from_yaml(
            r#"
defaultEvictionPriority: low
tierPreferences:
  medium: spot,on-demand
priorityThresholds:
  highAtOrAbove: 5000
  lowBelow: 10
priorityClasses:
  research-preemptible: low
extraGpuResources: ["example.com/vgpu-*", "intel.com/gpu"]
excludedNamespaces: [kube-system, monitoring]
schedulerName: gpu-scheduler
"#,
        )
        .unwrap();
        assert_eq!(c.default_eviction_priority, EvictionPriority::Low);
        assert_eq!(
            c.tier_preference(EvictionPriority::Medium).as_slice(),
            &[Spot, OnDemand]
        );
        // Levels not named keep their defaults.
        assert_eq!(
            c.tier_preference(EvictionPriority::High).as_slice(),
            &[Reserved, OnDemand, Spot]
        );
        assert_eq!(c.priority_thresholds.classify(5000), EvictionPriority::High);
        assert_eq!(c.priority_thresholds.classify(9), EvictionPriority::Low);
        assert_eq!(c.priority_thresholds.classify(10), EvictionPriority::Medium);
        assert_eq!(
            c.priority_classes["research-preemptible"],
            EvictionPriority::Low
        );
        assert!(c.gpu_resources.is_gpu("example.com/vgpu-1g"));
        assert!(c.gpu_resources.is_gpu("intel.com/gpu"));
        assert!(c.gpu_resources.is_gpu("nvidia.com/gpu"));
        assert!(c.is_excluded_namespace("monitoring"));
        assert_eq!(c.scheduler_name.as_deref(), Some("gpu-scheduler"));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("defaultEvictionPriority: urgent", "defaultEvictionPriority"),
            (
                "tierPreferences: {medium: 'spot,cheap'}",
                "tierPreferences.medium",
            ),
            ("tierPreferences: {critical: spot}", "\"critical\""),
            ("priorityClasses: {x: top}", "priorityClasses.x"),
            (
                "priorityThresholds: {highAtOrAbove: 0, lowBelow: 5}",
                "lowBelow (5)",
            ),
            ("evictionDefault: low", "unknown field"),
            ("priorityThresholds: {high: 5}", "unknown field"),
        ];
        for (yaml, want) in cases {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }

    #[test]
    fn default_thresholds_classify_system_and_preemptible_classes() {
        let t = PriorityThresholds::default();
        assert_eq!(t.classify(2_000_001_000), EvictionPriority::High);
        assert_eq!(t.classify(1_000_000), EvictionPriority::High);
        assert_eq!(t.classify(999_999), EvictionPriority::Medium);
        assert_eq!(t.classify(0), EvictionPriority::Medium);
        assert_eq!(t.classify(-1), EvictionPriority::Low);
    }
}
