//! Demand series and the loaders that derive them from the real traces.
//!
//! A [`DemandSeries`] is a regular grid of local wall-clock timestamps with one optional value per
//! step: `None` marks a gap (a hole in the trace), so a consumer never has to guess whether a
//! missing row means "zero demand" or "no data".

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime};

/// Why a series could not be loaded. Every variant names the source; row errors also name the
/// 1-based line (header = line 1) and the column.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: malformed CSV row: {message}")]
    Row {
        path: String,
        line: u64,
        message: String,
    },
    #[error("{path}:{line}: column `{column}`: {message}")]
    Field {
        path: String,
        line: u64,
        column: String,
        message: String,
    },
    #[error("{path}:1: header has no column `{column}` (found: {found})")]
    MissingColumn {
        path: String,
        column: String,
        found: String,
    },
    #[error("{path}: {message}")]
    Empty { path: String, message: String },
}

/// Longest grid a loader builds (about 19 years at 1 minute): a file spanning more is rejected
/// rather than allocated.
pub const MAX_STEPS: i64 = 10_000_000;

/// A regularly sampled demand series on the local wall clock.
#[derive(Debug, Clone, PartialEq)]
pub struct DemandSeries {
    /// Human-readable origin (file and column), used in reports.
    pub name: String,
    /// Wall-clock time of `values[0]`.
    pub start: NaiveDateTime,
    /// Grid step in minutes.
    pub step_minutes: u32,
    /// One value per step; `None` is a gap.
    pub values: Vec<Option<f64>>,
    /// False when timestamps are relative to an arbitrary anchor (the weekday is then
    /// meaningless and only daily seasonality should be used).
    pub weekday_known: bool,
}

impl DemandSeries {
    /// Build a series from unordered `(time, value)` points by averaging them into
    /// `step_minutes` buckets (bucket = wall-clock time floored to the step). Duplicated
    /// timestamps, e.g. the repeated hour when daylight saving ends, are averaged together.
    pub fn from_points(
        name: impl Into<String>,
        points: &[(NaiveDateTime, f64)],
        step_minutes: u32,
        weekday_known: bool,
    ) -> Option<Self> {
        let step = i64::from(step_minutes.max(1));
        let mut buckets: BTreeMap<i64, (f64, u32)> = BTreeMap::new();
        for (t, v) in points {
            if !v.is_finite() {
                continue;
            }
            let b = minutes_of(*t).div_euclid(step);
            let e = buckets.entry(b).or_insert((0.0, 0));
            e.0 += v;
            e.1 += 1;
        }
        let (&first, _) = buckets.first_key_value()?;
        let (&last, _) = buckets.last_key_value()?;
        if last - first >= MAX_STEPS {
            return None;
        }
        let mut values = vec![None; usize::try_from(last - first + 1).ok()?];
        for (b, (sum, n)) in buckets {
            values[usize::try_from(b - first).ok()?] = Some(sum / f64::from(n));
        }
        Some(Self {
            name: name.into(),
            start: from_minutes(first * step),
            step_minutes: step_minutes.max(1),
            values,
            weekday_known,
        })
    }

    /// Number of grid steps (gaps included).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when the grid has no step at all.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Wall-clock time of grid index `i`.
    pub fn time_at(&self, i: usize) -> NaiveDateTime {
        self.start + Duration::minutes(i as i64 * i64::from(self.step_minutes))
    }

    /// Time just after the last step.
    pub fn end(&self) -> NaiveDateTime {
        self.time_at(self.len())
    }

    /// Grid index of `t` (floored), or `None` before the start.
    pub fn index_of(&self, t: NaiveDateTime) -> Option<usize> {
        let d = minutes_of(t) - minutes_of(self.start);
        if d < 0 {
            return None;
        }
        usize::try_from(d / i64::from(self.step_minutes)).ok()
    }

    /// Steps that carry a value.
    pub fn present(&self) -> usize {
        self.values.iter().filter(|v| v.is_some()).count()
    }

