//! Keeping the TLS Secret and the webhook configurations' `caBundle` in step, idempotently.
//!
//! Both operations read first and write only when something must change, so rerunning the
//! install Job against a healthy release leaves every resourceVersion untouched. Writes carry the
//! resourceVersion (Secret) or `test` operations (webhook configurations) they were computed
//! from, so a concurrent writer makes us re-read instead of clobbering its change.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::{Duration, OffsetDateTime};
use tracing::{debug, info, warn};

use crate::{
    CertBundle, CertError, CertRequest, InvalidReason, PemBundle, SECRET_KEY_CA, SECRET_KEY_CERT,
    SECRET_KEY_KEY, SECRET_TYPE_TLS, generate_at, is_valid_for,
};

/// Read-modify-write rounds before giving up on a busy object.
const MAX_ATTEMPTS: usize = 5;

/// What [`ensure_secret`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretAction {
    /// The Secret did not exist and was created.
    Created,
    /// The Secret was valid and left alone (no write at all).
    Unchanged,
    /// The Secret's material was unusable and was replaced; the reason says why.
    Replaced(InvalidReason),
}

/// Result of [`ensure_secret`]: the material now in the Secret and what was done.
#[derive(Debug, Clone)]
pub struct EnsuredSecret {
    /// The CA, certificate and key the Secret holds after the call.
    pub bundle: CertBundle,
    /// Whether we created, kept or replaced the Secret.
    pub action: SecretAction,
    /// The Secret's resourceVersion after the call.
    pub resource_version: Option<String>,
}

/// Which kind of admission webhook configuration to patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    /// `MutatingWebhookConfiguration`.
    Mutating,
    /// `ValidatingWebhookConfiguration`.
    Validating,
}

impl fmt::Display for WebhookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mutating => "MutatingWebhookConfiguration",
            Self::Validating => "ValidatingWebhookConfiguration",
        })
    }
}

/// Result of [`patch_ca_bundle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaBundlePatch {
    /// Names of the webhook entries whose `caBundle` we changed.
    pub patched: Vec<String>,
    /// How many entries already carried the CA.
    pub unchanged: usize,
    /// The configuration's resourceVersion after the call.
    pub resource_version: Option<String>,
}

/// A `kubernetes.io/tls` Secret named `name` in `namespace` holding `bundle`.
pub fn secret_for(namespace: &str, name: &str, bundle: &CertBundle) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "gpu-autoscaler-certs".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE_TLS.to_owned()),
        data: Some(secret_data(bundle)),
        ..Secret::default()
    }
}

fn secret_data(bundle: &CertBundle) -> BTreeMap<String, ByteString> {
    BTreeMap::from([
        (
            SECRET_KEY_CERT.to_owned(),
            ByteString(bundle.cert_pem.clone().into_bytes()),
        ),
        (
            SECRET_KEY_KEY.to_owned(),
            ByteString(bundle.key_pem.clone().into_bytes()),
        ),
        (
            SECRET_KEY_CA.to_owned(),
            ByteString(bundle.ca_pem.clone().into_bytes()),
        ),
    ])
}

