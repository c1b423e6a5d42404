//! The seasonal demand forecaster, its error tracking, and the two baselines.
//!
//! # Design
//!
//! Demand is slotted on the **local wall clock** into bins of `bin_minutes` within a season
//! period (a week starting Monday 00:00, or a day). For every bin the model keeps the bin mean of
//! each of the last `K` periods (`K = lookback_days / 7` for a weekly season, `lookback_days`
//! for a daily one); the seasonal profile `S(t)` is the median (or mean) of those `K` values,
//! linearly interpolated between bin centres. Two point designs are available and were chosen
//! between by backtest (see `docs/predictor.md`):
//!
//! * [`Design::SeasonalLevel`]: `ŷ(t+h) = L(t) + w · (S(t+h) − S(t))`: the recent level `L`
//!   (exponentially smoothed demand, carried along the expected seasonal change between
//!   samples so that a repeating ramp is not lagged) moved by the seasonal change expected over the horizon.
//!   The blend weight `w` is fixed or, by default, learned online as the least-squares slope of
//!   the realised change `y(t+h) − L(t)` on the predicted seasonal change (exponentially
//!   forgotten over the error window, clamped to 0..1): close to 1 when the pattern repeats,
//!   close to 0 when the profile has no predictive value and the level alone is better.
//! * [`Design::HoltWinters`]: additive Holt-Winters with a damped trend and one seasonal term per
//!   bin.
//!
//! Wall-clock slotting makes the daily pattern line up across a DST change; the repeated hour
//! when DST ends arrives as out-of-order timestamps and is folded into the profile only, and the
//! skipped hour when DST starts is just a gap. Gaps of any length are tolerated: a bin with no
//! data in some period is left out of the median.
//!
//! # Interval and confidence
//!
//! On every observation the model also issues its own forecast at the configured horizon and
//! keeps it until the actual arrives ([`ErrorTracker`]). The last `error_window` errors give
//! the prediction interval: empirical quantiles (statrs order statistics) once 30 errors exist,
//! a Student-t (statrs) with the errors' RMS as scale before that.
//!
//! **Confidence** is the model's estimated probability that the actual demand lands within the
//! *hit tolerance* of the point forecast, `max(tolerance_fraction · |forecast|,
//! tolerance_floor)` (default ±10%, at least 1 GPU). It is the 25% quantile of the Beta
//! posterior (prior Beta(0.8, 3.2): worth 4 forecasts at a 20% hit-rate) of the hit-rate of the
//! recent horizon forecasts, counting `horizon / step` overlapping forecasts as one independent
//! sample, multiplied by the profile readiness (the fraction of the `K` lookback periods that
//! have data for the target bin). It is therefore low for short history (few samples, empty
//! profile), low for erratic demand (few hits), and high when the pattern repeats; the backtest
//! checks the meaning with a calibration table (hit-rate by confidence bucket).

use std::collections::VecDeque;

use chrono::{Duration, NaiveDateTime};
use serde::{Deserialize, Serialize};
use statrs::distribution::{Beta, ContinuousCDF, StudentsT};
use statrs::statistics::{Data, OrderStatistics};

use crate::series::{from_minutes, minutes_of};

/// Minutes from the naive epoch (a Thursday) to the first Monday, so weekly periods start on
/// Monday 00:00 wall clock.
const MONDAY_SHIFT: i64 = 4 * 1440;
/// Errors needed before the interval switches from Student-t to empirical quantiles.
const MIN_EMPIRICAL: usize = 30;
/// Beta prior of the hit-rate: mean 0.2, worth 4 independent forecasts.
const PRIOR_HITS: f64 = 0.8;
const PRIOR_MISSES: f64 = 3.2;
/// Confidence is this quantile of the hit-rate posterior (a conservative estimate).
const CONFIDENCE_QUANTILE: f64 = 0.25;
/// Largest error window accepted (keeps [`ModelState`] bounded).
pub const MAX_ERROR_WINDOW: u32 = 1024;

/// Season period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Season {
    /// Weekday × time-of-day (needs real dates).
    Weekly,
    /// Time-of-day only (for relative-time traces such as openb).
    Daily,
}

impl Season {
    /// Period length in minutes.
    pub fn period_minutes(self) -> i64 {
        match self {
            Season::Weekly => 7 * 1440,
            Season::Daily => 1440,
        }
    }
}

/// How the `K` past values of a bin are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Center {
    /// Robust to one odd period (an outage, a holiday).
    Median,
    /// Uses every period equally.
    Mean,
}

/// Point-forecast design.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Design {
    /// Recent level plus the weighted seasonal change over the horizon.
    SeasonalLevel {
        center: Center,
        /// Smoothing of the level, in (0, 1] (1 = last value).
        alpha: f64,
        /// Seasonal blend weight in [0, 1]; `None` learns it online.
        weight: Option<f64>,
    },
    /// Additive Holt-Winters with a damped trend.
    HoltWinters {
        alpha: f64,
        beta: f64,
        gamma: f64,
        phi: f64,
    },
}

