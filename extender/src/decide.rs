//! The pure decision core: which nodes a GPU pod may use, and how much it should like each.
//!
//! No I/O, no clock: callers pass `now`, the views and the rates. Everything here works on
//! borrowed [`NodeView`]s so a 5,000-node decision allocates only its answer.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use gpu_autoscaler_api::priority::{EvictionPriority, TierPreference};
use gpu_autoscaler_api::{CapacityType, GpuResourceNames};

use crate::rates::{RATE_CEILING, SpotRates};
use crate::view::{NodeView, PodPolicy, PodView};

/// The highest score an extender may give (`MaxExtenderPriority` in kube-scheduler).
pub const MAX_SCORE: i64 = 10;

/// Tuning of the extender's decisions.
#[derive(Debug, Clone)]
pub struct Config {
    /// A spot node whose announced termination time is less than this far away takes no new
    /// pods: a pod started there would be killed before it did useful work, and a GPU pod's
    /// start-up (image pull, model load) alone often takes minutes.
    pub interruption_horizon: Duration,
    /// Capacity type assumed for nodes that no labelling convention classifies. `None` fails
    /// such nodes for managed pods; the default treats them as on-demand, the common case for
    /// hand-made or unlabelled node groups.
    pub unknown_capacity: Option<CapacityType>,
    pub weights: Weights,
    pub gpu_names: GpuResourceNames,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interruption_horizon: Duration::from_secs(10 * 60),
            unknown_capacity: Some(CapacityType::OnDemand),
            weights: Weights::default(),
            gpu_names: GpuResourceNames::default(),
        }
    }
}

/// Weights of the prioritize blend. Each component is a number in `[0, 1]`; the node's score
/// is `round(10 * sum(weight * component) / sum(weight))` over the components that apply to the
/// pod, so a pod to which only two components apply still uses the whole 0..10 range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Position of the node's capacity type in the pod's tier preference (first = 1, last =
    /// 0). Heaviest, because it is the pod owner's explicit statement of cost versus risk: a
    /// spot-first pod must go to spot whenever spot is feasible, whatever the packing.
    pub tier: u32,
    /// GPU bin packing: `1 - leftover / allocatable` after placing the pod, 0 when it does
    /// not fit. Second, because tight packing is what lets whole GPU nodes drain and be
    /// removed, the largest continuing saving after the capacity type itself.
    pub packing: u32,
    /// Spot risk, for `high` eviction priority pods only: `1 - rate / 25%` on spot nodes, 1
    /// elsewhere. Below tier so it mostly reorders spot nodes among themselves (and only tips
    /// a spot-first pod to on-demand when packing also favours that), but above spreading
    /// because losing a high-priority pod costs more than a correlated loss is likely.
    pub spot_risk: u32,
    /// Spreading replicas of one controller across zones and spot instance types, so that
    /// one reclaim wave or zone outage does not take all of them. Lightest: it pulls against
    /// packing, and packing saves money every hour while spreading pays only on a reclaim.
    pub spread: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            tier: 4,
            packing: 3,
            spot_risk: 2,
            spread: 1,
        }
    }
}

/// The tiers a pod allows, as a small copyable value for failure messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiers([Option<CapacityType>; 3]);

impl From<&TierPreference> for Tiers {
    fn from(t: &TierPreference) -> Self {
        let mut out = [None; 3];
        for (slot, ct) in out.iter_mut().zip(t.as_slice()) {
            *slot = Some(*ct);
        }
        Tiers(out)
    }
}

impl fmt::Display for Tiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, ct) in self.0.iter().flatten().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(ct.as_str())?;
        }
        Ok(())
    }
}

/// Why a node cannot take the pod. Every reason is something preemption cannot fix (evicting
/// pods changes neither labels, annotations nor cordons), so all go to
/// `FailedAndUnresolvableNodes`.
#[derive(Debug, Clone, PartialEq)]
pub enum FailReason {
    CapacityTypeNotAllowed {
        node: CapacityType,
        allowed: Tiers,
    },
    CapacityTypeUnknown {
        allowed: Tiers,
    },
    InterruptionWarning,
    TerminationPassed {
        at: DateTime<Utc>,
    },
    TerminationWithinHorizon {
        at: DateTime<Utc>,
        horizon: Duration,
    },
    Cordoned,
    InvalidTierPreference(Arc<str>),
}

