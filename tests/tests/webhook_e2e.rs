//! The admission webhook against a real kube-apiserver 1.20: registered with a
//! MutatingWebhookConfiguration (`clientConfig.url` on 127.0.0.1, `caBundle` from the certs
//! crate, `failurePolicy: Ignore`, `timeoutSeconds: 3`), pods created through the API, and
//! what the apiserver stored checked field by field.

use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use base64::Engine;
use gpu_autoscaler_api::keys;
use gpu_autoscaler_certs::{CertRequest, SubjectAltName, generate};
use gpu_autoscaler_testkit::{ControlPlane, GpuPodSpec, create_namespace, wait_for};
use gpu_autoscaler_webhook::{
    AppState, Config, RunningServer, TlsFiles, TlsServeOptions, serve_tls,
};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

const OPT_OUT: &str = "gpu-autoscaler.io/ignore";
const VERSION_LABEL: &str = "gpu-autoscaler.io/e2e-review-version";

struct Webhook {
    server: RunningServer,
    state: std::sync::Arc<AppState>,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

async fn start_webhook() -> Result<Webhook> {
    let mut req = CertRequest::new("gpu-autoscaler-webhook", "gpu-autoscaler");
    req.extra_sans = vec![SubjectAltName::parse("127.0.0.1")?];
    let bundle = generate(&req)?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("tls.crt"), &bundle.cert_pem)?;
    std::fs::write(dir.path().join("tls.key"), &bundle.key_pem)?;
    let state = AppState::new(Config::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let options = TlsServeOptions {
        files: TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        },
        reload_interval: Duration::from_secs(1),
    };
    let server = tokio::time::timeout(
        Duration::from_secs(10),
        serve_tls(listener, state.clone(), options),
    )
    .await
    .context("certificate did not load")??;
    Ok(Webhook {
        server,
        state,
        ca_pem: bundle.ca_pem,
        _dir: dir,
    })
}

fn hook(
    name: &str,
    url: &str,
    ca_b64: &str,
    resources: Value,
    selector: Value,
    versions: &[&str],
) -> Value {
    json!({
        "name": name,
        "clientConfig": {"url": url, "caBundle": ca_b64},
        "rules": [resources],
        "namespaceSelector": selector,
        "failurePolicy": "Ignore",
        "timeoutSeconds": 3,
        "sideEffects": "None",
        "admissionReviewVersions": versions,
    })
}

async fn register(client: &Client, wh: &Webhook) -> Result<()> {
    let port = wh.server.local_addr.port();
    let ca = base64::engine::general_purpose::STANDARD.encode(&wh.ca_pem);
    let pods = json!({"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]});
    // kube-system (labelled opted-out, as the chart does) never reaches the webhook; namespaces
    // labelled for v1beta1 get the older review version.
    let v1_selector = json!({"matchExpressions": [
        {"key": OPT_OUT, "operator": "NotIn", "values": ["true"]},
        {"key": VERSION_LABEL, "operator": "DoesNotExist"},
    ]});
    let v1beta1_selector = json!({"matchExpressions": [
        {"key": OPT_OUT, "operator": "NotIn", "values": ["true"]},
        {"key": VERSION_LABEL, "operator": "In", "values": ["v1beta1"]},
    ]});
    let mut v1 = hook(
        "pods.gpu-autoscaler.io",
        &format!("https://127.0.0.1:{port}/mutate"),
        &ca,
        pods.clone(),
        v1_selector,
        &["v1", "v1beta1"],
    );
    v1["reinvocationPolicy"] = "IfNeeded".into();
    let v1beta1 = hook(
        "pods-v1beta1.gpu-autoscaler.io",
        &format!("https://127.0.0.1:{port}/mutate"),
        &ca,
        pods,
        v1beta1_selector,
        &["v1beta1"],
    );
    let mutating: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "gpu-autoscaler"},
        "webhooks": [v1, v1beta1],
    }))?;
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &mutating)
        .await
        .context("creating the MutatingWebhookConfiguration")?;
    let policies = json!({"apiGroups": ["gpu-autoscaler.io"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"], "resources": ["autoscalingpolicies"]});
    let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "gpu-autoscaler"},
        "webhooks": [hook("policies.gpu-autoscaler.io", &format!("https://127.0.0.1:{port}/validate-policy"), &ca, policies, json!({}), &["v1"])],
    }))?;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &validating)
        .await
        .context("creating the ValidatingWebhookConfiguration")?;
    Ok(())
}

async fn label_namespace(client: &Client, name: &str, key: &str, value: &str) -> Result<()> {
    create_namespace(client, name).await?;
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
        )
        .await?;
    Ok(())
}

