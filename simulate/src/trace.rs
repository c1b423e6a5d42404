//! Workload input: the Alibaba openb pod-list format, and aggregate demand series turned into
//! GPU requests.
//!
//! # Run-time model (pod list)
//! A pod arrives at `creation_time`. Its run time, once a node is found for it, is what it ran
//! in the original cluster: `deletion_time − scheduled_time`. The original wait
//! (`scheduled_time − creation_time`) is *not* replayed: the wait is what the simulated
//! autoscaler causes. Pods that were never scheduled in the original cluster (`Pending`,
//! empty `scheduled_time`) are kept as demand that was wanted from creation to deletion, so
//! their run time is `deletion_time − creation_time`; they are flagged and counted in the
//! report. Pods that ask for no GPU (`num_gpu == 0`) never need a GPU node: they are dropped
//! and counted.
//!
//! # GPU requests
//! `num_gpu > 1` asks for whole GPUs. `num_gpu == 1` with `gpu_milli < 1000` is a fractional
//! share of one GPU (Alibaba's GPU-sharing scheduler). Stock Kubernetes with the NVIDIA device
//! plugin allocates whole devices, and so do the engine and the scheduler stand-in: such a pod
//! takes one GPU. The share is kept (`gpu_milli`) as the pod's expected GPU utilization.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

/// The bundled default trace (verbatim copy of the openb pod list; see data/ATTRIBUTION.md).
pub const BUNDLED_TRACE: &str = include_str!("../../data/openb_pod_list_default.csv");
pub const BUNDLED_TRACE_NAME: &str = "bundled:openb_pod_list_default.csv";

/// A clear, located input error: file, line (1-based, header = line 1) and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("{file}: cannot read: {message}")]
    Io { file: String, message: String },
    #[error("{file}, line 1: missing column {column:?}; the header has: {header}")]
    MissingColumn {
        file: String,
        column: String,
        header: String,
    },
    #[error("{file}, line {line}, column {column:?}: {message}")]
    Malformed {
        file: String,
        line: u64,
        column: String,
        message: String,
    },
    #[error("{file}: {message}")]
    Empty { file: String, message: String },
}

/// One GPU pod to replay.
#[derive(Debug, Clone, PartialEq)]
pub struct TracePod {
    pub name: String,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    /// Whole GPUs the pod takes on a node (fractional shares round up to 1).
    pub gpus: u32,
    /// Requested share per GPU in milli-GPU (1000 for whole GPUs).
    pub gpu_milli: u32,
    /// Alibaba QoS class (`LS`, `BE`, `Burstable`, `Guaranteed`), or the series name.
    pub qos: String,
    /// Seconds from the start of the trace.
    pub arrival_s: i64,
    /// Seconds of work once running.
    pub duration_s: i64,
    /// Never scheduled in the original cluster (run time = deletion − creation).
    pub never_scheduled: bool,
}

/// A workload ready to replay, sorted by arrival.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Where it came from (a path, or `bundled:...`).
    pub source: String,
    pub pods: Vec<TracePod>,
    /// Rows dropped because they ask for no GPU.
    pub dropped_cpu_only: usize,
    /// Seconds from trace start to the last event (arrival + run time).
    pub end_s: i64,
}

impl Trace {
    fn finish(source: String, mut pods: Vec<TracePod>, dropped_cpu_only: usize) -> Self {
        pods.sort_by(|a, b| {
            a.arrival_s
                .cmp(&b.arrival_s)
                .then_with(|| a.name.cmp(&b.name))
        });
        let end_s = pods
            .iter()
            .map(|p| p.arrival_s + p.duration_s)
            .max()
            .unwrap_or(0);
        Self {
            source,
            pods,
            dropped_cpu_only,
            end_s,
        }
    }

