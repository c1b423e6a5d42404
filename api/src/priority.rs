//! Eviction priority, tier preference and workload type: the three pod-level knobs.
//!
//! Parsing is strict and the errors name the annotation and the allowed values, because the
//! webhook sends them verbatim to the user who ran `kubectl apply`.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::capacity::CapacityType;
use crate::keys;

/// Who goes first when a node must be drained. Ordered: `Low < Medium < High`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum EvictionPriority {
    /// Development and batch work: evicted first, cheapest to redo.
    Low,
    /// Inference and serving: replicas elsewhere absorb the loss.
    Medium,
    /// Training: evicted last and given the longest window to checkpoint.
    High,
}

impl EvictionPriority {
    pub const ALL: [EvictionPriority; 3] = [Self::Low, Self::Medium, Self::High];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

impl fmt::Display for EvictionPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected pod-level value, worded for the person who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error(
        "annotation {key}: {value:?} is not a valid eviction priority; allowed values: low, medium, high"
    )]
    EvictionPriority { key: &'static str, value: String },
    #[error(
        "annotation {key}: must list at least one capacity type (allowed: reserved, on-demand, spot), most preferred first, comma-separated"
    )]
    EmptyTierPreference { key: &'static str },
    #[error(
        "annotation {key}: {value:?} at position {position} is not a capacity type; allowed values: reserved, on-demand, spot"
    )]
    UnknownTier {
        key: &'static str,
        value: String,
        position: usize,
    },
    #[error(
        "annotation {key}: {value:?} is listed twice (positions {first} and {second}); list each capacity type at most once"
    )]
    DuplicateTier {
        key: &'static str,
        value: String,
        first: usize,
        second: usize,
    },
    #[error(
        "label {key}: {value:?} is not a known workload type; allowed values: training, inference, serving, development, batch"
    )]
    WorkloadType { key: &'static str, value: String },
}

impl FromStr for EvictionPriority {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            other => Err(ValueError::EvictionPriority {
                key: keys::ANNOTATION_EVICTION_PRIORITY,
                value: other.to_string(),
            }),
        }
    }
}

/// An ordered list of allowed capacity types, most preferred first, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TierPreference(Vec<CapacityType>);

impl TierPreference {
    /// Builds a preference from an ordered list. Duplicates are dropped, keeping the first.
    pub fn new(order: impl IntoIterator<Item = CapacityType>) -> Self {
        let mut v: Vec<CapacityType> = Vec::with_capacity(3);
        for ct in order {
            if !v.contains(&ct) {
                v.push(ct);
            }
        }
        Self(v)
    }

    pub fn as_slice(&self) -> &[CapacityType] {
        &self.0
    }

    pub fn allows(&self, ct: CapacityType) -> bool {
        self.0.contains(&ct)
    }

    /// Zero-based rank of `ct` (0 = most preferred), or `None` if not allowed.
    pub fn rank(&self, ct: CapacityType) -> Option<usize> {
        self.0.iter().position(|c| *c == ct)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for TierPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ct) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(ct.as_str())?;
        }
        Ok(())
    }
}

impl FromStr for TierPreference {
    type Err = ValueError;

    /// Parses `spot,on-demand`. Whitespace around items is tolerated; empty items,
    /// unknown types and duplicates are errors with their 1-based position.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = keys::ANNOTATION_TIER_PREFERENCE;
        if s.trim().is_empty() {
            return Err(ValueError::EmptyTierPreference { key });
        }
        let mut out: Vec<CapacityType> = Vec::with_capacity(3);
        for (i, raw) in s.split(',').enumerate() {
            let item = raw.trim();
            let ct: CapacityType = item.parse().map_err(|_| ValueError::UnknownTier {
                key,
                value: item.to_string(),
                position: i + 1,
            })?;
            if let Some(first) = out.iter().position(|c| *c == ct) {
                return Err(ValueError::DuplicateTier {
                    key,
                    value: item.to_string(),
                    first: first + 1,
                    second: i + 1,
                });
            }
            out.push(ct);
        }
        Ok(Self(out))
    }
}

/// The `workload-type` label's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadType {
    Training,
    Inference,
    Serving,
    Development,
    Batch,
}

impl WorkloadType {
    /// The eviction priority a workload type implies when the user set none.
    pub fn default_priority(self) -> EvictionPriority {
        match self {
            Self::Training => EvictionPriority::High,
            Self::Inference | Self::Serving => EvictionPriority::Medium,
            Self::Development | Self::Batch => EvictionPriority::Low,
        }
    }
}

impl FromStr for WorkloadType {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "training" => Ok(Self::Training),
            "inference" => Ok(Self::Inference),
            "serving" => Ok(Self::Serving),
            "development" => Ok(Self::Development),
            "batch" => Ok(Self::Batch),
            other => Err(ValueError::WorkloadType {
                key: keys::LABEL_WORKLOAD_TYPE,
                value: other.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CapacityType::*;

    #[test]
    fn eviction_priority_parses_and_orders() {
        assert_eq!("low".parse(), Ok(EvictionPriority::Low));
        assert_eq!(" high ".parse(), Ok(EvictionPriority::High));
        assert!(EvictionPriority::Low < EvictionPriority::Medium);
        assert!(EvictionPriority::Medium < EvictionPriority::High);
        let err = "urgent"
            .parse::<EvictionPriority>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("gpu-autoscaler.io/eviction-priority"), "{err}");
        assert!(err.contains("\"urgent\""), "{err}");
        assert!(err.contains("low, medium, high"), "{err}");
        // Case matters: Kubernetes values are case-sensitive and so are we.
        assert!("High".parse::<EvictionPriority>().is_err());
    }

    #[test]
    fn tier_preference_parses_in_order() {
        let p: TierPreference = "spot, on-demand".parse().unwrap();
        assert_eq!(p.as_slice(), &[Spot, OnDemand]);
        assert_eq!(p.to_string(), "spot,on-demand");
        assert_eq!(p.rank(OnDemand), Some(1));
        assert!(!p.allows(Reserved));
    }

    #[test]
    fn tier_preference_errors_are_precise() {
        let e = "".parse::<TierPreference>().unwrap_err().to_string();
        assert!(e.contains("at least one capacity type"), "{e}");
        let e = "spot,cheap"
            .parse::<TierPreference>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"cheap\" at position 2"), "{e}");
        let e = "spot,on-demand,spot"
            .parse::<TierPreference>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("positions 1 and 3"), "{e}");
        let e = "spot,,on-demand"
            .parse::<TierPreference>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"\" at position 2"), "{e}");
        assert!(e.contains("gpu-autoscaler.io/tier-preference"), "{e}");
    }

    #[test]
    fn workload_types_map_to_priorities() {
        let cases = [
            ("training", EvictionPriority::High),
            ("inference", EvictionPriority::Medium),
            ("serving", EvictionPriority::Medium),
            ("development", EvictionPriority::Low),
            ("batch", EvictionPriority::Low),
        ];
        for (s, p) in cases {
            assert_eq!(s.parse::<WorkloadType>().unwrap().default_priority(), p);
        }
        let e = "research".parse::<WorkloadType>().unwrap_err().to_string();
        assert!(e.contains("gpu-autoscaler.io/workload-type"), "{e}");
    }

    #[test]
    fn new_drops_duplicates() {
        let p = TierPreference::new([Spot, Spot, OnDemand]);
        assert_eq!(p.as_slice(), &[Spot, OnDemand]);
    }
}