    /// `(time, value)` for every grid step.
    pub fn iter(&self) -> impl Iterator<Item = (NaiveDateTime, Option<f64>)> + '_ {
        self.values
            .iter()
            .enumerate()
            .map(|(i, v)| (self.time_at(i), *v))
    }

    /// The part strictly before `t` (used to hide a hold-out from model selection).
    pub fn before(&self, t: NaiveDateTime) -> Self {
        let n = self.index_of(t).unwrap_or(0).min(self.len());
        Self {
            values: self.values[..n].to_vec(),
            ..self.clone()
        }
    }

    /// Largest value present.
    pub fn max_value(&self) -> Option<f64> {
        self.values.iter().flatten().copied().reduce(f64::max)
    }
}

/// Minutes since 1970-01-01 00:00 of a naive (wall-clock) time.
pub fn minutes_of(t: NaiveDateTime) -> i64 {
    t.and_utc().timestamp().div_euclid(60)
}

/// Inverse of [`minutes_of`].
pub fn from_minutes(m: i64) -> NaiveDateTime {
    DateTime::from_timestamp(m.saturating_mul(60), 0)
        .unwrap_or_default()
        .naive_utc()
}

/// Parse a timestamp as written in the traces: `YYYY-MM-DD HH:MM[:SS]`, the same with a `T`,
/// or RFC 3339 (the offset is dropped: seasonality is slotted on the local wall clock).
pub fn parse_time(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.naive_local());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some(t);
        }
    }
    None
}

fn open(path: &Path) -> Result<std::fs::File, LoadError> {
    std::fs::File::open(path).map_err(|source| LoadError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Header-indexed CSV rows with errors that carry the source, line and column.
struct Table<R: Read> {
    path: String,
    reader: csv::Reader<R>,
    header: Vec<String>,
}

struct Row<'a> {
    path: &'a str,
    line: u64,
    record: csv::StringRecord,
}

impl<R: Read> Table<R> {
    fn new(reader: R, path: &str) -> Result<Self, LoadError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .from_reader(reader);
        let header = reader
            .headers()
            .map_err(|e| csv_error(path, &e))?
            .iter()
            .map(str::to_string)
            .collect::<Vec<_>>();
        if header.iter().all(String::is_empty) {
            return Err(LoadError::Empty {
                path: path.to_string(),
                message: "no header row".into(),
            });
        }
        Ok(Self {
            path: path.to_string(),
            reader,
            header,
        })
    }

    fn column(&self, name: &str) -> Result<usize, LoadError> {
        self.header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| LoadError::MissingColumn {
                path: self.path.clone(),
                column: name.to_string(),
                found: self.header.join(","),
            })
    }

    fn for_each(
        &mut self,
        mut f: impl FnMut(&Row<'_>) -> Result<(), LoadError>,
    ) -> Result<(), LoadError> {
        let mut record = csv::StringRecord::new();
        loop {
            match self.reader.read_record(&mut record) {
                Ok(false) => return Ok(()),
                Ok(true) => {
                    let line = record.position().map_or(0, csv::Position::line);
                    let row = Row {
                        path: &self.path,
                        line,
                        record: std::mem::take(&mut record),
                    };
                    f(&row)?;
                    record = row.record;
                }
                Err(e) => return Err(csv_error(&self.path, &e)),
            }
        }
    }
}

fn csv_error(path: &str, e: &csv::Error) -> LoadError {
    let line = e.position().map_or(0, csv::Position::line);
    LoadError::Row {
        path: path.to_string(),
        line,
        message: e.to_string(),
    }
}

impl Row<'_> {
    fn str(&self, idx: usize, column: &str) -> Result<&str, LoadError> {
        self.record
            .get(idx)
            .ok_or_else(|| self.err(column, "missing field"))
    }

    fn err(&self, column: &str, message: impl Into<String>) -> LoadError {
        LoadError::Field {
            path: self.path.to_string(),
            line: self.line,
            column: column.to_string(),
            message: message.into(),
        }
    }

    fn time(&self, idx: usize, column: &str) -> Result<NaiveDateTime, LoadError> {
        let s = self.str(idx, column)?;
        parse_time(s).ok_or_else(|| self.err(column, format!("not a timestamp: {s:?}")))
    }

    /// A finite number, or `None` for an empty field.
    fn opt_f64(&self, idx: usize, column: &str) -> Result<Option<f64>, LoadError> {
        let s = self.str(idx, column)?;
        if s.is_empty() {
            return Ok(None);
        }
        match s.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(self.err(column, format!("not a finite number: {s:?}"))),
        }
    }

    fn i64(&self, idx: usize, column: &str) -> Result<i64, LoadError> {
        let s = self.str(idx, column)?;
        s.parse::<i64>()
            .map_err(|_| self.err(column, format!("not an integer: {s:?}")))
    }
}

