//! Glue between the predictor and the engine: demand in, [`ForecastView`] out.
//!
//! The predictor learns GPU *demand* (GPUs requested by running plus pending GPU pods) on a
//! local wall clock, because busy hours follow people's working days. The engine wants one
//! small, clock-free fact per plan: how many GPUs to have ready at `now + horizon + lead`,
//! how sure we are, and until when to keep them. Both the live controller and `simulate` go
//! through this type, so they pre-warm identically.

use chrono::{DateTime, Duration, FixedOffset, NaiveDateTime, Utc};
use gpu_autoscaler_api::policy::PredictiveSettings;
use gpu_autoscaler_predictor::Forecaster;
use gpu_autoscaler_predictor::model::{ModelConfig, ModelError, ModelState};

use crate::engine::{ForecastView, PodView, Snapshot};

/// Upper quantile of the demand forecast that pre-warming provisions for: 0.9 covers most
/// peaks without buying for every outlier.
pub const PRE_WARM_QUANTILE: f64 = 0.9;
/// Longest a pre-warm hold may last, whatever the forecast says.
pub const MAX_HOLD: Duration = Duration::hours(12);
/// Resolution at which the end of a predicted peak is searched.
const HOLD_STEP: Duration = Duration::minutes(15);

/// A demand forecaster for one policy, with its wall-clock offset.
#[derive(Debug, Clone)]
pub struct DemandForecaster {
    model: Forecaster,
    /// Offset of the cluster's business-hours time zone from UTC. A fixed offset: across a DST
    /// change the learned hours shift by one until a week of new history has been seen.
    offset: FixedOffset,
}

impl DemandForecaster {
    /// A fresh model observing every `step_minutes` with the policy's lookback and horizon.
    pub fn new(
        settings: &PredictiveSettings,
        step_minutes: u32,
        offset: FixedOffset,
    ) -> Result<Self, ModelError> {
        let config = ModelConfig {
            step_minutes,
            lookback_days: weekly_lookback(settings.lookback_days),
            horizon_minutes: settings.horizon_minutes,
            ..ModelConfig::default()
        };
        Ok(Self {
            model: Forecaster::new(config)?,
            offset,
        })
    }

    /// Resumes from a persisted state (ConfigMap / status), so a restart keeps what was learned.
    pub fn restore(state: ModelState, offset: FixedOffset) -> Result<Self, ModelError> {
        Ok(Self {
            model: Forecaster::restore(state)?,
            offset,
        })
    }

    /// The compact state to persist.
    pub fn state(&self) -> ModelState {
        self.model.snapshot()
    }

    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        t.with_timezone(&self.offset).naive_local()
    }

    fn utc(&self, t: NaiveDateTime) -> DateTime<Utc> {
        (t - Duration::seconds(i64::from(self.offset.local_minus_utc()))).and_utc()
    }

    /// Records the demand seen at `now`.
    pub fn observe(&mut self, now: DateTime<Utc>, demand_gpus: f64) {
        let t = self.local(now);
        self.model.observe(t, demand_gpus);
    }

    /// What the engine should know about the future at `now`, for a fleet that has
    /// `capacity_gpus` ready or on its way.
    ///
    /// The forecast looks at the whole window from now to `now + horizon + lead + step` and
    /// keeps its peak: `lead` is the measured boot plus GPU-ready time, so nodes are ready
    /// when demand arrives, and one observation `step` more covers the gap between two
    /// planning ticks (without it a 09:00 peak could be first seen a tick too late).
    pub fn view(
        &self,
        now: DateTime<Utc>,
        capacity_gpus: f64,
        settings: &PredictiveSettings,
        lead: Duration,
    ) -> ForecastView {
        let step = Duration::minutes(i64::from(self.model.config().step_minutes.max(1)));
        let reach = Duration::minutes(i64::from(settings.horizon_minutes))
            + lead.max(Duration::zero())
            + step;
        let local_now = self.local(now);
        let mut peak = self.model.forecast(local_now, step.min(reach));
        let mut h = step;
        while h < reach {
            h = (h + step).min(reach);
            let f = self.model.forecast(local_now, h);
            if f.quantile(PRE_WARM_QUANTILE) > peak.quantile(PRE_WARM_QUANTILE) {
                peak = f;
            }
        }
        let upper = peak.quantile(PRE_WARM_QUANTILE);
        // The hold ends when the predicted demand falls back under the pre-warm threshold of
        // what we pre-warm for; until then the engine must not scale the pre-warmed nodes down.
        let threshold_gpus = settings.pre_warm_threshold * upper.max(1.0);
        let hold_until = self
            .model
            .point_path(peak.at + HOLD_STEP, peak.at + MAX_HOLD, HOLD_STEP)
            .into_iter()
            .find(|(_, mean)| *mean < threshold_gpus)
            .map_or(peak.at + MAX_HOLD, |(t, _)| t);
        ForecastView {
            predicted_gpus_upper: upper,
            predicted_utilization: utilization(peak.mean, capacity_gpus),
            confidence: peak.confidence,
            target_time: self.utc(peak.at),
            hold_until: self.utc(hold_until),
            lead_time_seconds: u32::try_from(lead.num_seconds().max(0)).unwrap_or(u32::MAX),
        }
    }
}

/// Predicted utilization of a fleet; a fleet of zero GPUs facing demand is fully utilized.
fn utilization(demand: f64, capacity: f64) -> f64 {
    if capacity > 0.0 {
        (demand / capacity).max(0.0)
    } else if demand > 0.0 {
        1.0
    } else {
        0.0
    }
}

/// The predictor's weekly profile takes whole weeks of history.
fn weekly_lookback(days: u32) -> u32 {
    match days {
        0..=7 => 7,
        8..=14 => 14,
        15..=21 => 21,
        _ => 28,
    }
}

/// GPU demand in a snapshot: GPUs requested by running pods plus pending ones.
pub fn demand_gpus(pods: &[PodView]) -> f64 {
    pods.iter()
        .filter(|p| !p.is_terminal() && !p.is_node_bound_infrastructure())
        .map(|p| f64::from(p.gpus))
        .sum()
}

/// GPUs the fleet has ready or coming (registered nodes' capacity plus in-flight templates).
pub fn capacity_gpus(snapshot: &Snapshot) -> f64 {
    let registered: u32 = snapshot
        .nodes
        .iter()
        .filter(|n| n.interruption.is_none())
        .map(|n| n.gpus_capacity.max(n.gpus_allocatable))
        .sum();
    let in_flight: u32 = snapshot
        .pools
        .iter()
        .map(|p| {
            let registered = snapshot
                .nodes
                .iter()
                .filter(|n| n.pool.as_deref() == Some(p.spec.name.as_str()))
                .count() as u32;
            let per = p.templates.first().map_or(0, |t| t.gpus);
            p.target_size.saturating_sub(registered) * per
        })
        .sum();
    f64::from(registered + in_flight)
}
