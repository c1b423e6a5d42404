//! Webhook certificates against a real kube-apiserver 1.20: the TLS Secret and the webhook
//! configurations' `caBundle` are created once and then left alone, and bad material is replaced.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use anyhow::{Context as _, Result, bail, ensure};
use gpu_autoscaler_certs::{
    CertBundle, CertRequest, InvalidReason, PemBundle, SecretAction, SubjectAltName, WebhookKind,
    ensure_secret, generate_at, is_valid_for, patch_ca_bundle, secret_for,
};
use gpu_autoscaler_testkit::{ControlPlane, create_unique_namespace};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use serde_json::json;
use time::{Duration, OffsetDateTime};

const SERVICE: &str = "gpu-autoscaler-webhook";
const SECRET: &str = "gpu-autoscaler-webhook-tls";
const MUTATING: &str = "gpu-autoscaler-mutating";
const VALIDATING: &str = "gpu-autoscaler-validating";
const RENEW_BEFORE: Duration = Duration::days(30);

fn request(namespace: &str) -> CertRequest {
    let mut req = CertRequest::new(SERVICE, namespace);
    req.extra_sans = vec![SubjectAltName::parse("127.0.0.1").expect("IP literal")];
    req
}

/// Two webhook entries pointing at our Service, with an empty `caBundle`, as the chart renders
/// them before the install Job has run. The rules match nothing we create, so the apiserver
/// never calls the (absent) webhook.
fn webhook_entries(namespace: &str, kind: &str) -> serde_json::Value {
    let entry = |name: &str, path: &str| {
        json!({
            "name": name,
            "clientConfig": {
                "service": {"name": SERVICE, "namespace": namespace, "path": path, "port": 443},
                "caBundle": "",
            },
            "rules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["pods"],
            }],
            "namespaceSelector": {"matchLabels": {"gpu-autoscaler.io/e2e-never": "true"}},
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        })
    };
    json!([
        entry(&format!("pods.{kind}.gpu-autoscaler.io"), "/mutate"),
        entry(
            &format!("policies.{kind}.gpu-autoscaler.io"),
            "/validate-policy"
        ),
    ])
}

async fn create_webhook_configs(client: &Client, namespace: &str) -> Result<()> {
    let mutating: MutatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": MUTATING},
        "webhooks": webhook_entries(namespace, "mutating"),
    }))?;
    Api::<MutatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &mutating)
        .await
        .context("creating the MutatingWebhookConfiguration")?;
    let validating: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": VALIDATING},
        "webhooks": webhook_entries(namespace, "validating"),
    }))?;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .create(&PostParams::default(), &validating)
        .await
        .context("creating the ValidatingWebhookConfiguration")?;
    Ok(())
}

/// The `caBundle` of every entry of both configurations, plus their resourceVersions.
async fn ca_bundles(client: &Client) -> Result<(Vec<Vec<u8>>, String, String)> {
    let mutating = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(MUTATING)
        .await?;
    let validating = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(VALIDATING)
        .await?;
    let mut bundles = Vec::new();
    for hook in mutating.webhooks.iter().flatten() {
        bundles.push(hook.client_config.ca_bundle.clone().unwrap_or_default().0);
    }
    for hook in validating.webhooks.iter().flatten() {
        bundles.push(hook.client_config.ca_bundle.clone().unwrap_or_default().0);
    }
    Ok((
        bundles,
        mutating.meta().resource_version.clone().unwrap_or_default(),
        validating
            .meta()
            .resource_version
            .clone()
            .unwrap_or_default(),
    ))
}

async fn read_secret(client: &Client, namespace: &str) -> Result<Secret> {
    Ok(Api::<Secret>::namespaced(client.clone(), namespace)
        .get(SECRET)
        .await?)
}

fn secret_field<'a>(secret: &'a Secret, key: &str) -> Result<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .map(|value| value.0.as_slice())
        .with_context(|| format!("secret has no {key}"))
}

/// Checks that the Secret in the cluster is a valid TLS Secret for `req`, returning its CA.
fn check_secret(secret: &Secret, req: &CertRequest) -> Result<Vec<u8>> {
    ensure!(secret.type_.as_deref() == Some("kubernetes.io/tls"));
    let keys: Vec<&str> = secret
        .data
        .iter()
        .flat_map(|data| data.keys().map(String::as_str))
        .collect();
    ensure!(keys == ["ca.crt", "tls.crt", "tls.key"], "keys: {keys:?}");
    let pems = PemBundle {
        ca: secret_field(secret, "ca.crt")?,
        cert: secret_field(secret, "tls.crt")?,
        key: secret_field(secret, "tls.key")?,
    };
    is_valid_for(&pems, req, OffsetDateTime::now_utc(), RENEW_BEFORE)
        .map_err(|reason| anyhow::anyhow!("secret in the cluster is not valid: {reason}"))?;
    Ok(pems.ca.to_vec())
}