fn finish(
    path: &str,
    name: String,
    points: &[(NaiveDateTime, f64)],
    step: u32,
    weekday_known: bool,
) -> Result<DemandSeries, LoadError> {
    DemandSeries::from_points(name, points, step, weekday_known).ok_or_else(|| LoadError::Empty {
        path: path.to_string(),
        message: format!("no data rows, or a time span over {MAX_STEPS} steps"),
    })
}

/// Step (minutes) of the Philly series after resampling.
pub const PHILLY_STEP_MINUTES: u32 = 5;

/// Load the Philly node sequence (`time,active,total`, one row per minute on the US-Pacific
/// wall clock) and resample `column` to 5-minute means.
///
/// Wall-clock bucketing is deliberate: the seasonal model slots by local time, so the
/// repeated 01:00 hour at the end of daylight saving (2017-11-05) falls into the same buckets
/// and is averaged, and missing minutes (the 10-hour hole on 2017-10-25/26) become `None`.
pub fn load_philly(path: &Path, column: &str) -> Result<DemandSeries, LoadError> {
    parse_philly(open(path)?, &path.display().to_string(), column)
}

/// [`load_philly`] on any reader; `path` is only used in messages.
pub fn parse_philly<R: Read>(
    reader: R,
    path: &str,
    column: &str,
) -> Result<DemandSeries, LoadError> {
    let mut t = Table::new(reader, path)?;
    let ti = t.column("time")?;
    let vi = t.column(column)?;
    let mut points = Vec::new();
    t.for_each(|row| {
        let time = row.time(ti, "time")?;
        if let Some(v) = row.opt_f64(vi, column)? {
            points.push((time, v));
        }
        Ok(())
    })?;
    finish(
        path,
        format!("philly:{column}"),
        &points,
        PHILLY_STEP_MINUTES,
        true,
    )
}

/// Anchor for the relative seconds of the openb trace. Arbitrary: the trace has no dates, so
/// the weekday of any derived timestamp is meaningless (the series is flagged
/// `weekday_known = false` and only daily seasonality should be used).
pub fn openb_epoch() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .unwrap_or_default()
}

/// GPUs one openb pod requests: `num_gpu` whole GPUs, or a share `gpu_milli / 1000` when a
/// single GPU is requested with `gpu_milli < 1000` (a fractional, shared GPU).
pub fn openb_gpus(num_gpu: i64, gpu_milli: i64) -> f64 {
    if num_gpu == 1 && (0..1000).contains(&gpu_milli) {
        gpu_milli as f64 / 1000.0
    } else {
        num_gpu.max(0) as f64
    }
}

/// Load the Alibaba openb pod list and derive hourly GPU demand.
///
/// Each pod contributes its requested GPUs (see [`openb_gpus`]) over `[creation_time,
/// deletion_time)`; pods that stayed `Pending` were never scheduled, and their request counts
/// as (unmet) demand over the same interval. Each hourly value is the time-average of the
/// requested GPUs in that hour, so short pods count in proportion to their life.
///
/// The trace only lists pods still present at or after its earliest deletion (every pod is
/// deleted on day 115 or later), so the series starts at the first whole hour after the
/// earliest deletion and ends at the last whole hour before the latest creation: outside that
/// window demand is under-counted by construction.
pub fn load_openb(path: &Path) -> Result<DemandSeries, LoadError> {
    parse_openb(open(path)?, &path.display().to_string())
}

