//! Replay a demand series through the model and the baselines and score them.
//!
//! Protocol: every predictor observes the whole series in time order (learning online, as it
//! would in a cluster); at each grid step whose target `t + horizon` falls in the evaluation
//! window (the last `holdout_days`), each predictor forecasts `t + horizon` from what it has
//! seen up to `t`. Model selection ([`select`]) only ever sees the series before the hold-out.

use std::fmt;

use chrono::{Duration, NaiveDateTime};

use crate::model::{Baseline, BaselineKind, Center, Design, ModelConfig, ModelError, Predictor};
use crate::series::DemandSeries;

/// What to replay and how to score it.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestOptions {
    /// Model configuration; its `horizon_minutes` is the scored horizon and its
    /// `step_minutes` must equal the series step.
    pub model: ModelConfig,
    /// Length of the evaluation window at the end of the series.
    pub holdout_days: u32,
    /// Capacity for the pre-warm utilization; defaults to the series maximum.
    pub capacity: Option<f64>,
    /// Pre-warm rule thresholds (see [`crate::prewarm::PreWarmPolicy`]).
    pub confidence_threshold: f64,
    pub pre_warm_threshold: f64,
}

impl BacktestOptions {
    /// Defaults for a series: the model's step follows the series, and a series without real
    /// dates gets a daily season.
    pub fn for_series(series: &DemandSeries) -> Self {
        let mut model = ModelConfig {
            step_minutes: series.step_minutes,
            ..ModelConfig::default()
        };
        // The horizon must land on the grid: 30 minutes, or one step of a coarser series.
        let step = series.step_minutes.max(1);
        model.horizon_minutes = model.horizon_minutes.div_ceil(step) * step;
        // Profile bins no finer than the samples (an hourly series gets hourly bins).
        if series.step_minutes > model.bin_minutes {
            model.bin_minutes = [30, 60, 120, 180, 240, 360, 720, 1440]
                .into_iter()
                .find(|b| *b >= series.step_minutes)
                .unwrap_or(1440);
        }
        if !series.weekday_known {
            model.season = crate::model::Season::Daily;
            model.lookback_days = 7;
            // Hourly data: keep about a week of errors rather than two days' worth of steps.
            model.error_window = 168;
        }
        Self {
            model,
            holdout_days: 14,
            capacity: None,
            confidence_threshold: 0.7,
            pre_warm_threshold: 0.7,
        }
    }
}

/// Why a backtest could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BacktestError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("series is too short: {0}")]
    TooShort(String),
    #[error("model step ({model} min) differs from the series step ({series} min)")]
    StepMismatch { model: u32, series: u32 },
    #[error("horizon {horizon} min is not a positive multiple of the series step ({step} min)")]
    Horizon { horizon: u32, step: u32 },
}

/// One predictor's forecast for one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodPoint {
    pub mean: f64,
    pub lower: f64,
    pub upper: f64,
    pub confidence: f64,
    pub hit_tolerance: f64,
}

/// All predictors' forecasts for one target.
#[derive(Debug, Clone, PartialEq)]
pub struct PointRecord {
    pub origin: NaiveDateTime,
    pub target: NaiveDateTime,
    pub actual: Option<f64>,
    /// Latest value observed at the origin.
    pub last_observed: Option<f64>,
    /// In the order of [`BacktestReport::methods`].
    pub methods: Vec<MethodPoint>,
}

/// Hit-rate of the forecasts whose confidence fell in `[lo, hi)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationBucket {
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
    pub mean_confidence: f64,
    pub hit_rate: f64,
}

/// Pre-warm confusion counts: "fired" = the rule would pre-warm for the target, "positive" =
/// the actual utilization at the target reached the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PreWarmStats {
    pub fired: usize,
    pub positives: usize,
    pub true_positives: usize,
}

impl PreWarmStats {
    /// TP / fired: when it pre-warmed, did the demand arrive?
    pub fn precision(&self) -> Option<f64> {
        (self.fired > 0).then(|| self.true_positives as f64 / self.fired as f64)
    }
    /// TP / positives: of the high-demand targets, how many were pre-warmed for?
    pub fn recall(&self) -> Option<f64> {
        (self.positives > 0).then(|| self.true_positives as f64 / self.positives as f64)
    }
}