/// Model configuration. All fields are validated by [`ModelConfig::validate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelConfig {
    /// Observation cadence in minutes (the scaler tick or the series step).
    pub step_minutes: u32,
    pub season: Season,
    /// History used by the seasonal profile: 7, 14, 21 or 28 for a weekly season, 1..=28 daily.
    pub lookback_days: u32,
    /// Profile resolution; divides a day, at least 15.
    pub bin_minutes: u32,
    /// Horizon of the self-evaluated forecasts behind the interval and the confidence.
    pub horizon_minutes: u32,
    pub design: Design,
    /// Nominal coverage of [`Forecast::lower`]..[`Forecast::upper`].
    pub interval_level: f64,
    /// Relative half-width of a "hit" for the confidence.
    pub tolerance_fraction: f64,
    /// Absolute minimum half-width of a "hit" (GPUs).
    pub tolerance_floor: f64,
    /// Recent horizon errors kept (at most [`MAX_ERROR_WINDOW`]).
    pub error_window: u32,
}

impl Default for ModelConfig {
    /// The configuration chosen by backtest on the Philly data before its hold-out
    /// (see `docs/predictor.md`).
    fn default() -> Self {
        Self {
            step_minutes: 5,
            season: Season::Weekly,
            lookback_days: 7,
            bin_minutes: 15,
            horizon_minutes: 30,
            design: Design::SeasonalLevel {
                center: Center::Median,
                alpha: 0.6,
                weight: None,
            },
            interval_level: 0.8,
            tolerance_fraction: 0.1,
            tolerance_floor: 1.0,
            error_window: 576,
        }
    }
}

/// Invalid configuration or a persisted state that does not fit its configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelError {
    #[error("invalid predictor config: {0}")]
    InvalidConfig(String),
    #[error("persisted predictor state is inconsistent: {0}")]
    CorruptState(String),
}

fn unit(name: &str, v: f64, lo_open: bool) -> Result<(), ModelError> {
    let ok = v.is_finite() && v <= 1.0 && if lo_open { v > 0.0 } else { v >= 0.0 };
    if ok {
        Ok(())
    } else {
        Err(ModelError::InvalidConfig(format!(
            "{name} = {v} is outside {}0, 1]",
            if lo_open { "(" } else { "[" }
        )))
    }
}

impl ModelConfig {
    /// Check ranges; every constructor calls this.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        if !(1..=1440).contains(&self.step_minutes) {
            return bad(format!("stepMinutes {} not in 1..=1440", self.step_minutes));
        }
        if self.bin_minutes < 15 || 1440 % self.bin_minutes != 0 {
            return bad(format!(
                "binMinutes {} must be >= 15 and divide 1440",
                self.bin_minutes
            ));
        }
        match self.season {
            Season::Weekly if !matches!(self.lookback_days, 7 | 14 | 21 | 28) => {
                return bad(format!(
                    "lookbackDays {} must be 7, 14, 21 or 28 for a weekly season",
                    self.lookback_days
                ));
            }
            Season::Daily if !(1..=28).contains(&self.lookback_days) => {
                return bad(format!(
                    "lookbackDays {} must be in 1..=28 for a daily season",
                    self.lookback_days
                ));
            }
            _ => {}
        }
        if self.horizon_minutes == 0 || i64::from(self.horizon_minutes) > 1440 {
            return bad(format!(
                "horizonMinutes {} not in 1..=1440",
                self.horizon_minutes
            ));
        }
        if !(self.interval_level > 0.0 && self.interval_level < 1.0) {
            return bad(format!(
                "intervalLevel {} not in (0, 1)",
                self.interval_level
            ));
        }
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !non_negative(self.tolerance_fraction)
            || !non_negative(self.tolerance_floor)
            || self.tolerance_fraction + self.tolerance_floor <= 0.0
        {
            return bad("hit tolerance must be non-negative and not both zero".into());
        }
        if !(1..=MAX_ERROR_WINDOW).contains(&self.error_window) {
            return bad(format!(
                "errorWindow {} not in 1..={MAX_ERROR_WINDOW}",
                self.error_window
            ));
        }
        match self.design {
            Design::SeasonalLevel { alpha, weight, .. } => {
                unit("alpha", alpha, true)?;
                if let Some(w) = weight {
                    unit("weight", w, false)?;
                }
            }
            Design::HoltWinters {
                alpha,
                beta,
                gamma,
                phi,
            } => {
                unit("alpha", alpha, true)?;
                unit("beta", beta, false)?;
                unit("gamma", gamma, false)?;
                unit("phi", phi, false)?;
            }
        }
        Ok(())
    }

    /// Number of past periods in the profile.
    pub fn periods(&self) -> usize {
        match self.season {
            Season::Weekly => (self.lookback_days / 7) as usize,
            Season::Daily => self.lookback_days as usize,
        }
    }

    fn bins_per_period(&self) -> i64 {
        self.season.period_minutes() / i64::from(self.bin_minutes)
    }

    fn hit_tolerance(&self, mean: f64) -> f64 {
        (self.tolerance_fraction * mean.abs()).max(self.tolerance_floor)
    }

    /// Upper bound of the JSON size of a [`ModelState`] with this configuration, assuming
    /// values below 100 000 (see the persistence test for the measured worst case).
    pub fn max_state_bytes(&self) -> usize {
        let bpp = self.bins_per_period() as usize;
        let profile = (self.periods() + 1) * bpp * 10 + bpp * 6;
        let hw = if matches!(self.design, Design::HoltWinters { .. }) {
            bpp * 10
        } else {
            0
        };
        let errors = self.error_window as usize * 11 + (self.horizon_minutes as usize + 1) * 24;
        2048 + profile + hw + errors
    }
}

mod compact {
    //! Serialise floats rounded to 0.01 and hit flags as a '0'/'1' string: the state then
    //! stays small enough for a ConfigMap.
    use std::collections::VecDeque;

