//! Parsing of the bundled CSV files. Tables are parsed once per process and shared.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use crate::{
    Catalog, CatalogError, Cloud, InstanceType, Interruption, InterruptionSource,
    hourly_from_monthly,
};

const AWS_SPECS: (&str, &str) = (
    "aws_gpu_instance_specs.csv",
    include_str!("../data/aws_gpu_instance_specs.csv"),
);
const AWS_ONDEMAND: (&str, &str) = (
    "aws_ondemand_gpu_us-east-1_history.csv",
    include_str!("../data/aws_ondemand_gpu_us-east-1_history.csv"),
);
const AWS_ADVISOR: (&str, &str) = (
    "aws_spot_advisor_gpu_2025.csv",
    include_str!("../data/aws_spot_advisor_gpu_2025.csv"),
);
const AWS_RANGES: (&str, &str) = (
    "aws_spot_advisor_ranges_2025.csv",
    include_str!("../data/aws_spot_advisor_ranges_2025.csv"),
);
const GCP_PRICES: (&str, &str) = (
    "gcp_gpu_vm_prices_latest.csv",
    include_str!("../data/gcp_gpu_vm_prices_latest.csv"),
);
const AZURE_PRICES: (&str, &str) = (
    "azure_ondemand_gpu_skus.csv",
    include_str!("../data/azure_ondemand_gpu_skus.csv"),
);

/// A bundled file that does not parse, located to the file, line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("catalog/data/{file}, line {line}, column {column:?}: {message}")]
pub struct DataError {
    pub file: String,
    pub line: u64,
    pub column: String,
    pub message: String,
}

/// A parsed CSV with header lookup and typed cell access.
struct Table {
    file: &'static str,
    headers: Vec<String>,
    rows: Vec<(u64, Vec<String>)>,
}

impl Table {
    fn parse((file, text): (&'static str, &'static str)) -> Result<Self, DataError> {
        let err = |line: u64, message: String| DataError {
            file: file.to_string(),
            line,
            column: String::new(),
            message,
        };
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(text.as_bytes());
        let headers = rdr
            .headers()
            .map_err(|e| err(1, e.to_string()))?
            .iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        let mut rows = Vec::new();
        for rec in rdr.records() {
            let rec = rec.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                err(line, e.to_string())
            })?;
            let line = rec.position().map_or(0, |p| p.line());
            rows.push((line, rec.iter().map(str::to_string).collect()));
        }
        Ok(Self {
            file,
            headers,
            rows,
        })
    }

    fn col(&self, name: &str) -> Result<usize, DataError> {
        self.headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DataError {
                file: self.file.to_string(),
                line: 1,
                column: name.to_string(),
                message: format!("missing column; header is {}", self.headers.join(",")),
            })
    }

    fn cell<'a>(&self, row: &'a (u64, Vec<String>), col: usize) -> &'a str {
        row.1.get(col).map_or("", |s| s.trim())
    }

    fn num<T: std::str::FromStr>(
        &self,
        row: &(u64, Vec<String>),
        col: usize,
    ) -> Result<T, DataError>
    where
        T::Err: std::fmt::Display,
    {
        let v = self.cell(row, col);
        v.parse::<T>().map_err(|e| DataError {
            file: self.file.to_string(),
            line: row.0,
            column: self.headers[col].clone(),
            message: format!("{v:?}: {e}"),
        })
    }

    fn opt_num<T: std::str::FromStr>(
        &self,
        row: &(u64, Vec<String>),
        col: usize,
    ) -> Result<Option<T>, DataError>
    where
        T::Err: std::fmt::Display,
    {
        if self.cell(row, col).is_empty() {
            Ok(None)
        } else {
            self.num(row, col).map(Some)
        }
    }
}

struct AwsSpec {
    vcpu: u32,
    memory_mib: u64,
    gpus: f64,
    gpu_model: String,
    gpu_manufacturer: String,
}

struct Bucket {
    label: String,
    lo_pct: f64,
    hi_pct: f64,
}

