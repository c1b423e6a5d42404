//! The scaler: a pure, GPU-aware decision engine and the controller that executes its plans.

pub mod controller;
pub mod engine;
pub mod forecast;
pub mod provider;