    use serde::{Deserialize, Deserializer, Serializer};

    fn r(x: f32) -> f32 {
        (x * 100.0).round() / 100.0
    }

    pub fn opt<S: Serializer>(v: &[Option<f32>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.map(r)))
    }

    pub fn deque<S: Serializer>(v: &VecDeque<f32>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| r(*x)))
    }

    pub mod bits {
        use super::*;

        pub fn serialize<S: Serializer>(v: &VecDeque<bool>, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(
                &v.iter()
                    .map(|b| if *b { '1' } else { '0' })
                    .collect::<String>(),
            )
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<VecDeque<bool>, D::Error> {
            let s = String::deserialize(d)?;
            s.chars()
                .map(|c| match c {
                    '1' => Ok(true),
                    '0' => Ok(false),
                    _ => Err(serde::de::Error::custom("hit flags must be '0' or '1'")),
                })
                .collect()
        }
    }
}

/// One season period of the profile: the mean demand of every bin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Period {
    index: i64,
    #[serde(serialize_with = "compact::opt")]
    means: Vec<Option<f32>>,
    /// Sample counts, kept for the newest period only (older ones are closed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    counts: Vec<u16>,
}

/// Recent self-evaluated forecasts at the configured horizon: the source of the interval and of
/// the confidence. Also used by the baselines so they are judged by the same rules.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ErrorTracker {
    /// (target minute, forecast mean, level at issue, seasonal change) not yet resolved.
    pending: VecDeque<(i64, f32, f32, f32)>,
    /// actual − forecast, most recent last.
    #[serde(serialize_with = "compact::deque")]
    errors: VecDeque<f32>,
    /// Whether each of those forecasts was within the hit tolerance.
    #[serde(with = "compact::bits")]
    hits: VecDeque<bool>,
}

impl ErrorTracker {
    fn expect(&mut self, target: i64, mean: f64, level: f64, delta: f64) {
        if self.pending.back().is_some_and(|p| p.0 >= target) {
            return;
        }
        self.pending
            .push_back((target, mean as f32, level as f32, delta as f32));
    }

    /// Score the pending forecasts for `t`; `learn(level, delta, actual)` sees each one.
    fn resolve(
        &mut self,
        cfg: &ModelConfig,
        t: i64,
        actual: f64,
        learn: &mut dyn FnMut(f64, f64, f64),
    ) {
        let half = i64::from(cfg.step_minutes) / 2;
        while let Some(&(target, mean, level, delta)) = self.pending.front() {
            if target < t - half {
                // Its actual never arrived (a gap): nothing to learn from.
                self.pending.pop_front();
            } else if target <= t + half {
                self.pending.pop_front();
                learn(f64::from(level), f64::from(delta), actual);
                let err = actual - f64::from(mean);
                self.errors.push_back(err as f32);
                self.hits
                    .push_back(err.abs() <= cfg.hit_tolerance(f64::from(mean)));
                while self.errors.len() > cfg.error_window as usize {
                    self.errors.pop_front();
                }
                while self.hits.len() > cfg.error_window as usize {
                    self.hits.pop_front();
                }
            } else {
                break;
            }
        }
        // A forecast is never pending for longer than the horizon plus a step; anything else
        // is left over from a clock jump and is dropped to keep the state bounded.
        let limit = i64::from(cfg.horizon_minutes) + i64::from(cfg.step_minutes);
        while self.pending.len() > (limit / i64::from(cfg.step_minutes)).max(1) as usize + 1 {
            self.pending.pop_front();
        }
    }

    /// Number of resolved forecasts in the window.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// True before any forecast has been resolved.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Posterior-based hit-rate estimate (see the module docs).
    fn hit_confidence(&self, cfg: &ModelConfig) -> f64 {
        let n = self.hits.len();
        if n == 0 {
            return 0.0;
        }
        let hits = self.hits.iter().filter(|h| **h).count() as f64;
        let overlap = (f64::from(cfg.horizon_minutes) / f64::from(cfg.step_minutes)).max(1.0);
        let rate = hits / n as f64;
        let n_eff = n as f64 / overlap;
        Beta::new(
            PRIOR_HITS + rate * n_eff,
            PRIOR_MISSES + (1.0 - rate) * n_eff,
        )
        .map(|b| b.inverse_cdf(CONFIDENCE_QUANTILE))
        .unwrap_or(0.0)
        .clamp(0.0, 1.0)
    }