/// Scores of one predictor over the evaluation window.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodReport {
    pub name: String,
    /// Targets with an actual value.
    pub n: usize,
    pub mae: f64,
    /// Mean absolute percentage error over targets with actual >= 1 (zeros are outages).
    pub mape: f64,
    /// Fraction of actuals inside the interval.
    pub coverage: f64,
    /// Mean interval width.
    pub mean_width: f64,
    pub calibration: Vec<CalibrationBucket>,
    /// All targets.
    pub pre_warm: PreWarmStats,
    /// Only targets whose origin was still below the threshold (where pre-warming matters).
    pub pre_warm_onset: PreWarmStats,
}

/// Result of [`run`].
#[derive(Debug, Clone, PartialEq)]
pub struct BacktestReport {
    pub series_name: String,
    pub eval_from: NaiveDateTime,
    pub eval_to: NaiveDateTime,
    pub horizon_minutes: u32,
    pub nominal_coverage: f64,
    pub capacity: f64,
    pub pre_warm_threshold: f64,
    pub confidence_threshold: f64,
    pub model: ModelConfig,
    pub methods: Vec<MethodReport>,
    pub points: Vec<PointRecord>,
}

const BUCKETS: [f64; 7] = [0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0001];

fn score(
    name: &str,
    k: usize,
    points: &[PointRecord],
    capacity: f64,
    opts: &BacktestOptions,
) -> MethodReport {
    let (mut n, mut abs, mut ape, mut ape_n, mut cover, mut width) = (0, 0.0, 0.0, 0, 0, 0.0);
    let mut buckets: Vec<(usize, f64, usize)> = vec![(0, 0.0, 0); BUCKETS.len() - 1];
    let mut all = PreWarmStats::default();
    let mut onset = PreWarmStats::default();
    for p in points {
        let Some(actual) = p.actual else { continue };
        let m = p.methods[k];
        n += 1;
        let err = (actual - m.mean).abs();
        abs += err;
        if actual >= 1.0 {
            ape += err / actual;
            ape_n += 1;
        }
        if (m.lower..=m.upper).contains(&actual) {
            cover += 1;
        }
        width += m.upper - m.lower;
        if let Some(b) = BUCKETS
            .windows(2)
            .position(|w| (w[0]..w[1]).contains(&m.confidence))
        {
            buckets[b].0 += 1;
            buckets[b].1 += m.confidence;
            buckets[b].2 += usize::from(err <= m.hit_tolerance);
        }
        let fired = m.confidence >= opts.confidence_threshold
            && m.mean / capacity >= opts.pre_warm_threshold;
        let positive = actual / capacity >= opts.pre_warm_threshold;
        let below = p
            .last_observed
            .is_some_and(|v| v / capacity < opts.pre_warm_threshold);
        for (s, counted) in [(&mut all, true), (&mut onset, below)] {
            if counted {
                s.fired += usize::from(fired);
                s.positives += usize::from(positive);
                s.true_positives += usize::from(fired && positive);
            }
        }
    }
    let div = |a: f64, b: usize| if b == 0 { f64::NAN } else { a / b as f64 };
    MethodReport {
        name: name.to_string(),
        n,
        mae: div(abs, n),
        mape: div(ape, ape_n),
        coverage: div(cover as f64, n),
        mean_width: div(width, n),
        calibration: buckets
            .iter()
            .zip(BUCKETS.windows(2))
            .map(|((c, s, h), w)| CalibrationBucket {
                lo: w[0],
                hi: w[1].min(1.0),
                n: *c,
                mean_confidence: div(*s, *c),
                hit_rate: div(*h as f64, *c),
            })
            .collect(),
        pre_warm: all,
        pre_warm_onset: onset,
    }
}

