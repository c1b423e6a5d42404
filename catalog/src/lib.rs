//! Bundled, attributed cloud GPU instance catalog: specs, on-demand / spot / reserved prices and
//! spot interruption risk, for AWS, GCP and Azure.
//!
//! Every number comes from a CSV under `catalog/data/`, extracted from the project's real-data
//! corpus by `catalog/data/extract.py` (row and column selection only; sources and licences in
//! `data/ATTRIBUTION.md`). Nothing here is typed in by hand; the only constants in code are
//! unit conversions.
//!
//! # What each cloud has
//!
//! | | specs | on-demand | spot | reserved | interruption |
//! |---|---|---|---|---|---|
//! | AWS | Karpenter instance-type docs | Karpenter price table, us-east-1 only, latest segment | on-demand × (1 − Spot Advisor savings %) | **absent** (no RI prices in the data) | Spot Advisor bucket |
//! | GCP | pricing.yml | `hour_usd` | `hour_spot_usd` | 1-year CUD: `month_1y_usd` ÷ the file's hours per month | **proxy**: median AWS bucket of the same GPU model |
//! | Azure | vCPU and GPU model parsed from the SKU name; **GPU count unknown** | Retail Prices API | **absent** (no Azure spot prices were found) | absent | absent |
//!
//! Absent means `None`: callers decide what to do (e.g. `simulate` prices an AWS reserved tier
//! at on-demand and offers no spot tier on Azure), the catalog never guesses.
//!
//! # Interruption probability
//!
//! AWS's Spot Advisor puts each instance type in a bucket of "frequency of interruption over the
//! trailing month": `<5%`, `5-10%`, `10-15%`, `15-20%`, `>20%`. We read the bucket's bounds off
//! its label (the open bucket's upper bound is the `max` AWS's feed gives it, 100), take the
//! midpoint as the monthly probability `p_m` that an instance is interrupted, and convert it to
//! a constant per-hour hazard `p_h = 1 − (1 − p_m)^(1/730)` (730 = 8760 h / 12 months).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use gpu_autoscaler_api::CapacityType;
use serde::{Deserialize, Serialize};

mod parse;

pub use parse::DataError;

/// Hours in an average (365-day) month, the unit in which Spot Advisor frequencies are given.
pub const HOURS_PER_MONTH: f64 = 365.0 * 24.0 / 12.0;

/// A cloud whose price tables are bundled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Aws,
    Gcp,
    Azure,
}

impl Cloud {
    pub const ALL: [Cloud; 3] = [Cloud::Aws, Cloud::Gcp, Cloud::Azure];

    pub fn as_str(self) -> &'static str {
        match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
        }
    }

    /// The region `simulate` and examples use when none is given: where each table is richest
    /// (AWS on-demand prices exist for us-east-1 only).
    pub fn default_region(self) -> &'static str {
        match self {
            Cloud::Aws => "us-east-1",
            Cloud::Gcp => "us-central1",
            Cloud::Azure => "eastus",
        }
    }
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Cloud {
    type Err = CatalogError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "aws" => Ok(Cloud::Aws),
            "gcp" => Ok(Cloud::Gcp),
            "azure" => Ok(Cloud::Azure),
            other => Err(CatalogError::UnknownCloud(other.to_string())),
        }
    }
}

/// Errors name what is known, so a typo can be fixed from the message alone.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    #[error("unknown cloud {0:?}; known clouds: aws, gcp, azure")]
    UnknownCloud(String),
    #[error("{cloud}: no bundled prices for region {region:?}; known regions: {}", known.join(", "))]
    UnknownRegion {
        cloud: Cloud,
        region: String,
        known: Vec<String>,
    },
    #[error("{cloud} {region}: unknown instance type {name:?}; known instance types: {}", known.join(", "))]
    UnknownInstanceType {
        cloud: Cloud,
        region: String,
        name: String,
        known: Vec<String>,
    },
    /// A bundled file failed to parse: a packaging bug, reported instead of panicking.
    #[error(transparent)]
    Data(#[from] DataError),
}

/// Where an interruption estimate comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum InterruptionSource {
    /// AWS Spot Advisor bucket of this very instance type and region.
    SpotAdvisor { snapshot_date: String },
    /// No data for this cloud: the median Spot Advisor bucket (us-east-1) of the AWS instance
    /// types with the same GPU model (or of all AWS GPU types when the model has none).
    AwsProxy {
        gpu_model: String,
        aws_types: Vec<String>,
    },
}

/// A spot interruption-frequency bucket and the probabilities derived from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interruption {
    /// Spot Advisor range index (0 = least frequent).
    pub bucket_index: u32,
    /// Spot Advisor label, e.g. `"10-15%"`.
    pub bucket_label: String,
    /// Midpoint of the bucket: probability (0..1) that an instance is interrupted in a month.
    pub monthly_probability: f64,
    /// Constant per-hour interruption probability equivalent to `monthly_probability`.
    pub hourly_probability: f64,
    pub source: InterruptionSource,
}