    /// Build a forecast around `mean`. `lead` is target − last observation (minutes); the error
    /// spread, measured at the configured horizon, is scaled by sqrt(lead / horizon).
    /// `readiness` is `None` when the state is stale (confidence 0).
    fn forecast(
        &self,
        cfg: &ModelConfig,
        target: i64,
        horizon: i64,
        lead: i64,
        mean: f64,
        readiness: Option<f64>,
    ) -> Forecast {
        let scale =
            (lead.max(i64::from(cfg.step_minutes)) as f64 / f64::from(cfg.horizon_minutes)).sqrt();
        let spread = if self.errors.len() >= MIN_EMPIRICAL {
            let mut v: Vec<f64> = self.errors.iter().map(|e| f64::from(*e) * scale).collect();
            v.sort_by(f64::total_cmp);
            Spread::Empirical(v)
        } else {
            let rms = if self.errors.len() >= 2 {
                (self
                    .errors
                    .iter()
                    .map(|e| f64::from(*e).powi(2))
                    .sum::<f64>()
                    / self.errors.len() as f64)
                    .sqrt()
            } else {
                // Nothing measured yet: a deliberately wide guess.
                0.25 * mean.abs() + cfg.hit_tolerance(mean)
            };
            Spread::StudentT {
                scale: (rms * scale).max(1e-6),
                df: (self.errors.len() as f64 - 1.0).max(1.0),
            }
        };
        let confidence = readiness.map_or(0.0, |r| self.hit_confidence(cfg) * r.clamp(0.0, 1.0));
        let p_lo = (1.0 - cfg.interval_level) / 2.0;
        let mean = mean.max(0.0);
        let mut f = Forecast {
            at: from_minutes(target),
            horizon: Duration::minutes(horizon),
            mean,
            lower: mean,
            upper: mean,
            level: cfg.interval_level,
            confidence,
            hit_tolerance: cfg.hit_tolerance(mean),
            errors_seen: self.errors.len(),
            spread,
        };
        f.lower = f.quantile(p_lo);
        f.upper = f.quantile(1.0 - p_lo);
        f
    }
}

/// Error distribution around the point forecast.
#[derive(Clone, PartialEq)]
enum Spread {
    /// Sorted recent errors, already scaled to the requested lead.
    Empirical(Vec<f64>),
    StudentT {
        scale: f64,
        df: f64,
    },
}

impl std::fmt::Debug for Spread {
    // The error sample is long; its size is what matters when reading a forecast.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Spread::Empirical(v) => write!(f, "Empirical(n={})", v.len()),
            Spread::StudentT { scale, df } => write!(f, "StudentT(scale={scale:.3}, df={df})"),
        }
    }
}

/// A demand forecast for one target time.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// Target wall-clock time.
    pub at: NaiveDateTime,
    /// `at - now`.
    pub horizon: Duration,
    /// Point forecast (never negative).
    pub mean: f64,
    /// Lower end of the `level` prediction interval.
    pub lower: f64,
    /// Upper end of the `level` prediction interval.
    pub upper: f64,
    /// Nominal coverage of `lower..upper`.
    pub level: f64,
    /// Estimated probability (0..1) that the actual lands within `hit_tolerance` of `mean`;
    /// see the module docs.
    pub confidence: f64,
    /// Half-width of a "hit" for this forecast.
    pub hit_tolerance: f64,
    /// Resolved forecasts behind the interval and the confidence.
    pub errors_seen: usize,
    spread: Spread,
}

impl Forecast {
    /// Demand quantile `p` (clamped to [0.001, 0.999]); never negative.
    pub fn quantile(&self, p: f64) -> f64 {
        let p = if p.is_finite() {
            p.clamp(0.001, 0.999)
        } else {
            0.5
        };
        let offset = match &self.spread {
            Spread::Empirical(v) => Data::new(v.clone()).quantile(p),
            Spread::StudentT { scale, df } => StudentsT::new(0.0, *scale, *df)
                .map(|d| d.inverse_cdf(p))
                .unwrap_or(0.0),
        };
        if offset.is_finite() {
            (self.mean + offset).max(0.0)
        } else {
            self.mean
        }
    }
}

/// Anything the backtest can replay.
pub trait Predictor {
    /// Short name for reports.
    fn name(&self) -> &str;
    /// Feed one observation (wall-clock time, demand).
    fn observe(&mut self, ts: NaiveDateTime, value: f64);
    /// Forecast demand at `now + horizon`.
    fn forecast(&self, now: NaiveDateTime, horizon: Duration) -> Forecast;
}

/// Serialisable, bounded model state: store it (e.g. in a ConfigMap) and restore it with
/// [`Forecaster::restore`] so that a restart does not reset learning. Its JSON size is at most
/// [`ModelConfig::max_state_bytes`]: about 15 KiB for the default configuration and under
/// 64 KiB for the largest allowed one (weekly, 28 days, 15-minute bins, Holt-Winters, 1024
/// errors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelState {
    /// Format version of this structure.
    pub version: u32,
    pub config: ModelConfig,
    last_minute: Option<i64>,
    last_value: Option<f64>,
    level: Option<f64>,
    trend: f64,
    /// Exponentially forgotten sums for the learned seasonal weight.
    w_xy: f64,
    w_xx: f64,
    #[serde(default, serialize_with = "compact::opt")]
    hw_season: Vec<Option<f32>>,
    periods: VecDeque<Period>,
    tracker: ErrorTracker,
}

/// Current [`ModelState::version`].
pub const STATE_VERSION: u32 = 1;

impl ModelState {
    /// Compact JSON, suitable for a ConfigMap value.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Parse JSON written by [`ModelState::to_json`].
    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}

/// The demand forecaster: pure, incremental, no clock of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecaster {
    s: ModelState,
}

impl Forecaster {
    /// A forecaster with no history.
    pub fn new(config: ModelConfig) -> Result<Self, ModelError> {
        config.validate()?;
        let bpp = config.bins_per_period() as usize;
        let hw_season = if matches!(config.design, Design::HoltWinters { .. }) {
            vec![None; bpp]
        } else {
            Vec::new()
        };
        Ok(Self {
            s: ModelState {
                version: STATE_VERSION,
                config,
                last_minute: None,
                last_value: None,
                level: None,
                trend: 0.0,
                w_xy: 0.0,
                w_xx: 0.0,
                hw_season,
                periods: VecDeque::new(),
                tracker: ErrorTracker::default(),
            },
        })
    }

