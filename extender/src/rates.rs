//! Spot interruption rates: what the scaler publishes, with the AWS Spot Advisor as fallback.
//!
//! # Published format
//!
//! The scaler (or an operator) publishes one JSON document, either as a file or as the key
//! [`CONFIGMAP_KEY`] of a ConfigMap:
//!
//! ```json
//! {
//!   "updatedAt": "2025-06-28T00:00:00Z",
//!   "pools": { "a100-spot": 0.08 },
//!   "instanceTypes": { "g5.xlarge": 0.22, "p4d.24xlarge": 0.12 }
//! }
//! ```
//!
//! A rate is the fraction of nodes of that pool or instance type that the cloud reclaimed over
//! the trailing 30 days, in `[0, 1]` (the same meaning as the Spot Advisor's "frequency of
//! interruption"). Both maps are optional; `updatedAt` is informational.
//!
//! # Lookup order for a spot node
//! 1. the published rate of its node pool (the scaler observes its own pools directly);
//! 2. the published rate of its instance type;
//! 3. the Spot Advisor bucket for (region, instance type) from the catalog's bundled extract
//!    (every region of the 2025-06-28 snapshot; see `data/ATTRIBUTION.md`), then (us-east-1,
//!    instance type) when the node's region is unknown or not listed;
//! 4. [`SpotRates::default_rate`].

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::view::NodeView;

/// The ConfigMap key holding the rates document.
pub const CONFIGMAP_KEY: &str = "rates.json";

/// A representative interruption rate per Spot Advisor bucket. The first four are bucket
/// midpoints; the open-ended `>20%` bucket is pinned at 25%, which is also [`RATE_CEILING`], so
/// the worst bucket scores zero rather than being extrapolated.
pub const BUCKET_RATES: [f64; 5] = [0.025, 0.075, 0.125, 0.175, 0.25];

/// Rates at or above this score as maximally risky.
pub const RATE_CEILING: f64 = 0.25;

/// The region used when a node's own region has no advisor row.
const FALLBACK_REGION: &str = "us-east-1";

/// The published document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SpotRatesDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(default)]
    pub pools: HashMap<String, f64>,
    #[serde(default)]
    pub instance_types: HashMap<String, f64>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RatesError {
    #[error(
        "spot rates document is not valid JSON of the form {{\"pools\":{{NAME:RATE}},\"instanceTypes\":{{TYPE:RATE}}}}: {0}"
    )]
    Json(String),
    #[error("spot rate for {kind} {name:?} is {value}; rates are fractions between 0 and 1")]
    OutOfRange {
        kind: &'static str,
        name: String,
        value: f64,
    },
}

impl SpotRatesDoc {
    pub fn parse(text: &str) -> Result<Self, RatesError> {
        let doc: SpotRatesDoc =
            serde_json::from_str(text).map_err(|e| RatesError::Json(e.to_string()))?;
        for (kind, map) in [("pool", &doc.pools), ("instance type", &doc.instance_types)] {
            for (name, value) in map {
                if !(0.0..=1.0).contains(value) {
                    return Err(RatesError::OutOfRange {
                        kind,
                        name: name.clone(),
                        value: *value,
                    });
                }
            }
        }
        Ok(doc)
    }
}

/// Where a node's rate came from (for explanations and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSource {
    Pool,
    InstanceType,
    Advisor,
    Default,
}

/// Published rates plus the bundled fallback.
#[derive(Debug, Clone)]
pub struct SpotRates {
    published: SpotRatesDoc,
    pub default_rate: f64,
}

impl Default for SpotRates {
    fn default() -> Self {
        SpotRates {
            published: SpotRatesDoc::default(),
            // The median bucket (10-15%): an unknown type is neither trusted nor shunned.
            default_rate: BUCKET_RATES[2],
        }
    }
}

impl SpotRates {
    pub fn new(published: SpotRatesDoc) -> Self {
        SpotRates {
            published,
            ..Self::default()
        }
    }

    pub fn with_default_rate(mut self, rate: f64) -> Self {
        self.default_rate = rate.clamp(0.0, 1.0);
        self
    }

    pub fn published(&self) -> &SpotRatesDoc {
        &self.published
    }

