//! AdmissionReview on the wire (`admission.k8s.io/v1` and `v1beta1`), and the two reviews the
//! webhook performs: pods on `/mutate`, AutoscalingPolicies on `/validate-policy`.
//!
//! Our own serde types rather than kube's: kube-core serialises `response.patch` as an array
//! of numbers, while the API documents (and the apiserver expects) a base64 string; and a
//! borrowed `RawValue` lets a pod be decoded once, straight from the request body.

use base64::Engine;
use gpu_autoscaler_api::AutoscalingPolicy;
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::Config;
use crate::metrics::Outcome;
use crate::mutate::{Decision, mutate_pod};

pub const API_VERSION_V1: &str = "admission.k8s.io/v1";
pub const API_VERSION_V1BETA1: &str = "admission.k8s.io/v1beta1";

/// The admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
    /// Anything newer than this code; treated like an operation we don't act on.
    #[serde(other)]
    Unknown,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn<'a> {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow)]
    request: Option<RequestIn<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Gvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn<'a> {
    uid: String,
    #[serde(default)]
    kind: Gvk,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(borrow, default)]
    object: Option<&'a RawValue>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// The `metav1.Status` of a denial; the apiserver shows `message` to the client.
#[derive(Debug, Serialize)]
struct StatusOut {
    status: &'static str,
    code: u16,
    reason: &'static str,
    message: String,
}

/// A request that cannot be answered with an AdmissionReview: it becomes an HTTP 4xx, which
/// the apiserver treats as a failed call (and `failurePolicy` decides).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BadRequest {
    pub status: u16,
    pub message: String,
    /// The request uid, when the body got far enough to tell.
    pub uid: Option<String>,
}

impl BadRequest {
    fn new(message: impl Into<String>, uid: Option<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
            uid,
        }
    }
}

/// A review that produced an AdmissionReview answer (HTTP 200).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The encoded AdmissionReview response.
    pub body: Vec<u8>,
    pub uid: String,
    pub operation: Operation,
    pub outcome: Outcome,
    /// The denial message or the decoding problem, for the log.
    pub detail: Option<String>,
}

fn decode(body: &[u8]) -> Result<(&'static str, RequestIn<'_>), BadRequest> {
    let review: ReviewIn<'_> = serde_json::from_slice(body).map_err(|e| {
        BadRequest::new(
            format!("request body is not a valid AdmissionReview: {e}"),
            scan_uid(body),
        )
    })?;
    let api_version = match review.api_version.as_str() {
        API_VERSION_V1 => API_VERSION_V1,
        API_VERSION_V1BETA1 => API_VERSION_V1BETA1,
        other => {
            return Err(BadRequest::new(
                format!(
                    "unsupported apiVersion {other:?}; expected {API_VERSION_V1} or {API_VERSION_V1BETA1}"
                ),
                review.request.map(|r| r.uid),
            ));
        }
    };
    if review.kind != "AdmissionReview" {
        return Err(BadRequest::new(
            format!(
                "unsupported kind {:?}; expected AdmissionReview",
                review.kind
            ),
            review.request.map(|r| r.uid),
        ));
    }
    let request = review
        .request
        .ok_or_else(|| BadRequest::new("AdmissionReview has no request", None))?;
    if request.uid.is_empty() {
        return Err(BadRequest::new(
            "AdmissionReview request has an empty uid",
            None,
        ));
    }
    Ok((api_version, request))
}

/// Best effort: find `"uid":"..."` in a body too broken to parse, so the log can name it.
fn scan_uid(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let at = text.find("\"uid\"")?;
    let rest = text[at + 5..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let end = rest.find('"')?;
    let uid = &rest[..end];
    (!uid.is_empty() && uid.len() <= 64).then(|| uid.to_string())
}

fn encode(api_version: &str, response: ResponseOut<'_>) -> Vec<u8> {
    // Serialising these plain structs cannot fail; fall back to an empty body rather than panic.
    serde_json::to_vec(&ReviewOut {
        api_version,
        kind: "AdmissionReview",
        response,
    })
    .unwrap_or_default()
}

fn allowed<'a>(uid: &'a str, warnings: Vec<String>) -> ResponseOut<'a> {
    ResponseOut {
        uid,
        allowed: true,
        status: None,
        patch: None,
        patch_type: None,
        warnings,
    }
}