    /// Restore from a persisted state, checking that it fits its configuration.
    pub fn restore(state: ModelState) -> Result<Self, ModelError> {
        let c = &state.config;
        c.validate()?;
        let corrupt = |m: &str| Err(ModelError::CorruptState(m.to_string()));
        if state.version != STATE_VERSION {
            return corrupt("unknown version");
        }
        let bpp = c.bins_per_period() as usize;
        if state.periods.len() > c.periods() + 1 {
            return corrupt("more periods than the lookback keeps");
        }
        if state
            .periods
            .iter()
            .any(|p| p.means.len() != bpp || !(p.counts.is_empty() || p.counts.len() == bpp))
        {
            return corrupt("profile period has the wrong number of bins");
        }
        if state
            .periods
            .iter()
            .zip(state.periods.iter().skip(1))
            .any(|(a, b)| a.index >= b.index)
        {
            return corrupt("profile periods out of order");
        }
        let want_hw = matches!(c.design, Design::HoltWinters { .. });
        if want_hw && state.hw_season.len() != bpp || !want_hw && !state.hw_season.is_empty() {
            return corrupt("seasonal terms do not match the design");
        }
        let t = &state.tracker;
        if t.errors.len() > c.error_window as usize
            || t.hits.len() != t.errors.len()
            || t.pending.len() > (c.horizon_minutes / c.step_minutes) as usize + 2
        {
            return corrupt("error window larger than configured");
        }
        let finite = |x: Option<f64>| x.is_none_or(f64::is_finite);
        let non_negative = |x: f64| x.is_finite() && x >= 0.0;
        if !finite(state.level)
            || !state.trend.is_finite()
            || !state.w_xy.is_finite()
            || !non_negative(state.w_xx)
        {
            return corrupt("non-finite level");
        }
        Ok(Self { s: state })
    }

    /// A copy of the state to persist.
    pub fn snapshot(&self) -> ModelState {
        self.s.clone()
    }

    /// The configuration in use.
    pub fn config(&self) -> &ModelConfig {
        &self.s.config
    }

    /// Time of the latest accepted observation.
    pub fn last_observation(&self) -> Option<NaiveDateTime> {
        self.s.last_minute.map(from_minutes)
    }

    fn shifted(t: i64) -> i64 {
        t - MONDAY_SHIFT
    }

    fn bin_of(&self, t: i64) -> (i64, usize) {
        let c = &self.s.config;
        let g = Self::shifted(t).div_euclid(i64::from(c.bin_minutes));
        let bpp = c.bins_per_period();
        (g.div_euclid(bpp), g.rem_euclid(bpp) as usize)
    }

    fn profile_add(&mut self, t: i64, v: f64) {
        let (q, b) = self.bin_of(t);
        let keep = self.s.config.periods() + 1;
        let bpp = self.s.config.bins_per_period() as usize;
        let periods = &mut self.s.periods;
        if periods.back().is_none_or(|p| p.index < q) {
            if let Some(p) = periods.back_mut() {
                p.counts = Vec::new();
            }
            periods.push_back(Period {
                index: q,
                means: vec![None; bpp],
                counts: vec![0; bpp],
            });
            while periods
                .front()
                .is_some_and(|p| p.index < q - keep as i64 + 1)
            {
                periods.pop_front();
            }
        }
        // Only the newest period is open; a late sample for a closed one is dropped.
        if let Some(p) = periods
            .back_mut()
            .filter(|p| p.index == q && !p.counts.is_empty())
        {
            let n = p.counts[b].saturating_add(1);
            let m = p.means[b].map_or(v, f64::from);
            p.means[b] = Some((m + (v - m) / f64::from(n)) as f32);
            p.counts[b] = n;
        }
    }

    /// Seasonal value of global bin `g` from the `K` periods before its own, and how many of
    /// them had data.
    fn season_bin(&self, g: i64) -> (Option<f64>, usize) {
        let c = &self.s.config;
        let bpp = c.bins_per_period();
        let (q, b) = (g.div_euclid(bpp), g.rem_euclid(bpp) as usize);
        let k = c.periods() as i64;
        let mut vals = [0.0f64; 28];
        let mut n = 0;
        for p in self
            .s
            .periods
            .iter()
            .filter(|p| p.index >= q - k && p.index < q)
            .take(vals.len())
        {
            if let Some(v) = p.means[b] {
                vals[n] = f64::from(v);
                n += 1;
            }
        }
        if n == 0 {
            return (None, 0);
        }
        let vals = &mut vals[..n];
        let center = match c.design {
            Design::SeasonalLevel {
                center: Center::Mean,
                ..
            } => vals.iter().sum::<f64>() / n as f64,
            _ => {
                vals.sort_by(f64::total_cmp);
                if n % 2 == 1 {
                    vals[n / 2]
                } else {
                    (vals[n / 2 - 1] + vals[n / 2]) / 2.0
                }
            }
        };
        (Some(center), n)
    }

    /// Interpolated seasonal profile at minute `t` and the profile depth there.
    fn season_at(&self, t: i64) -> (Option<f64>, usize) {
        let bin = f64::from(self.s.config.bin_minutes);
        let x = Self::shifted(t) as f64 / bin - 0.5;
        let g0 = x.floor();
        let f = x - g0;
        let g0 = g0 as i64;
        let (a, da) = self.season_bin(g0);
        let (b, db) = self.season_bin(g0 + 1);
        let v = match (a, b) {
            (Some(a), Some(b)) => Some(a + f * (b - a)),
            (Some(a), None) => Some(a),
            (None, b) => b,
        };
        (v, da.max(db))
    }