struct Advice {
    bucket: u32,
    savings_pct: f64,
}

struct AwsTables {
    specs: BTreeMap<String, AwsSpec>,
    /// region -> type -> on-demand $/h (latest segment).
    on_demand: BTreeMap<String, BTreeMap<String, f64>>,
    /// region -> type -> advice.
    advisor: BTreeMap<String, BTreeMap<String, Advice>>,
    advisor_date: String,
    buckets: BTreeMap<u32, Bucket>,
}

fn aws_tables() -> Result<&'static AwsTables, CatalogError> {
    static CELL: OnceLock<Result<AwsTables, DataError>> = OnceLock::new();
    CELL.get_or_init(load_aws)
        .as_ref()
        .map_err(|e| CatalogError::Data(e.clone()))
}

fn load_aws() -> Result<AwsTables, DataError> {
    let t = Table::parse(AWS_SPECS)?;
    let (c_type, c_vcpu, c_mem, c_gpus, c_name, c_mfr) = (
        t.col("instance_type")?,
        t.col("vcpu")?,
        t.col("memory_mib")?,
        t.col("gpu_count")?,
        t.col("gpu_name")?,
        t.col("gpu_manufacturer")?,
    );
    let mut specs = BTreeMap::new();
    for row in &t.rows {
        specs.insert(
            t.cell(row, c_type).to_string(),
            AwsSpec {
                vcpu: t.num(row, c_vcpu)?,
                memory_mib: t.num(row, c_mem)?,
                gpus: t.num(row, c_gpus)?,
                gpu_model: t.cell(row, c_name).to_string(),
                gpu_manufacturer: t.cell(row, c_mfr).to_string(),
            },
        );
    }

    // Change-point table: keep, per (region, type), the segment seen last.
    let t = Table::parse(AWS_ONDEMAND)?;
    let (c_region, c_type, c_price, c_last) = (
        t.col("region")?,
        t.col("instance_type")?,
        t.col("ondemand_usd_per_hour")?,
        t.col("last_seen")?,
    );
    let mut latest: BTreeMap<(String, String), (String, f64)> = BTreeMap::new();
    for row in &t.rows {
        let key = (
            t.cell(row, c_region).to_string(),
            t.cell(row, c_type).to_string(),
        );
        let last_seen = t.cell(row, c_last).to_string();
        let price: f64 = t.num(row, c_price)?;
        // RFC 3339 UTC timestamps of one format sort as text.
        if latest.get(&key).is_none_or(|(seen, _)| *seen < last_seen) {
            latest.insert(key, (last_seen, price));
        }
    }
    let mut on_demand: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for ((region, ty), (_, price)) in latest {
        on_demand.entry(region).or_default().insert(ty, price);
    }

    let t = Table::parse(AWS_RANGES)?;
    let (c_idx, c_label, c_max) = (t.col("index")?, t.col("label")?, t.col("max")?);
    let mut buckets = BTreeMap::new();
    for row in &t.rows {
        let label = t.cell(row, c_label).to_string();
        let max: f64 = t.num(row, c_max)?;
        let (lo_pct, hi_pct) = bucket_bounds(&label, max).ok_or_else(|| DataError {
            file: t.file.to_string(),
            line: row.0,
            column: "label".into(),
            message: format!("{label:?} is not a range like \"<5%\", \"5-10%\" or \">20%\""),
        })?;
        buckets.insert(
            t.num(row, c_idx)?,
            Bucket {
                label,
                lo_pct,
                hi_pct,
            },
        );
    }

    let t = Table::parse(AWS_ADVISOR)?;
    let (c_date, c_region, c_type, c_idx, c_sav) = (
        t.col("snapshot_date")?,
        t.col("region")?,
        t.col("instance_type")?,
        t.col("interruption_range_index")?,
        t.col("savings_vs_ondemand_pct")?,
    );
    let mut advisor: BTreeMap<String, BTreeMap<String, Advice>> = BTreeMap::new();
    let mut advisor_date = String::new();
    for row in &t.rows {
        let bucket: u32 = t.num(row, c_idx)?;
        if !buckets.contains_key(&bucket) {
            return Err(DataError {
                file: t.file.to_string(),
                line: row.0,
                column: "interruption_range_index".into(),
                message: format!("range {bucket} is not in {}", AWS_RANGES.0),
            });
        }
        advisor_date = t.cell(row, c_date).to_string();
        advisor
            .entry(t.cell(row, c_region).to_string())
            .or_default()
            .insert(
                t.cell(row, c_type).to_string(),
                Advice {
                    bucket,
                    savings_pct: t.num(row, c_sav)?,
                },
            );
    }
    Ok(AwsTables {
        specs,
        on_demand,
        advisor,
        advisor_date,
        buckets,
    })
}

