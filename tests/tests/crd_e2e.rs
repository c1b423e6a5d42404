//! The AutoscalingPolicy CRD against a real kube-apiserver 1.20: it installs and becomes
//! Established, defaults are applied on write, the schema rejects out-of-range and unknown
//! values with a clear message, and the status subresource can be written.

use std::time::Duration;

use gpu_autoscaler_api::policy::{AutoscalingPolicy, Condition, NodeCounts};
use gpu_autoscaler_api::{AutoscalingPolicyStatus, CapacityType};
use gpu_autoscaler_testkit::{ControlPlane, wait_for};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt};
use serde_json::json;

async fn install_crd(client: &Client) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // Install exactly what `gpu-autoscaler crd` prints (the chart's copy is checked against it).
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&gpu_autoscaler_api::policy::crd_yaml())?;
    assert_eq!(crd, AutoscalingPolicy::crd());
    crds.create(&PostParams::default(), &crd).await?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    wait_for(Duration::from_secs(20), || {
        let crds = crds.clone();
        let name = name.clone();
        async move {
            let c = crds.get(&name).await.ok()?;
            let established = c
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        }
    })
    .await?;
    // Discovery can lag Established by a moment.
    let api: Api<AutoscalingPolicy> = Api::all(client.clone());
    wait_for(Duration::from_secs(10), || {
        let api = api.clone();
        async move { api.list(&Default::default()).await.ok().map(|_| ()) }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn crd_installs_defaults_apply_schema_rejects_and_status_writes() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    install_crd(&client).await?;
    let api: Api<AutoscalingPolicy> = Api::all(client.clone());

    // A minimal object comes back with every default of the reference document filled in.
    let minimal: AutoscalingPolicy = serde_json::from_value(json!({
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "metadata": {"name": "minimal"},
        "spec": {"nodePools": [{"name": "spot-pool", "maxSize": 5, "instanceTypes": ["p3.2xlarge"], "capacityType": "spot"}]}
    }))?;
    // Post raw JSON so the defaults are the apiserver's doing, not serde's.
    let raw = json!({
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "metadata": {"name": "minimal"},
        "spec": {"nodePools": [{"name": "spot-pool", "maxSize": 5, "instanceTypes": ["p3.2xlarge"], "capacityType": "spot"}]}
    });
    let dyn_api: Api<kube::core::DynamicObject> = Api::all_with(
        client.clone(),
        &kube::core::ApiResource::erase::<AutoscalingPolicy>(&()),
    );
    let created = dyn_api
        .create(&PostParams::default(), &serde_json::from_value(raw)?)
        .await?;
    let spec = &created.data["spec"];
    assert_eq!(spec["scaleUpThreshold"], json!(0.8), "stored: {spec}");
    assert_eq!(spec["scaleDownThreshold"], json!(0.2));
    assert_eq!(spec["pendingPodTimeoutSeconds"], json!(120));
    assert_eq!(spec["maxNodes"], json!(100));
    assert_eq!(spec["enabled"], json!(true));
    assert_eq!(spec["multiTier"]["onDemandPercentage"], json!(0.35));
    assert_eq!(spec["predictive"]["confidenceThreshold"], json!(0.7));
    assert_eq!(spec["nodePools"][0]["minSize"], json!(0));
    let typed = api.get("minimal").await?;
    assert_eq!(typed.spec.node_pools, minimal.spec.node_pools);
    assert_eq!(typed.spec.node_pools[0].capacity_type, CapacityType::Spot);

    // Out-of-range threshold and unknown capacity type: rejected by the apiserver, naming both.
    let bad = json!({
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "metadata": {"name": "bad"},
        "spec": {
            "scaleUpThreshold": 1.5,
            "nodePools": [{"name": "p", "maxSize": 1, "instanceTypes": ["g5.xlarge"], "capacityType": "cheap"}]
        }
    });
    let err = dyn_api
        .create(&PostParams::default(), &serde_json::from_value(bad)?)
        .await
        .expect_err("the schema must reject the policy");
    let msg = err.to_string();
    assert!(msg.contains("spec.scaleUpThreshold"), "{msg}");
    assert!(msg.contains("less than or equal to 1"), "{msg}");
    assert!(msg.contains("spec.nodePools.capacityType"), "{msg}");
    assert!(msg.contains("\"cheap\""), "{msg}");
    assert!(
        msg.contains("\"on-demand\""),
        "the allowed values are listed: {msg}"
    );

    // The status subresource can be written, and it does not touch the spec.
    let status = AutoscalingPolicyStatus {
        observed_generation: typed.metadata.generation,
        current_nodes: NodeCounts {
            spot: 2,
            on_demand: 1,
            reserved: 0,
            total: 3,
        },
        pending_gpu_pods: 4,
        average_gpu_utilization: Some(0.55),
        conditions: vec![Condition {
            type_: "Valid".into(),
            status: "True".into(),
            reason: Some("Validated".into()),
            message: None,
            last_transition_time: Some(chrono::Utc::now()),
            observed_generation: typed.metadata.generation,
        }],
        ..Default::default()
    };
    api.patch_status(
        "minimal",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    let after = api.get("minimal").await?;
    let st = after.status.expect("status was written");
    assert_eq!(st.current_nodes.total, 3);
    assert_eq!(st.pending_gpu_pods, 4);
    assert_eq!(st.conditions[0].type_, "Valid");
    assert_eq!(
        after.spec, typed.spec,
        "a status write must not change the spec"
    );
    assert_eq!(after.metadata.generation, typed.metadata.generation);
    Ok(())
}
