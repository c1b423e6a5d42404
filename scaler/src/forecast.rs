//! Glue between the predictor and the engine: demand in, [`ForecastView`] out.
//!
//! The predictor learns GPU *demand* (GPUs requested by running plus pending GPU pods) on a
//! local wall clock, because busy hours follow people's working days. The engine wants one
//! small, clock-free fact per plan: how many GPUs to have ready at `now + horizon + lead`,
//! how sure we are, and until when to keep them. Both the live controller and `simulate` go
//! through this type, so they pre-warm identically.

use chrono::{DateTime, Duration, FixedOffset, LocalResult, NaiveDateTime, TimeZone, Utc};
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

/// The wall clock busy hours follow: an IANA time zone (daylight saving time included) or a
/// fixed UTC offset.
///
/// With a fixed offset, the learned hours shift by one at each DST change until a week of new
/// history has been seen; a zone name (`Europe/Berlin`) keeps 09:00 at 09:00 all year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForecastClock {
    Offset(FixedOffset),
    Zone(chrono_tz::Tz),
}

impl Default for ForecastClock {
    fn default() -> Self {
        ForecastClock::Offset(chrono::Offset::fix(&Utc))
    }
}

impl From<FixedOffset> for ForecastClock {
    fn from(offset: FixedOffset) -> Self {
        ForecastClock::Offset(offset)
    }
}

impl std::fmt::Display for ForecastClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForecastClock::Offset(o) => write!(f, "{o}"),
            ForecastClock::Zone(z) => write!(f, "{}", z.name()),
        }
    }
}

impl std::str::FromStr for ForecastClock {
    type Err = String;

    /// `Europe/Berlin`, `America/New_York`, `UTC`, or an offset: `+01:00`, `-0530`, `Z`.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.starts_with(['+', '-']) || t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc")
        {
            return parse_utc_offset(t).map(ForecastClock::Offset);
        }
        t.parse::<chrono_tz::Tz>()
            .map(ForecastClock::Zone)
            .map_err(|_| {
                format!(
                    "unknown time zone {s:?}: expected an IANA name such as Europe/Berlin or \
                 America/New_York, or a UTC offset such as +01:00"
                )
            })
    }
}

impl ForecastClock {
    /// Local wall-clock time at `t`.
    pub fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        match self {
            ForecastClock::Offset(o) => t.with_timezone(o).naive_local(),
            ForecastClock::Zone(z) => t.with_timezone(z).naive_local(),
        }
    }

    /// The instant a local wall-clock time denotes. A time repeated when clocks go back is
    /// taken at its first occurrence (pre-warming early rather than late); a time skipped when
    /// clocks go forward is moved past the gap by its length (02:30 on a spring-forward night
    /// is 03:30, the first instant when that much of the day has passed).
    pub fn utc(&self, t: NaiveDateTime) -> DateTime<Utc> {
        match self {
            ForecastClock::Offset(o) => {
                (t - Duration::seconds(i64::from(o.local_minus_utc()))).and_utc()
            }
            ForecastClock::Zone(z) => match z.from_local_datetime(&t) {
                LocalResult::Single(x) => x.with_timezone(&Utc),
                LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
                LocalResult::None => {
                    // The offset before the gap, applied to the skipped time, lands after it.
                    let before = z.offset_from_utc_datetime(&(t - Duration::hours(24)));
                    let before = chrono::Offset::fix(&before).local_minus_utc();
                    (t - Duration::seconds(i64::from(before))).and_utc()
                }
            },
        }
    }
}