fn replay(
    series: &DemandSeries,
    opts: &BacktestOptions,
    predictors: &mut [Box<dyn Predictor>],
) -> Result<(NaiveDateTime, Vec<PointRecord>), BacktestError> {
    if opts.model.step_minutes != series.step_minutes {
        return Err(BacktestError::StepMismatch {
            model: opts.model.step_minutes,
            series: series.step_minutes,
        });
    }
    if !opts
        .model
        .horizon_minutes
        .is_multiple_of(series.step_minutes)
    {
        return Err(BacktestError::Horizon {
            horizon: opts.model.horizon_minutes,
            step: series.step_minutes,
        });
    }
    let horizon = Duration::minutes(i64::from(opts.model.horizon_minutes));
    let eval_from = series.end() - Duration::days(i64::from(opts.holdout_days));
    if opts.holdout_days == 0 || eval_from <= series.start + horizon {
        return Err(BacktestError::TooShort(format!(
            "{} covers {} to {}, not more than the {}-day hold-out",
            series.name,
            series.start,
            series.end(),
            opts.holdout_days
        )));
    }
    let mut points = Vec::new();
    let mut last = None;
    for (t, v) in series.iter() {
        if let Some(v) = v {
            for p in predictors.iter_mut() {
                p.observe(t, v);
            }
            last = Some(v);
        }
        let target = t + horizon;
        if target < eval_from || target >= series.end() {
            continue;
        }
        let actual = series
            .index_of(target)
            .and_then(|j| series.values.get(j).copied().flatten());
        let methods = predictors
            .iter()
            .map(|p| {
                let f = p.forecast(t, horizon);
                MethodPoint {
                    mean: f.mean,
                    lower: f.lower,
                    upper: f.upper,
                    confidence: f.confidence,
                    hit_tolerance: f.hit_tolerance,
                }
            })
            .collect();
        points.push(PointRecord {
            origin: t,
            target,
            actual,
            last_observed: last,
            methods,
        });
    }
    Ok((eval_from, points))
}

/// Replay `series` through the model, the seasonal-naive and the last-value baselines.
pub fn run(series: &DemandSeries, opts: &BacktestOptions) -> Result<BacktestReport, BacktestError> {
    let mut predictors: Vec<Box<dyn Predictor>> = vec![
        Box::new(crate::model::Forecaster::new(opts.model.clone())?),
        Box::new(Baseline::new(
            BaselineKind::SeasonalNaive,
            opts.model.clone(),
        )?),
        Box::new(Baseline::new(BaselineKind::LastValue, opts.model.clone())?),
    ];
    let capacity = opts
        .capacity
        .filter(|c| c.is_finite() && *c > 0.0)
        .or(series.max_value().filter(|m| *m > 0.0))
        .unwrap_or(1.0);
    let (eval_from, points) = replay(series, opts, &mut predictors)?;
    let methods = predictors
        .iter()
        .enumerate()
        .map(|(k, p)| score(p.name(), k, &points, capacity, opts))
        .collect();
    Ok(BacktestReport {
        series_name: series.name.clone(),
        eval_from,
        eval_to: series.end(),
        horizon_minutes: opts.model.horizon_minutes,
        nominal_coverage: opts.model.interval_level,
        capacity,
        pre_warm_threshold: opts.pre_warm_threshold,
        confidence_threshold: opts.confidence_threshold,
        model: opts.model.clone(),
        methods,
        points,
    })
}

/// Candidate designs around `base` for [`select`]: seasonal median/mean plus level correction
/// with several smoothing and persistence settings, and damped Holt-Winters, each at 15-, 30- and
/// 60-minute bins and over 7, 14 and 28 days where the season allows.
pub fn candidates(base: &ModelConfig) -> Vec<(String, ModelConfig)> {
    let lookbacks: &[u32] = match base.season {
        crate::model::Season::Weekly => &[7, 14, 28],
        crate::model::Season::Daily => &[3, 7, 14],
    };
    let mut designs: Vec<(String, Design, bool)> = Vec::new();
    for center in [Center::Median, Center::Mean] {
        for alpha in [0.6, 1.0] {
            for weight in [None, Some(1.0)] {
                let w = weight.map_or("learned".to_string(), |w: f64| w.to_string());
                designs.push((
                    format!("seasonal-{center:?}-a{alpha}-w{w}").to_lowercase(),
                    Design::SeasonalLevel {
                        center,
                        alpha,
                        weight,
                    },
                    true,
                ));
            }
        }
    }
    for (alpha, gamma) in [(0.5, 0.05), (0.8, 0.1), (1.0, 0.1)] {
        designs.push((
            format!("holt-winters-a{alpha}-g{gamma}"),
            Design::HoltWinters {
                alpha,
                beta: 0.01,
                gamma,
                phi: 0.9,
            },
            // Holt-Winters keeps its own seasonal terms; the lookback only affects readiness.
            false,
        ));
    }
    let mut out = Vec::new();
    for (dname, design, uses_lookback) in &designs {
        for bin in [15u32, 30, 60] {
            let lbs = if *uses_lookback {
                lookbacks
            } else {
                &lookbacks[..1]
            };
            for &lookback in lbs {
                let cfg = ModelConfig {
                    design: *design,
                    bin_minutes: bin,
                    lookback_days: lookback,
                    ..base.clone()
                };
                if cfg.validate().is_ok() {
                    out.push((format!("{dname}-bin{bin}-lb{lookback}"), cfg));
                }
            }
        }
    }
    out
}