/// Makes sure Secret `namespace/name` holds material valid for `req` at `now` with at least
/// `renew_before` left, and returns that material.
///
/// A missing Secret is created; a valid one is returned as is without any write; an invalid one
/// (unreadable, wrong names, wrong CA, key mismatch, expired or expiring) gets a new CA and
/// certificate. Labels and annotations of a replaced Secret are kept; a Secret of another type,
/// or an immutable one, is deleted and recreated because neither property can be changed.
pub async fn ensure_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    req: &CertRequest,
    now: OffsetDateTime,
    renew_before: Duration,
) -> Result<EnsuredSecret, CertError> {
    req.validate()?;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let what = format!("Secret {namespace}/{name}");

    for _ in 0..MAX_ATTEMPTS {
        let existing = api
            .get_opt(name)
            .await
            .map_err(|e| CertError::kube(format!("reading {what}"), e))?;

        let Some(mut existing) = existing else {
            let bundle = generate_at(req, now)?;
            match api
                .create(
                    &PostParams::default(),
                    &secret_for(namespace, name, &bundle),
                )
                .await
            {
                Ok(created) => {
                    info!(secret = %what, not_after = %bundle.not_after, "created TLS secret");
                    return Ok(EnsuredSecret {
                        bundle,
                        action: SecretAction::Created,
                        resource_version: created.metadata.resource_version,
                    });
                }
                // Someone (a parallel Job) created it between our read and write: judge theirs.
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(CertError::kube(format!("creating {what}"), e)),
            }
        };

        let reason = match bundle_from_secret(&existing, req, now, renew_before) {
            Ok(bundle) => {
                info!(secret = %what, not_after = %bundle.not_after, "TLS secret is valid; keeping it");
                return Ok(EnsuredSecret {
                    bundle,
                    action: SecretAction::Unchanged,
                    resource_version: existing.metadata.resource_version,
                });
            }
            Err(reason) => reason,
        };
        warn!(secret = %what, %reason, "replacing TLS secret");
        let bundle = generate_at(req, now)?;

        let type_fixed =
            existing.type_.as_deref() != Some(SECRET_TYPE_TLS) || existing.immutable == Some(true);
        let written = if type_fixed {
            // Type and immutability cannot be changed in place; delete exactly the object we
            // judged (resourceVersion precondition) and create ours.
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: existing.metadata.resource_version.clone(),
                    uid: existing.metadata.uid.clone(),
                }),
                ..DeleteParams::default()
            };
            match api.delete(name, &dp).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 409) || is_status(&e, 404) => continue,
                Err(e) => return Err(CertError::kube(format!("deleting {what}"), e)),
            }
            let mut fresh = secret_for(namespace, name, &bundle);
            merge_meta(&mut fresh.metadata, &existing.metadata);
            api.create(&PostParams::default(), &fresh).await
        } else {
            let data = existing.data.get_or_insert_with(BTreeMap::new);
            data.extend(secret_data(&bundle));
            existing.string_data = None;
            // `replace` sends the resourceVersion we read, so a concurrent change fails with 409.
            api.replace(name, &PostParams::default(), &existing).await
        };
        match written {
            Ok(secret) => {
                info!(secret = %what, not_after = %bundle.not_after, "replaced TLS secret");
                return Ok(EnsuredSecret {
                    bundle,
                    action: SecretAction::Replaced(reason),
                    resource_version: secret.metadata.resource_version,
                });
            }
            Err(e) if is_status(&e, 409) => continue,
            Err(e) => return Err(CertError::kube(format!("writing {what}"), e)),
        }
    }
    Err(CertError::Conflict(format!(
        "{what} kept changing during {MAX_ATTEMPTS} attempts"
    )))
}

/// Keeps the labels and annotations someone (e.g. Helm) put on a Secret we recreate.
fn merge_meta(fresh: &mut ObjectMeta, old: &ObjectMeta) {
    if let Some(old_labels) = &old.labels {
        let labels = fresh.labels.get_or_insert_with(BTreeMap::new);
        for (k, v) in old_labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    fresh.annotations.clone_from(&old.annotations);
}

fn bundle_from_secret(
    secret: &Secret,
    req: &CertRequest,
    now: OffsetDateTime,
    renew_before: Duration,
) -> Result<CertBundle, InvalidReason> {
    if secret.type_.as_deref() != Some(SECRET_TYPE_TLS) {
        return Err(InvalidReason::Unreadable(format!(
            "secret type is {:?}, not {SECRET_TYPE_TLS}",
            secret.type_.as_deref().unwrap_or("Opaque")
        )));
    }
    let field = |key: &str| -> Result<String, InvalidReason> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|data| data.get(key))
            .ok_or_else(|| InvalidReason::Unreadable(format!("secret has no {key}")))?;
        String::from_utf8(bytes.0.clone())
            .map_err(|_| InvalidReason::Unreadable(format!("{key} is not UTF-8 PEM")))
    };
    let ca_pem = field(SECRET_KEY_CA)?;
    let cert_pem = field(SECRET_KEY_CERT)?;
    let key_pem = field(SECRET_KEY_KEY)?;
    let pems = PemBundle {
        ca: ca_pem.as_bytes(),
        cert: cert_pem.as_bytes(),
        key: key_pem.as_bytes(),
    };
    let info = is_valid_for(&pems, req, now, renew_before)?;
    Ok(CertBundle {
        ca_pem,
        cert_pem,
        key_pem,
        not_after: info.not_after,
    })
}