    fn hw_season_at(&self, t: i64) -> Option<f64> {
        let c = &self.s.config;
        let bpp = c.bins_per_period();
        let x = Self::shifted(t) as f64 / f64::from(c.bin_minutes) - 0.5;
        let g0 = x.floor();
        let f = x - g0;
        let g0 = g0 as i64;
        let get = |g: i64| {
            self.s
                .hw_season
                .get(g.rem_euclid(bpp) as usize)
                .copied()
                .flatten()
                .map(f64::from)
        };
        match (get(g0), get(g0 + 1)) {
            (Some(a), Some(b)) => Some(a + f * (b - a)),
            (a, b) => a.or(b),
        }
    }

    /// Seasonal blend weight in use.
    pub fn seasonal_weight(&self) -> f64 {
        match self.s.config.design {
            Design::SeasonalLevel {
                weight: Some(w), ..
            } => w,
            // Ridge of 1 GPU² keeps the slope near 0 until seasonal changes have been seen.
            _ => (self.s.w_xy / (self.s.w_xx + 1.0)).clamp(0.0, 1.0),
        }
    }

    /// Seasonal change from the latest observation to `target` (0 without a profile).
    fn seasonal_delta(&self, target: i64) -> f64 {
        let Some(last) = self.s.last_minute else {
            return 0.0;
        };
        match (self.season_at(target).0, self.season_at(last).0) {
            (Some(a), Some(b)) => a - b,
            _ => 0.0,
        }
    }

    /// Point forecast for minute `target` from the current state, with the level and the
    /// seasonal change it was built from.
    fn point_parts(&self, target: i64) -> (f64, f64, f64) {
        let s = &self.s;
        let fallback = s.level.or(s.last_value).unwrap_or(0.0);
        match s.config.design {
            Design::SeasonalLevel { .. } => {
                let delta = self.seasonal_delta(target);
                (fallback + self.seasonal_weight() * delta, fallback, delta)
            }
            Design::HoltWinters { .. } => (self.point(target), fallback, 0.0),
        }
    }

    /// Point forecast for minute `target` from the current state.
    fn point(&self, target: i64) -> f64 {
        let s = &self.s;
        let step = i64::from(s.config.step_minutes);
        let last = s.last_minute.unwrap_or(target);
        let k = ((target - last) as f64 / step as f64).max(0.0);
        let fallback = s.level.or(s.last_value).unwrap_or(0.0);
        match s.config.design {
            Design::SeasonalLevel { .. } => self.point_parts(target).0,
            Design::HoltWinters { phi, .. } => {
                let Some(level) = s.level else {
                    return fallback;
                };
                // Sum of phi^1..phi^k for a damped trend.
                let damp = if (phi - 1.0).abs() < 1e-12 {
                    k
                } else {
                    phi * (1.0 - phi.powf(k)) / (1.0 - phi)
                };
                level + damp * s.trend + self.hw_season_at(target).unwrap_or(0.0)
            }
        }
    }

    fn update_design(&mut self, t: i64, v: f64, gap_steps: f64) {
        let design = self.s.config.design;
        match design {
            Design::SeasonalLevel { alpha, .. } => {
                // Carry the level along the expected seasonal change since the previous
                // sample before smoothing, so a repeating ramp is not lagged by the smoothing.
                let drift = self.seasonal_weight() * self.seasonal_delta(t);
                let s = &mut self.s;
                s.level = Some(
                    s.level
                        .map_or(v, |l| alpha * v + (1.0 - alpha) * (l + drift)),
                );
            }
            Design::HoltWinters {
                alpha,
                beta,
                gamma,
                phi,
            } => {
                let (_, b) = self.bin_of(t);
                let s = &mut self.s;
                let old = s.hw_season.get(b).copied().flatten().map(f64::from);
                let seasonal = old.unwrap_or(0.0);
                match s.level {
                    None => {
                        s.level = Some(v - seasonal);
                        s.trend = 0.0;
                    }
                    Some(prev) => {
                        let base = prev + phi * s.trend * gap_steps.max(1.0);
                        let level = alpha * (v - seasonal) + (1.0 - alpha) * base;
                        s.trend = beta * (level - prev) / gap_steps.max(1.0)
                            + (1.0 - beta) * phi * s.trend;
                        s.level = Some(level);
                    }
                }
                let level = s.level.unwrap_or(v);
                let new = match old {
                    Some(o) => gamma * (v - level) + (1.0 - gamma) * o,
                    None => v - level,
                };
                if let Some(slot) = s.hw_season.get_mut(b) {
                    *slot = Some(new as f32);
                }
            }
        }
    }

