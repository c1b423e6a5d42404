//! Fresh CA and serving certificate.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::{CertError, CertRequest, SubjectAltName};

/// Certificates start this much in the past so that a node whose clock runs slightly behind
/// ours does not reject them as "not yet valid" right after a rollout.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::hours(1);

/// A CA and the serving certificate it signed, PEM encoded.
#[derive(Clone, PartialEq, Eq)]
pub struct CertBundle {
    /// The CA certificate; this is what goes into `caBundle`.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving certificate's private key (PKCS#8). Never log it.
    pub key_pem: String,
    /// When the serving certificate expires.
    pub not_after: OffsetDateTime,
}

impl fmt::Debug for CertBundle {
    // Hand-written so that `{:?}` in a log line or a failed assertion cannot leak the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertBundle")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// Generates a new CA and serving certificate for `req`, valid from now.
pub fn generate(req: &CertRequest) -> Result<CertBundle, CertError> {
    generate_at(req, OffsetDateTime::now_utc())
}

/// Generates a new CA and serving certificate for `req` as if the current time were `now`.
///
/// Both keys are ECDSA P-256 from aws-lc-rs. The CA's key is dropped afterwards: renewal makes a
/// new CA, so there is no long-lived signing key to protect.
pub fn generate_at(req: &CertRequest, now: OffsetDateTime) -> Result<CertBundle, CertError> {
    req.validate()?;
    // X.509 times have one-second resolution; keep `not_after` equal to what a parser reads back.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let not_before = now - CLOCK_SKEW_ALLOWANCE;
    let ca_not_after = now + Duration::days(i64::from(req.ca_validity_days));
    let not_after = now + Duration::days(i64::from(req.validity_days));

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    // A unique subject per CA (time plus a slice of its random public key, like kube's own
    // `name@timestamp` CAs) keeps an old and a new CA apart in logs and in trust bundles.
    let key_tag: String = ca_key
        .public_key_raw()
        .iter()
        .rev()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect();
    ca_params.distinguished_name.push(
        DnType::CommonName,
        format!(
            "gpu-autoscaler-webhook-ca@{}-{key_tag} ({})",
            now.unix_timestamp(),
            req.service_dns_name()
        ),
    );
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = ca_not_after;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

    let leaf_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut leaf_params = CertificateParams::default();
    leaf_params.distinguished_name = rcgen::DistinguishedName::new();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, req.service_dns_name());
    leaf_params.subject_alt_names = req
        .required_sans()
        .iter()
        .map(to_rcgen_san)
        .collect::<Result<_, _>>()?;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    leaf_params.not_before = not_before;
    leaf_params.not_after = not_after;
    let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

    Ok(CertBundle {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
        not_after,
    })
}

fn to_rcgen_san(san: &SubjectAltName) -> Result<SanType, CertError> {
    Ok(match san {
        SubjectAltName::Dns(name) => SanType::DnsName(name.as_str().try_into()?),
        SubjectAltName::Ip(ip) => SanType::IpAddress(*ip),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_contains_the_key() {
        let bundle = generate(&CertRequest::new("hook", "gpu")).unwrap();
        let shown = format!("{bundle:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("PRIVATE KEY"));
        assert!(bundle.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn lifetimes_follow_the_request() {
        let now = OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap();
        let mut req = CertRequest::new("hook", "gpu");
        req.validity_days = 10;
        req.ca_validity_days = 20;
        let bundle = generate_at(&req, now).unwrap();
        assert_eq!(bundle.not_after, now + Duration::days(10));
        let info = crate::inspect(&bundle.pems()).unwrap();
        assert_eq!(info.not_after, now + Duration::days(10));
        assert_eq!(info.not_before, now - CLOCK_SKEW_ALLOWANCE);
        assert_eq!(info.ca_not_after, now + Duration::days(20));
    }

    #[test]
    fn invalid_requests_generate_nothing() {
        let mut req = CertRequest::new("hook", "gpu");
        req.ca_validity_days = 1;
        assert!(matches!(generate(&req), Err(CertError::InvalidRequest(_))));
    }
}
