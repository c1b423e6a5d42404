//! GPU demand forecasting for the gpu-autoscaler.
//!
//! * [`series`]: demand series and the loaders for the Philly, Alibaba openb and generic CSV
//!   traces;
//! * [`model`]: the seasonal forecaster (weekday × time-of-day profile plus level
//!   correction), its prediction interval and its documented confidence, the persisted
//!   [`model::ModelState`], and the naive baselines;
//! * [`prewarm`]: the pure pre-warm decision the scaler calls;
//! * [`backtest`]: replay and scoring, plus model selection;
//! * [`report`]: CSV and SVG output of a backtest.
//!
//! Everything is pure except the explicit loaders and report writers: no wall clock is read,
//! `now` is always passed in.

pub mod backtest;
pub mod model;
pub mod prewarm;
pub mod report;
pub mod series;

pub use model::{Forecast, Forecaster, ModelConfig, ModelState, Predictor};
pub use prewarm::{PreWarmDecision, PreWarmPolicy, decide};
pub use series::DemandSeries;