    /// Feed one observation at wall-clock time `ts`. Non-finite values are ignored. A timestamp
    /// not after the previous one (the repeated hour when DST ends, a duplicate row) only
    /// updates the seasonal profile.
    pub fn observe(&mut self, ts: NaiveDateTime, value: f64) {
        if !value.is_finite() {
            return;
        }
        let t = minutes_of(ts);
        self.profile_add(t, value);
        let last = self.s.last_minute;
        if last.is_some_and(|l| t <= l) {
            return;
        }
        let cfg = self.s.config.clone();
        let forget = 1.0 - 1.0 / f64::from(cfg.error_window);
        let (mut xy, mut xx) = (self.s.w_xy, self.s.w_xx);
        self.s
            .tracker
            .resolve(&cfg, t, value, &mut |level, delta, actual| {
                xy = forget * xy + delta * (actual - level);
                xx = forget * xx + delta * delta;
            });
        (self.s.w_xy, self.s.w_xx) = (xy, xx);
        let step = f64::from(cfg.step_minutes);
        let gap_steps = last.map_or(1.0, |l| (t - l) as f64 / step);
        self.update_design(t, value, gap_steps);
        self.s.last_minute = Some(t);
        self.s.last_value = Some(value);
        let target = t + i64::from(cfg.horizon_minutes);
        let (mean, level, delta) = self.point_parts(target);
        self.s.tracker.expect(target, mean, level, delta);
    }

    /// Forecast demand at `now + horizon`. Confidence is 0 when the latest observation is more
    /// than twice the configured horizon older than `now` (the level is then unknown).
    pub fn forecast(&self, now: NaiveDateTime, horizon: Duration) -> Forecast {
        let cfg = &self.s.config;
        let now_m = minutes_of(now);
        let h = horizon.num_minutes().max(0);
        let target = now_m + h;
        let last = self.s.last_minute.unwrap_or(now_m);
        let stale = self.s.last_minute.is_none()
            || now_m - last > 2 * i64::from(cfg.horizon_minutes.max(cfg.step_minutes));
        let (_, depth) = self.season_at(target);
        let readiness = depth as f64 / cfg.periods() as f64;
        self.s.tracker.forecast(
            cfg,
            target,
            h,
            target - last,
            self.point(target),
            (!stale).then_some(readiness),
        )
    }

    /// Forecasts at `from, from + step, ...` up to `to` (inclusive), all issued at `now`.
    pub fn forecast_path(
        &self,
        now: NaiveDateTime,
        from: NaiveDateTime,
        to: NaiveDateTime,
        step: Duration,
    ) -> Vec<Forecast> {
        let step = step.max(Duration::minutes(1));
        let mut out = Vec::new();
        let mut t = from;
        while t <= to && out.len() < 10_000 {
            out.push(self.forecast(now, t - now));
            t += step;
        }
        out
    }

    /// Point forecasts only (no interval) at `from, from + step, ...` up to `to`, from the
    /// current state: the cheap look-ahead the pre-warm rule scans for the end of a peak.
    pub fn point_path(
        &self,
        from: NaiveDateTime,
        to: NaiveDateTime,
        step: Duration,
    ) -> Vec<(NaiveDateTime, f64)> {
        let step = step.max(Duration::minutes(1));
        let mut out = Vec::new();
        let mut t = from;
        while t <= to && out.len() < 10_000 {
            out.push((t, self.point(minutes_of(t)).max(0.0)));
            t += step;
        }
        out
    }

    /// Self-evaluation so far (interval and confidence source).
    pub fn tracker(&self) -> &ErrorTracker {
        &self.s.tracker
    }
}

impl Predictor for Forecaster {
    fn name(&self) -> &str {
        "model"
    }
    fn observe(&mut self, ts: NaiveDateTime, value: f64) {
        Forecaster::observe(self, ts, value);
    }
    fn forecast(&self, now: NaiveDateTime, horizon: Duration) -> Forecast {
        Forecaster::forecast(self, now, horizon)
    }
}

/// Which naive rule a [`Baseline`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineKind {
    /// The value at the same wall-clock slot one season period earlier (last value when that
    /// slot is missing).
    SeasonalNaive,
    /// The latest observed value.
    LastValue,
}

/// A naive forecaster with the same interval and confidence machinery as the model, so the
/// backtest compares like with like.
#[derive(Debug, Clone)]
pub struct Baseline {
    kind: BaselineKind,
    cfg: ModelConfig,
    /// (minute, value) for the last period plus a horizon.
    history: VecDeque<(i64, f64)>,
    tracker: ErrorTracker,
}

impl Baseline {
    /// A baseline judged with `cfg`'s horizon, step, interval level and tolerance.
    pub fn new(kind: BaselineKind, cfg: ModelConfig) -> Result<Self, ModelError> {
        cfg.validate()?;
        Ok(Self {
            kind,
            cfg,
            history: VecDeque::new(),
            tracker: ErrorTracker::default(),
        })
    }

    fn point(&self, target: i64) -> f64 {
        let last = self.history.back().map_or(0.0, |(_, v)| *v);
        match self.kind {
            BaselineKind::LastValue => last,
            BaselineKind::SeasonalNaive => {
                let want = target - self.cfg.season.period_minutes();
                let half = i64::from(self.cfg.step_minutes) / 2;
                let i = self.history.partition_point(|(t, _)| *t < want - half);
                match self.history.get(i) {
                    Some((t, v)) if *t <= want + half => *v,
                    _ => last,
                }
            }
        }
    }
}

impl Predictor for Baseline {
    fn name(&self) -> &str {
        match self.kind {
            BaselineKind::SeasonalNaive => "seasonal-naive",
            BaselineKind::LastValue => "last-value",
        }
    }

