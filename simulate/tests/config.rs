//! Policies and pools: bundled policies validate, bad ones are explained, prices come from the catalog.

use gpu_autoscaler_api::CapacityType;
use gpu_autoscaler_catalog::{Catalog, Cloud};
use gpu_autoscaler_simulate::SimConfig;
use gpu_autoscaler_simulate::config::{build_pools, parse_policy};

#[test]
fn bundled_policies_parse_and_validate() {
    for (name, text) in [
        (
            "default-policy-aws.yaml",
            include_str!("../data/default-policy-aws.yaml"),
        ),
        (
            "default-policy-gcp.yaml",
            include_str!("../data/default-policy-gcp.yaml"),
        ),
        (
            "policy-spot-heavy-aws.yaml",
            include_str!("../data/policy-spot-heavy-aws.yaml"),
        ),
        (
            "policy-cost-aws.yaml",
            include_str!("../data/policy-cost-aws.yaml"),
        ),
        (
            "policy-predictive-aws.yaml",
            include_str!("../data/policy-predictive-aws.yaml"),
        ),
    ] {
        let spec = parse_policy(name, text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!spec.node_pools.is_empty(), "{name}");
    }
}

#[test]
fn invalid_policy_names_the_file_and_the_field() {
    let yaml = "scaleUpThreshold: 0.3\nscaleDownThreshold: 0.5\nnodePools:\n  - name: p\n    maxSize: 1\n    instanceTypes: [g4dn.12xlarge]\n";
    let msg = parse_policy("mine.yaml", yaml).unwrap_err().to_string();
    assert!(
        msg.contains("mine.yaml") && msg.contains("spec.scaleDownThreshold"),
        "{msg}"
    );
    let msg = parse_policy("mine.yaml", "scaleUpThreshold: [")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("mine.yaml"), "{msg}");
    let msg = parse_policy("mine.yaml", "maxNodes: 3\n")
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nodePools is empty"), "{msg}");
}

#[test]
fn pools_are_priced_from_the_catalog_and_unknown_types_name_the_known_ones() {
    let cfg = SimConfig::new(Cloud::Aws).unwrap();
    let pools = build_pools(&cfg).unwrap();
    let cat = Catalog::aws("us-east-1").unwrap();
    for p in &pools {
        for s in &p.shapes {
            let it = cat.get(&s.instance_type).unwrap();
            assert_eq!(
                Some(s.price_per_hour),
                it.price(p.capacity),
                "{} {}",
                p.name,
                s.instance_type
            );
            assert_eq!(
                s.hourly_interruption.is_some(),
                p.capacity == CapacityType::Spot
            );
        }
    }

    let mut cfg = SimConfig::new(Cloud::Aws).unwrap();
    cfg.policy.node_pools[0].instance_types = vec!["p9.mega".into()];
    let msg = build_pools(&cfg).unwrap_err().to_string();
    assert!(
        msg.contains("p9.mega") && msg.contains("g4dn.12xlarge"),
        "{msg}"
    );

    let mut cfg = SimConfig::new(Cloud::Aws).unwrap();
    cfg.region = "eu-west-1".into();
    let msg = build_pools(&cfg).unwrap_err().to_string();
    assert!(
        msg.contains("eu-west-1") && msg.contains("us-east-1"),
        "{msg}"
    );
}

#[test]
fn gcp_reserved_pool_uses_the_committed_use_price_and_azure_is_explained() {
    let cfg = SimConfig::new(Cloud::Gcp).unwrap();
    let pools = build_pools(&cfg).unwrap();
    let reserved = pools
        .iter()
        .find(|p| p.capacity == CapacityType::Reserved)
        .unwrap();
    let it = Catalog::gcp("us-central1")
        .unwrap()
        .get(&reserved.shapes[0].instance_type)
        .unwrap()
        .clone();
    assert_eq!(
        Some(reserved.shapes[0].price_per_hour),
        it.reserved_usd_per_hour
    );
    assert!(reserved.shapes[0].price_per_hour < it.on_demand_usd_per_hour);

    let msg = SimConfig::new(Cloud::Azure).unwrap_err().to_string();
    assert!(
        msg.contains("azure") && msg.contains("GPU counts") && msg.contains("spot"),
        "{msg}"
    );
}