/// Bounds in percent of a Spot Advisor label; the open-ended bucket is closed by `max`.
fn bucket_bounds(label: &str, max: f64) -> Option<(f64, f64)> {
    let l = label.trim().trim_end_matches('%');
    if let Some(hi) = l.strip_prefix('<') {
        return Some((0.0, hi.trim().parse().ok()?));
    }
    if let Some(lo) = l.strip_prefix('>') {
        return Some((lo.trim().parse().ok()?, max));
    }
    let (lo, hi) = l.split_once('-')?;
    Some((lo.trim().parse().ok()?, hi.trim().parse().ok()?))
}

impl AwsTables {
    fn interruption(&self, bucket: u32, source: InterruptionSource) -> Option<Interruption> {
        let b = self.buckets.get(&bucket)?;
        let monthly = (b.lo_pct + b.hi_pct) / 2.0 / 100.0;
        Some(Interruption {
            bucket_index: bucket,
            bucket_label: b.label.clone(),
            monthly_probability: monthly,
            hourly_probability: hourly_from_monthly(monthly),
            source,
        })
    }

    fn advisor_source(&self) -> InterruptionSource {
        InterruptionSource::SpotAdvisor {
            snapshot_date: self.advisor_date.clone(),
        }
    }

    /// Median bucket of the us-east-1 AWS types whose GPU model matches `model` (by the part
    /// before the first '-'), or of all advised GPU types when none matches.
    fn proxy(&self, model: &str) -> Option<Interruption> {
        let advice = self.advisor.get(Cloud::Aws.default_region())?;
        let key = model_key(model);
        let mut hits: Vec<(&String, u32)> = advice
            .iter()
            .filter(|(ty, _)| {
                self.specs
                    .get(*ty)
                    .is_some_and(|s| model_key(&s.gpu_model) == key)
            })
            .map(|(ty, a)| (ty, a.bucket))
            .collect();
        if hits.is_empty() {
            hits = advice.iter().map(|(ty, a)| (ty, a.bucket)).collect();
        }
        let mut idx: Vec<u32> = hits.iter().map(|(_, b)| *b).collect();
        idx.sort_unstable();
        let median = *idx.get((idx.len().saturating_sub(1)) / 2)?;
        self.interruption(
            median,
            InterruptionSource::AwsProxy {
                gpu_model: model.to_string(),
                aws_types: hits.iter().map(|(t, _)| (*t).clone()).collect(),
            },
        )
    }
}

fn model_key(model: &str) -> String {
    model.split('-').next().unwrap_or("").to_ascii_lowercase()
}