fn annotation(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(key).cloned()
}

fn capacity_terms(pod: &Pod) -> Vec<(String, i32)> {
    let terms = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .clone()
        })
        .unwrap_or_default();
    terms
        .into_iter()
        .flat_map(|t| {
            let w = t.weight;
            t.preference
                .match_expressions
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.key == keys::LABEL_CAPACITY_TYPE)
                .flat_map(move |e| {
                    e.values
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |v| (v, w))
                })
        })
        .collect()
}

fn spot_tolerations(pod: &Pod) -> usize {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .map(|t| {
            t.iter()
                .filter(|t| t.key.as_deref() == Some(keys::TAINT_SPOT_KEY))
                .count()
        })
        .unwrap_or(0)
}

/// Webhook configurations reach the apiserver's admission chain through an informer; probe
/// with dry-run creates (no side effects) until a GPU pod comes back mutated.
async fn wait_until_active(client: &Client, namespace: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let probe = GpuPodSpec::new("probe", 1).namespace(namespace).build()?;
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for(Duration::from_secs(20), || {
        let pods = pods.clone();
        let probe = probe.clone();
        let dry = dry.clone();
        async move {
            match pods.create(&dry, &probe).await {
                Ok(p) => annotation(&p, keys::ANNOTATION_EVICTION_PRIORITY).is_some(),
                Err(_) => false,
            }
        }
    })
    .await
    .context("webhook never became active")?;
    Ok(())
}