    /// Summary figures for the report (requests incl. multi-GPU and fractional).
    pub fn summary(&self) -> TraceSummary {
        let mut by_gpus: BTreeMap<u32, usize> = BTreeMap::new();
        for p in &self.pods {
            *by_gpus.entry(p.gpus).or_default() += 1;
        }
        TraceSummary {
            source: self.source.clone(),
            gpu_pods: self.pods.len(),
            dropped_cpu_only: self.dropped_cpu_only,
            never_scheduled: self.pods.iter().filter(|p| p.never_scheduled).count(),
            fractional: self.pods.iter().filter(|p| p.gpu_milli < 1000).count(),
            pods_by_gpu_count: by_gpus
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            requested_gpu_hours: self
                .pods
                .iter()
                .map(|p| f64::from(p.gpus) * p.duration_s as f64 / 3600.0)
                .sum(),
            fractional_share_gpu_hours: self
                .pods
                .iter()
                .map(|p| {
                    f64::from(p.gpus) * f64::from(p.gpu_milli) / 1000.0 * p.duration_s as f64
                        / 3600.0
                })
                .sum(),
            span_days: self.end_s as f64 / 86_400.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TraceSummary {
    pub source: String,
    pub gpu_pods: usize,
    pub dropped_cpu_only: usize,
    pub never_scheduled: usize,
    pub fractional: usize,
    pub pods_by_gpu_count: BTreeMap<String, usize>,
    /// Σ whole GPUs × run time.
    pub requested_gpu_hours: f64,
    /// Σ GPU share × run time (what fractional pods would use with GPU sharing).
    pub fractional_share_gpu_hours: f64,
    pub span_days: f64,
}

/// Reads a file, naming it in the error.
fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|e| LoadError::Io {
        file: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Loads the bundled openb pod list.
pub fn bundled() -> Result<Trace, LoadError> {
    parse_pod_list(BUNDLED_TRACE_NAME, BUNDLED_TRACE)
}

/// Loads a pod list in the openb CSV format from a file.
pub fn load_pod_list(path: &Path) -> Result<Trace, LoadError> {
    parse_pod_list(&path.display().to_string(), &read(path)?)
}

/// A CSV with named columns and located errors.
struct Csv<'a> {
    file: &'a str,
    header: Vec<String>,
    rows: csv::StringRecordsIntoIter<&'a [u8]>,
}

struct Row {
    line: u64,
    rec: csv::StringRecord,
}

impl<'a> Csv<'a> {
    fn new(file: &'a str, text: &'a str) -> Result<Self, LoadError> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(text.as_bytes());
        let header: Vec<String> = rdr
            .headers()
            .map_err(|e| LoadError::Malformed {
                file: file.into(),
                line: 1,
                column: String::new(),
                message: e.to_string(),
            })?
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
            .collect();
        if header.iter().all(|h| h.is_empty()) {
            return Err(LoadError::Empty {
                file: file.into(),
                message: "no header line".into(),
            });
        }
        Ok(Self {
            file,
            header,
            rows: rdr.into_records(),
        })
    }

    fn col(&self, name: &str) -> Result<usize, LoadError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| LoadError::MissingColumn {
                file: self.file.into(),
                column: name.into(),
                header: self.header.join(","),
            })
    }

    fn next_row(&mut self) -> Option<Result<Row, LoadError>> {
        let rec = self.rows.next()?;
        Some(match rec {
            Ok(rec) => {
                let line = rec.position().map_or(0, |p| p.line());
                if rec.len() != self.header.len() {
                    Err(LoadError::Malformed {
                        file: self.file.into(),
                        line,
                        column: self
                            .header
                            .get(rec.len().min(self.header.len().saturating_sub(1)))
                            .cloned()
                            .unwrap_or_default(),
                        message: format!(
                            "{} fields, the header has {}",
                            rec.len(),
                            self.header.len()
                        ),
                    })
                } else {
                    Ok(Row { line, rec })
                }
            }
            Err(e) => Err(LoadError::Malformed {
                file: self.file.into(),
                line: e.position().map_or(0, |p| p.line()),
                column: String::new(),
                message: e.to_string(),
            }),
        })
    }

    fn bad(&self, row: &Row, col: usize, message: impl fmt::Display) -> LoadError {
        LoadError::Malformed {
            file: self.file.into(),
            line: row.line,
            column: self.header[col].clone(),
            message: message.to_string(),
        }
    }

    fn str<'r>(&self, row: &'r Row, col: usize) -> &'r str {
        row.rec.get(col).unwrap_or("").trim()
    }

    fn num<T: std::str::FromStr>(&self, row: &Row, col: usize) -> Result<T, LoadError> {
        let v = self.str(row, col);
        v.parse::<T>().map_err(|_| {
            self.bad(
                row,
                col,
                format!("{v:?} is not a valid {}", short_type::<T>()),
            )
        })
    }

    /// Integer seconds; the openb files write them as integers, other exports as `123.0`.
    fn secs(&self, row: &Row, col: usize) -> Result<Option<i64>, LoadError> {
        let v = self.str(row, col);
        if v.is_empty() {
            return Ok(None);
        }
        if let Ok(i) = v.parse::<i64>() {
            return Ok(Some(i));
        }
        match v.parse::<f64>() {
            Ok(f) if f.is_finite() && f.fract() == 0.0 => Ok(Some(f as i64)),
            _ => Err(self.bad(row, col, format!("{v:?} is not a time in whole seconds"))),
        }
    }
}