pub(crate) fn aws(region: &str) -> Result<Catalog, CatalogError> {
    let t = aws_tables()?;
    let prices = t
        .on_demand
        .get(region)
        .ok_or_else(|| CatalogError::UnknownRegion {
            cloud: Cloud::Aws,
            region: region.to_string(),
            known: t.on_demand.keys().cloned().collect(),
        })?;
    let advice = t.advisor.get(region);
    let mut types = BTreeMap::new();
    // A type needs both a spec and a price; the others (e.g. p5e without a price) are left out.
    for (name, &od) in prices {
        let Some(spec) = t.specs.get(name) else {
            continue;
        };
        let adv = advice.and_then(|a| a.get(name));
        types.insert(
            name.clone(),
            InstanceType {
                name: name.clone(),
                cloud: Cloud::Aws,
                region: region.to_string(),
                gpus: Some(spec.gpus),
                gpu_model: Some(spec.gpu_model.clone()),
                gpu_manufacturer: Some(spec.gpu_manufacturer.clone()),
                vcpu: Some(spec.vcpu),
                memory_mib: Some(spec.memory_mib),
                on_demand_usd_per_hour: od,
                spot_usd_per_hour: adv.map(|a| od * (1.0 - a.savings_pct / 100.0)),
                reserved_usd_per_hour: None,
                spot_savings_pct: adv.map(|a| a.savings_pct),
                interruption: adv.and_then(|a| t.interruption(a.bucket, t.advisor_source())),
            },
        );
    }
    Ok(Catalog {
        cloud: Cloud::Aws,
        region: region.to_string(),
        types,
    })
}

pub(crate) fn aws_advisor_bucket(region: &str, instance_type: &str) -> Option<u32> {
    let t = aws_tables().ok()?;
    t.advisor.get(region)?.get(instance_type).map(|a| a.bucket)
}

pub(crate) fn aws_interruption(
    region: &str,
    instance_type: &str,
) -> Result<Interruption, CatalogError> {
    let t = aws_tables()?;
    let advice = t
        .advisor
        .get(region)
        .ok_or_else(|| CatalogError::UnknownRegion {
            cloud: Cloud::Aws,
            region: region.to_string(),
            known: t.advisor.keys().cloned().collect(),
        })?;
    let unknown = || CatalogError::UnknownInstanceType {
        cloud: Cloud::Aws,
        region: region.to_string(),
        name: instance_type.to_string(),
        known: advice.keys().cloned().collect(),
    };
    let a = advice.get(instance_type).ok_or_else(unknown)?;
    t.interruption(a.bucket, t.advisor_source())
        .ok_or_else(unknown)
}

pub(crate) fn gcp(region: &str) -> Result<Catalog, CatalogError> {
    let aws = aws_tables()?;
    let t = Table::parse(GCP_PRICES)?;
    let (c_type, c_gpu, c_count, c_vcpu, c_ram, c_region, c_hour, c_spot, c_month, c_1y) = (
        t.col("machine_type")?,
        t.col("gpu_type")?,
        t.col("gpu_count")?,
        t.col("vcpus")?,
        t.col("ram_gb")?,
        t.col("region")?,
        t.col("hour_usd")?,
        t.col("hour_spot_usd")?,
        t.col("month_usd")?,
        t.col("month_1y_usd")?,
    );
    let mut known = BTreeSet::new();
    let mut types = BTreeMap::new();
    for row in &t.rows {
        let r = t.cell(row, c_region);
        known.insert(r.to_string());
        if r != region {
            continue;
        }
        // A machine type without an on-demand price cannot be costed; leave it out.
        let Some(hour) = t.opt_num::<f64>(row, c_hour)? else {
            continue;
        };
        let month: Option<f64> = t.opt_num(row, c_month)?;
        let month_1y: Option<f64> = t.opt_num(row, c_1y)?;
        // The file's own hours-per-month (month_usd / hour_usd) turns the 1-year CUD monthly
        // price back into an hourly one.
        let reserved = match (month, month_1y) {
            (Some(m), Some(m1)) if m > 0.0 => Some(m1 * hour / m),
            _ => None,
        };
        let gpu_model = t.cell(row, c_gpu).to_string();
        let ram_gb: f64 = t.num(row, c_ram)?;
        let name = t.cell(row, c_type).to_string();
        types.insert(
            name.clone(),
            InstanceType {
                name,
                cloud: Cloud::Gcp,
                region: region.to_string(),
                gpus: Some(t.num(row, c_count)?),
                interruption: aws.proxy(&gpu_model),
                gpu_model: Some(gpu_model),
                gpu_manufacturer: Some("nvidia".into()),
                vcpu: Some(t.num(row, c_vcpu)?),
                memory_mib: Some((ram_gb * 1024.0).round() as u64),
                on_demand_usd_per_hour: hour,
                spot_usd_per_hour: t.opt_num(row, c_spot)?,
                reserved_usd_per_hour: reserved,
                spot_savings_pct: None,
            },
        );
    }
    if types.is_empty() {
        return Err(CatalogError::UnknownRegion {
            cloud: Cloud::Gcp,
            region: region.to_string(),
            known: known.into_iter().collect(),
        });
    }
    Ok(Catalog {
        cloud: Cloud::Gcp,
        region: region.to_string(),
        types,
    })
}