impl FailReason {
    /// The `reason` label value of the filtered-nodes metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::CapacityTypeNotAllowed { .. } => "capacity_type",
            Self::CapacityTypeUnknown { .. } => "capacity_type_unknown",
            Self::InterruptionWarning => "interruption_warning",
            Self::TerminationPassed { .. } | Self::TerminationWithinHorizon { .. } => {
                "termination_time"
            }
            Self::Cordoned => "cordoned",
            Self::InvalidTierPreference(_) => "invalid_tier_preference",
        }
    }

    /// Whether preempting pods on the node could make it fit. Never, for our reasons.
    pub fn unresolvable(&self) -> bool {
        true
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CapacityTypeNotAllowed { node, allowed } => write!(
                f,
                "gpu-autoscaler: node capacity type {node} is not in the pod's tier-preference ({allowed})"
            ),
            Self::CapacityTypeUnknown { allowed } => write!(
                f,
                "gpu-autoscaler: node has no capacity-type label and unknown capacity is not accepted; pod allows {allowed}"
            ),
            Self::InterruptionWarning => {
                f.write_str("gpu-autoscaler: node has a spot interruption warning")
            }
            Self::TerminationPassed { at } => write!(
                f,
                "gpu-autoscaler: node spot-termination-time {} has passed",
                at.to_rfc3339()
            ),
            Self::TerminationWithinHorizon { at, horizon } => write!(
                f,
                "gpu-autoscaler: node spot-termination-time {} is within the {}s interruption horizon",
                at.to_rfc3339(),
                horizon.as_secs()
            ),
            Self::Cordoned => f.write_str("gpu-autoscaler: node is cordoned (unschedulable)"),
            Self::InvalidTierPreference(msg) => write!(f, "gpu-autoscaler: {msg}"),
        }
    }
}

/// The capacity type a node is treated as.
fn effective_capacity(node: &NodeView, cfg: &Config) -> Option<CapacityType> {
    node.capacity.or(cfg.unknown_capacity)
}

/// Checks one node for a managed pod; `None` means the node passes.
pub fn check_node(
    pod: &PodView,
    node: &NodeView,
    now: DateTime<Utc>,
    cfg: &Config,
) -> Option<FailReason> {
    let tiers = match &pod.policy {
        PodPolicy::PassThrough => return None,
        PodPolicy::Invalid(msg) => {
            return Some(FailReason::InvalidTierPreference(Arc::from(msg.as_str())));
        }
        PodPolicy::Managed { tiers, .. } => tiers,
    };
    match effective_capacity(node, cfg) {
        None => {
            return Some(FailReason::CapacityTypeUnknown {
                allowed: tiers.into(),
            });
        }
        Some(ct) if !tiers.allows(ct) => {
            return Some(FailReason::CapacityTypeNotAllowed {
                node: ct,
                allowed: tiers.into(),
            });
        }
        Some(_) => {}
    }
    if node.interruption_warning {
        return Some(FailReason::InterruptionWarning);
    }
    if let Some(at) = node.termination_time {
        if at <= now {
            return Some(FailReason::TerminationPassed { at });
        }
        let horizon =
            chrono::Duration::from_std(cfg.interruption_horizon).unwrap_or(chrono::Duration::MAX);
        if at.signed_duration_since(now) <= horizon {
            return Some(FailReason::TerminationWithinHorizon {
                at,
                horizon: cfg.interruption_horizon,
            });
        }
    }
    if node.unschedulable {
        return Some(FailReason::Cordoned);
    }
    None
}

/// Filters nodes for a pod: one verdict per node, in input order (`None` = passes).
/// Pass-through pods get all `None` without looking at the nodes.
pub fn filter<'n>(
    pod: &PodView,
    nodes: impl IntoIterator<Item = &'n NodeView>,
    now: DateTime<Utc>,
    cfg: &Config,
) -> Vec<Option<FailReason>> {
    if pod.policy == PodPolicy::PassThrough {
        return nodes.into_iter().map(|_| None).collect();
    }
    // Invalid pods get the same message on every node; build it once.
    if let PodPolicy::Invalid(msg) = &pod.policy {
        let reason = FailReason::InvalidTierPreference(Arc::from(msg.as_str()));
        return nodes.into_iter().map(|_| Some(reason.clone())).collect();
    }
    nodes
        .into_iter()
        .map(|n| check_node(pod, n, now, cfg))
        .collect()
}