async fn patch_both(client: &Client, ca_pem: &str) -> Result<usize> {
    let mut patched = 0;
    for (kind, name) in [
        (WebhookKind::Mutating, MUTATING),
        (WebhookKind::Validating, VALIDATING),
    ] {
        patched += patch_ca_bundle(client, kind, name, ca_pem)
            .await?
            .patched
            .len();
    }
    Ok(patched)
}

#[tokio::test]
async fn secret_and_ca_bundle_are_set_once_then_left_alone() -> Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    let namespace = create_unique_namespace(&client, "certs-").await?;
    create_webhook_configs(&client, &namespace).await?;
    let req = request(&namespace);

    // First run: creates the Secret and fills all four caBundles.
    let first = ensure_secret(
        &client,
        &namespace,
        SECRET,
        &req,
        OffsetDateTime::now_utc(),
        RENEW_BEFORE,
    )
    .await?;
    ensure!(first.action == SecretAction::Created, "{:?}", first.action);
    ensure!(patch_both(&client, &first.bundle.ca_pem).await? == 4);

    let secret = read_secret(&client, &namespace).await?;
    let ca_in_secret = check_secret(&secret, &req)?;
    ensure!(ca_in_secret == first.bundle.ca_pem.as_bytes());
    let (bundles, mutating_rv, validating_rv) = ca_bundles(&client).await?;
    ensure!(bundles.len() == 4);
    for bundle in &bundles {
        ensure!(
            *bundle == ca_in_secret,
            "caBundle differs from the Secret's CA"
        );
    }
    let secret_rv = secret.metadata.resource_version.clone();

    // Second run: nothing is written anywhere.
    let second = ensure_secret(
        &client,
        &namespace,
        SECRET,
        &req,
        OffsetDateTime::now_utc(),
        RENEW_BEFORE,
    )
    .await?;
    ensure!(
        second.action == SecretAction::Unchanged,
        "{:?}",
        second.action
    );
    ensure!(
        second.bundle == first.bundle,
        "kept secret returns its own material"
    );
    ensure!(second.resource_version == secret_rv);
    ensure!(patch_both(&client, &second.bundle.ca_pem).await? == 0);

    let secret_after = read_secret(&client, &namespace).await?;
    ensure!(
        secret_after.metadata.resource_version == secret_rv,
        "Secret was rewritten"
    );
    let (bundles_after, mutating_rv_after, validating_rv_after) = ca_bundles(&client).await?;
    ensure!(bundles_after == bundles);
    ensure!(
        mutating_rv_after == mutating_rv,
        "mutating config was rewritten"
    );
    ensure!(
        validating_rv_after == validating_rv,
        "validating config was rewritten"
    );
    Ok(())
}

/// Pre-creates the Secret with `secret`, runs ensure + patch and checks it was replaced with
/// valid material whose CA then lands in every caBundle.
async fn assert_replaced(
    client: &Client,
    namespace: &str,
    secret: Secret,
    expect: impl Fn(&InvalidReason) -> bool,
) -> Result<()> {
    let api = Api::<Secret>::namespaced(client.clone(), namespace);
    let _ = api.delete(SECRET, &Default::default()).await;
    let before = api.create(&PostParams::default(), &secret).await?;
    let req = request(namespace);

    let ensured = ensure_secret(
        client,
        namespace,
        SECRET,
        &req,
        OffsetDateTime::now_utc(),
        RENEW_BEFORE,
    )
    .await?;
    match &ensured.action {
        SecretAction::Replaced(reason) if expect(reason) => {}
        other => bail!("expected a replacement, got {other:?}"),
    }
    let after = read_secret(client, namespace).await?;
    ensure!(after.metadata.resource_version != before.metadata.resource_version);
    ensure!(after.metadata.resource_version == ensured.resource_version);
    let ca = check_secret(&after, &req)?;
    ensure!(ca == ensured.bundle.ca_pem.as_bytes());
    // Labels someone else put on the Secret survive the replacement.
    ensure!(
        after
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get("app.kubernetes.io/instance"))
            .map(String::as_str)
            == Some("e2e"),
        "labels lost: {:?}",
        after.metadata.labels
    );

    ensure!(patch_both(client, &ensured.bundle.ca_pem).await? == 4);
    let (bundles, _, _) = ca_bundles(client).await?;
    ensure!(bundles.iter().all(|bundle| *bundle == ca));
    Ok(())
}

fn labelled(mut secret: Secret) -> Secret {
    secret.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/instance".to_owned(),
        "e2e".to_owned(),
    )]));
    secret
}