    fn observe(&mut self, ts: NaiveDateTime, value: f64) {
        let t = minutes_of(ts);
        if !value.is_finite() || self.history.back().is_some_and(|(l, _)| t <= *l) {
            return;
        }
        self.tracker.resolve(&self.cfg, t, value, &mut |_, _, _| {});
        self.history.push_back((t, value));
        let keep = self.cfg.season.period_minutes() + 2 * i64::from(self.cfg.horizon_minutes);
        while self.history.front().is_some_and(|(f, _)| *f < t - keep) {
            self.history.pop_front();
        }
        let target = t + i64::from(self.cfg.horizon_minutes);
        let mean = self.point(target);
        self.tracker.expect(target, mean, mean, 0.0);
    }

    fn forecast(&self, now: NaiveDateTime, horizon: Duration) -> Forecast {
        let now_m = minutes_of(now);
        let h = horizon.num_minutes().max(0);
        let target = now_m + h;
        let last = self.history.back().map_or(now_m, |(t, _)| *t);
        let stale = self.history.is_empty()
            || now_m - last > 2 * i64::from(self.cfg.horizon_minutes.max(self.cfg.step_minutes));
        self.tracker.forecast(
            &self.cfg,
            target,
            h,
            target - last,
            self.point(target),
            (!stale).then_some(1.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> NaiveDateTime {
        chrono::NaiveDate::from_ymd_opt(2024, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .unwrap_or_default()
    }

    #[test]
    fn config_validation_rejects_bad_values() {
        let ok = ModelConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            ModelConfig {
                lookback_days: 10,
                ..ok.clone()
            },
            ModelConfig {
                bin_minutes: 7,
                ..ok.clone()
            },
            ModelConfig {
                bin_minutes: 50,
                ..ok.clone()
            },
            ModelConfig {
                interval_level: 1.0,
                ..ok.clone()
            },
            ModelConfig {
                error_window: MAX_ERROR_WINDOW + 1,
                ..ok.clone()
            },
            ModelConfig {
                step_minutes: 0,
                ..ok.clone()
            },
            ModelConfig {
                design: Design::SeasonalLevel {
                    center: Center::Median,
                    alpha: 0.0,
                    weight: None,
                },
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?} accepted");
        }
        let daily = ModelConfig {
            season: Season::Daily,
            lookback_days: 3,
            ..ok
        };
        assert!(daily.validate().is_ok());
    }

    #[test]
    fn weekly_bins_start_on_monday() {
        let m = Forecaster::new(ModelConfig::default()).expect("config");
        // 2024-01-01 is a Monday: first bin of a period.
        let (_, b) = m.bin_of(minutes_of(t0()));
        assert_eq!(b, 0);
        let (_, b) = m.bin_of(minutes_of(t0() - Duration::minutes(1)));
        assert_eq!(b, 7 * 96 - 1);
    }

    #[test]
    fn baselines_follow_their_rules() {
        let cfg = ModelConfig::default();
        let mut sn = Baseline::new(BaselineKind::SeasonalNaive, cfg.clone()).expect("cfg");
        let mut lv = Baseline::new(BaselineKind::LastValue, cfg).expect("cfg");
        for i in 0..(7 * 288 + 10) {
            let t = t0() + Duration::minutes(5 * i);
            sn.observe(t, i as f64);
            lv.observe(t, i as f64);
        }
        let now = t0() + Duration::minutes(5 * (7 * 288 + 9));
        let target_index = 7 * 288 + 9 + 6;
        assert_eq!(
            lv.forecast(now, Duration::minutes(30)).mean,
            (7 * 288 + 9) as f64
        );
        assert_eq!(
            sn.forecast(now, Duration::minutes(30)).mean,
            (target_index - 7 * 288) as f64
        );
    }

    proptest! {
        #[test]
        fn forecasts_are_finite_ordered_and_bounded(
            steps in proptest::collection::vec((1i64..40, -50.0f64..5000.0), 1..400),
            horizon in 0i64..600,
        ) {
            let mut m = Forecaster::new(ModelConfig::default()).expect("config");
            let mut t = t0();
            for (gap, v) in &steps {
                t += Duration::minutes(5 * gap);
                m.observe(t, *v);
            }
            let f = m.forecast(t, Duration::minutes(horizon));
            prop_assert!(f.mean.is_finite() && f.mean >= 0.0);
            prop_assert!(f.lower <= f.upper);
            prop_assert!((0.0..=1.0).contains(&f.confidence));
            let qs: Vec<f64> = [0.05, 0.25, 0.5, 0.75, 0.95].iter().map(|p| f.quantile(*p)).collect();
            prop_assert!(qs.windows(2).all(|w| w[0] <= w[1] + 1e-9), "{:?}", qs);
            // The persisted state restores and stays within its bound.
            let json = m.snapshot().to_json().expect("serialise");
            prop_assert!(json.len() <= m.config().max_state_bytes());
            let back = Forecaster::restore(ModelState::from_json(&json).expect("parse"));
            prop_assert!(back.is_ok(), "{:?}", back.err());
        }

        #[test]
        fn out_of_order_samples_never_move_time_backwards(
            values in proptest::collection::vec(0.0f64..100.0, 2..100),
        ) {
            let mut m = Forecaster::new(ModelConfig::default()).expect("config");
            let mut latest = t0();
            for (i, v) in values.iter().enumerate() {
                // Every third sample repeats an hour earlier (like the DST fall-back hour).
                let t = if i % 3 == 2 { latest - Duration::hours(1) } else { t0() + Duration::minutes(5 * i as i64) };
                m.observe(t, *v);
                latest = latest.max(t);
                prop_assert_eq!(m.last_observation(), Some(latest));
            }
        }
    }
}
