//! Synthetic series with known structure.

mod common;

use chrono::Duration;
use common::{Lcg, at, grid, weekly};
use gpu_autoscaler_predictor::model::{Forecaster, ModelConfig, ModelState, Season};
use gpu_autoscaler_predictor::prewarm::{self, PreWarmPolicy, PreWarmReason};

fn h30() -> Duration {
    Duration::minutes(30)
}

#[test]
fn weekly_pattern_is_learned_within_two_weeks_with_high_confidence() {
    let start = at(2024, 1, 1, 0, 0); // a Monday
    let mut m = Forecaster::new(ModelConfig::default()).expect("config");
    let mut rng = Lcg::new(1);
    let mut early_conf = None;
    for t in grid(start, 14) {
        m.observe(t, weekly(t) + rng.normal());
        if t == at(2024, 1, 4, 8, 0) {
            early_conf = Some(m.forecast(t, h30()).confidence);
        }
    }
    // Four days in, no week of profile exists yet: confidence must stay low.
    let early = early_conf.expect("checked on day 4");
    assert!(early < 0.3, "confidence after 4 days = {early}");
    // End of week 2 (Sunday 23:55); forecast across Monday morning's ramp.
    let mut m2 = m.clone();
    let mut t = at(2024, 1, 15, 0, 0);
    let mut rng = Lcg::new(2);
    while t <= at(2024, 1, 15, 8, 30) {
        m2.observe(t, weekly(t) + rng.normal());
        t += Duration::minutes(5);
    }
    let now = at(2024, 1, 15, 8, 30);
    let f = m2.forecast(now, h30());
    let truth = weekly(now + h30());
    assert!(f.confidence > 0.7, "confidence {}", f.confidence);
    assert!(
        (f.mean - truth).abs() < 0.05 * truth,
        "forecast {} vs truth {truth}",
        f.mean
    );
    assert!(f.lower < f.mean && f.mean < f.upper, "{f:?}");
}

#[test]
fn white_noise_keeps_confidence_low() {
    let start = at(2024, 1, 1, 0, 0);
    let mut m = Forecaster::new(ModelConfig::default()).expect("config");
    let mut rng = Lcg::new(7);
    let mut max_conf: f64 = 0.0;
    for (i, t) in grid(start, 28).enumerate() {
        m.observe(t, (100.0 + 30.0 * rng.normal()).max(0.0));
        if i > 14 * 288 && i % 12 == 0 {
            max_conf = max_conf.max(m.forecast(t, h30()).confidence);
        }
    }
    assert!(max_conf < 0.5, "white noise reached confidence {max_conf}");
    // The interval is honest about the noise: roughly the 80% band of N(100, 30) or wider.
    let f = m.forecast(at(2024, 1, 28, 23, 55), h30());
    assert!(f.upper - f.lower > 60.0, "interval too narrow: {f:?}");
}

#[test]
fn gaps_are_tolerated_and_confidence_recovers() {
    let start = at(2024, 1, 1, 0, 0);
    let mut m = Forecaster::new(ModelConfig::default()).expect("config");
    let hole = at(2024, 1, 10, 2, 0)..at(2024, 1, 11, 12, 0); // 34 hours missing
    let mut during_gap = None;
    for t in grid(start, 21) {
        if hole.contains(&t) {
            if t == at(2024, 1, 10, 20, 0) {
                during_gap = Some(m.forecast(t, h30()));
            }
            continue;
        }
        m.observe(t, weekly(t));
    }
    let g = during_gap.expect("forecast inside the hole");
    assert_eq!(g.confidence, 0.0, "stale level must not be trusted");
    assert!(g.mean.is_finite() && g.lower <= g.upper);
    // Week 3 Monday after a week with a hole: bins still come from the complete weeks.
    let now = at(2024, 1, 21, 23, 55);
    let f = m.forecast(now, Duration::hours(9) + h30());
    let truth = weekly(now + Duration::hours(9) + h30());
    assert!(
        (f.mean - truth).abs() < 0.1 * truth,
        "{} vs {truth}",
        f.mean
    );
    let f = m.forecast(now, h30());
    assert!(
        f.confidence > 0.7,
        "confidence after recovery {}",
        f.confidence
    );
}

/// US-Pacific wall clock for a UTC instant in autumn 2017 (DST ends 2017-11-05 09:00 UTC).
fn pacific_fall(utc: chrono::NaiveDateTime) -> chrono::NaiveDateTime {
    if utc < at(2017, 11, 5, 9, 0) {
        utc - Duration::hours(7)
    } else {
        utc - Duration::hours(8)
    }
}