/// Where the pod's sibling replicas (same controller) already run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaSpread {
    pub total: u32,
    pub by_zone: HashMap<Arc<str>, u32>,
    pub by_spot_instance_type: HashMap<Arc<str>, u32>,
}

impl ReplicaSpread {
    /// From `(node, replicas on it)` pairs.
    pub fn from_placements<'n>(placements: impl IntoIterator<Item = (&'n NodeView, u32)>) -> Self {
        let mut out = ReplicaSpread::default();
        for (node, count) in placements {
            out.total = out.total.saturating_add(count);
            if let Some(z) = &node.zone {
                *out.by_zone.entry(z.clone()).or_default() += count;
            }
            if node.capacity == Some(CapacityType::Spot)
                && let Some(t) = &node.instance_type
            {
                *out.by_spot_instance_type.entry(t.clone()).or_default() += count;
            }
        }
        out
    }
}

/// Inputs of prioritize besides the pod and nodes.
#[derive(Debug, Clone, Copy)]
pub struct ScoreContext<'a> {
    pub rates: &'a SpotRates,
    /// `None` when the pod has no controller or no sibling is placed yet.
    pub spread: Option<&'a ReplicaSpread>,
}

/// Each component of a node's score (`None` = does not apply to this pod), and the result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Breakdown {
    pub tier: Option<f64>,
    pub packing: Option<f64>,
    pub spot_risk: Option<f64>,
    pub spread: Option<f64>,
    pub score: i64,
}

impl Breakdown {
    const ZERO: Breakdown = Breakdown {
        tier: None,
        packing: None,
        spot_risk: None,
        spread: None,
        score: 0,
    };
}

/// Scores one node (0..=10). Nodes the filter would reject, and all nodes of pass-through
/// pods, score 0.
pub fn score_node(
    pod: &PodView,
    node: &NodeView,
    now: DateTime<Utc>,
    ctx: &ScoreContext<'_>,
    cfg: &Config,
) -> Breakdown {
    score_with(pod, node, now, ctx, cfg, &mut |n| ctx.rates.rate_for(n).0)
}

/// [`score_node`] with the spot-rate lookup supplied, so [`prioritize`] can memoise it.
fn score_with<'n>(
    pod: &PodView,
    node: &'n NodeView,
    now: DateTime<Utc>,
    ctx: &ScoreContext<'_>,
    cfg: &Config,
    spot_rate: &mut impl FnMut(&'n NodeView) -> f64,
) -> Breakdown {
    let PodPolicy::Managed { tiers, priority } = &pod.policy else {
        return Breakdown::ZERO;
    };
    if check_node(pod, node, now, cfg).is_some() {
        return Breakdown::ZERO;
    }
    let capacity = effective_capacity(node, cfg);
    let tier = capacity.and_then(|ct| tiers.rank(ct)).map(|rank| {
        let n = tiers.as_slice().len();
        if n <= 1 {
            1.0
        } else {
            1.0 - rank as f64 / (n - 1) as f64
        }
    });
    let packing = Some(packing_score(pod.gpus, node));
    let spot_risk = (*priority == EvictionPriority::High).then(|| {
        if capacity == Some(CapacityType::Spot) {
            1.0 - (spot_rate(node) / RATE_CEILING).clamp(0.0, 1.0)
        } else {
            1.0
        }
    });
    let spread = ctx
        .spread
        .filter(|s| s.total > 0)
        .map(|s| spread_score(s, node, capacity));

    let w = &cfg.weights;
    let mut num = 0.0;
    let mut den = 0.0;
    for (component, weight) in [
        (tier.or(Some(0.0)), w.tier),
        (packing, w.packing),
        (spot_risk, w.spot_risk),
        (spread, w.spread),
    ] {
        if let Some(c) = component {
            num += f64::from(weight) * c;
            den += f64::from(weight);
        }
    }
    let score = if den > 0.0 {
        ((MAX_SCORE as f64) * num / den).round() as i64
    } else {
        0
    };
    Breakdown {
        tier,
        packing,
        spot_risk,
        spread,
        score: score.clamp(0, MAX_SCORE),
    }
}