    /// The interruption rate to assume for a spot node, and where it came from.
    pub fn rate_for(&self, node: &NodeView) -> (f64, RateSource) {
        if let Some(r) = node
            .pool
            .as_deref()
            .and_then(|p| self.published.pools.get(p))
        {
            return (*r, RateSource::Pool);
        }
        let Some(itype) = node.instance_type.as_deref() else {
            return (self.default_rate, RateSource::Default);
        };
        if let Some(r) = self.published.instance_types.get(itype) {
            return (*r, RateSource::InstanceType);
        }
        match advisor_bucket(node.region.as_deref(), itype) {
            Some(b) => (BUCKET_RATES[usize::from(b)], RateSource::Advisor),
            None => (self.default_rate, RateSource::Default),
        }
    }
}

/// The Spot Advisor bucket (0..=4) for an instance type in a region, falling back to
/// us-east-1 when the region is unknown or has no row for the type.
pub fn advisor_bucket(region: Option<&str>, instance_type: &str) -> Option<u8> {
    let lookup = |r: &str| {
        gpu_autoscaler_catalog::aws_advisor_bucket(r, instance_type)
            .and_then(|b| u8::try_from(b).ok())
            .filter(|b| usize::from(*b) < BUCKET_RATES.len())
    };
    region.and_then(lookup).or_else(|| lookup(FALLBACK_REGION))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn spot(pool: Option<&str>, itype: Option<&str>, region: Option<&str>) -> NodeView {
        NodeView {
            pool: pool.map(Arc::from),
            instance_type: itype.map(Arc::from),
            region: region.map(Arc::from),
            ..NodeView::named("n")
        }
    }

    #[test]
    fn advisor_buckets_come_from_the_catalog_extract() {
        // Values as in the 2025-06-28 snapshot (PROVENANCE.md 2.2).
        assert_eq!(advisor_bucket(Some("us-east-1"), "p5en.48xlarge"), Some(0));
        assert_eq!(advisor_bucket(Some("us-east-1"), "p4d.24xlarge"), Some(2));
        assert_eq!(advisor_bucket(Some("us-east-1"), "g5.xlarge"), Some(4));
        assert_eq!(advisor_bucket(None, "g6e.xlarge"), Some(1));
        assert_eq!(advisor_bucket(Some("mars-1"), "g6e.xlarge"), Some(1));
        assert_eq!(advisor_bucket(Some("us-east-1"), "m5.large"), None);
        // Regions beyond the price table's are covered too.
        assert_eq!(advisor_bucket(Some("af-south-1"), "g4dn.12xlarge"), Some(0));
        assert_eq!(advisor_bucket(Some("af-south-1"), "g4dn.2xlarge"), Some(4));
    }

    #[test]
    fn lookup_order_is_pool_type_advisor_default() {
        let doc = SpotRatesDoc::parse(
            r#"{"pools":{"a100":0.01},"instanceTypes":{"g5.xlarge":0.3},"updatedAt":"x"}"#,
        )
        .unwrap();
        let rates = SpotRates::new(doc);
        assert_eq!(
            rates.rate_for(&spot(Some("a100"), Some("g5.xlarge"), None)),
            (0.01, RateSource::Pool)
        );
        assert_eq!(
            rates.rate_for(&spot(Some("other"), Some("g5.xlarge"), None)),
            (0.3, RateSource::InstanceType)
        );
        assert_eq!(
            rates.rate_for(&spot(None, Some("p4d.24xlarge"), Some("us-east-1"))),
            (BUCKET_RATES[2], RateSource::Advisor)
        );
        assert_eq!(
            rates.rate_for(&spot(None, Some("x1.tiny"), None)),
            (rates.default_rate, RateSource::Default)
        );
        assert_eq!(
            rates.rate_for(&spot(None, None, None)).1,
            RateSource::Default
        );
    }

    #[test]
    fn bad_documents_are_rejected_precisely() {
        let e = SpotRatesDoc::parse(r#"{"pools":{"a":1.5}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"a\"") && e.contains("1.5"), "{e}");
        let e = SpotRatesDoc::parse("not json").unwrap_err().to_string();
        assert!(e.contains("instanceTypes"), "{e}");
        assert_eq!(SpotRatesDoc::parse("{}").unwrap(), SpotRatesDoc::default());
    }
}
