//! Expected values below were read off the bundled CSV rows named in each comment.

use super::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

#[test]
fn aws_takes_the_latest_on_demand_segment_and_derives_spot_from_savings() {
    let c = Catalog::aws("us-east-1").unwrap();
    // p4d.24xlarge: $32.7726 until 2025-04, then $21.957642 (the June-2025 price cut).
    let p4d = c.get("p4d.24xlarge").unwrap();
    assert!(close(p4d.on_demand_usd_per_hour, 21.957642));
    // Spot Advisor us-east-1: savings 67%, bucket 2 "10-15%".
    assert!(close(
        p4d.spot_usd_per_hour.unwrap(),
        21.957642 * (1.0 - 0.67)
    ));
    let i = p4d.interruption.as_ref().unwrap();
    assert_eq!((i.bucket_index, i.bucket_label.as_str()), (2, "10-15%"));
    assert!(close(i.monthly_probability, 0.125));
    assert!(matches!(i.source, InterruptionSource::SpotAdvisor { .. }));
    assert_eq!(p4d.whole_gpus(), Some(8));
    assert_eq!(p4d.gpu_model.as_deref(), Some("a100"));
    // No reserved prices for AWS in the data: absent, not guessed.
    assert_eq!(p4d.price(CapacityType::Reserved), None);
    assert_eq!(
        p4d.price(CapacityType::OnDemand),
        Some(p4d.on_demand_usd_per_hour)
    );
}

#[test]
fn open_ended_bucket_is_closed_by_the_feed_max() {
    let c = Catalog::aws("us-east-1").unwrap();
    // g5.12xlarge: bucket 4 ">20%", AWS's max for it is 100 -> midpoint 60%.
    let i = c.get("g5.12xlarge").unwrap().interruption.clone().unwrap();
    assert_eq!(i.bucket_label, ">20%");
    assert!(close(i.monthly_probability, 0.60));
    assert!(i.hourly_probability > 0.0 && i.hourly_probability < 0.01);
    assert_eq!(
        parse::bucket_bounds_for_test("5-10%", 11.0),
        Some((5.0, 10.0))
    );
    assert_eq!(parse::bucket_bounds_for_test("<5%", 5.0), Some((0.0, 5.0)));
    assert_eq!(parse::bucket_bounds_for_test("weird", 5.0), None);
}

#[test]
fn hourly_probability_compounds_back_to_the_monthly_one() {
    for m in [0.025, 0.125, 0.6] {
        let h = hourly_from_monthly(m);
        assert!(close(1.0 - (1.0 - h).powf(HOURS_PER_MONTH), m), "{m}");
    }
    assert_eq!(hourly_from_monthly(0.0), 0.0);
}

#[test]
fn every_aws_type_has_specs_and_a_positive_price() {
    let c = Catalog::aws("us-east-1").unwrap();
    assert!(c.len() > 60, "{}", c.len());
    for t in c.instance_types() {
        assert!(t.on_demand_usd_per_hour > 0.0, "{}", t.name);
        // g6f sizes carry a fraction of an L4 and are listed with gpu_count 0.
        assert!(t.gpus.unwrap() >= 0.0 && t.vcpu.unwrap() > 0, "{}", t.name);
        assert_eq!(
            t.whole_gpus().is_some(),
            t.gpus.unwrap() >= 1.0,
            "{}",
            t.name
        );
        if let Some(s) = t.spot_usd_per_hour {
            assert!(s > 0.0 && s < t.on_demand_usd_per_hour, "{}", t.name);
        }
    }
}

#[test]
fn unknown_region_and_type_name_the_known_ones() {
    let e = Catalog::aws("mars-1").unwrap_err().to_string();
    assert!(e.contains("mars-1") && e.contains("us-east-1"), "{e}");
    let c = Catalog::aws("us-east-1").unwrap();
    let e = c.get("p9.huge").unwrap_err().to_string();
    assert!(
        e.contains("p9.huge") && e.contains("g5.12xlarge") && e.contains("p4d.24xlarge"),
        "{e}"
    );
    let e = Catalog::gcp("atlantis1").unwrap_err().to_string();
    assert!(e.contains("us-central1"), "{e}");
    let e = Catalog::azure("nowhere").unwrap_err().to_string();
    assert!(e.contains("eastus"), "{e}");
    let e = "ibm".parse::<Cloud>().unwrap_err().to_string();
    assert!(e.contains("aws, gcp, azure"), "{e}");
}

#[test]
fn gcp_has_spot_and_one_year_cud_and_a_proxy_interruption() {
    let c = Catalog::gcp("us-central1").unwrap();
    // a2-highgpu-1g us-central1: hour 3.673385, spot 1.92802, month 2681.57105, 1y 1689.3711392.
    let t = c.get("a2-highgpu-1g").unwrap();
    assert!(close(t.on_demand_usd_per_hour, 3.673385));
    assert!(close(t.spot_usd_per_hour.unwrap(), 1.92802));
    assert!(close(
        t.reserved_usd_per_hour.unwrap(),
        1689.3711392 * 3.673385 / 2681.57105
    ));
    assert_eq!(t.memory_mib, Some(85 * 1024));
    let i = t.interruption.as_ref().unwrap();
    match &i.source {
        InterruptionSource::AwsProxy {
            gpu_model,
            aws_types,
        } => {
            assert_eq!(gpu_model, "a100");
            assert!(
                aws_types.iter().any(|t| t.starts_with("p4d")),
                "{aws_types:?}"
            );
        }
        other => panic!("expected a proxy, got {other:?}"),
    }
    // Shared-GPU sizes exist but are not whole GPUs.
    assert!(
        c.instance_types()
            .any(|t| t.gpus.is_some_and(|g| g < 1.0) && t.whole_gpus().is_none())
    );
}

#[test]
fn azure_has_on_demand_only_and_names_parsed() {
    let c = Catalog::azure("eastus").unwrap();
    let t = c.get("Standard_NC24ads_A100_v4").unwrap();
    assert!(close(t.on_demand_usd_per_hour, 3.673));
    assert_eq!((t.vcpu, t.gpu_model.as_deref()), (Some(24), Some("A100")));
    assert_eq!(
        (t.gpus, t.spot_usd_per_hour, t.reserved_usd_per_hour),
        (None, None, None)
    );
    assert!(c.instance_types().all(|t| t.spot_usd_per_hour.is_none()));
    assert_eq!(parse::parse_azure_sku("Standard_NC6s_v3"), (Some(6), None));
    assert_eq!(
        parse::parse_azure_sku("Standard_ND128isr_NDR_GB200_v6"),
        (Some(128), Some("GB200".to_string()))
    );
}

#[test]
fn spot_risk_lookup_covers_more_regions_than_prices() {
    // us-west-2 p3.2xlarge: bucket 4 ">20%".
    let i = aws_interruption("us-west-2", "p3.2xlarge").unwrap();
    assert_eq!(i.bucket_label, ">20%");
    let e = aws_interruption("us-west-2", "nope")
        .unwrap_err()
        .to_string();
    assert!(e.contains("p3.2xlarge"), "{e}");
    let e = aws_interruption("xx-1", "p3.2xlarge")
        .unwrap_err()
        .to_string();
    assert!(e.contains("us-west-2") && e.contains("eu-west-1"), "{e}");
    assert_eq!(
        Catalog::regions(Cloud::Aws).unwrap(),
        vec!["us-east-1".to_string()]
    );
    assert!(Catalog::regions(Cloud::Gcp).unwrap().len() > 10);
}