/// `1 - leftover / allocatable` once the pod is placed; 0 if it does not fit or the node has
/// no GPUs. A node that the pod fills exactly scores 1.
fn packing_score(pod_gpus: u32, node: &NodeView) -> f64 {
    if node.allocatable_gpus == 0 || node.free_gpus() < pod_gpus {
        return 0.0;
    }
    let leftover = node.free_gpus() - pod_gpus;
    1.0 - f64::from(leftover) / f64::from(node.allocatable_gpus)
}

/// The mean of "share of siblings not in this zone" and "share of siblings not on spot nodes
/// of this instance type" (a non-spot node shares no reclaim pool with anyone: 1).
fn spread_score(s: &ReplicaSpread, node: &NodeView, capacity: Option<CapacityType>) -> f64 {
    let total = f64::from(s.total.max(1));
    let share = |n: u32| (f64::from(n) / total).min(1.0);
    let zone = node
        .zone
        .as_ref()
        .map_or(1.0, |z| 1.0 - share(s.by_zone.get(z).copied().unwrap_or(0)));
    let itype = match (&node.instance_type, capacity) {
        (Some(t), Some(CapacityType::Spot)) => {
            1.0 - share(s.by_spot_instance_type.get(t).copied().unwrap_or(0))
        }
        _ => 1.0,
    };
    (zone + itype) / 2.0
}

/// Scores nodes for a pod: one score (0..=10) per node, in input order.
pub fn prioritize<'n>(
    pod: &PodView,
    nodes: impl IntoIterator<Item = &'n NodeView>,
    now: DateTime<Utc>,
    ctx: &ScoreContext<'_>,
    cfg: &Config,
) -> Vec<i64> {
    if !matches!(pod.policy, PodPolicy::Managed { .. }) {
        return nodes.into_iter().map(|_| 0).collect();
    }
    let mut memo = RateMemo::new(ctx.rates);
    nodes
        .into_iter()
        .map(|n| score_with(pod, n, now, ctx, cfg, &mut |n| memo.rate(n)).score)
        .collect()
}

/// Remembers spot rates per (pool, instance type, region) within one prioritize call.
///
/// A rate lookup hashes up to three strings into the published maps and the advisor table;
/// thousands of nodes share a handful of such triples, so comparing against the few already
/// seen (pointer first, then text) is several times cheaper. Bounded, so a cluster with
/// unusually many distinct triples degrades to plain lookups rather than to a long scan.
struct RateMemo<'r, 'n> {
    rates: &'r SpotRates,
    seen: Vec<(RateKey<'n>, f64)>,
}

type RateKey<'n> = (Option<&'n str>, Option<&'n str>, Option<&'n str>);

impl<'r, 'n> RateMemo<'r, 'n> {
    const CAPACITY: usize = 32;

    fn new(rates: &'r SpotRates) -> Self {
        RateMemo {
            rates,
            seen: Vec::new(),
        }
    }

    fn rate(&mut self, node: &'n NodeView) -> f64 {
        let key: RateKey<'n> = (
            node.pool.as_deref(),
            node.instance_type.as_deref(),
            node.region.as_deref(),
        );
        // Pointers first: the node index interns label values, so a seen triple nearly always
        // matches by address, and comparing texts against every other entry is skipped.
        if let Some((_, rate)) = self
            .seen
            .iter()
            .find(|(k, _)| same_key_by(k, &key, |a: &str, b: &str| std::ptr::eq(a, b)))
            .or_else(|| {
                self.seen
                    .iter()
                    .find(|(k, _)| same_key_by(k, &key, |a, b| a == b))
            })
        {
            return *rate;
        }
        let rate = self.rates.rate_for(node).0;
        if self.seen.len() < Self::CAPACITY {
            self.seen.push((key, rate));
        }
        rate
    }
}

fn same_key_by(a: &RateKey<'_>, b: &RateKey<'_>, eq: impl Fn(&str, &str) -> bool) -> bool {
    let eq = |a: Option<&str>, b: Option<&str>| match (a, b) {
        (Some(a), Some(b)) => eq(a, b),
        (None, None) => true,
        _ => false,
    };
    eq(a.0, b.0) && eq(a.1, b.1) && eq(a.2, b.2)
}