#[tokio::test]
async fn expired_wrong_or_foreign_secrets_are_replaced() -> Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    let namespace = create_unique_namespace(&client, "certs-").await?;
    create_webhook_configs(&client, &namespace).await?;
    let now = OffsetDateTime::now_utc();

    // Expired a month ago.
    let expired = generate_at(&request(&namespace), now - Duration::days(395))?;
    assert_replaced(
        &client,
        &namespace,
        labelled(secret_for(&namespace, SECRET, &expired)),
        |reason| matches!(reason, InvalidReason::Expired(_)),
    )
    .await?;

    // Issued for another Service.
    let mut other = request(&namespace);
    other.service = "someone-else".into();
    let wrong_names = generate_at(&other, now)?;
    assert_replaced(
        &client,
        &namespace,
        labelled(secret_for(&namespace, SECRET, &wrong_names)),
        |reason| matches!(reason, InvalidReason::MissingName(_)),
    )
    .await?;

    // Right names, but ca.crt is not the issuer.
    let good = generate_at(&request(&namespace), now)?;
    let stranger = generate_at(&request(&namespace), now)?;
    let foreign_ca = CertBundle {
        ca_pem: stranger.ca_pem.clone(),
        ..good.clone()
    };
    assert_replaced(
        &client,
        &namespace,
        labelled(secret_for(&namespace, SECRET, &foreign_ca)),
        |reason| matches!(reason, InvalidReason::Untrusted(_)),
    )
    .await?;

    // An Opaque Secret of the same name: the type cannot change in place.
    let mut opaque = labelled(secret_for(&namespace, SECRET, &good));
    opaque.type_ = Some("Opaque".into());
    if let Some(data) = opaque.data.as_mut() {
        data.insert("unrelated".into(), ByteString(b"x".to_vec()));
    }
    assert_replaced(&client, &namespace, opaque, |reason| {
        matches!(reason, InvalidReason::Unreadable(_))
    })
    .await?;
    Ok(())
}

/// `target/<profile>/gpu-autoscaler`, next to the `deps/` directory this test binary lives in.
fn binary_path() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut candidates = Vec::new();
    if let Some(profile_dir) = exe.parent().and_then(|deps| deps.parent()) {
        candidates.push(profile_dir.join("gpu-autoscaler"));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target).join("debug/gpu-autoscaler"));
    }
    candidates
        .push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/gpu-autoscaler"));
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "the gpu-autoscaler binary is not built (looked at {candidates:?}); \
                 run `cargo build -p gpu-autoscaler` before the tests"
            )
        })
}

async fn run_certs_job(args: &[&str]) -> Result<String> {
    let binary = binary_path()?;
    let mut command = tokio::process::Command::new(&binary);
    command.arg("certs").args(args).kill_on_drop(true);
    // Only the flags may point it at a cluster.
    command.env_remove("KUBECONFIG");
    let output = tokio::time::timeout(StdDuration::from_secs(60), command.output())
        .await
        .context("gpu-autoscaler certs did not finish within 60 s")??;
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success(),
        "{} certs failed ({}):\n{logs}",
        binary.display(),
        output.status
    );
    Ok(logs)
}

#[tokio::test]
async fn certs_subcommand_is_an_idempotent_install_job() -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;

    let cp = ControlPlane::start().await?;
    let client = cp.client();
    let namespace = create_unique_namespace(&client, "certs-").await?;
    create_webhook_configs(&client, &namespace).await?;
    let out_dir = tempfile::tempdir()?;
    let kubeconfig = cp
        .kubeconfig_path()
        .to_str()
        .context("kubeconfig path is not UTF-8")?
        .to_owned();
    let out = out_dir
        .path()
        .to_str()
        .context("temp path is not UTF-8")?
        .to_owned();
    let args = [
        "--service",
        SERVICE,
        "--namespace",
        &namespace,
        "--extra-san",
        "127.0.0.1",
        "--secret",
        SECRET,
        "--patch-webhook",
        MUTATING,
        "--patch-validating-webhook",
        VALIDATING,
        "--out-dir",
        &out,
        "--kubeconfig",
        &kubeconfig,
    ];

    let logs = run_certs_job(&args).await?;
    ensure!(!logs.contains("PRIVATE KEY"), "key material in the logs");
    let secret = read_secret(&client, &namespace).await?;
    let ca = check_secret(&secret, &request(&namespace))?;
    let (bundles, mutating_rv, validating_rv) = ca_bundles(&client).await?;
    ensure!(bundles.len() == 4 && bundles.iter().all(|bundle| *bundle == ca));
    // The files are the Secret's material.
    for (file, key) in [
        ("ca.crt", "ca.crt"),
        ("tls.crt", "tls.crt"),
        ("tls.key", "tls.key"),
    ] {
        let written = std::fs::read(out_dir.path().join(file))?;
        ensure!(
            written == secret_field(&secret, key)?,
            "{file} differs from the Secret"
        );
    }
    let mode = std::fs::metadata(out_dir.path().join("tls.key"))?
        .permissions()
        .mode();
    ensure!(mode & 0o077 == 0, "tls.key is readable by others: {mode:o}");

    // The Job runs again on every upgrade: nothing may change.
    let logs = run_certs_job(&args).await?;
    ensure!(!logs.contains("PRIVATE KEY"), "key material in the logs");
    let secret_after = read_secret(&client, &namespace).await?;
    ensure!(secret_after.metadata.resource_version == secret.metadata.resource_version);
    let (bundles_after, mutating_rv_after, validating_rv_after) = ca_bundles(&client).await?;
    ensure!(bundles_after == bundles);
    ensure!(mutating_rv_after == mutating_rv && validating_rv_after == validating_rv);
    Ok(())
}
