//! Certificates for the admission webhook.
//!
//! The apiserver only calls a webhook over TLS, and it only trusts the server certificate if the
//! webhook configuration carries the issuing CA in `caBundle`. This crate produces that pair:
//!
//! - [`generate`] makes a fresh ECDSA P-256 CA and a serving certificate for every name the
//!   in-cluster Service answers to (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`)
//!   plus any extra DNS names or IP addresses;
//! - [`inspect`] and [`is_valid_for`] decide whether existing material can be kept: it must parse,
//!   the key must belong to the certificate, the chain must verify against the CA for every
//!   requested name, and it must not expire within the renewal window;
//! - [`ensure_secret`] and [`patch_ca_bundle`] apply that against a cluster idempotently, which is
//!   what the chart's pre-install Job (`gpu-autoscaler certs --secret … --patch-webhook …`) runs.
//!
//! Private keys never reach a log line: [`CertBundle`]'s `Debug` redacts the key.

mod cluster;
mod error;
mod generate;
mod request;
mod validate;

pub use cluster::{
    CaBundlePatch, EnsuredSecret, SecretAction, WebhookKind, ensure_secret, patch_ca_bundle,
    secret_for,
};
pub use error::CertError;
pub use generate::{CertBundle, generate, generate_at};
pub use request::{CertRequest, DEFAULT_CA_VALIDITY_DAYS, DEFAULT_VALIDITY_DAYS, SubjectAltName};
pub use validate::{
    CertInfo, DEFAULT_RENEW_BEFORE_DAYS, InvalidReason, PemBundle, inspect, is_valid_for,
};

/// Secret data key of the serving certificate (the `kubernetes.io/tls` convention).
pub const SECRET_KEY_CERT: &str = "tls.crt";
/// Secret data key of the serving certificate's private key.
pub const SECRET_KEY_KEY: &str = "tls.key";
/// Secret data key of the CA certificate that the webhook configurations trust.
pub const SECRET_KEY_CA: &str = "ca.crt";
/// Secret type the apiserver validates for TLS material.
pub const SECRET_TYPE_TLS: &str = "kubernetes.io/tls";