/// Sets `caBundle` to `ca_pem` on every webhook entry of the named configuration whose
/// `caBundle` differs; entries that already carry it are not touched, and when none differ
/// nothing is written.
pub async fn patch_ca_bundle(
    client: &Client,
    kind: WebhookKind,
    name: &str,
    ca_pem: &str,
) -> Result<CaBundlePatch, CertError> {
    match kind {
        WebhookKind::Mutating => {
            patch_config::<MutatingWebhookConfiguration>(client, kind, name, ca_pem).await
        }
        WebhookKind::Validating => {
            patch_config::<ValidatingWebhookConfiguration>(client, kind, name, ca_pem).await
        }
    }
}

async fn patch_config<K>(
    client: &Client,
    kind: WebhookKind,
    name: &str,
    ca_pem: &str,
) -> Result<CaBundlePatch, CertError>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + fmt::Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::all(client.clone());
    let what = format!("{kind} {name}");
    for _ in 0..MAX_ATTEMPTS {
        let config = api
            .get(name)
            .await
            .map_err(|e| CertError::kube(format!("reading {what}"), e))?;
        let resource_version = config.meta().resource_version.clone();
        let value =
            serde_json::to_value(&config).map_err(|e| CertError::Parse(format!("{what}: {e}")))?;
        let plan = plan_ca_bundle_patch(&value, ca_pem);
        if plan.patched.is_empty() {
            if plan.unchanged == 0 {
                warn!(config = %what, "has no webhook entries; nothing to patch");
            } else {
                debug!(config = %what, "caBundle already current");
            }
            return Ok(CaBundlePatch {
                patched: Vec::new(),
                unchanged: plan.unchanged,
                resource_version,
            });
        }
        let patch: json_patch::Patch = serde_json::from_value(Value::Array(plan.operations))
            .map_err(|e| CertError::Parse(format!("building patch for {what}: {e}")))?;
        match api
            .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
            .await
        {
            Ok(patched) => {
                info!(config = %what, webhooks = ?plan.patched, "patched caBundle");
                return Ok(CaBundlePatch {
                    patched: plan.patched,
                    unchanged: plan.unchanged,
                    resource_version: patched.meta().resource_version.clone(),
                });
            }
            // A failed `test` op (the list changed under us) comes back as 422; a 409 is a
            // plain conflict. Either way: read again and recompute.
            Err(e) if is_status(&e, 409) || is_status(&e, 422) => continue,
            Err(e) => return Err(CertError::kube(format!("patching {what}"), e)),
        }
    }
    Err(CertError::Conflict(format!(
        "{what} kept changing during {MAX_ATTEMPTS} attempts"
    )))
}

/// The JSON patch that brings every webhook entry's `caBundle` to `ca_pem`.
#[derive(Debug, Default, PartialEq)]
struct CaBundlePlan {
    operations: Vec<Value>,
    patched: Vec<String>,
    unchanged: usize,
}

