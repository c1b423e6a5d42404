//! Table tests of the pure decision core: filter and prioritize over node and pod tables,
//! including a 5,000-node cluster.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use gpu_autoscaler_api::CapacityType::{self, OnDemand, Reserved, Spot};
use gpu_autoscaler_api::EvictionPriority;
use gpu_autoscaler_extender::decide::{
    self, Breakdown, Config, FailReason, ReplicaSpread, ScoreContext,
};
use gpu_autoscaler_extender::rates::{SpotRates, SpotRatesDoc};
use gpu_autoscaler_extender::synth;
use gpu_autoscaler_extender::view::{NodeView, OwnerKey, PodPolicy, PodView};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 28, 12, 0, 0).unwrap()
}

fn node(name: &str, ct: Option<CapacityType>, alloc: u32, used: u32) -> NodeView {
    NodeView {
        capacity: ct,
        allocatable_gpus: alloc,
        gpus_in_use: used,
        ..NodeView::named(name)
    }
}

fn managed(tiers: &str, priority: EvictionPriority, gpus: u32) -> PodView {
    PodView {
        gpus,
        policy: PodPolicy::Managed {
            tiers: tiers.parse().unwrap(),
            priority,
        },
        owner: None,
    }
}

fn reason_label(r: &Option<FailReason>) -> &'static str {
    r.as_ref().map_or("pass", FailReason::metric_label)
}

#[test]
fn filter_table_gives_each_reason() {
    let cfg = Config::default();
    let t = now();
    let warned = NodeView {
        interruption_warning: true,
        ..node("warned", Some(Spot), 8, 0)
    };
    let past = NodeView {
        termination_time: Some(t - chrono::Duration::seconds(1)),
        ..node("past", Some(Spot), 8, 0)
    };
    let soon = NodeView {
        termination_time: Some(t + chrono::Duration::minutes(9)),
        ..node("soon", Some(Spot), 8, 0)
    };
    let later = NodeView {
        termination_time: Some(t + chrono::Duration::minutes(11)),
        ..node("later", Some(Spot), 8, 0)
    };
    let cordoned = NodeView {
        unschedulable: true,
        ..node("cordoned", Some(OnDemand), 8, 0)
    };
    let nodes = vec![
        node("spot", Some(Spot), 8, 0),
        node("od", Some(OnDemand), 8, 0),
        node("res", Some(Reserved), 8, 0),
        node("unlabelled", None, 8, 0),
        warned,
        past,
        soon,
        later,
        cordoned,
        // A full node still passes: fitting is the scheduler's own job.
        node("full", Some(Spot), 8, 8),
    ];
    // (pod tiers, expected label per node in order)
    let table: &[(&str, [&str; 10])] = &[
        (
            "spot,on-demand",
            [
                "pass",
                "pass",
                "capacity_type",
                "pass",
                "interruption_warning",
                "termination_time",
                "termination_time",
                "pass",
                "cordoned",
                "pass",
            ],
        ),
        (
            "on-demand",
            [
                "capacity_type",
                "pass",
                "capacity_type",
                "pass",
                "capacity_type",
                "capacity_type",
                "capacity_type",
                "capacity_type",
                "cordoned",
                "capacity_type",
            ],
        ),
        (
            "reserved,on-demand,spot",
            [
                "pass",
                "pass",
                "pass",
                "pass",
                "interruption_warning",
                "termination_time",
                "termination_time",
                "pass",
                "cordoned",
                "pass",
            ],
        ),
    ];
    for (tiers, want) in table {
        let pod = managed(tiers, EvictionPriority::Medium, 1);
        let got: Vec<&str> = decide::filter(&pod, nodes.iter(), t, &cfg)
            .iter()
            .map(reason_label)
            .collect();
        assert_eq!(got, want, "tiers {tiers}");
    }
}

#[test]
fn failure_messages_are_precise_and_unresolvable() {
    let cfg = Config::default();
    let pod = managed("on-demand,reserved", EvictionPriority::Low, 1);
    let r = decide::check_node(&pod, &node("s", Some(Spot), 8, 0), now(), &cfg).unwrap();
    assert_eq!(
        r.to_string(),
        "gpu-autoscaler: node capacity type spot is not in the pod's tier-preference (on-demand,reserved)"
    );
    assert!(r.unresolvable());
    let soon = NodeView {
        termination_time: Some(now() + chrono::Duration::minutes(2)),
        ..node("s", Some(Spot), 8, 0)
    };
    let pod = managed("spot", EvictionPriority::Low, 1);
    let r = decide::check_node(&pod, &soon, now(), &cfg).unwrap();
    assert_eq!(
        r.to_string(),
        "gpu-autoscaler: node spot-termination-time 2025-06-28T12:02:00+00:00 is within the 600s interruption horizon"
    );
}

