//! Pre-warm decision: pure, the scaler calls it once per pool and tick.

use chrono::{Duration, NaiveDateTime};
use serde::{Deserialize, Serialize};

use crate::model::{Forecast, Forecaster};

/// Thresholds and timing of the pre-warm rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreWarmPolicy {
    /// Minimum forecast confidence (policy `confidenceThreshold`, default 0.7).
    pub confidence_threshold: f64,
    /// Minimum predicted utilization = predicted demand / capacity (policy
    /// `preWarmThreshold`, default 0.7).
    pub pre_warm_threshold: f64,
    /// Quantile of the demand forecast the pre-warm target covers (default 0.9, the upper end
    /// of the default 80% interval).
    pub upper_quantile: f64,
    /// Forecast horizon (policy `horizonMinutes`, default 30 minutes).
    pub horizon: Duration,
    /// Node boot plus GPU-ready time, as measured by the scaler.
    pub lead_time: Duration,
    /// How far ahead to look for the end of the predicted peak.
    pub max_hold: Duration,
    /// Resolution of that look-ahead.
    pub hold_step: Duration,
}

impl Default for PreWarmPolicy {
    fn default() -> Self {
        Self {
            confidence_threshold: 0.7,
            pre_warm_threshold: 0.7,
            upper_quantile: 0.9,
            horizon: Duration::minutes(30),
            lead_time: Duration::zero(),
            max_hold: Duration::hours(12),
            hold_step: Duration::minutes(15),
        }
    }
}

/// Why the rule did (not) fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PreWarmReason {
    /// Confident forecast of high utilization.
    PredictedPeak,
    /// Confidence below the threshold.
    LowConfidence,
    /// Predicted utilization below the threshold.
    BelowThreshold,
    /// Capacity is zero or not finite, so utilization is undefined.
    NoCapacity,
}

/// Outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreWarmDecision {
    pub pre_warm: bool,
    pub reason: PreWarmReason,
    /// Time the decision looks at: now + horizon + lead time.
    pub at: NaiveDateTime,
    /// GPUs to have ready by `at` (the forecast's `upper_quantile`); meaningful when
    /// `pre_warm`, reported for observability otherwise. The scaler still clamps it to the
    /// pool limits and tier shares.
    pub target_gpus: f64,
    pub predicted_demand: f64,
    pub predicted_utilization: f64,
    pub confidence: f64,
    /// Keep pre-warmed nodes at least until this time: the first look-ahead point where the
    /// predicted utilization falls back below the threshold (the end of the predicted peak),
    /// or `at + max_hold` if it does not within the look-ahead. `None` unless `pre_warm`.
    pub hold_until: Option<NaiveDateTime>,
}

/// `t + d`, saturating at `t` for an out-of-range policy duration instead of panicking.
fn after(t: NaiveDateTime, d: Duration) -> NaiveDateTime {
    t.checked_add_signed(d).unwrap_or(t)
}

/// The rule on precomputed forecasts: `at` is the forecast at now + horizon + lead, `later`
/// the predicted demand (time, point forecast) after it in time order, the look-ahead for the
/// end of the peak.
pub fn decide_from(
    at: &Forecast,
    later: &[(NaiveDateTime, f64)],
    capacity_gpus: f64,
    policy: &PreWarmPolicy,
) -> PreWarmDecision {
    let usable = capacity_gpus.is_finite() && capacity_gpus > 0.0;
    let utilization = if usable { at.mean / capacity_gpus } else { 0.0 };
    let reason = if !usable {
        PreWarmReason::NoCapacity
    } else if at.confidence < policy.confidence_threshold {
        PreWarmReason::LowConfidence
    } else if utilization < policy.pre_warm_threshold {
        PreWarmReason::BelowThreshold
    } else {
        PreWarmReason::PredictedPeak
    };
    let pre_warm = reason == PreWarmReason::PredictedPeak;
    let hold_until = pre_warm.then(|| {
        later
            .iter()
            .find(|(_, mean)| mean / capacity_gpus < policy.pre_warm_threshold)
            .map_or(after(at.at, policy.max_hold), |(t, _)| *t)
    });
    PreWarmDecision {
        pre_warm,
        reason,
        at: at.at,
        target_gpus: at.quantile(policy.upper_quantile),
        predicted_demand: at.mean,
        predicted_utilization: utilization,
        confidence: at.confidence,
        hold_until,
    }
}

/// The pre-warm rule for one pool at `now` with `capacity_gpus` currently provisioned.
pub fn decide(
    model: &Forecaster,
    now: NaiveDateTime,
    capacity_gpus: f64,
    policy: &PreWarmPolicy,
) -> PreWarmDecision {
    let lead = policy
        .horizon
        .checked_add(&policy.lead_time.max(Duration::zero()))
        .unwrap_or(policy.horizon);
    let at = model.forecast(now, lead);
    let later = if capacity_gpus > 0.0
        && at.confidence >= policy.confidence_threshold
        && at.mean / capacity_gpus >= policy.pre_warm_threshold
    {
        model.point_path(
            after(at.at, policy.hold_step),
            after(at.at, policy.max_hold),
            policy.hold_step,
        )
    } else {
        Vec::new()
    };
    decide_from(&at, &later, capacity_gpus, policy)
}
