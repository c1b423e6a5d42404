//! Can existing certificate material be kept?
//!
//! The chain and name checks use rustls' own WebPKI verifier, i.e. the same rules a TLS client
//! applies, so "valid" here means "a client trusting this CA would accept this server".

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;

use crate::{CertBundle, CertError, CertRequest, SubjectAltName};

/// Renew when the serving certificate (or its CA) has less than this many days left.
pub const DEFAULT_RENEW_BEFORE_DAYS: u32 = 30;

/// Borrowed PEM material as it sits in a Secret or in files.
#[derive(Clone, Copy)]
pub struct PemBundle<'a> {
    /// CA certificate(s) the serving certificate must chain to.
    pub ca: &'a [u8],
    /// Serving certificate, optionally followed by intermediates.
    pub cert: &'a [u8],
    /// Private key of the serving certificate.
    pub key: &'a [u8],
}

impl CertBundle {
    /// The bundle as borrowed PEM bytes, for [`inspect`] and [`is_valid_for`].
    pub fn pems(&self) -> PemBundle<'_> {
        PemBundle {
            ca: self.ca_pem.as_bytes(),
            cert: self.cert_pem.as_bytes(),
            key: self.key_pem.as_bytes(),
        }
    }
}

/// What the certificates in a bundle say about themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// DNS names and IP addresses of the serving certificate.
    pub subject_alt_names: Vec<SubjectAltName>,
    /// Start of the serving certificate's validity.
    pub not_before: OffsetDateTime,
    /// End of the serving certificate's validity.
    pub not_after: OffsetDateTime,
    /// Earliest end of validity among the CA certificates.
    pub ca_not_after: OffsetDateTime,
}

/// Why existing material has to be replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    /// Missing or malformed PEM or X.509.
    #[error("unreadable certificate material: {0}")]
    Unreadable(String),
    /// The key in the bundle is not the certificate's key.
    #[error("the private key does not belong to the serving certificate")]
    KeyMismatch,
    /// The serving certificate's validity has not started.
    #[error("the serving certificate is not valid before {0}")]
    NotYetValid(OffsetDateTime),
    /// The serving certificate has expired.
    #[error("the serving certificate expired at {0}")]
    Expired(OffsetDateTime),
    /// The serving certificate expires within the renewal window.
    #[error("the serving certificate expires at {0}, inside the renewal window")]
    ExpiresSoon(OffsetDateTime),
    /// A CA certificate expires (or expired) within the renewal window.
    #[error("the CA expires at {0}, inside the renewal window")]
    CaExpiresSoon(OffsetDateTime),
    /// A requested name is not among the certificate's names.
    #[error("the serving certificate does not cover {0}")]
    MissingName(SubjectAltName),
    /// The chain does not verify against the CA.
    #[error("the serving certificate does not verify against the CA: {0}")]
    Untrusted(String),
}

/// Parses a bundle's certificates (not its key) and reports names and lifetimes.
pub fn inspect(pems: &PemBundle<'_>) -> Result<CertInfo, CertError> {
    let chain = parse_certs(pems.cert, "serving certificate")?;
    let cas = parse_certs(pems.ca, "CA certificate")?;
    let first = chain
        .first()
        .ok_or_else(|| CertError::Parse("serving certificate: no PEM CERTIFICATE block".into()))?;
    let leaf = parse_x509(first, "serving certificate")?;

    let mut subject_alt_names = Vec::new();
    let sans = leaf
        .subject_alternative_name()
        .map_err(|e| CertError::Parse(format!("subjectAltName extension: {e}")))?;
    for name in sans.iter().flat_map(|ext| ext.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(dns) => {
                subject_alt_names.push(SubjectAltName::Dns(dns.to_ascii_lowercase()))
            }
            GeneralName::IPAddress(bytes) => {
                if let Some(ip) = ip_from_bytes(bytes) {
                    subject_alt_names.push(SubjectAltName::Ip(ip));
                }
            }
            // Other name forms (e-mail, URI, …) play no part in server authentication.
            _ => {}
        }
    }

    let not_before = to_datetime(leaf.validity().not_before.timestamp())?;
    let not_after = to_datetime(leaf.validity().not_after.timestamp())?;
    let mut ca_not_after: Option<OffsetDateTime> = None;
    for ca in &cas {
        let ca = parse_x509(ca, "CA certificate")?;
        let end = to_datetime(ca.validity().not_after.timestamp())?;
        ca_not_after = Some(ca_not_after.map_or(end, |seen| seen.min(end)));
    }
    // parse_certs guarantees at least one CA certificate.
    let ca_not_after = ca_not_after.unwrap_or(not_after);

    Ok(CertInfo {
        subject_alt_names,
        not_before,
        not_after,
        ca_not_after,
    })
}