/// [`load_openb`] on any reader; `path` is only used in messages.
pub fn parse_openb<R: Read>(reader: R, path: &str) -> Result<DemandSeries, LoadError> {
    let mut t = Table::new(reader, path)?;
    let ng = t.column("num_gpu")?;
    let gm = t.column("gpu_milli")?;
    let ct = t.column("creation_time")?;
    let dt = t.column("deletion_time")?;
    // (creation s, deletion s, gpus)
    let mut pods: Vec<(i64, i64, f64)> = Vec::new();
    t.for_each(|row| {
        let num_gpu = row.i64(ng, "num_gpu")?;
        let milli = row.i64(gm, "gpu_milli")?;
        let c = row.i64(ct, "creation_time")?;
        let d = row.i64(dt, "deletion_time")?;
        if num_gpu < 0 {
            return Err(row.err("num_gpu", "negative GPU count"));
        }
        // Relative seconds; anything beyond ~100 years is a corrupt row, not a trace.
        const LIMIT: i64 = 100 * 366 * 86_400;
        if !(0..=LIMIT).contains(&c) {
            return Err(row.err("creation_time", "outside 0..=100 years"));
        }
        if !(0..=LIMIT).contains(&d) {
            return Err(row.err("deletion_time", "outside 0..=100 years"));
        }
        pods.push((c, d, openb_gpus(num_gpu, milli)));
        Ok(())
    })?;
    let empty = || LoadError::Empty {
        path: path.to_string(),
        message: "no pods".into(),
    };
    let first_deletion = pods.iter().map(|p| p.1).min().ok_or_else(empty)?;
    let last_creation = pods.iter().map(|p| p.0).max().ok_or_else(empty)?;
    const HOUR: i64 = 3600;
    let start = (first_deletion + HOUR - 1).div_euclid(HOUR);
    let end = last_creation.div_euclid(HOUR);
    if end <= start {
        return Err(LoadError::Empty {
            path: path.to_string(),
            message: "the dense window (first deletion .. last creation) is under one hour".into(),
        });
    }
    let hours = usize::try_from(end - start).map_err(|_| empty())?;
    let mut gpu_seconds = vec![0.0f64; hours];
    for &(c, d, gpus) in &pods {
        if gpus <= 0.0 || d <= c {
            continue;
        }
        let lo = c.max(start * HOUR);
        let hi = d.min(end * HOUR);
        let mut s = lo;
        while s < hi {
            let h = s.div_euclid(HOUR);
            let next = ((h + 1) * HOUR).min(hi);
            if let Some(slot) = usize::try_from(h - start)
                .ok()
                .and_then(|i| gpu_seconds.get_mut(i))
            {
                *slot += gpus * (next - s) as f64;
            }
            s = next;
        }
    }
    Ok(DemandSeries {
        name: "openb:gpu_demand".into(),
        start: openb_epoch() + Duration::hours(start),
        step_minutes: 60,
        values: gpu_seconds
            .into_iter()
            .map(|g| Some(g / HOUR as f64))
            .collect(),
        weekday_known: false,
    })
}

/// Load a generic `time,value` CSV. An empty value is a gap. The step is the most frequent
/// spacing between consecutive distinct timestamps; rows off that grid are floored onto it and
/// duplicates are averaged.
pub fn load_csv(path: &Path) -> Result<DemandSeries, LoadError> {
    parse_csv(open(path)?, &path.display().to_string())
}

/// [`load_csv`] on any reader; `path` is only used in messages.
pub fn parse_csv<R: Read>(reader: R, path: &str) -> Result<DemandSeries, LoadError> {
    let mut t = Table::new(reader, path)?;
    let ti = t.column("time")?;
    let vi = t.column("value")?;
    let mut times = Vec::new();
    let mut points = Vec::new();
    t.for_each(|row| {
        let time = row.time(ti, "time")?;
        times.push(minutes_of(time));
        if let Some(v) = row.opt_f64(vi, "value")? {
            points.push((time, v));
        }
        Ok(())
    })?;
    times.sort_unstable();
    times.dedup();
    let mut spacing: BTreeMap<i64, usize> = BTreeMap::new();
    for w in times.windows(2) {
        *spacing.entry(w[1] - w[0]).or_default() += 1;
    }
    let step = spacing
        .iter()
        .max_by_key(|(d, n)| (**n, -**d))
        .map_or(60, |(d, _)| *d);
    let step = u32::try_from(step).unwrap_or(60).clamp(1, 1440);
    finish(path, format!("csv:{path}"), &points, step, true)
}