fn denied(uid: &str, message: String) -> ResponseOut<'_> {
    ResponseOut {
        uid,
        allowed: false,
        status: Some(StatusOut {
            status: "Failure",
            code: 422,
            reason: "Invalid",
            message,
        }),
        patch: None,
        patch_type: None,
        warnings: Vec::new(),
    }
}

/// Reviews a pod admission (`POST /mutate`).
pub fn review_pod(body: &[u8], config: &Config) -> Result<Answer, BadRequest> {
    let (api_version, req) = decode(body)?;
    let uid = req.uid.as_str();
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
    let is_subresource = req.sub_resource.as_deref().is_some_and(|s| !s.is_empty());
    let (response, outcome, detail) = match req.object {
        Some(raw) if is_pod && !is_subresource => match serde_json::from_str::<Pod>(raw.get()) {
            Ok(pod) => {
                let namespace = req
                    .namespace
                    .as_deref()
                    .or(pod.metadata.namespace.as_deref())
                    .unwrap_or("");
                match mutate_pod(&pod, req.operation, namespace, config) {
                    Decision::Allow => (allowed(uid, Vec::new()), Outcome::Unchanged, None),
                    Decision::Patch { patch, warnings } => {
                        let json = serde_json::to_vec(&patch).unwrap_or_default();
                        let mut r = allowed(uid, warnings);
                        r.patch = Some(base64::engine::general_purpose::STANDARD.encode(json));
                        r.patch_type = Some("JSONPatch");
                        (r, Outcome::Mutated, None)
                    }
                    Decision::Deny(message) => {
                        (denied(uid, message.clone()), Outcome::Denied, Some(message))
                    }
                }
            }
            // The apiserver only sends pods it decoded itself, so this is a bug somewhere;
            // being harmless wins: admit unchanged, count it and tell the client.
            Err(e) => {
                let why = format!("could not decode the pod: {e}");
                let warning = format!("gpu-autoscaler webhook {why}; admitted unchanged");
                (allowed(uid, vec![warning]), Outcome::Error, Some(why))
            }
        },
        // Other kinds, subresources and objectless requests pass through.
        _ => (allowed(uid, Vec::new()), Outcome::Unchanged, None),
    };
    Ok(Answer {
        body: encode(api_version, response),
        uid: req.uid.clone(),
        operation: req.operation,
        outcome,
        detail,
    })
}

/// Reviews an AutoscalingPolicy write (`POST /validate-policy`): every cross-field problem of
/// the shared validation goes back in one denial.
pub fn review_policy(body: &[u8]) -> Result<Answer, BadRequest> {
    let (api_version, req) = decode(body)?;
    let uid = req.uid.as_str();
    let is_policy =
        req.kind.group == gpu_autoscaler_api::keys::GROUP && req.kind.kind == "AutoscalingPolicy";
    let acts = matches!(req.operation, Operation::Create | Operation::Update);
    let (response, outcome, detail) = match req.object {
        Some(raw) if is_policy && acts && req.sub_resource.as_deref().is_none_or(str::is_empty) => {
            match serde_json::from_str::<AutoscalingPolicy>(raw.get()) {
                Ok(policy) => match gpu_autoscaler_api::policy::validate(&policy.spec) {
                    Ok(()) => (allowed(uid, Vec::new()), Outcome::Unchanged, None),
                    Err(errors) => {
                        let message = errors.to_string();
                        (denied(uid, message.clone()), Outcome::Denied, Some(message))
                    }
                },
                Err(e) => {
                    let message = format!("not a valid AutoscalingPolicy: {e}");
                    (denied(uid, message.clone()), Outcome::Denied, Some(message))
                }
            }
        }
        _ => (allowed(uid, Vec::new()), Outcome::Unchanged, None),
    };
    Ok(Answer {
        body: encode(api_version, response),
        uid: req.uid.clone(),
        operation: req.operation,
        outcome,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_uid_finds_uid_in_broken_json() {
        assert_eq!(
            scan_uid(br#"{"request": {"uid" : "abc-123", "object": {"#),
            Some("abc-123".to_string())
        );
        assert_eq!(scan_uid(b"{"), None);
        assert_eq!(scan_uid(&[0xff, 0xfe]), None);
    }
}