/// Decides whether `pems` can keep serving `req` at `now`.
///
/// Valid means: everything parses, the key is the certificate's key, the chain verifies against
/// the CA for every name `req` requires, and neither certificate ends within `min_remaining`.
pub fn is_valid_for(
    pems: &PemBundle<'_>,
    req: &CertRequest,
    now: OffsetDateTime,
    min_remaining: Duration,
) -> Result<CertInfo, InvalidReason> {
    let info = inspect(pems).map_err(|e| InvalidReason::Unreadable(e.to_string()))?;

    if now < info.not_before {
        return Err(InvalidReason::NotYetValid(info.not_before));
    }
    if now >= info.not_after {
        return Err(InvalidReason::Expired(info.not_after));
    }
    if now + min_remaining > info.not_after {
        return Err(InvalidReason::ExpiresSoon(info.not_after));
    }
    if now + min_remaining > info.ca_not_after {
        return Err(InvalidReason::CaExpiresSoon(info.ca_not_after));
    }

    let unreadable = |e: CertError| InvalidReason::Unreadable(e.to_string());
    let chain = parse_certs(pems.cert, "serving certificate").map_err(unreadable)?;
    let cas = parse_certs(pems.ca, "CA certificate").map_err(unreadable)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    check_key_matches(&chain, pems.key, &provider)?;

    let mut roots = RootCertStore::empty();
    for ca in cas {
        roots
            .add(ca)
            .map_err(|e| InvalidReason::Untrusted(format!("CA certificate rejected: {e}")))?;
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| InvalidReason::Untrusted(e.to_string()))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| InvalidReason::Unreadable("no serving certificate".into()))?;
    let unix_now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now.unix_timestamp()).unwrap_or(0),
    ));

    for wanted in req.required_sans() {
        let server_name = match &wanted {
            SubjectAltName::Ip(ip) => ServerName::IpAddress((*ip).into()),
            SubjectAltName::Dns(name) => match ServerName::try_from(name.clone()) {
                Ok(server_name) => server_name,
                // A wildcard is a pattern, not a name a client dials: it is covered only by
                // the very same wildcard in the certificate.
                Err(_) => {
                    if info.subject_alt_names.contains(&wanted) {
                        continue;
                    }
                    return Err(InvalidReason::MissingName(wanted));
                }
            },
        };
        match verifier.verify_server_cert(leaf, intermediates, &server_name, &[], unix_now) {
            Ok(_) => {}
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => return Err(InvalidReason::MissingName(wanted)),
            Err(other) => return Err(InvalidReason::Untrusted(other.to_string())),
        }
    }
    Ok(info)
}

fn check_key_matches(
    chain: &[CertificateDer<'static>],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<(), InvalidReason> {
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| InvalidReason::Unreadable(format!("private key: {e}")))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| InvalidReason::Unreadable(format!("private key: {e}")))?;
    let certified = rustls::sign::CertifiedKey::new(chain.to_vec(), signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(InvalidReason::KeyMismatch)
        }
        // aws-lc-rs reports the public half of every key type we can load, so "unknown"
        // means a key we could not compare; treat it as unusable rather than guess.
        Err(other) => Err(InvalidReason::Unreadable(format!("private key: {other}"))),
    }
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Parse(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(CertError::Parse(format!(
            "{what}: no PEM CERTIFICATE block"
        )));
    }
    Ok(certs)
}

fn parse_x509<'a>(
    der: &'a CertificateDer<'_>,
    what: &str,
) -> Result<x509_parser::certificate::X509Certificate<'a>, CertError> {
    x509_parser::parse_x509_certificate(der.as_ref())
        .map(|(_, cert)| cert)
        .map_err(|e| CertError::Parse(format!("{what}: {e}")))
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn to_datetime(unix: i64) -> Result<OffsetDateTime, CertError> {
    OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| CertError::Parse(format!("certificate time out of range: {e}")))
}