fn short_type<T>() -> &'static str {
    let n = std::any::type_name::<T>();
    if n.contains("f64") {
        "number"
    } else {
        "non-negative integer"
    }
}

/// Parses the openb pod-list format (`name, cpu_milli, memory_mib, num_gpu, gpu_milli,
/// gpu_spec, qos, pod_phase, creation_time, deletion_time, scheduled_time`).
pub fn parse_pod_list(file: &str, text: &str) -> Result<Trace, LoadError> {
    let mut csv = Csv::new(file, text)?;
    let c_name = csv.col("name")?;
    let c_cpu = csv.col("cpu_milli")?;
    let c_mem = csv.col("memory_mib")?;
    let c_ngpu = csv.col("num_gpu")?;
    let c_milli = csv.col("gpu_milli")?;
    let c_qos = csv.col("qos")?;
    let c_create = csv.col("creation_time")?;
    let c_delete = csv.col("deletion_time")?;
    let c_sched = csv.col("scheduled_time")?;
    let mut pods = Vec::new();
    let mut dropped = 0;
    while let Some(row) = csv.next_row() {
        let row = row?;
        let num_gpu: u32 = csv.num(&row, c_ngpu)?;
        let gpu_milli: u32 = csv.num(&row, c_milli)?;
        let cpu_milli: u64 = csv.num(&row, c_cpu)?;
        let memory_mib: u64 = csv.num(&row, c_mem)?;
        let created = csv
            .secs(&row, c_create)?
            .ok_or_else(|| csv.bad(&row, c_create, "empty"))?;
        let deleted = csv
            .secs(&row, c_delete)?
            .ok_or_else(|| csv.bad(&row, c_delete, "empty"))?;
        let scheduled = csv.secs(&row, c_sched)?;
        if created < 0 {
            return Err(csv.bad(&row, c_create, format!("{created} is negative")));
        }
        if num_gpu == 1 && !(1..=1000).contains(&gpu_milli) {
            return Err(csv.bad(
                &row,
                c_milli,
                format!("{gpu_milli} is not a GPU share in 1..=1000 for a 1-GPU pod"),
            ));
        }
        if let Some(s) = scheduled {
            if s < created {
                return Err(csv.bad(
                    &row,
                    c_sched,
                    format!("{s} is before creation_time {created}"),
                ));
            }
            if deleted < s {
                return Err(csv.bad(
                    &row,
                    c_delete,
                    format!("{deleted} is before scheduled_time {s}"),
                ));
            }
        } else if deleted < created {
            return Err(csv.bad(
                &row,
                c_delete,
                format!("{deleted} is before creation_time {created}"),
            ));
        }
        if num_gpu == 0 {
            dropped += 1;
            continue;
        }
        let (duration_s, never_scheduled) = match scheduled {
            Some(s) => (deleted - s, false),
            None => (deleted - created, true),
        };
        pods.push(TracePod {
            name: csv.str(&row, c_name).to_string(),
            cpu_milli,
            memory_mib,
            gpus: num_gpu,
            gpu_milli: if num_gpu == 1 { gpu_milli } else { 1000 },
            qos: csv.str(&row, c_qos).to_string(),
            arrival_s: created,
            duration_s,
            never_scheduled,
        });
    }
    if pods.is_empty() {
        return Err(LoadError::Empty {
            file: file.into(),
            message: "no GPU pods (every row has num_gpu = 0, or there are no rows)".into(),
        });
    }
    Ok(Trace::finish(file.to_string(), pods, dropped))
}

/// How a demand series' unit turns into pods.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesOptions {
    /// GPUs per demand unit. Helios counts GPUs (unit = 1 GPU). Philly counts active nodes,
    /// so one unit is one whole node's worth of GPUs.
    pub gpus_per_unit: u32,
    /// CPU and memory each synthetic pod asks for, per GPU.
    pub cpu_milli_per_gpu: u64,
    pub memory_mib_per_gpu: u64,
}