#[tokio::test]
async fn apiserver_stores_what_the_webhook_decides() -> Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    let wh = start_webhook().await?;
    label_namespace(&client, "kube-system", OPT_OUT, "true").await?;
    create_namespace(&client, "ml").await?;
    label_namespace(&client, "legacy", VERSION_LABEL, "v1beta1").await?;
    register(&client, &wh).await?;
    wait_until_active(&client, "ml").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ml");

    // A training pod with an unrelated annotation of its own.
    let p = GpuPodSpec::new("trainer", 8)
        .namespace("ml")
        .label(keys::LABEL_WORKLOAD_TYPE, "training")
        .annotation("team.example.com/owner", "nlp")
        .create(&client)
        .await?;
    let stored = pods.get("trainer").await?;
    ensure!(stored.metadata.uid == p.metadata.uid);
    ensure!(
        annotation(&stored, keys::ANNOTATION_EVICTION_PRIORITY).as_deref() == Some("high"),
        "{:?}",
        stored.metadata.annotations
    );
    ensure!(
        annotation(&stored, keys::ANNOTATION_TIER_PREFERENCE).as_deref()
            == Some("reserved,on-demand,spot")
    );
    ensure!(annotation(&stored, "team.example.com/owner").as_deref() == Some("nlp"));
    ensure!(
        spot_tolerations(&stored) == 1,
        "{:?}",
        stored.spec.as_ref().map(|s| &s.tolerations)
    );
    ensure!(
        capacity_terms(&stored)
            == vec![
                ("reserved".into(), 100),
                ("on-demand".into(), 67),
                ("spot".into(), 33)
            ],
        "{:?}",
        capacity_terms(&stored)
    );

    // The user's tier preference without spot: kept, and no toleration.
    GpuPodSpec::new("steady", 1)
        .namespace("ml")
        .label(keys::LABEL_WORKLOAD_TYPE, "batch")
        .annotation(keys::ANNOTATION_TIER_PREFERENCE, "on-demand")
        .create(&client)
        .await?;
    let stored = pods.get("steady").await?;
    ensure!(annotation(&stored, keys::ANNOTATION_EVICTION_PRIORITY).as_deref() == Some("low"));
    ensure!(annotation(&stored, keys::ANNOTATION_TIER_PREFERENCE).as_deref() == Some("on-demand"));
    ensure!(spot_tolerations(&stored) == 0);
    ensure!(capacity_terms(&stored) == vec![("on-demand".into(), 100)]);

    // generateName and no label: the default (medium) and its mapping.
    let mut generated = GpuPodSpec::new("unused", 2).namespace("ml").build()?;
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("worker-".into());
    let created = pods.create(&PostParams::default(), &generated).await?;
    ensure!(annotation(&created, keys::ANNOTATION_EVICTION_PRIORITY).as_deref() == Some("medium"));
    ensure!(
        annotation(&created, keys::ANNOTATION_TIER_PREFERENCE).as_deref() == Some("on-demand,spot")
    );
    ensure!(spot_tolerations(&created) == 1);

    // A CPU pod is stored as sent.
    GpuPodSpec::new("web", 0)
        .namespace("ml")
        .cpu("100m")
        .create(&client)
        .await?;
    let stored = pods.get("web").await?;
    ensure!(annotation(&stored, keys::ANNOTATION_EVICTION_PRIORITY).is_none());
    ensure!(capacity_terms(&stored).is_empty());

    // kube-system is excluded by the namespaceSelector.
    GpuPodSpec::new("system-gpu", 1)
        .namespace("kube-system")
        .create(&client)
        .await?;
    let stored = Api::<Pod>::namespaced(client.clone(), "kube-system")
        .get("system-gpu")
        .await?;
    ensure!(annotation(&stored, keys::ANNOTATION_EVICTION_PRIORITY).is_none());

    // The v1beta1 review version works end to end too.
    wait_until_active(&client, "legacy").await?;
    GpuPodSpec::new("old", 1)
        .namespace("legacy")
        .label(keys::LABEL_WORKLOAD_TYPE, "inference")
        .create(&client)
        .await?;
    let stored = Api::<Pod>::namespaced(client.clone(), "legacy")
        .get("old")
        .await?;
    ensure!(annotation(&stored, keys::ANNOTATION_EVICTION_PRIORITY).as_deref() == Some("medium"));

    // An invalid annotation is denied and the message reaches the client.
    let denied = GpuPodSpec::new("typo", 1)
        .namespace("ml")
        .annotation(keys::ANNOTATION_EVICTION_PRIORITY, "urgent")
        .create(&client)
        .await;
    match denied {
        Err(gpu_autoscaler_testkit::Error::Kube(kube::Error::Api(status))) => {
            ensure!(status.message.contains("denied the request"), "{status:?}");
            ensure!(
                status
                    .message
                    .contains("gpu-autoscaler.io/eviction-priority"),
                "{status:?}"
            );
            ensure!(status.message.contains("low, medium, high"), "{status:?}");
        }
        other => bail!("expected a denial, got {other:?}"),
    }

    let metrics = wh.state.metrics.encode();
    ensure!(
        metrics.contains(r#"route="mutate",operation="CREATE",result="mutated""#),
        "{metrics}"
    );
    ensure!(metrics.contains(r#"result="denied""#), "{metrics}");

    // With the webhook gone, failurePolicy Ignore admits pods unchanged.
    wh.server.shutdown(Duration::from_secs(1)).await?;
    let started = std::time::Instant::now();
    GpuPodSpec::new("after-stop", 1)
        .namespace("ml")
        .label(keys::LABEL_WORKLOAD_TYPE, "training")
        .create(&client)
        .await
        .context("pod must be admitted while the webhook is down")?;
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "admission took {:?}",
        started.elapsed()
    );
    let stored = pods.get("after-stop").await?;
    ensure!(annotation(&stored, keys::ANNOTATION_EVICTION_PRIORITY).is_none());
    Ok(())
}

#[tokio::test]
async fn invalid_policies_are_denied_with_every_message() -> Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&gpu_autoscaler_api::policy::crd_yaml())?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    wait_for(Duration::from_secs(20), || {
        let crds = crds.clone();
        let name = name.clone();
        async move {
            crds.get(&name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        }
    })
    .await?;
    let wh = start_webhook().await?;
    register(&client, &wh).await?;

    let gvk = GroupVersionKind::gvk("gpu-autoscaler.io", "v1alpha1", "AutoscalingPolicy");
    let policies: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk));
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "metadata": {"name": "bad"},
        "spec": {"scaleUpThreshold": 0.5, "scaleDownThreshold": 0.7, "minNodes": 9, "maxNodes": 3},
    }))?;
    // The configuration needs a moment to reach the admission chain; retry until denied.
    let message = wait_for(Duration::from_secs(20), || {
        let policies = policies.clone();
        let bad = bad.clone();
        async move {
            let dry = PostParams {
                dry_run: true,
                ..Default::default()
            };
            match policies.create(&dry, &bad).await {
                Err(kube::Error::Api(status)) if status.message.contains("denied the request") => {
                    Some(status.message)
                }
                _ => None,
            }
        }
    })
    .await?;
    ensure!(
        message.contains("spec.scaleDownThreshold") && message.contains("spec.minNodes"),
        "{message}"
    );

    let good: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "gpu-autoscaler.io/v1alpha1",
        "kind": "AutoscalingPolicy",
        "metadata": {"name": "good"},
        "spec": {"minNodes": 1, "maxNodes": 4},
    }))?;
    policies.create(&PostParams::default(), &good).await?;
    wh.server.shutdown(Duration::from_secs(1)).await?;
    Ok(())
}
