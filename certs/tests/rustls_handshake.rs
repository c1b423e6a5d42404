//! The generated material must work where it matters: a rustls client that trusts only the
//! generated CA completes a TLS handshake with a server using the generated certificate and key,
//! for the Service's DNS name, and refuses it for any other name.
//!
//! The handshake runs entirely in memory: TLS records are pumped between a ClientConnection and
//! a ServerConnection, so no sockets or threads are involved.

use std::sync::Arc;

use gpu_autoscaler_certs::{CertBundle, CertRequest, SubjectAltName, generate};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_config(bundle: &CertBundle) -> Arc<ServerConfig> {
    let chain = CertificateDer::pem_slice_iter(bundle.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("serving certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(bundle.key_pem.as_bytes()).expect("key PEM");
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server accepts the generated certificate and key");
    Arc::new(config)
}

fn client_config(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(ca.expect("CA PEM"))
            .expect("CA is a usable trust anchor");
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Runs a full handshake between in-memory endpoints; `Err` carries the first TLS error.
fn handshake(bundle: &CertBundle, ca_pem: &str, name: &str) -> Result<(), rustls::Error> {
    let server_name = ServerName::try_from(name.to_owned()).expect("valid server name");
    let mut client = Connection::from(ClientConnection::new(client_config(ca_pem), server_name)?);
    let mut server = Connection::from(ServerConnection::new(server_config(bundle))?);

    // A TLS 1.3 handshake needs a handful of flights; bound the loop so a bug cannot hang CI.
    for _ in 0..20 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
        pump(&mut client, &mut server)?;
        pump(&mut server, &mut client)?;
    }
    panic!("handshake did not finish after 20 rounds");
}

fn pump(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf)
            .expect("writing to a Vec cannot fail");
    }
    let mut slice = buf.as_slice();
    while !slice.is_empty() {
        to.read_tls(&mut slice)
            .expect("reading from a slice cannot fail");
        // Deliver the alert the receiver generates before reporting, like a real peer would.
        if let Err(err) = to.process_new_packets() {
            let mut alert = Vec::new();
            while to.wants_write() {
                to.write_tls(&mut alert)
                    .expect("writing to a Vec cannot fail");
            }
            return Err(err);
        }
    }
    Ok(())
}

#[test]
fn client_trusting_the_ca_accepts_the_service_name() {
    let bundle = generate(&CertRequest::new("gpu-autoscaler-webhook", "gpu-system")).unwrap();
    handshake(
        &bundle,
        &bundle.ca_pem,
        "gpu-autoscaler-webhook.gpu-system.svc",
    )
    .expect("handshake for <svc>.<ns>.svc");
    // The other forms the Service answers to work too.
    for name in [
        "gpu-autoscaler-webhook",
        "gpu-autoscaler-webhook.gpu-system",
        "gpu-autoscaler-webhook.gpu-system.svc.cluster.local",
    ] {
        handshake(&bundle, &bundle.ca_pem, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn extra_ip_and_dns_sans_are_served() {
    let mut req = CertRequest::new("hook", "gpu");
    req.extra_sans = vec![
        SubjectAltName::parse("127.0.0.1").unwrap(),
        SubjectAltName::parse("hook.example.test").unwrap(),
    ];
    let bundle = generate(&req).unwrap();
    handshake(&bundle, &bundle.ca_pem, "127.0.0.1").expect("IP SAN");
    handshake(&bundle, &bundle.ca_pem, "hook.example.test").expect("extra DNS SAN");
}

#[test]
fn other_names_are_rejected() {
    let bundle = generate(&CertRequest::new("hook", "gpu")).unwrap();
    let err = handshake(&bundle, &bundle.ca_pem, "hook.other-namespace.svc").unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            )
        ),
        "unexpected error: {err:?}"
    );
    let err = handshake(&bundle, &bundle.ca_pem, "127.0.0.1").unwrap_err();
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
}

#[test]
fn a_different_ca_is_not_trusted() {
    let req = CertRequest::new("hook", "gpu");
    let bundle = generate(&req).unwrap();
    let stranger = generate(&req).unwrap();
    let err = handshake(&bundle, &stranger.ca_pem, "hook.gpu.svc").unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
}
