//! The chart ships the CRD as a file; it must be byte-for-byte what the Rust types generate.
//! Regenerate with: `cargo run -p gpu-autoscaler -- crd > charts/gpu-autoscaler/crds/autoscalingpolicies.gpu-autoscaler.io.yaml`

#[test]
fn chart_crd_matches_generated() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/gpu-autoscaler/crds/autoscalingpolicies.gpu-autoscaler.io.yaml"
    );
    let shipped = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let generated = gpu_autoscaler_api::policy::crd_yaml();
    assert!(
        shipped == generated,
        "{path} drifted from the Rust types; regenerate it with \
         `cargo run -p gpu-autoscaler -- crd > {path}`"
    );
}
