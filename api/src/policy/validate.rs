//! Cross-field validation of an `AutoscalingPolicySpec`.
//!
//! Kubernetes 1.20's structural schema checks single fields only. Everything that relates two
//! fields is checked here, and the same function serves the webhook's `/validate-policy`
//! route (reject on write) and the scaler (report `Valid=False` for objects stored before
//! the webhook existed, or applied while it was down).

use std::collections::BTreeMap;
use std::fmt;

use super::AutoscalingPolicySpec;

/// One problem, with the JSON path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Shares may be written as 0.6/0.35/0.05 in YAML; allow float noise, not real mistakes.
const SHARE_TOLERANCE: f64 = 1e-6;

/// Validates the rules a schema cannot express. Returns every error, not just the first.
pub fn validate(spec: &AutoscalingPolicySpec) -> Result<(), ValidationErrors> {
    let mut errs = Vec::new();
    let mut push = |path: &str, message: String| {
        errs.push(FieldError {
            path: path.to_string(),
            message,
        })
    };

    // Ranges again: objects may come from YAML files (`simulate --policy`) or predate the CRD.
    for (path, v) in [
        ("spec.scaleUpThreshold", spec.scale_up_threshold),
        ("spec.scaleDownThreshold", spec.scale_down_threshold),
        ("spec.spotInstancePercentage", spec.spot_instance_percentage),
        (
            "spec.multiTier.spotPercentage",
            spec.multi_tier.spot_percentage,
        ),
        (
            "spec.multiTier.onDemandPercentage",
            spec.multi_tier.on_demand_percentage,
        ),
        (
            "spec.multiTier.reservedPercentage",
            spec.multi_tier.reserved_percentage,
        ),
        (
            "spec.spot.interruptionRateThreshold",
            spec.spot.interruption_rate_threshold,
        ),
        (
            "spec.predictive.confidenceThreshold",
            spec.predictive.confidence_threshold,
        ),
        (
            "spec.predictive.preWarmThreshold",
            spec.predictive.pre_warm_threshold,
        ),
    ] {
        if !(0.0..=1.0).contains(&v) {
            push(path, format!("must be between 0 and 1, got {v}"));
        }
    }
    if !(1..=28).contains(&spec.predictive.lookback_days) {
        push(
            "spec.predictive.lookbackDays",
            format!(
                "must be between 1 and 28, got {}",
                spec.predictive.lookback_days
            ),
        );
    }

    if spec.scale_down_threshold >= spec.scale_up_threshold {
        push(
            "spec.scaleDownThreshold",
            format!(
                "must be lower than spec.scaleUpThreshold ({} >= {}), or the scaler would add and remove the same nodes",
                spec.scale_down_threshold, spec.scale_up_threshold
            ),
        );
    }
    if spec.min_nodes > spec.max_nodes {
        push(
            "spec.minNodes",
            format!(
                "must not exceed spec.maxNodes ({} > {})",
                spec.min_nodes, spec.max_nodes
            ),
        );
    }

    if spec.enable_multi_tier_scaling {
        let t = &spec.multi_tier;
        let sum = t.spot_percentage + t.on_demand_percentage + t.reserved_percentage;
        if (sum - 1.0).abs() > SHARE_TOLERANCE {
            push(
                "spec.multiTier",
                format!(
                    "spotPercentage + onDemandPercentage + reservedPercentage must sum to 1, got {} + {} + {} = {}",
                    t.spot_percentage,
                    t.on_demand_percentage,
                    t.reserved_percentage,
                    round6(sum)
                ),
            );
        }
    }

    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut min_sum: u64 = 0;
    for (i, pool) in spec.node_pools.iter().enumerate() {
        let at = format!("spec.nodePools[{i}]");
        if let Err(why) = check_label_value(&pool.name) {
            push(&format!("{at}.name"), format!("{:?} {why}", pool.name));
        }
        if let Some(first) = seen.insert(pool.name.as_str(), i) {
            // Put the first index back so a third duplicate also names the first.
            seen.insert(pool.name.as_str(), first);
            push(
                &format!("{at}.name"),
                format!(
                    "duplicate pool name {:?}, already used by spec.nodePools[{first}]",
                    pool.name
                ),
            );
        }
        if pool.min_size > pool.max_size {
            push(
                &format!("{at}.minSize"),
                format!(
                    "must not exceed maxSize ({} > {})",
                    pool.min_size, pool.max_size
                ),
            );
        }
        if pool.instance_types.is_empty() {
            push(
                &format!("{at}.instanceTypes"),
                "must list at least one instance type".to_string(),
            );
        }
        let mut types_seen = BTreeMap::new();
        for (j, t) in pool.instance_types.iter().enumerate() {
            if t.trim().is_empty() {
                push(
                    &format!("{at}.instanceTypes[{j}]"),
                    "must not be empty".to_string(),
                );
            } else if let Some(k) = types_seen.insert(t.as_str(), j) {
                push(
                    &format!("{at}.instanceTypes[{j}]"),
                    format!("duplicate instance type {t:?}, already at index {k}"),
                );
            }
        }
        if let Some(p) = pool.spot_percentage
            && !(0.0..=1.0).contains(&p)
        {
            push(
                &format!("{at}.spotPercentage"),
                format!("must be between 0 and 1, got {p}"),
            );
        }
        min_sum += u64::from(pool.min_size);
    }
    if min_sum > u64::from(spec.max_nodes) {
        push(
            "spec.nodePools",
            format!(
                "the pools' minSize values add up to {min_sum}, more than spec.maxNodes ({})",
                spec.max_nodes
            ),
        );
    }

    let pool_names: Vec<&str> = spec.node_pools.iter().map(|p| p.name.as_str()).collect();
    let mut check_mapping = |field: &str, map: &BTreeMap<String, String>| {
        for (pool, group) in map {
            if !pool_names.contains(&pool.as_str()) {
                push(
                    &format!("spec.{field}[{pool}]"),
                    format!(
                        "names no pool in spec.nodePools (known: {})",
                        pool_names.join(", ")
                    ),
                );
            }
            if group.trim().is_empty() {
                push(
                    &format!("spec.{field}[{pool}]"),
                    "group name must not be empty".to_string(),
                );
            }
        }
    };
    if let Some(aws) = &spec.aws {
        check_mapping("aws.autoScalingGroups", &aws.auto_scaling_groups);
    }
    if let Some(gcp) = &spec.gcp {
        check_mapping("gcp.instanceGroups", &gcp.instance_groups);
    }
    if let Some(az) = &spec.azure {
        check_mapping("azure.vmScaleSets", &az.vm_scale_sets);
    }

    if errs.is_empty() {
        Ok(())
    } else {
        Err(ValidationErrors(errs))
    }
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// Pool names become label values: at most 63 characters, alphanumeric at both ends,
/// `-`, `_` and `.` inside.
fn check_label_value(v: &str) -> Result<(), &'static str> {
    if v.is_empty() {
        return Err("must not be empty");
    }
    if v.len() > 63 {
        return Err("is longer than 63 characters (it is used as a label value)");
    }
    let ok_inner = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let ends_ok = v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok_inner && ends_ok {
        Ok(())
    } else {
        Err(
            "is not a valid label value (alphanumerics, '-', '_' and '.', starting and ending alphanumeric)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::CapacityType;
    use crate::policy::{AwsSettings, NodePool};

    fn pool(name: &str, min: u32, max: u32) -> NodePool {
        NodePool {
            name: name.into(),
            min_size: min,
            max_size: max,
            gpu_type: None,
            instance_types: vec!["p3.2xlarge".into()],
            capacity_type: CapacityType::Spot,
            spot_percentage: None,
            priority: 0,
            labels: Default::default(),
            taints: vec![],
            availability_zones: vec![],
        }
    }

    fn messages(spec: &AutoscalingPolicySpec) -> Vec<String> {
        match validate(spec) {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn default_spec_is_valid() {
        assert!(validate(&AutoscalingPolicySpec::default()).is_ok());
    }

    #[test]
    fn min_above_max_is_precise() {
        let spec = AutoscalingPolicySpec {
            min_nodes: 5,
            max_nodes: 3,
            ..Default::default()
        };
        let m = messages(&spec);
        assert!(
            m.iter()
                .any(|m| m == "spec.minNodes: must not exceed spec.maxNodes (5 > 3)"),
            "{m:?}"
        );
    }

    #[test]
    fn duplicate_pool_names_name_both_indexes() {
        let spec = AutoscalingPolicySpec {
            node_pools: vec![pool("a", 0, 5), pool("b", 0, 5), pool("a", 0, 5)],
            ..Default::default()
        };
        let m = messages(&spec);
        assert_eq!(
            m,
            vec![
                "spec.nodePools[2].name: duplicate pool name \"a\", already used by spec.nodePools[0]"
            ]
        );
    }

    #[test]
    fn shares_must_sum_to_one() {
        let mut spec = AutoscalingPolicySpec::default();
        spec.multi_tier.reserved_percentage = 0.1;
        let m = messages(&spec);
        assert_eq!(
            m,
            vec![
                "spec.multiTier: spotPercentage + onDemandPercentage + reservedPercentage must sum to 1, got 0.6 + 0.35 + 0.1 = 1.05"
            ]
        );
        // Float noise like 0.6 + 0.3 + 0.1 is fine.
        spec.multi_tier.on_demand_percentage = 0.3;
        assert!(validate(&spec).is_ok());
        // Off means the shares are not used, so not checked.
        spec.multi_tier.reserved_percentage = 0.5;
        spec.enable_multi_tier_scaling = false;
        assert!(validate(&spec).is_ok());
    }

    #[test]
    fn pool_rules() {
        let mut bad = pool("Bad Name", 6, 5);
        bad.instance_types = vec!["g5.xlarge".into(), "g5.xlarge".into()];
        let spec = AutoscalingPolicySpec {
            max_nodes: 4,
            node_pools: vec![bad],
            aws: Some(AwsSettings {
                region: None,
                auto_scaling_groups: [("ghost".to_string(), "asg".to_string())].into(),
                auto_discovery_tags: Default::default(),
            }),
            ..Default::default()
        };
        let m = messages(&spec).join("\n");
        assert!(
            m.contains("spec.nodePools[0].name: \"Bad Name\" is not a valid label value"),
            "{m}"
        );
        assert!(
            m.contains("spec.nodePools[0].minSize: must not exceed maxSize (6 > 5)"),
            "{m}"
        );
        assert!(
            m.contains("spec.nodePools[0].instanceTypes[1]: duplicate instance type \"g5.xlarge\""),
            "{m}"
        );
        assert!(
            m.contains(
                "spec.nodePools: the pools' minSize values add up to 6, more than spec.maxNodes (4)"
            ),
            "{m}"
        );
        assert!(
            m.contains("spec.aws.autoScalingGroups[ghost]: names no pool"),
            "{m}"
        );
    }

    #[test]
    fn thresholds_out_of_range_or_inverted() {
        let spec = AutoscalingPolicySpec {
            scale_up_threshold: 1.5,
            scale_down_threshold: 0.9,
            ..Default::default()
        };
        let m = messages(&spec).join("\n");
        assert!(
            m.contains("spec.scaleUpThreshold: must be between 0 and 1, got 1.5"),
            "{m}"
        );
        let spec = AutoscalingPolicySpec {
            scale_up_threshold: 0.5,
            scale_down_threshold: 0.6,
            ..Default::default()
        };
        let m = messages(&spec).join("\n");
        assert!(
            m.contains("spec.scaleDownThreshold: must be lower than spec.scaleUpThreshold"),
            "{m}"
        );
    }
}
