//! The pure GPU-aware decision engine.
//!
//! # How to call it
//! ```text
//! let snapshot = Snapshot { now, policy, pools, nodes, pods, utilization, forecast,
//!                           provider_events, memory: previous_plan.memory };
//! let plan = engine::plan(&snapshot);
//! // execute: plan.target_reductions, plan.scale_ups, plan.cordons, plan.drains,
//! //          plan.terminations, plan.uncordons (in that order, idempotently)
//! // persist: plan.memory (feed it into the next snapshot), plan.status -> policy status
//! // emit:    plan.events; log plan.warnings
//! ```
//! `plan` has no I/O, reads no clock (only `snapshot.now`) and uses no randomness: the same
//! snapshot always gives the same plan. Run it on every relevant watch event and on an
//! interval (the engine is cheap: see `docs/scaler-bench.md`). Re-running it before the
//! previous plan's effects are visible is safe: capacity in flight (pool targets above the
//! registered nodes, nodes whose GPUs aren't allocatable yet) is counted, drains are repeated
//! idempotently and replacement capacity for an interruption is requested once (memory).
//!
//! # Decision rules (thresholds from the policy)
//! - **Pending pods** count when GPU-requesting, unbound and `Unschedulable` for at least
//!   `pendingPodTimeoutSeconds`. They are packed first-fit-decreasing (GPUs, CPU, memory)
//!   first onto the free room of ready nodes (GPU-ready, not cordoned, no interruption
//!   notice, not being drained; managed or not; allocatable minus bound pods' requests;
//!   same selector, affinity, taint, tier and GPU-resource rules, the pod's most preferred
//!   capacity type first; never next to, or in the zone of, a pod it excludes by required
//!   pod anti-affinity, in either direction, nor where a hard topology spread constraint
//!   forbids it, which also holds for capacity on its way and new nodes; see
//!   [`PodAffinityTerm`] and [`SpreadConstraint`]): a pod such a node can take causes no scale-up, because the
//!   scheduler places it there on its next retry. Then onto capacity already on its way
//!   (instances in flight, registered nodes without allocatable GPUs, counted at their
//!   template's GPUs), then onto new nodes. A pod no pool
//!   template could ever run (selector, affinity, taints, tier, size) gets a
//!   `NotTriggerScaleUp` event and causes nothing.
//! - **Template choice**: among the templates that fit the pod, when all of them have a
//!   `price_per_hour`, the lowest price per useful GPU: price / min(template GPUs, GPUs still
//!   to place for pods of this kind, this pod included) (all the node's GPUs for minimums),
//!   so a bigger node than the demand needs loses to a smaller one at no higher price per
//!   GPU; equal prices fall back to the unpriced order. On spot pools with `spot.diversify`,
//!   the least-used (instance type, zone) among the templates within
//!   [`DIVERSIFY_PRICE_TOLERANCE`] (15 %) of the cheapest price per useful GPU, the cheaper
//!   on equal use. Unpriced (any fitting template without a price): least GPU waste for the
//!   GPUs still to place, then the bigger node, then the pool's instance-type order; with
//!   `spot.diversify`, the least-used (instance type, zone) among those. Pools that rank
//!   equal in their tier (health and priority below) compete on the price per useful GPU of
//!   their best template when all are priced, else policy order decides.
//! - **Tiers**: reserved pools with room first; between spot and on-demand the tier furthest
//!   below its share (`multiTier` when `enableMultiTierScaling`, else
//!   `spotInstancePercentage` / rest) wins, among the tiers the pod allows (its tier
//!   preference and tolerations). Without reserved capacity spot and on-demand split in the
//!   ratio of their shares. Pools of a tier: healthier spot pools, then `priority`.
//! - **Interruption-rate adaptation**: per pool, factor `f = min(1, threshold / rate24h)`;
//!   the fleet's spot share for new capacity is `share × max f` over spot pools (the
//!   difference goes to on-demand), and spot pools are tried in descending `f`. It restores
//!   itself as interruptions leave the 24 h window. See [`spot_rate_factor`].
//! - **Failures**: a failed or refused scale-up, or instances not registered within
//!   `maxNodeProvisionTimeSeconds`, back the pool off for 30 s doubling to 10 min; its
//!   unregistered requests are dropped (`target_reductions`) and the same plan re-packs the
//!   demand on the next eligible pool.
//! - **Utilization**: GPU-weighted mean over nodes with known utilization; above
//!   `scaleUpThreshold`, add GPUs until `busy / (total + idle incoming + added)` is under it.
//!   Blocked by the scale-up cooldown; pending-pod and minimum scale-ups are not (their
//!   accounting of capacity on its way already prevents duplicates).
//! - **Predictive**: with `enablePredictiveScaling`, confidence ≥ `confidenceThreshold` and
//!   predicted utilization ≥ `preWarmThreshold`, capacity is raised to the forecast's upper
//!   GPUs; scale-down keeps that many GPUs until `hold_until`.
//! - **Scale-down**: a node below `scaleDownThreshold` (known utilization only) for
//!   `underutilizedDurationSeconds`, outside both cooldowns, in a plan that adds nothing,
//!   whose pods (DaemonSet and mirror pods aside; none bare or opted out) fit on the nodes that
//!   stay (anti-affinity included), that no pending GPU pod could use, without breaking
//!   minimums, the pre-warm hold or pushing the rest over `scaleUpThreshold`. Cordon, drain low priority first, and
//!   terminate once only DaemonSet/mirror pods remain.
//! - **Interruptions**: cordon, drain by priority inside the notice (see
//!   [`interruption_evictions`]), replacement capacity for its GPU pods in the same plan on
//!   another instance type or zone of the pool, else by the tier rules; terminate once
//!   drained.
//!
//! Not modelled: pod affinity (attraction), spread constraints' `minDomains`,
//! `nodeAffinityPolicy`/`nodeTaintsPolicy` and `matchLabelKeys` (newer than our 1.20 test
//! scheduler), and host ports. A pod held back by one of those looks placeable on a ready node
//! with room, so it triggers no scale-up.
//!
//! [`testing::VirtualCluster`] applies plans to a simulated cluster on a virtual clock; tests
//! and `simulate` use it to drive multi-step scenarios.

mod drain;
mod matching;
pub mod model;
mod pack;
mod planner;
pub mod testing;

pub use drain::{DEFAULT_GRACE_SECONDS, interruption_evictions, scale_down_evictions};
pub use model::*;
pub use planner::{
    BACKOFF_INITIAL_SECONDS, BACKOFF_MAX_SECONDS, DIVERSIFY_PRICE_TOLERANCE,
    SCALE_DOWN_DRAIN_TIMEOUT_SECONDS, backoff_seconds, plan, spot_rate_factor,
};