/// Loads an aggregate demand series and turns it into pods.
///
/// Formats, recognised by their header:
/// - Philly node sequence (`time, active, total`): demand = `active` nodes.
/// - Helios VC sequence (`time, vc, ..., running_gpu_num, pending_gpu_num, ...`): demand at a
///   time = Σ over VCs of running + pending GPUs.
///
/// Conversion: the series is a step function. When demand rises by `k` units at time `t`,
/// `k` pods of `gpus_per_unit` GPUs arrive at `t`; when it falls by `k`, the `k` most recently
/// started pods end at `t` (last in, first out: the base load is long-lived, bursts are short).
/// Pods alive at the last sample end one median step later.
pub fn load_demand_series(path: &Path, opts: &SeriesOptions) -> Result<Trace, LoadError> {
    let text = read(path)?;
    parse_demand_series(&path.display().to_string(), &text, opts)
}

pub fn parse_demand_series(
    file: &str,
    text: &str,
    opts: &SeriesOptions,
) -> Result<Trace, LoadError> {
    let mut csv = Csv::new(file, text)?;
    let c_time = csv.col("time")?;
    let philly = csv.header.iter().any(|h| h == "active");
    let (kind, cols): (&str, Vec<usize>) = if philly {
        ("philly", vec![csv.col("active")?])
    } else {
        csv.col("vc")?;
        (
            "helios",
            vec![csv.col("running_gpu_num")?, csv.col("pending_gpu_num")?],
        )
    };
    let mut demand: BTreeMap<NaiveDateTime, u64> = BTreeMap::new();
    while let Some(row) = csv.next_row() {
        let row = row?;
        let ts = csv.str(&row, c_time);
        let t = NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S").map_err(|e| {
            csv.bad(
                &row,
                c_time,
                format!("{ts:?} is not YYYY-MM-DD HH:MM:SS ({e})"),
            )
        })?;
        let mut v = 0u64;
        for &c in &cols {
            v += csv.num::<u64>(&row, c)?;
        }
        // Helios has one row per VC and time: sum. Philly repeats no time except in the DST
        // hour, where the later sample wins.
        if philly {
            demand.insert(t, v);
        } else {
            *demand.entry(t).or_default() += v;
        }
    }
    let Some((&t0, _)) = demand.iter().next() else {
        return Err(LoadError::Empty {
            file: file.into(),
            message: "no rows".into(),
        });
    };
    let times: Vec<i64> = demand.keys().map(|t| (*t - t0).num_seconds()).collect();
    let mut steps: Vec<i64> = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0)
        .collect();
    steps.sort_unstable();
    let step = steps.get(steps.len() / 2).copied().unwrap_or(60);

    let gpus = opts.gpus_per_unit.max(1);
    // Live pods as (index into pods), newest last.
    let mut live: Vec<usize> = Vec::new();
    let mut pods: Vec<TracePod> = Vec::new();
    for (&t, &units) in times.iter().zip(demand.values()) {
        let units = usize::try_from(units).unwrap_or(usize::MAX);
        while live.len() > units {
            if let Some(i) = live.pop() {
                pods[i].duration_s = t - pods[i].arrival_s;
            }
        }
        while live.len() < units {
            live.push(pods.len());
            pods.push(TracePod {
                name: format!("{kind}-{:06}", pods.len()),
                cpu_milli: opts.cpu_milli_per_gpu * u64::from(gpus),
                memory_mib: opts.memory_mib_per_gpu * u64::from(gpus),
                gpus,
                gpu_milli: 1000,
                qos: kind.to_string(),
                arrival_s: t,
                duration_s: 0,
                never_scheduled: false,
            });
        }
    }
    let end = times.last().copied().unwrap_or(0) + step;
    for i in live {
        pods[i].duration_s = end - pods[i].arrival_s;
    }
    pods.retain(|p| p.duration_s > 0);
    if pods.is_empty() {
        return Err(LoadError::Empty {
            file: file.into(),
            message: "demand is zero throughout".into(),
        });
    }
    Ok(Trace::finish(file.to_string(), pods, 0))
}

/// A path or the bundled trace, for messages.
pub fn describe(path: Option<&PathBuf>) -> String {
    path.map_or_else(
        || BUNDLED_TRACE_NAME.to_string(),
        |p| p.display().to_string(),
    )
}