#[test]
fn horizon_is_configurable_and_inclusive() {
    let t = now();
    let n = NodeView {
        termination_time: Some(t + chrono::Duration::minutes(5)),
        ..node("n", Some(Spot), 8, 0)
    };
    let pod = managed("spot", EvictionPriority::Medium, 1);
    let at = |secs| Config {
        interruption_horizon: Duration::from_secs(secs),
        ..Config::default()
    };
    assert!(
        decide::check_node(&pod, &n, t, &at(300)).is_some(),
        "exactly at the horizon fails"
    );
    assert!(decide::check_node(&pod, &n, t, &at(299)).is_none());
    assert!(
        decide::check_node(&pod, &n, t, &at(0)).is_none(),
        "future time, no horizon passes"
    );
}

#[test]
fn unknown_capacity_follows_config() {
    let n = node("bare", None, 8, 0);
    let pod = managed("spot", EvictionPriority::Medium, 1);
    let as_od = Config::default();
    assert_eq!(
        reason_label(&decide::check_node(&pod, &n, now(), &as_od)),
        "capacity_type"
    );
    let pod_od = managed("on-demand", EvictionPriority::Medium, 1);
    assert!(decide::check_node(&pod_od, &n, now(), &as_od).is_none());
    let reject = Config {
        unknown_capacity: None,
        ..Config::default()
    };
    let r = decide::check_node(&pod_od, &n, now(), &reject);
    assert_eq!(reason_label(&r), "capacity_type_unknown");
    assert!(r.unwrap().to_string().contains("no capacity-type label"));
}

#[test]
fn pass_through_and_invalid_pods() {
    let cfg = Config::default();
    let nodes = [
        NodeView {
            interruption_warning: true,
            unschedulable: true,
            ..node("a", Some(Spot), 8, 0)
        },
        node("b", Some(OnDemand), 8, 0),
    ];
    let pass = PodView {
        gpus: 1,
        policy: PodPolicy::PassThrough,
        owner: None,
    };
    assert_eq!(
        decide::filter(&pass, nodes.iter(), now(), &cfg),
        vec![None, None]
    );
    let rates = SpotRates::default();
    let ctx = ScoreContext {
        rates: &rates,
        spread: None,
    };
    assert_eq!(
        decide::prioritize(&pass, nodes.iter(), now(), &ctx, &cfg),
        vec![0, 0]
    );

    let bad = PodView {
        gpus: 1,
        policy: PodPolicy::Invalid("annotation x: bad".into()),
        owner: None,
    };
    let verdicts = decide::filter(&bad, nodes.iter(), now(), &cfg);
    assert!(verdicts.iter().all(|v| {
        v.as_ref()
            .is_some_and(|r| r.to_string() == "gpu-autoscaler: annotation x: bad")
    }));
    assert_eq!(
        decide::prioritize(&bad, nodes.iter(), now(), &ctx, &cfg),
        vec![0, 0]
    );
}

fn scores(
    pod: &PodView,
    nodes: &[NodeView],
    rates: &SpotRates,
    spread: Option<&ReplicaSpread>,
) -> Vec<i64> {
    let ctx = ScoreContext { rates, spread };
    decide::prioritize(pod, nodes.iter(), now(), &ctx, &Config::default())
}

#[test]
fn tier_position_orders_capacity_types() {
    let nodes = vec![
        node("spot", Some(Spot), 8, 0),
        node("od", Some(OnDemand), 8, 0),
        node("res", Some(Reserved), 8, 0),
    ];
    let rates = SpotRates::default();
    let s = scores(
        &managed("spot,on-demand,reserved", EvictionPriority::Low, 1),
        &nodes,
        &rates,
        None,
    );
    assert!(s[0] > s[1] && s[1] > s[2], "{s:?}");
    let s = scores(
        &managed("reserved,on-demand,spot", EvictionPriority::Low, 1),
        &nodes,
        &rates,
        None,
    );
    assert!(s[2] > s[1] && s[1] > s[0], "{s:?}");
    // Tier beats packing: an on-demand node the pod would fill exactly still loses to spot.
    let nodes = vec![
        node("spot", Some(Spot), 8, 0),
        node("od", Some(OnDemand), 8, 7),
    ];
    let s = scores(
        &managed("spot,on-demand", EvictionPriority::Low, 1),
        &nodes,
        &rates,
        None,
    );
    assert!(s[0] > s[1], "{s:?}");
}

#[test]
fn packing_prefers_fewest_gpus_left_over() {
    let rates = SpotRates::default();
    let nodes = vec![
        node("empty8", Some(OnDemand), 8, 0),
        node("half8", Some(OnDemand), 8, 4),
        node("exact", Some(OnDemand), 8, 6),
        node("toofull", Some(OnDemand), 8, 7),
        node("nogpu", Some(OnDemand), 0, 0),
    ];
    let s = scores(
        &managed("on-demand", EvictionPriority::Low, 2),
        &nodes,
        &rates,
        None,
    );
    assert!(s[2] > s[1] && s[1] > s[0], "{s:?}");
    assert_eq!(
        s[2], 10,
        "exact fit with only tier and packing applying is the maximum"
    );
    assert!(
        s[3] < s[0] && s[4] == s[3],
        "not fitting scores like having no GPUs: {s:?}"
    );
}

