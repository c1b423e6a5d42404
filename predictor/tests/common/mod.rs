//! Deterministic synthetic series shared by the integration tests.
#![allow(dead_code)]

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime, Timelike};

pub fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, mo, d)
        .and_then(|x| x.and_hms_opt(h, mi, 0))
        .expect("valid test date")
}

/// Small deterministic PRNG (no rand dependency in the library's tests).
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(6364136223846793005).wrapping_add(1))
    }
    pub fn uniform(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Weekday office-hours demand on the local wall clock: 30 GPUs at night and at weekends,
/// ramping to 90 between 09:00 and 12:00 on weekdays.
pub fn weekly(t: NaiveDateTime) -> f64 {
    let weekday = t.weekday().num_days_from_monday();
    let h = f64::from(t.hour()) + f64::from(t.minute()) / 60.0;
    if weekday >= 5 {
        return 30.0;
    }
    let ramp = |a: f64, b: f64| ((h - a) / (b - a)).clamp(0.0, 1.0);
    30.0 + 60.0 * ramp(8.0, 9.0) - 60.0 * ramp(12.0, 13.5) + 10.0 * ramp(13.5, 17.0)
        - 10.0 * ramp(17.0, 19.0)
}

/// 5-minute grid from `start` for `days`.
pub fn grid(start: NaiveDateTime, days: i64) -> impl Iterator<Item = NaiveDateTime> {
    (0..days * 288).map(move |i| start + Duration::minutes(5 * i))
}