/// Score `candidates` on the `window_days` just before the hold-out (the hold-out itself is cut
/// off first, so selection never sees it). Returns the model's report per candidate plus the two
/// baselines (named `baseline:...`), best MAE first.
pub fn select(
    series: &DemandSeries,
    opts: &BacktestOptions,
    candidates: &[(String, ModelConfig)],
    window_days: u32,
) -> Result<Vec<(String, MethodReport)>, BacktestError> {
    let train = series.before(series.end() - Duration::days(i64::from(opts.holdout_days)));
    let capacity = opts
        .capacity
        .or(train.max_value())
        .filter(|c| c.is_finite() && *c > 0.0)
        .unwrap_or(1.0);
    let mut out = Vec::new();
    for (name, cfg) in candidates {
        let o = BacktestOptions {
            model: cfg.clone(),
            holdout_days: window_days,
            ..opts.clone()
        };
        let mut p: Vec<Box<dyn Predictor>> =
            vec![Box::new(crate::model::Forecaster::new(cfg.clone())?)];
        let (_, points) = replay(&train, &o, &mut p)?;
        out.push((name.clone(), score(name, 0, &points, capacity, &o)));
    }
    // The baselines on the same window, for reference.
    let o = BacktestOptions {
        holdout_days: window_days,
        ..opts.clone()
    };
    let mut baselines: Vec<Box<dyn Predictor>> = vec![
        Box::new(Baseline::new(
            BaselineKind::SeasonalNaive,
            opts.model.clone(),
        )?),
        Box::new(Baseline::new(BaselineKind::LastValue, opts.model.clone())?),
    ];
    let (_, points) = replay(&train, &o, &mut baselines)?;
    for (k, p) in baselines.iter().enumerate() {
        let name = format!("baseline:{}", p.name());
        out.push((name.clone(), score(&name, k, &points, capacity, &o)));
    }
    out.sort_by(|a, b| a.1.mae.total_cmp(&b.1.mae));
    Ok(out)
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{:.1}%", 100.0 * v))
}

impl fmt::Display for BacktestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "series {}: evaluated targets {} .. {}, horizon {} min, capacity {:.1}, nominal interval {:.0}%",
            self.series_name,
            self.eval_from,
            self.eval_to,
            self.horizon_minutes,
            self.capacity,
            100.0 * self.nominal_coverage
        )?;
        writeln!(
            f,
            "{:<16} {:>6} {:>9} {:>8} {:>9} {:>9} {:>10} {:>9} {:>10} {:>9}",
            "method",
            "n",
            "MAE",
            "MAPE",
            "coverage",
            "width",
            "pw-prec",
            "pw-recall",
            "onset-prec",
            "onset-rec"
        )?;
        for m in &self.methods {
            writeln!(
                f,
                "{:<16} {:>6} {:>9.3} {:>7.2}% {:>8.1}% {:>9.2} {:>10} {:>9} {:>10} {:>9}",
                m.name,
                m.n,
                m.mae,
                100.0 * m.mape,
                100.0 * m.coverage,
                m.mean_width,
                pct(m.pre_warm.precision()),
                pct(m.pre_warm.recall()),
                pct(m.pre_warm_onset.precision()),
                pct(m.pre_warm_onset.recall()),
            )?;
        }
        if let (Some(model), Some(naive)) = (self.methods.first(), self.methods.get(1)) {
            writeln!(
                f,
                "model MAE vs seasonal-naive: {:+.1}%",
                100.0 * (model.mae / naive.mae - 1.0)
            )?;
        }
        writeln!(
            f,
            "confidence calibration (hit = |actual - forecast| <= max({:.0}% of forecast, {} GPU)):",
            100.0 * self.model.tolerance_fraction,
            self.model.tolerance_floor
        )?;
        for m in &self.methods {
            write!(f, "  {:<16}", m.name)?;
            for b in &m.calibration {
                if b.n > 0 {
                    write!(
                        f,
                        " [{:.1},{:.1}) n={} conf={:.2} hit={:.2};",
                        b.lo, b.hi, b.n, b.mean_confidence, b.hit_rate
                    )?;
                }
            }
            writeln!(f)?;
        }
        writeln!(
            f,
            "pre-warm rule: confidence >= {} and predicted demand / capacity >= {}; onset = origin still below the threshold",
            self.confidence_threshold, self.pre_warm_threshold
        )
    }
}
