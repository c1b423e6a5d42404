//! Capacity types and how to read them off a node, whatever provisioned it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::keys;

/// How a node is paid for. The order of the variants is the order of reliability.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum CapacityType {
    /// Committed, always-on capacity (reserved instances, committed use, reservations).
    #[serde(rename = "reserved")]
    Reserved,
    /// Pay-as-you-go capacity that the cloud never reclaims.
    #[serde(rename = "on-demand")]
    OnDemand,
    /// Spare capacity at a discount that the cloud may reclaim at short notice.
    #[serde(rename = "spot")]
    Spot,
}

impl CapacityType {
    pub const ALL: [CapacityType; 3] = [Self::Reserved, Self::OnDemand, Self::Spot];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::OnDemand => "on-demand",
            Self::Spot => "spot",
        }
    }

    /// The values as a user should type them, for error messages.
    pub fn allowed_values() -> &'static str {
        "reserved, on-demand, spot"
    }
}

impl fmt::Display for CapacityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capacity type {0:?}; allowed values: reserved, on-demand, spot")]
pub struct UnknownCapacityType(pub String);

impl FromStr for CapacityType {
    type Err = UnknownCapacityType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "reserved" => Ok(Self::Reserved),
            "on-demand" => Ok(Self::OnDemand),
            "spot" => Ok(Self::Spot),
            other => Err(UnknownCapacityType(other.to_string())),
        }
    }
}

/// Reads a node's capacity type from its labels.
///
/// Our own label wins; then the conventions of Karpenter, EKS managed node groups, GKE (spot
/// and the older preemptible VMs) and AKS scale-set priority. `None` means no convention
/// says anything, which callers treat as "unknown", not as on-demand: a GKE or AKS node
/// without the label is on-demand, but a bare node from an unknown provisioner may not be.
pub fn detect(labels: &BTreeMap<String, String>) -> Option<CapacityType> {
    let get = |k: &str| labels.get(k).map(|v| v.trim());
    if let Some(ct) = get(keys::LABEL_CAPACITY_TYPE).and_then(|v| v.parse().ok()) {
        return Some(ct);
    }
    if let Some(v) = get(keys::LABEL_KARPENTER_CAPACITY_TYPE) {
        match v {
            "spot" => return Some(CapacityType::Spot),
            "on-demand" => return Some(CapacityType::OnDemand),
            "reserved" => return Some(CapacityType::Reserved),
            _ => {}
        }
    }
    if let Some(v) = get(keys::LABEL_EKS_CAPACITY_TYPE) {
        match v {
            "SPOT" => return Some(CapacityType::Spot),
            "ON_DEMAND" => return Some(CapacityType::OnDemand),
            // EKS labels nodes launched into an ODCR / capacity block this way.
            "CAPACITY_BLOCK" => return Some(CapacityType::Reserved),
            _ => {}
        }
    }
    let gke_spot = get(keys::LABEL_GKE_SPOT);
    let gke_preemptible = get(keys::LABEL_GKE_PREEMPTIBLE);
    if gke_spot == Some("true") || gke_preemptible == Some("true") {
        return Some(CapacityType::Spot);
    }
    if labels.contains_key("cloud.google.com/gke-nodepool") {
        // A GKE node without either spot label is a standard (on-demand) VM.
        return Some(CapacityType::OnDemand);
    }
    match get(keys::LABEL_AKS_SCALESET_PRIORITY) {
        Some("spot") => return Some(CapacityType::Spot),
        Some("regular") => return Some(CapacityType::OnDemand),
        _ => {}
    }
    if labels.contains_key("kubernetes.azure.com/agentpool") {
        // AKS labels only spot pools; regular pools carry no priority label.
        return Some(CapacityType::OnDemand);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn detects_every_convention() {
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<CapacityType>);
        let cases: &[Case] = &[
            (
                &[("gpu-autoscaler.io/capacity-type", "spot")],
                Some(CapacityType::Spot),
            ),
            (
                &[("gpu-autoscaler.io/capacity-type", "reserved")],
                Some(CapacityType::Reserved),
            ),
            (
                &[("gpu-autoscaler.io/capacity-type", "on-demand")],
                Some(CapacityType::OnDemand),
            ),
            (
                &[("karpenter.sh/capacity-type", "spot")],
                Some(CapacityType::Spot),
            ),
            (
                &[("karpenter.sh/capacity-type", "on-demand")],
                Some(CapacityType::OnDemand),
            ),
            (
                &[("eks.amazonaws.com/capacityType", "SPOT")],
                Some(CapacityType::Spot),
            ),
            (
                &[("eks.amazonaws.com/capacityType", "ON_DEMAND")],
                Some(CapacityType::OnDemand),
            ),
            (
                &[("cloud.google.com/gke-spot", "true")],
                Some(CapacityType::Spot),
            ),
            (
                &[("cloud.google.com/gke-preemptible", "true")],
                Some(CapacityType::Spot),
            ),
            (
                &[("cloud.google.com/gke-nodepool", "gpu")],
                Some(CapacityType::OnDemand),
            ),
            (
                &[("kubernetes.azure.com/scalesetpriority", "spot")],
                Some(CapacityType::Spot),
            ),
            (
                &[("kubernetes.azure.com/scalesetpriority", "regular")],
                Some(CapacityType::OnDemand),
            ),
            (
                &[("kubernetes.azure.com/agentpool", "gpu")],
                Some(CapacityType::OnDemand),
            ),
            (&[], None),
            (&[("karpenter.sh/capacity-type", "weird")], None),
        ];
        for (kv, want) in cases {
            assert_eq!(detect(&labels(kv)), *want, "labels {kv:?}");
        }
    }

    #[test]
    fn our_label_wins_over_others() {
        let l = labels(&[
            ("gpu-autoscaler.io/capacity-type", "on-demand"),
            ("karpenter.sh/capacity-type", "spot"),
        ]);
        assert_eq!(detect(&l), Some(CapacityType::OnDemand));
    }

    #[test]
    fn invalid_own_label_falls_through_to_other_conventions() {
        let l = labels(&[
            ("gpu-autoscaler.io/capacity-type", "cheap"),
            ("eks.amazonaws.com/capacityType", "SPOT"),
        ]);
        assert_eq!(detect(&l), Some(CapacityType::Spot));
    }

    #[test]
    fn parse_and_display_round_trip() {
        for ct in CapacityType::ALL {
            assert_eq!(ct.as_str().parse::<CapacityType>(), Ok(ct));
            assert_eq!(serde_json::to_string(&ct).unwrap(), format!("\"{ct}\""));
        }
        let err = "ondemand".parse::<CapacityType>().unwrap_err();
        assert!(err.to_string().contains("\"ondemand\""));
        assert!(err.to_string().contains("on-demand"));
    }
}