/// Parses a UTC offset such as `+01:00`, `-05:30`, `+0100` or `Z`.
pub fn parse_utc_offset(s: &str) -> Result<FixedOffset, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("z") || t.eq_ignore_ascii_case("utc") {
        return FixedOffset::east_opt(0).ok_or_else(|| "offset".to_string());
    }
    let bad = || format!("invalid UTC offset {s:?}: expected ±HH:MM, e.g. +01:00");
    let (sign, rest) = match t.as_bytes().first() {
        Some(b'+') => (1, &t[1..]),
        Some(b'-') => (-1, &t[1..]),
        _ => return Err(bad()),
    };
    // HH, HHMM or HH:MM.
    let digits: String = match rest.len() {
        5 if rest.as_bytes()[2] == b':' => rest.chars().filter(|c| *c != ':').collect(),
        2 | 4 => rest.to_string(),
        _ => return Err(bad()),
    };
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let h: i32 = digits[..2].parse().map_err(|_| bad())?;
    let m: i32 = if digits.len() == 4 {
        digits[2..].parse().map_err(|_| bad())?
    } else {
        0
    };
    if h > 14 || m > 59 {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

/// A demand forecaster for one policy, on its business-hours clock.
#[derive(Debug, Clone)]
pub struct DemandForecaster {
    model: Forecaster,
    clock: ForecastClock,
}

impl DemandForecaster {
    /// A fresh model observing every `step_minutes` with the policy's lookback and horizon.
    pub fn new(
        settings: &PredictiveSettings,
        step_minutes: u32,
        clock: impl Into<ForecastClock>,
    ) -> Result<Self, ModelError> {
        let config = ModelConfig {
            step_minutes,
            lookback_days: weekly_lookback(settings.lookback_days),
            horizon_minutes: settings.horizon_minutes,
            ..ModelConfig::default()
        };
        Ok(Self {
            model: Forecaster::new(config)?,
            clock: clock.into(),
        })
    }

    /// Resumes from a persisted state (ConfigMap / status), so a restart keeps what was learned.
    pub fn restore(state: ModelState, clock: impl Into<ForecastClock>) -> Result<Self, ModelError> {
        Ok(Self {
            model: Forecaster::restore(state)?,
            clock: clock.into(),
        })
    }

    /// The compact state to persist.
    pub fn state(&self) -> ModelState {
        self.model.snapshot()
    }

    fn local(&self, t: DateTime<Utc>) -> NaiveDateTime {
        self.clock.local(t)
    }

    fn utc(&self, t: NaiveDateTime) -> DateTime<Utc> {
        self.clock.utc(t)
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn naive(d: (i32, u32, u32), h: u32, m: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(d.0, d.1, d.2)
            .unwrap()
            .and_hms_opt(h, m, 0)
            .unwrap()
    }

    #[test]
    fn clocks_parse_zones_and_offsets_with_clear_errors() {
        let berlin: ForecastClock = "Europe/Berlin".parse().unwrap();
        assert_eq!(berlin.to_string(), "Europe/Berlin");
        assert_eq!(
            " +05:30 ".parse::<ForecastClock>().unwrap().to_string(),
            "+05:30"
        );
        assert_eq!("Z".parse::<ForecastClock>().unwrap().to_string(), "+00:00");
        assert_eq!(
            "UTC".parse::<ForecastClock>().unwrap().to_string(),
            "+00:00"
        );
        assert_eq!(
            "utc".parse::<ForecastClock>().unwrap().to_string(),
            "+00:00"
        );
        assert_eq!(
            "Etc/UTC".parse::<ForecastClock>().unwrap().to_string(),
            "Etc/UTC"
        );
        let e = "Mars/Olympus".parse::<ForecastClock>().unwrap_err();
        assert!(
            e.contains("Mars/Olympus") && e.contains("Europe/Berlin"),
            "{e}"
        );
        let e = "+25:00".parse::<ForecastClock>().unwrap_err();
        assert!(e.contains("+25:00"), "{e}");
    }

    #[test]
    fn zone_clock_follows_daylight_saving_time_and_resolves_gaps_and_repeats() {
        let berlin: ForecastClock = "Europe/Berlin".parse().unwrap();
        let fixed: ForecastClock = "+01:00".parse().unwrap();
        let winter = Utc.with_ymd_and_hms(2026, 1, 12, 8, 0, 0).unwrap();
        let summer = Utc.with_ymd_and_hms(2026, 7, 13, 7, 0, 0).unwrap();
        // 09:00 on the office wall clock, winter and summer.
        assert_eq!(berlin.local(winter), naive((2026, 1, 12), 9, 0));
        assert_eq!(berlin.local(summer), naive((2026, 7, 13), 9, 0));
        assert_eq!(fixed.local(summer), naive((2026, 7, 13), 8, 0));
        for t in [winter, summer] {
            assert_eq!(berlin.utc(berlin.local(t)), t);
            assert_eq!(fixed.utc(fixed.local(t)), t);
        }
        // 02:30 does not exist on 2026-03-29 (02:00 -> 03:00): it is taken as 03:30 CEST.
        assert_eq!(
            berlin.utc(naive((2026, 3, 29), 2, 30)),
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap()
        );
        // 02:30 happens twice on 2026-10-25: the first one (CEST) is used.
        assert_eq!(
            berlin.utc(naive((2026, 10, 25), 2, 30)),
            Utc.with_ymd_and_hms(2026, 10, 25, 0, 30, 0).unwrap()
        );
    }
}