/// US-Pacific wall clock in spring 2018 (DST starts 2018-03-11 10:00 UTC).
fn pacific_spring(utc: chrono::NaiveDateTime) -> chrono::NaiveDateTime {
    if utc < at(2018, 3, 11, 10, 0) {
        utc - Duration::hours(8)
    } else {
        utc - Duration::hours(7)
    }
}

fn dst_run(
    to_local: fn(chrono::NaiveDateTime) -> chrono::NaiveDateTime,
    utc_start: chrono::NaiveDateTime,
    check: chrono::NaiveDateTime,
) {
    // Demand follows office hours on the local wall clock; samples arrive every 5 real
    // minutes and are stamped with local time, so one hour repeats (fall) or is skipped
    // (spring).
    let mut m = Forecaster::new(ModelConfig::default()).expect("config");
    let mut u = utc_start;
    let mut checked = false;
    while to_local(u) <= check {
        let local = to_local(u);
        m.observe(local, weekly(local));
        if local == check {
            let f = m.forecast(local, h30());
            let truth = weekly(local + h30());
            assert!(
                (f.mean - truth).abs() < 0.05 * truth,
                "after DST: {} vs {truth}",
                f.mean
            );
            assert!(f.confidence > 0.7, "confidence {}", f.confidence);
            checked = true;
        }
        u += Duration::minutes(5);
    }
    assert!(checked);
}

#[test]
fn dst_fall_back_keeps_the_wall_clock_pattern() {
    // Two weeks before the change, then the Monday after it at 08:30 (ramp to 09:00).
    dst_run(pacific_fall, at(2017, 10, 23, 7, 0), at(2017, 11, 6, 8, 30));
}

#[test]
fn dst_spring_forward_keeps_the_wall_clock_pattern() {
    dst_run(
        pacific_spring,
        at(2018, 2, 26, 8, 0),
        at(2018, 3, 12, 8, 30),
    );
}

#[test]
fn level_shift_is_followed_within_hours() {
    let start = at(2024, 1, 1, 0, 0);
    let mut m = Forecaster::new(ModelConfig::default()).expect("config");
    let shift_at = at(2024, 1, 22, 0, 0);
    let truth = |t| weekly(t) + if t >= shift_at { 40.0 } else { 0.0 };
    let now = shift_at + Duration::hours(10); // Monday 10:00, well inside the new regime
    for t in grid(start, 22) {
        if t > now {
            break;
        }
        m.observe(t, truth(t));
    }
    let f = m.forecast(now, h30());
    let want = truth(now + h30());
    assert!(
        (f.mean - want).abs() < 0.05 * want,
        "after a +40 shift: forecast {} vs {want}",
        f.mean
    );
}

#[test]
fn daily_season_works_on_relative_time() {
    let cfg = ModelConfig {
        step_minutes: 60,
        bin_minutes: 60,
        season: Season::Daily,
        lookback_days: 7,
        error_window: 168,
        ..ModelConfig::default()
    };
    let mut m = Forecaster::new(cfg).expect("config");
    let start = at(2000, 1, 1, 0, 0);
    let f = |h: i64| {
        let hour = h.rem_euclid(24) as f64;
        50.0 + 30.0 * (std::f64::consts::TAU * (hour - 14.0) / 24.0).cos()
    };
    for h in 0..24 * 10 {
        m.observe(start + Duration::hours(h), f(h));
    }
    let now = start + Duration::hours(24 * 10 - 1);
    let fc = m.forecast(now, Duration::hours(1));
    let truth = f(24 * 10);
    assert!(
        (fc.mean - truth).abs() < 0.05 * truth,
        "{} vs {truth}",
        fc.mean
    );
    assert!(fc.confidence > 0.7, "confidence {}", fc.confidence);
}

fn trained_weekly() -> (Forecaster, chrono::NaiveDateTime) {
    let start = at(2024, 1, 1, 0, 0);
    let mut m = Forecaster::new(ModelConfig::default()).expect("config");
    let mut rng = Lcg::new(3);
    let end = at(2024, 1, 15, 8, 0);
    for t in grid(start, 15) {
        if t > end {
            break;
        }
        m.observe(t, weekly(t) + 0.5 * rng.normal());
    }
    (m, end)
}

#[test]
fn persistence_round_trip_keeps_learning() {
    let (m, now) = trained_weekly();
    let json = m.snapshot().to_json().expect("serialise");
    assert!(
        json.len() < 24 * 1024,
        "default state is {} bytes",
        json.len()
    );
    assert!(json.len() <= m.config().max_state_bytes());
    let restored =
        Forecaster::restore(ModelState::from_json(&json).expect("parse")).expect("restore");
    let a = m.forecast(now, h30());
    let b = restored.forecast(now, h30());
    assert!((a.mean - b.mean).abs() < 0.05, "{} vs {}", a.mean, b.mean);
    assert!((a.upper - b.upper).abs() < 0.1);
    assert!((a.confidence - b.confidence).abs() < 0.01);
    assert!(b.confidence > 0.7, "learning survived the restart");
    // A fresh model, by contrast, knows nothing.
    let fresh = Forecaster::new(ModelConfig::default()).expect("config");
    assert_eq!(fresh.forecast(now, h30()).confidence, 0.0);
}

