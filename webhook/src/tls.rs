//! Serving certificates: loading from PEM files and hot reload.
//!
//! Kubernetes Secret volumes update by writing a new timestamped directory and atomically
//! swapping the `..data` symlink, so the paths we were given never see a write event of their
//! own. Watching with inotify on the path would miss that; instead the files are read on an
//! interval and their content compared. A change installs a fresh rustls config for new
//! connections; connections already open keep the one they negotiated with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::server::AppState;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("certificate {path}: {message}")]
    X509 { path: PathBuf, message: String },
    #[error("building the TLS configuration (does the key match the certificate?): {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate and key files to serve from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A loaded certificate: the rustls config, its `notAfter`, and the bytes it came from.
pub struct LoadedCert {
    pub config: Arc<ServerConfig>,
    /// `notAfter` of the leaf certificate, seconds since the Unix epoch.
    pub not_after: i64,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl LoadedCert {
    fn same_files(&self, cert_pem: &[u8], key_pem: &[u8]) -> bool {
        self.cert_pem == cert_pem && self.key_pem == key_pem
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds a TLS 1.2/1.3 server config on aws-lc-rs from PEM bytes. ALPN offers h2 and
/// http/1.1 (the apiserver's client speaks both).
pub fn server_config(
    files: &TlsFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(ServerConfig, i64), TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: files.cert.clone(),
            message: e.to_string(),
        })?;
    let leaf = chain.first().ok_or_else(|| TlsError::NoCertificate {
        path: files.cert.clone(),
    })?;
    let not_after = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| TlsError::X509 {
            path: files.cert.clone(),
            message: e.to_string(),
        })?
        .1
        .validity()
        .not_after
        .timestamp();
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
        path: files.key.clone(),
        message: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, not_after))
}

/// Reads and parses both files.
pub fn load(files: &TlsFiles) -> Result<LoadedCert, TlsError> {
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let (config, not_after) = server_config(files, &cert_pem, &key_pem)?;
    Ok(LoadedCert {
        config: Arc::new(config),
        not_after,
        cert_pem,
        key_pem,
    })
}

fn record(state: &AppState, result: &Result<LoadedCert, TlsError>) {
    use crate::metrics::ReloadLabels;
    let label = if result.is_ok() { "success" } else { "error" };
    state
        .metrics
        .certificate_reloads
        .get_or_create(&ReloadLabels { result: label })
        .inc();
    if let Ok(c) = result {
        state.set_certificate_loaded(c.not_after);
    }
}

/// Loads the certificate, retrying every `interval` until it succeeds (the Secret may not be
/// mounted or issued yet). Readiness stays false until then.
pub async fn load_when_available(
    files: &TlsFiles,
    interval: Duration,
    state: &AppState,
) -> LoadedCert {
    loop {
        let result = load(files);
        record(state, &result);
        match result {
            Ok(c) => {
                tracing::info!(cert = %files.cert.display(), not_after = c.not_after, "serving certificate loaded");
                return c;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?interval, "serving certificate not available yet");
                tokio::time::sleep(interval).await;
            }
        }
    }
}

/// Polls the files every `interval` and installs a changed certificate into `rustls`.
/// A file that fails to parse (for example, a cert and key written one after the other)
/// keeps the current certificate in service and is retried on the next tick.
pub async fn watch(
    files: TlsFiles,
    interval: Duration,
    rustls: RustlsConfig,
    mut current: LoadedCert,
    state: Arc<AppState>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let mut last_error: Option<String> = None;
    // The last pair that failed to parse: not re-parsed or re-counted until the files change.
    let mut rejected: Option<(Vec<u8>, Vec<u8>)> = None;
    loop {
        ticker.tick().await;
        let (cert_pem, key_pem) = match (read(&files.cert), read(&files.key)) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, "cannot read serving certificate; keeping the current one");
                    last_error = Some(msg);
                }
                continue;
            }
        };
        if current.same_files(&cert_pem, &key_pem)
            || rejected
                .as_ref()
                .is_some_and(|(c, k)| *c == cert_pem && *k == key_pem)
        {
            continue;
        }
        let result = match server_config(&files, &cert_pem, &key_pem) {
            Ok((config, not_after)) => Ok(LoadedCert {
                config: Arc::new(config),
                not_after,
                cert_pem,
                key_pem,
            }),
            Err(e) => {
                rejected = Some((cert_pem, key_pem));
                Err(e)
            }
        };
        record(&state, &result);
        match result {
            Ok(next) => {
                rustls.reload_from_config(next.config.clone());
                tracing::info!(not_after = next.not_after, "serving certificate reloaded");
                current = next;
                last_error = None;
                rejected = None;
            }
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(error = %msg, "new serving certificate rejected; keeping the current one");
                    last_error = Some(msg);
                }
            }
        }
    }
}