/// Pure part of [`patch_ca_bundle`]: compares each `webhooks[i].clientConfig.caBundle` (base64
/// in JSON) with the CA and emits, per differing entry, a `test` of the entry's name (so the
/// patch fails if the list was reordered since we read it) and an `add` of the new value.
fn plan_ca_bundle_patch(config: &Value, ca_pem: &str) -> CaBundlePlan {
    let wanted = BASE64.encode(ca_pem.as_bytes());
    let mut plan = CaBundlePlan::default();
    let Some(webhooks) = config.get("webhooks").and_then(Value::as_array) else {
        return plan;
    };
    for (i, webhook) in webhooks.iter().enumerate() {
        let current = webhook
            .pointer("/clientConfig/caBundle")
            .and_then(Value::as_str);
        if current == Some(wanted.as_str()) {
            plan.unchanged += 1;
            continue;
        }
        let name = webhook.get("name").cloned().unwrap_or(Value::Null);
        plan.patched
            .push(name.as_str().unwrap_or_default().to_owned());
        plan.operations
            .push(json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": name}));
        if webhook.get("clientConfig").is_some() {
            plan.operations.push(json!({
                "op": "add",
                "path": format!("/webhooks/{i}/clientConfig/caBundle"),
                "value": wanted,
            }));
        } else {
            plan.operations.push(json!({
                "op": "add",
                "path": format!("/webhooks/{i}/clientConfig"),
                "value": {"caBundle": wanted},
            }));
        }
    }
    plan
}

fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_patches_only_differing_entries() {
        let ca = "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n";
        let encoded = BASE64.encode(ca);
        let config = json!({
            "webhooks": [
                {"name": "a.gpu-autoscaler.io", "clientConfig": {"caBundle": encoded}},
                {"name": "b.gpu-autoscaler.io", "clientConfig": {"service": {"name": "s"}}},
                {"name": "c.gpu-autoscaler.io", "clientConfig": {"caBundle": "b2xk"}},
            ]
        });
        let plan = plan_ca_bundle_patch(&config, ca);
        assert_eq!(plan.unchanged, 1);
        assert_eq!(plan.patched, ["b.gpu-autoscaler.io", "c.gpu-autoscaler.io"]);
        assert_eq!(
            plan.operations,
            vec![
                json!({"op": "test", "path": "/webhooks/1/name", "value": "b.gpu-autoscaler.io"}),
                json!({"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": encoded}),
                json!({"op": "test", "path": "/webhooks/2/name", "value": "c.gpu-autoscaler.io"}),
                json!({"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": encoded}),
            ]
        );
        // The operations form a valid RFC 6902 patch.
        let patch: json_patch::Patch =
            serde_json::from_value(Value::Array(plan.operations)).unwrap();
        let mut applied = config.clone();
        json_patch::patch(&mut applied, &patch).unwrap();
        assert_eq!(plan_ca_bundle_patch(&applied, ca).unchanged, 3);
    }

    #[test]
    fn plan_for_config_without_webhooks_is_empty() {
        assert_eq!(
            plan_ca_bundle_patch(&json!({"metadata": {}}), "ca"),
            CaBundlePlan::default()
        );
    }

    #[test]
    fn secret_has_tls_type_and_three_keys() {
        let bundle = crate::generate(&CertRequest::new("hook", "gpu")).unwrap();
        let secret = secret_for("gpu", "hook-tls", &bundle);
        assert_eq!(secret.type_.as_deref(), Some(SECRET_TYPE_TLS));
        let data = secret.data.unwrap();
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            ["ca.crt", "tls.crt", "tls.key"]
        );
        assert_eq!(data["ca.crt"].0, bundle.ca_pem.as_bytes());
    }

    #[test]
    fn secret_material_is_judged_with_type_and_keys() {
        let req = CertRequest::new("hook", "gpu");
        let now = OffsetDateTime::now_utc();
        let bundle = crate::generate_at(&req, now).unwrap();
        let good = secret_for("gpu", "hook-tls", &bundle);
        let kept = bundle_from_secret(&good, &req, now, Duration::days(30)).unwrap();
        assert_eq!(kept, bundle);

        let mut opaque = good.clone();
        opaque.type_ = Some("Opaque".into());
        assert!(matches!(
            bundle_from_secret(&opaque, &req, now, Duration::days(30)),
            Err(InvalidReason::Unreadable(_))
        ));

        let mut no_ca = good;
        if let Some(data) = no_ca.data.as_mut() {
            data.remove(SECRET_KEY_CA);
        }
        let err = bundle_from_secret(&no_ca, &req, now, Duration::days(30)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unreadable certificate material: secret has no ca.crt"
        );
    }
}