#[test]
fn largest_state_stays_under_the_documented_bound() {
    use gpu_autoscaler_predictor::model::{Design, MAX_ERROR_WINDOW};
    let cfg = ModelConfig {
        lookback_days: 28,
        bin_minutes: 15,
        error_window: MAX_ERROR_WINDOW,
        design: Design::HoltWinters {
            alpha: 0.5,
            beta: 0.01,
            gamma: 0.05,
            phi: 0.9,
        },
        ..ModelConfig::default()
    };
    let mut m = Forecaster::new(cfg).expect("config");
    let mut rng = Lcg::new(11);
    let start = at(2024, 1, 1, 0, 0);
    for t in grid(start, 40) {
        // Large, non-round values make every number as long as it gets.
        m.observe(t, 12_345.678 + 5_000.0 * rng.uniform());
    }
    let json = m.snapshot().to_json().expect("serialise");
    assert!(
        json.len() < 64 * 1024,
        "worst-case state is {} bytes",
        json.len()
    );
    assert!(json.len() <= m.config().max_state_bytes());
}

#[test]
fn corrupt_state_is_rejected_not_trusted() {
    let (m, _) = trained_weekly();
    let mut v: serde_json::Value =
        serde_json::from_str(&m.snapshot().to_json().expect("serialise")).expect("json");
    v["periods"][0]["means"] = serde_json::json!([1.0, 2.0]);
    let s: ModelState = serde_json::from_value(v).expect("still parses");
    assert!(Forecaster::restore(s).is_err());
    let mut v: serde_json::Value =
        serde_json::from_str(&m.snapshot().to_json().expect("serialise")).expect("json");
    v["config"]["lookbackDays"] = serde_json::json!(9);
    let s: ModelState = serde_json::from_value(v).expect("still parses");
    assert!(Forecaster::restore(s).is_err());
}

#[test]
fn prewarm_fires_before_a_recurring_peak_and_holds_until_it_ends() {
    let (m, _) = trained_weekly();
    let policy = PreWarmPolicy {
        lead_time: Duration::minutes(15),
        ..PreWarmPolicy::default()
    };
    // Monday 08:00: horizon 30 + lead 15 looks at 08:45, on the ramp to the 90-GPU peak.
    let d = prewarm::decide(&m, at(2024, 1, 15, 8, 0), 100.0, &policy);
    assert!(d.pre_warm, "{d:?}");
    assert_eq!(d.reason, PreWarmReason::PredictedPeak);
    assert_eq!(d.at, at(2024, 1, 15, 8, 45));
    assert!(d.target_gpus >= d.predicted_demand);
    let hold = d.hold_until.expect("hold time");
    assert!(
        hold >= at(2024, 1, 15, 12, 0) && hold <= at(2024, 1, 15, 13, 30),
        "hold until {hold}"
    );
    // At night the same model does not pre-warm.
    let (m2, _) = {
        let (mut m, _) = trained_weekly();
        let mut t = at(2024, 1, 15, 8, 5);
        while t <= at(2024, 1, 15, 20, 0) {
            m.observe(t, weekly(t));
            t += Duration::minutes(5);
        }
        (m, ())
    };
    let night = prewarm::decide(&m2, at(2024, 1, 15, 20, 0), 100.0, &policy);
    assert!(!night.pre_warm);
    assert_eq!(night.reason, PreWarmReason::BelowThreshold);
    let none = prewarm::decide(&m, at(2024, 1, 15, 8, 0), 0.0, &policy);
    assert_eq!(none.reason, PreWarmReason::NoCapacity);
}

#[test]
fn prewarm_is_withheld_on_low_confidence() {
    let mut m = Forecaster::new(ModelConfig::default()).expect("config");
    let mut rng = Lcg::new(5);
    let start = at(2024, 1, 1, 0, 0);
    for t in grid(start, 15) {
        m.observe(t, (80.0 + 30.0 * rng.normal()).max(0.0));
    }
    let d = prewarm::decide(
        &m,
        at(2024, 1, 15, 23, 55),
        100.0,
        &PreWarmPolicy::default(),
    );
    assert!(!d.pre_warm);
    assert_eq!(d.reason, PreWarmReason::LowConfidence, "{d:?}");
}