pub(crate) fn azure(region: &str) -> Result<Catalog, CatalogError> {
    let t = Table::parse(AZURE_PRICES)?;
    let (c_region, c_sku, c_price) = (
        t.col("region")?,
        t.col("vm_sku")?,
        t.col("ondemand_usd_per_hour_linux")?,
    );
    let mut known = BTreeSet::new();
    let mut types = BTreeMap::new();
    for row in &t.rows {
        let r = t.cell(row, c_region);
        known.insert(r.to_string());
        if r != region {
            continue;
        }
        let name = t.cell(row, c_sku).to_string();
        let (vcpu, gpu_model) = parse_azure_sku(&name);
        types.insert(
            name.clone(),
            InstanceType {
                name,
                cloud: Cloud::Azure,
                region: region.to_string(),
                gpus: None,
                gpu_model,
                gpu_manufacturer: None,
                vcpu,
                memory_mib: None,
                on_demand_usd_per_hour: t.num(row, c_price)?,
                spot_usd_per_hour: None,
                reserved_usd_per_hour: None,
                spot_savings_pct: None,
                interruption: None,
            },
        );
    }
    if types.is_empty() {
        return Err(CatalogError::UnknownRegion {
            cloud: Cloud::Azure,
            region: region.to_string(),
            known: known.into_iter().collect(),
        });
    }
    Ok(Catalog {
        cloud: Cloud::Azure,
        region: region.to_string(),
        types,
    })
}

/// Azure's size naming: `Standard_<family letters><vCPUs><features>[_<accelerator>]_v<n>`,
/// e.g. `Standard_NC24ads_A100_v4`. The vCPU count and accelerator token come from the name;
/// older sizes (`Standard_NC6s_v3`) name no accelerator.
pub(crate) fn parse_azure_sku(name: &str) -> (Option<u32>, Option<String>) {
    let rest = name.strip_prefix("Standard_").unwrap_or(name);
    let mut parts = rest.split('_');
    let size = parts.next().unwrap_or("");
    let digits: String = size
        .chars()
        .skip_while(|c| c.is_ascii_alphabetic())
        .take_while(|c| c.is_ascii_digit())
        .collect();
    let vcpu = digits.parse().ok();
    let model = parts
        .filter(|p| !(p.starts_with('v') && p[1..].chars().all(|c| c.is_ascii_digit())))
        .rfind(|p| p.chars().any(|c| c.is_ascii_digit()))
        .map(str::to_string);
    (vcpu, model)
}

pub(crate) fn regions(cloud: Cloud) -> Result<Vec<String>, CatalogError> {
    match cloud {
        Cloud::Aws => Ok(aws_tables()?.on_demand.keys().cloned().collect()),
        Cloud::Gcp | Cloud::Azure => {
            let (file, col) = if cloud == Cloud::Gcp {
                (GCP_PRICES, "region")
            } else {
                (AZURE_PRICES, "region")
            };
            let t = Table::parse(file)?;
            let c = t.col(col)?;
            let set: BTreeSet<String> = t.rows.iter().map(|r| t.cell(r, c).to_string()).collect();
            Ok(set.into_iter().collect())
        }
    }
}

#[cfg(test)]
pub(crate) fn bucket_bounds_for_test(label: &str, max: f64) -> Option<(f64, f64)> {
    bucket_bounds(label, max)
}