#[test]
fn spot_risk_only_for_high_priority() {
    let mk = |name: &str, itype: &str| NodeView {
        instance_type: Some(Arc::from(itype)),
        region: Some(Arc::from("us-east-1")),
        ..node(name, Some(Spot), 8, 0)
    };
    // Bundled advisor, us-east-1: p5en.48xlarge <5%, g5.48xlarge >20%.
    let nodes = vec![mk("calm", "p5en.48xlarge"), mk("stormy", "g5.48xlarge")];
    let rates = SpotRates::default();
    let hi = scores(
        &managed("spot", EvictionPriority::High, 1),
        &nodes,
        &rates,
        None,
    );
    assert!(hi[0] > hi[1], "{hi:?}");
    let med = scores(
        &managed("spot", EvictionPriority::Medium, 1),
        &nodes,
        &rates,
        None,
    );
    assert_eq!(med[0], med[1], "{med:?}");
    // Published rates override the advisor.
    let doc = SpotRatesDoc::parse(r#"{"instanceTypes":{"p5en.48xlarge":0.24,"g5.48xlarge":0.0}}"#)
        .unwrap();
    let hi = scores(
        &managed("spot", EvictionPriority::High, 1),
        &nodes,
        &SpotRates::new(doc),
        None,
    );
    assert!(hi[0] < hi[1], "{hi:?}");
}

#[test]
fn spread_prefers_zones_and_spot_types_without_siblings() {
    let mk = |name: &str, zone: &str, itype: &str| NodeView {
        zone: Some(Arc::from(zone)),
        instance_type: Some(Arc::from(itype)),
        ..node(name, Some(Spot), 8, 0)
    };
    let placed = [mk("p1", "a", "g5.12xlarge"), mk("p2", "a", "g5.12xlarge")];
    let spread = ReplicaSpread::from_placements(placed.iter().map(|n| (n, 1)));
    assert_eq!(spread.total, 2);
    let nodes = [
        mk("same", "a", "g5.12xlarge"),
        mk("otherzone", "b", "g5.12xlarge"),
        mk("fresh", "b", "p4d.24xlarge"),
    ];
    let pod = PodView {
        owner: Some(OwnerKey(Arc::from("rs"))),
        ..managed("spot", EvictionPriority::Low, 1)
    };
    let ctx = ScoreContext {
        rates: &SpotRates::default(),
        spread: Some(&spread),
    };
    let b: Vec<Breakdown> = nodes
        .iter()
        .map(|n| decide::score_node(&pod, n, now(), &ctx, &Config::default()))
        .collect();
    assert_eq!(b[0].spread, Some(0.0));
    assert_eq!(b[1].spread, Some(0.5));
    assert_eq!(b[2].spread, Some(1.0));
    assert!(b[2].score > b[0].score, "{b:?}");
    assert_eq!(
        b[0].spot_risk, None,
        "risk does not apply to a low-priority pod"
    );
}

#[test]
fn five_thousand_node_table() {
    let t = now();
    let nodes = synth::cluster(5000, t);
    let cfg = Config::default();
    let pod = managed("spot,on-demand", EvictionPriority::High, 2);
    let verdicts = decide::filter(&pod, nodes.iter(), t, &cfg);
    assert_eq!(verdicts.len(), 5000);
    // Independent recount of what must fail, by reason, in check order.
    let mut want = std::collections::BTreeMap::<&str, usize>::new();
    for n in &nodes {
        let label = if n.capacity == Some(Reserved) {
            "capacity_type"
        } else if n.interruption_warning {
            "interruption_warning"
        } else if n.termination_time.is_some() {
            "termination_time"
        } else if n.unschedulable {
            "cordoned"
        } else {
            "pass"
        };
        *want.entry(label).or_default() += 1;
    }
    let mut got = std::collections::BTreeMap::<&str, usize>::new();
    for v in &verdicts {
        *got.entry(reason_label(v)).or_default() += 1;
    }
    assert_eq!(got, want);
    assert_eq!(got["capacity_type"], 625);

    let rates = SpotRates::default();
    let ctx = ScoreContext {
        rates: &rates,
        spread: None,
    };
    let s = decide::prioritize(&pod, nodes.iter(), t, &ctx, &cfg);
    assert_eq!(s.len(), 5000);
    assert!(s.iter().all(|x| (0..=10).contains(x)));
    for (v, score) in verdicts.iter().zip(&s) {
        if v.is_some() {
            assert_eq!(*score, 0, "filtered nodes score 0");
        }
    }
    // The best node is a feasible spot node of the calmest type that the pod fills exactly.
    let best = s
        .iter()
        .zip(&nodes)
        .max_by_key(|(score, _)| **score)
        .map(|(_, n)| n)
        .unwrap();
    assert_eq!(best.capacity, Some(Spot));
    assert_eq!(best.instance_type.as_deref(), Some("p5en.48xlarge"));
    assert_eq!(best.free_gpus(), 2);
}
