//! Eviction schedules: priority-ordered, and for interruptions fitted inside the notice.
//!
//! # Interruption schedule
//! Let `D = termination_time - drainSafetyMarginSeconds` (every pod must be gone by `D`) and
//! `W = D - now`. Pods are asked to stop in three waves, low, then medium, then high, a
//! small stagger `s = clamp(W / 20, 0 s, 5 s)` apart, so that lower priorities free their
//! GPUs (and their PDB budget) first and high-priority pods are never evicted first.
//! Grace periods are then fitted so that:
//! - high-priority pods get *all* of the time that remains after they are asked
//!   (`D - ask_high`), whatever their own grace period says: that is the longest window any
//!   pod gets, which is what a training job needs to checkpoint;
//! - medium and low pods keep their own grace period, capped by what remains until `D` and
//!   by the high wave's grace, so no lower-priority pod gets more time than a high one.
//!
//! With AWS's 120 s notice and the default 10 s margin, high pods are asked at +10 s and
//! get 100 s; with a 30 s notice (GCP, Azure) they are asked at +2 s and get 18 s. A notice
//! already inside the margin evicts everything at once with zero grace.

use chrono::{DateTime, Duration, Utc};
use gpu_autoscaler_api::EvictionPriority;

use super::model::{Eviction, PodView};

/// Kubernetes' default `terminationGracePeriodSeconds`.
pub const DEFAULT_GRACE_SECONDS: u32 = 30;

/// Largest stagger between two priority waves.
const MAX_STAGGER_MS: i64 = 5_000;

fn wave(p: EvictionPriority) -> i64 {
    match p {
        EvictionPriority::Low => 0,
        EvictionPriority::Medium => 1,
        EvictionPriority::High => 2,
    }
}

/// Sorts pods for eviction: low first, then medium, then high; by name within a priority.
fn ordered<'a>(pods: &[&'a PodView]) -> Vec<&'a PodView> {
    let mut v: Vec<&PodView> = pods.to_vec();
    v.sort_by(|a, b| {
        a.eviction_priority
            .cmp(&b.eviction_priority)
            .then_with(|| a.namespace.cmp(&b.namespace))
            .then_with(|| a.name.cmp(&b.name))
    });
    v
}

/// Scale-down drain: everything may be requested now (low first in list order); pods keep
/// their own grace period and PDB refusals are retried without a deadline.
pub fn scale_down_evictions(now: DateTime<Utc>, pods: &[&PodView]) -> Vec<Eviction> {
    ordered(pods)
        .into_iter()
        .map(|p| Eviction {
            pod: p.key(),
            uid: p.uid.clone(),
            priority: p.eviction_priority,
            not_before: now,
            grace_seconds: None,
            deadline: None,
        })
        .collect()
}

/// Interruption drain fitted inside the notice (see the module documentation). `now` is when
/// the notice was first handled: later plans pass the same time, so the waves stay put.
/// `graceful = false` (policy `spot.gracefulEviction: false`) asks every pod at once.
pub fn interruption_evictions(
    now: DateTime<Utc>,
    termination: DateTime<Utc>,
    safety_margin_seconds: u32,
    graceful: bool,
    pods: &[&PodView],
) -> Vec<Eviction> {
    let deadline = termination - Duration::seconds(i64::from(safety_margin_seconds));
    let window_ms = (deadline - now).num_milliseconds().max(0);
    let stagger_ms = if graceful {
        (window_ms / 20).clamp(0, MAX_STAGGER_MS)
    } else {
        0
    };
    let remaining_secs = |ask: DateTime<Utc>| -> u32 {
        let ms = (deadline - ask).num_milliseconds().max(0);
        u32::try_from(ms / 1000).unwrap_or(u32::MAX)
    };
    let ask_at = |p: EvictionPriority| now + Duration::milliseconds(stagger_ms * wave(p));
    let high_grace = remaining_secs(ask_at(EvictionPriority::High));
    let mut out = Vec::with_capacity(pods.len());
    for p in ordered(pods) {
        let ask = ask_at(p.eviction_priority);
        let own = p.termination_grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS);
        let grace = match p.eviction_priority {
            EvictionPriority::High if graceful => remaining_secs(ask),
            _ => own.min(remaining_secs(ask)).min(high_grace),
        };
        out.push(Eviction {
            pod: p.key(),
            uid: p.uid.clone(),
            priority: p.eviction_priority,
            not_before: ask,
            grace_seconds: Some(grace),
            deadline: Some(deadline),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::gpu_pod;
    use chrono::TimeZone;

    fn pod(name: &str, prio: EvictionPriority, grace: Option<u32>) -> PodView {
        let mut p = gpu_pod(name, 1);
        p.eviction_priority = prio;
        p.termination_grace_seconds = grace;
        p
    }

    #[test]
    fn schedules_for_each_notice_length() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let pods = [
            pod("h", EvictionPriority::High, Some(10)),
            pod("m", EvictionPriority::Medium, Some(300)),
            pod("l", EvictionPriority::Low, None),
        ];
        let refs: Vec<&PodView> = pods.iter().collect();
        // (notice s, margin s, graceful, expected (name, ask offset ms, grace s) in order)
        type Row = (i64, u32, bool, [(&'static str, i64, u32); 3]);
        let cases: [Row; 5] = [
            (
                120,
                10,
                true,
                [("l", 0, 30), ("m", 5_000, 100), ("h", 10_000, 100)],
            ),
            (
                30,
                10,
                true,
                [("l", 0, 18), ("m", 1_000, 18), ("h", 2_000, 18)],
            ),
            (
                30,
                0,
                true,
                [("l", 0, 27), ("m", 1_500, 27), ("h", 3_000, 27)],
            ),
            // Already inside the margin: everyone now, no grace.
            (5, 10, true, [("l", 0, 0), ("m", 0, 0), ("h", 0, 0)]),
            // Graceful eviction off: everyone now with their own grace, capped by the window.
            (120, 10, false, [("l", 0, 30), ("m", 0, 110), ("h", 0, 10)]),
        ];
        for (notice, margin, graceful, want) in cases {
            let got = interruption_evictions(
                now,
                now + Duration::seconds(notice),
                margin,
                graceful,
                &refs,
            );
            let got: Vec<(&str, i64, u32)> = got
                .iter()
                .map(|e| {
                    (
                        e.pod.name.as_str(),
                        (e.not_before - now).num_milliseconds(),
                        e.grace_seconds.unwrap_or(u32::MAX),
                    )
                })
                .collect();
            assert_eq!(
                got,
                want.to_vec(),
                "notice {notice} margin {margin} graceful {graceful}"
            );
        }
    }

    #[test]
    fn scale_down_keeps_own_grace_and_orders_low_first() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let pods = [
            pod("b", EvictionPriority::High, None),
            pod("a", EvictionPriority::Low, None),
        ];
        let refs: Vec<&PodView> = pods.iter().collect();
        let ev = scale_down_evictions(now, &refs);
        assert_eq!(ev[0].pod.name, "a");
        assert!(
            ev.iter()
                .all(|e| e.grace_seconds.is_none() && e.deadline.is_none() && e.not_before == now)
        );
    }
}