/// One instance type (or VM size / machine type) in one region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceType {
    pub name: String,
    pub cloud: Cloud,
    pub region: String,
    /// Accelerators per instance; fractional for GCP's shared-GPU g4 sizes. `None` where the
    /// data does not say (Azure).
    pub gpus: Option<f64>,
    /// Accelerator model as the source spells it (`a10g`, `a100-80gb`, `A100`).
    pub gpu_model: Option<String>,
    /// `nvidia`, `amd`, `habana`, when the source says.
    pub gpu_manufacturer: Option<String>,
    pub vcpu: Option<u32>,
    pub memory_mib: Option<u64>,
    pub on_demand_usd_per_hour: f64,
    pub spot_usd_per_hour: Option<f64>,
    pub reserved_usd_per_hour: Option<f64>,
    /// Spot Advisor savings vs on-demand in percent (AWS only).
    pub spot_savings_pct: Option<f64>,
    pub interruption: Option<Interruption>,
}

impl InstanceType {
    /// The hourly price of a capacity type, or `None` where the data has none.
    pub fn price(&self, capacity: CapacityType) -> Option<f64> {
        match capacity {
            CapacityType::OnDemand => Some(self.on_demand_usd_per_hour),
            CapacityType::Spot => self.spot_usd_per_hour,
            CapacityType::Reserved => self.reserved_usd_per_hour,
        }
    }

    /// Whole GPUs per instance, when known and integral (Kubernetes allocates whole devices).
    pub fn whole_gpus(&self) -> Option<u32> {
        let g = self.gpus?;
        (g >= 1.0 && g.fract() == 0.0 && g <= f64::from(u32::MAX)).then_some(g as u32)
    }
}

/// The instance types of one cloud region, by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    cloud: Cloud,
    region: String,
    types: BTreeMap<String, InstanceType>,
}

impl Catalog {
    /// AWS instance types with prices in `region` (the bundled on-demand table covers us-east-1).
    pub fn aws(region: &str) -> Result<Self, CatalogError> {
        parse::aws(region)
    }

    /// GCP accelerator machine types priced in `region`.
    pub fn gcp(region: &str) -> Result<Self, CatalogError> {
        parse::gcp(region)
    }

    /// Azure GPU VM sizes priced in `region` (on-demand only; GPU counts unknown).
    pub fn azure(region: &str) -> Result<Self, CatalogError> {
        parse::azure(region)
    }

    pub fn for_cloud(cloud: Cloud, region: &str) -> Result<Self, CatalogError> {
        match cloud {
            Cloud::Aws => Self::aws(region),
            Cloud::Gcp => Self::gcp(region),
            Cloud::Azure => Self::azure(region),
        }
    }

    /// Regions with bundled prices for `cloud`, sorted.
    pub fn regions(cloud: Cloud) -> Result<Vec<String>, CatalogError> {
        parse::regions(cloud)
    }

    pub fn cloud(&self) -> Cloud {
        self.cloud
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Looks an instance type up; the error lists the known ones.
    pub fn get(&self, name: &str) -> Result<&InstanceType, CatalogError> {
        self.types
            .get(name)
            .ok_or_else(|| CatalogError::UnknownInstanceType {
                cloud: self.cloud,
                region: self.region.clone(),
                name: name.to_string(),
                known: self.types.keys().cloned().collect(),
            })
    }

    /// All instance types, sorted by name.
    pub fn instance_types(&self) -> impl Iterator<Item = &InstanceType> {
        self.types.values()
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

/// AWS Spot Advisor interruption bucket of an instance type in any Spot Advisor region (the
/// bundled extract covers every region of the 2025-06-28 snapshot, more than the price
/// table). For risk estimates that need no price.
pub fn aws_interruption(region: &str, instance_type: &str) -> Result<Interruption, CatalogError> {
    parse::aws_interruption(region, instance_type)
}

/// Just the Spot Advisor range index (0 = `<5%` ... 4 = `>20%`) of an instance type in a region,
/// or `None` when the extract has no such row. Allocates nothing, so it can sit on a request
/// path (the scheduler extender's spot-risk fallback).
pub fn aws_advisor_bucket(region: &str, instance_type: &str) -> Option<u32> {
    parse::aws_advisor_bucket(region, instance_type)
}

/// Converts a monthly interruption probability to the equivalent constant per-hour one.
pub fn hourly_from_monthly(monthly: f64) -> f64 {
    let m = monthly.clamp(0.0, 1.0);
    1.0 - (1.0 - m).powf(1.0 / HOURS_PER_MONTH)
}

#[cfg(test)]
mod tests;
