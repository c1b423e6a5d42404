//! What a serving certificate must cover.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rustls_pki_types::DnsName;

use crate::CertError;

/// Serving certificate lifetime when the caller does not choose one.
pub const DEFAULT_VALIDITY_DAYS: u32 = 365;
/// CA lifetime when the caller does not choose one. Longer than the leaf so that a renewed leaf
/// could in principle be signed by the same CA; it must never be shorter than the leaf.
pub const DEFAULT_CA_VALIDITY_DAYS: u32 = 3650;

/// One subject alternative name: a DNS name or an IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectAltName {
    /// A DNS name, stored lower-case because certificate name matching ignores case.
    Dns(String),
    /// An IPv4 or IPv6 address (e.g. `127.0.0.1` for a webhook reached over loopback in tests).
    Ip(IpAddr),
}

impl SubjectAltName {
    /// Parses an IP address literal or a DNS name (wildcards allowed, as in `*.example.com`).
    pub fn parse(raw: &str) -> Result<Self, CertError> {
        let trimmed = raw.trim();
        if let Ok(ip) = IpAddr::from_str(trimmed) {
            return Ok(Self::Ip(ip));
        }
        let lower = trimmed.to_ascii_lowercase();
        // A leading `*.` is legal in a SAN but not in a DnsName; check the rest.
        let checked = lower.strip_prefix("*.").unwrap_or(&lower);
        DnsName::try_from(checked).map_err(|_| {
            CertError::InvalidRequest(format!(
                "{raw:?} is neither an IP address nor a valid DNS name"
            ))
        })?;
        Ok(Self::Dns(lower))
    }
}

impl FromStr for SubjectAltName {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SubjectAltName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// The webhook Service a certificate is for, and how long it should live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    /// Name of the Service in front of the webhook.
    pub service: String,
    /// Namespace of that Service.
    pub namespace: String,
    /// Names beyond the Service's own DNS names.
    pub extra_sans: Vec<SubjectAltName>,
    /// Lifetime of the serving certificate.
    pub validity_days: u32,
    /// Lifetime of the CA; at least `validity_days`.
    pub ca_validity_days: u32,
}

impl CertRequest {
    /// A request for `service` in `namespace` with the default lifetimes and no extra names.
    pub fn new(service: impl Into<String>, namespace: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            namespace: namespace.into(),
            extra_sans: Vec::new(),
            validity_days: DEFAULT_VALIDITY_DAYS,
            ca_validity_days: DEFAULT_CA_VALIDITY_DAYS,
        }
    }

    /// The name the apiserver dials for a `service:` webhook reference: `<svc>.<ns>.svc`.
    pub fn service_dns_name(&self) -> String {
        format!("{}.{}.svc", self.service, self.namespace)
    }

    /// Every name the certificate must cover, Service names first, without duplicates.
    pub fn required_sans(&self) -> Vec<SubjectAltName> {
        let svc = &self.service;
        let ns = &self.namespace;
        let mut names = vec![
            SubjectAltName::Dns(svc.to_ascii_lowercase()),
            SubjectAltName::Dns(format!("{svc}.{ns}").to_ascii_lowercase()),
            SubjectAltName::Dns(format!("{svc}.{ns}.svc").to_ascii_lowercase()),
            SubjectAltName::Dns(format!("{svc}.{ns}.svc.cluster.local").to_ascii_lowercase()),
        ];
        for extra in &self.extra_sans {
            if !names.contains(extra) {
                names.push(extra.clone());
            }
        }
        names
    }

    /// Rejects requests that would produce a certificate nobody can use.
    pub fn validate(&self) -> Result<(), CertError> {
        for (what, value) in [("service", &self.service), ("namespace", &self.namespace)] {
            if !is_dns_label(value) {
                return Err(CertError::InvalidRequest(format!(
                    "{what} {value:?} is not a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters)"
                )));
            }
        }
        if self.validity_days == 0 {
            return Err(CertError::InvalidRequest(
                "validity must be at least one day".into(),
            ));
        }
        if self.ca_validity_days < self.validity_days {
            return Err(CertError::InvalidRequest(format!(
                "the CA ({} days) would expire before the serving certificate ({} days)",
                self.ca_validity_days, self.validity_days
            )));
        }
        Ok(())
    }
}

/// Service and namespace names are DNS-1123 labels; anything else cannot be a Service name.
fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_sans_cover_all_service_forms_and_extras_once() {
        let mut req = CertRequest::new("hook", "gpu");
        req.extra_sans = vec![
            SubjectAltName::parse("127.0.0.1").unwrap(),
            SubjectAltName::parse("hook.gpu.svc").unwrap(),
            SubjectAltName::parse("Webhook.Example.COM").unwrap(),
        ];
        let names: Vec<String> = req.required_sans().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            [
                "hook",
                "hook.gpu",
                "hook.gpu.svc",
                "hook.gpu.svc.cluster.local",
                "127.0.0.1",
                "webhook.example.com"
            ]
        );
    }

    #[test]
    fn san_parsing_distinguishes_ips_and_rejects_garbage() {
        assert_eq!(
            SubjectAltName::parse("::1").unwrap(),
            SubjectAltName::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            SubjectAltName::parse("*.gpu.svc").unwrap(),
            SubjectAltName::Dns("*.gpu.svc".into())
        );
        assert!(SubjectAltName::parse("not a name").is_err());
        assert!(SubjectAltName::parse("").is_err());
    }

    #[test]
    fn validate_rejects_unusable_requests() {
        assert!(CertRequest::new("hook", "gpu").validate().is_ok());
        assert!(CertRequest::new("Hook", "gpu").validate().is_err());
        assert!(CertRequest::new("hook", "").validate().is_err());
        let mut req = CertRequest::new("hook", "gpu");
        req.validity_days = 0;
        assert!(req.validate().is_err());
        let mut req = CertRequest::new("hook", "gpu");
        req.validity_days = 400;
        req.ca_validity_days = 365;
        let err = req.validate().unwrap_err().to_string();
        assert!(err.contains("would expire before"), "{err}");
    }
}
