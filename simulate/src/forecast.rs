//! The predictor behind the engine's forecast input, through the scaler's own glue
//! ([`gpu_autoscaler_scaler::forecast::DemandForecaster`]), so that `simulate` pre-warms
//! exactly as the live controller does. Used when the policy sets `enablePredictiveScaling`.
//!
//! Cadence: the model observes the mean demand of each `stepMinutes` window at the window's
//! end. The forecast view is recomputed when a new observation arrives or the fleet's GPU
//! capacity changes, and reused for the plans in between (the forecast only moves with new
//! observations; between them only `now` advances by less than one step).

use chrono::{DateTime, Duration, FixedOffset, Utc};
use gpu_autoscaler_api::policy::PredictiveSettings;
use gpu_autoscaler_predictor::model::ModelConfig;
use gpu_autoscaler_scaler::engine::{ForecastView, Snapshot};
use gpu_autoscaler_scaler::forecast::{DemandForecaster, capacity_gpus, demand_gpus};

/// Demand observations and forecasts for one simulated policy.
pub struct PredictiveFeed {
    model: DemandForecaster,
    settings: PredictiveSettings,
    lead: Duration,
    step: Duration,
    next_observation: Option<DateTime<Utc>>,
    /// (sum, count) of demand samples in the current step.
    acc: (f64, u32),
    observations: u64,
    cached: Option<(u64, u64, ForecastView)>,
}

impl PredictiveFeed {
    /// `lead_time_s` is the simulated boot + GPU-ready delay (what the live scaler measures).
    /// The trace has no time zone: the model's wall clock is UTC of the virtual epoch.
    pub fn new(settings: &PredictiveSettings, lead_time_s: i64) -> Result<Self, String> {
        let step_minutes = ModelConfig::default().step_minutes;
        let utc = FixedOffset::east_opt(0).ok_or("UTC offset")?;
        let model =
            DemandForecaster::new(settings, step_minutes, utc).map_err(|e| e.to_string())?;
        Ok(Self {
            model,
            settings: settings.clone(),
            lead: Duration::seconds(lead_time_s),
            step: Duration::minutes(i64::from(step_minutes.max(1))),
            next_observation: None,
            acc: (0.0, 0),
            observations: 0,
            cached: None,
        })
    }

    /// Observes the snapshot's demand and returns the forecast for it.
    pub fn view(&mut self, snap: &Snapshot) -> ForecastView {
        let now = snap.now;
        self.acc.0 += demand_gpus(&snap.pods);
        self.acc.1 += 1;
        let due = *self.next_observation.get_or_insert(now);
        if now >= due {
            self.model
                .observe(now, self.acc.0 / f64::from(self.acc.1.max(1)));
            self.acc = (0.0, 0);
            self.next_observation = Some(due + self.step);
            self.observations += 1;
        }
        let capacity = capacity_gpus(snap);
        match &self.cached {
            Some((obs, cap, view)) if *obs == self.observations && *cap == capacity.to_bits() => {
                view.clone()
            }
            _ => {
                let view = self.model.view(now, capacity, &self.settings, self.lead);
                self.cached = Some((self.observations, capacity.to_bits(), view.clone()));
                view
            }
        }
    }
}
