//! TLS serving and certificate hot reload, with the files laid out like a Kubernetes Secret
//! volume (`tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>`), rotated by swapping the
//! `..data` symlink the way the kubelet does.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gpu_autoscaler_webhook::{AppState, Config, TlsFiles, TlsServeOptions, serve_tls};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

struct Cert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    not_after: i64,
}

fn cert(year: i32) -> Cert {
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    params.not_after = rcgen::date_time_ymd(year, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let c = params.self_signed(&key).unwrap();
    Cert {
        cert_pem: c.pem(),
        key_pem: key.serialize_pem(),
        der: c.der().clone(),
        not_after: params.not_after.unix_timestamp(),
    }
}

/// Writes `..<name>/tls.{crt,key}` and points `..data` at it atomically.
fn publish(dir: &Path, name: &str, c: &Cert) {
    let version = dir.join(format!("..{name}"));
    std::fs::create_dir(&version).unwrap();
    std::fs::write(version.join("tls.crt"), &c.cert_pem).unwrap();
    std::fs::write(version.join("tls.key"), &c.key_pem).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{name}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        let link = dir.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), &link).unwrap();
        }
    }
}

fn connector(
    trusted: &[&Cert],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in trusted {
        roots.add(c.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn connect(addr: SocketAddr, tls: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    tls.connect(name, tcp).await.unwrap()
}

fn served_cert(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// One keep-alive HTTP/1.1 GET on an open connection; returns the status line and body.
async fn get(s: &mut TlsStream<TcpStream>, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + len {
                return text.into_owned();
            }
        }
    }
}

async fn wait_for_cert(addr: SocketAddr, tls: &TlsConnector, want: &CertificateDer<'static>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = connect(addr, tls).await;
        if served_cert(&s) == *want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secret_is_served_to_new_connections_without_dropping_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (cert(2031), cert(2032));
    publish(dir.path(), "2026_01_01_00_00_00.1", &a);

    let state = AppState::new(Config::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let options = TlsServeOptions {
        files: TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        },
        reload_interval: Duration::from_millis(100),
    };
    let server = serve_tls(listener, state.clone(), options).await.unwrap();
    let addr = server.local_addr;
    assert!(state.is_ready());
    assert!(state.metrics.encode().contains(&format!(
        "certificate_expiry_timestamp_seconds {}",
        a.not_after
    )));

    let both = connector(
        &[&a, &b],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );
    let mut old = connect(addr, &both).await;
    assert_eq!(served_cert(&old), a.der);
    assert!(get(&mut old, "/readyz").await.starts_with("HTTP/1.1 200"));

    // TLS 1.2 and 1.3 are both offered.
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let s = connect(addr, &connector(&[&a], &[v])).await;
        assert_eq!(s.get_ref().1.protocol_version(), Some(v.version));
    }

    publish(dir.path(), "2026_02_01_00_00_00.2", &b);
    std::fs::remove_dir_all(dir.path().join("..2026_01_01_00_00_00.1")).unwrap();
    wait_for_cert(addr, &both, &b.der).await;
    assert!(state.metrics.encode().contains(&format!(
        "certificate_expiry_timestamp_seconds {}",
        b.not_after
    )));

    // The connection opened before the rotation still works, on its old session.
    assert!(get(&mut old, "/healthz").await.starts_with("HTTP/1.1 200"));
    assert_eq!(served_cert(&old), a.der);

    // A broken rotation (key of another certificate) keeps the current certificate.
    let c = cert(2033);
    let broken = Cert {
        key_pem: a.key_pem.clone(),
        cert_pem: c.cert_pem.clone(),
        der: c.der.clone(),
        not_after: c.not_after,
    };
    publish(dir.path(), "2026_03_01_00_00_00.3", &broken);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !state
        .metrics
        .encode()
        .contains(r#"certificate_reloads_total{result="error"} 1"#)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            state.metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = connect(addr, &both).await;
    assert_eq!(served_cert(&s), b.der);
    assert!(state.is_ready());

    server.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn server_waits_for_a_certificate_and_is_not_ready_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let state = AppState::new(Config::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let options = TlsServeOptions {
        files: TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
        },
        reload_interval: Duration::from_millis(50),
    };
    let task = tokio::spawn(serve_tls(listener, state.clone(), options));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!state.is_ready());
    assert!(
        state
            .metrics
            .encode()
            .contains(r#"certificate_reloads_total{result="error"}"#)
    );
    let a = cert(2031);
    publish(dir.path(), "1", &a);
    let server = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(state.is_ready());
    let s = connect(
        server.local_addr,
        &connector(&[&a], &[&rustls::version::TLS13]),
    )
    .await;
    assert_eq!(served_cert(&s), a.der);
    server.shutdown(Duration::from_secs(1)).await.unwrap();
}
