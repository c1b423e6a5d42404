//! PodDisruptionBudget status, which nothing computes here.
//!
//! In a real cluster kube-controller-manager's disruption controller fills in a PDB's status.
//! None runs in the test control plane, so a fresh PDB keeps `observedGeneration: 0` and
//! `disruptionsAllowed: 0`, and the eviction API refuses every pod it covers. Tests that evict
//! play the controller with [`set_pdb_disruptions_allowed`].

use kube::Client;
use serde_json::{Value, json};

use crate::{Error, Result};

/// Writes the status the disruption controller would: `disruptionsAllowed: allowed`, observed
/// at the PDB's current generation (the eviction API ignores a status older than the spec).
/// Uses `policy/v1beta1`, the only PDB version kube-apiserver 1.20 serves.
pub async fn set_pdb_disruptions_allowed(
    client: &Client,
    namespace: &str,
    name: &str,
    allowed: i32,
) -> Result<()> {
    let path = format!("/apis/policy/v1beta1/namespaces/{namespace}/poddisruptionbudgets/{name}");
    let get = http::Request::get(&path)
        .body(Vec::new())
        .map_err(|e| Error::Request(format!("{path}: {e}")))?;
    let pdb: Value = client.request(get).await?;
    let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(0);
    let patch = json!({
        "status": {
            "observedGeneration": generation,
            "disruptionsAllowed": allowed,
            "currentHealthy": allowed,
            "desiredHealthy": 0,
            "expectedPods": allowed,
        }
    });
    let body = serde_json::to_vec(&patch)?;
    let request = http::Request::patch(format!("{path}/status"))
        .header(http::header::CONTENT_TYPE, "application/merge-patch+json")
        .body(body)
        .map_err(|e| Error::Request(format!("{path}: {e}")))?;
    let _: Value = client.request(request).await?;
    Ok(())
}
