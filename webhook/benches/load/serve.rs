//! Load-test server: the webhook's real router and TLS stack (`serve_tls`) with a throwaway
//! self-signed certificate for 127.0.0.1, built with the bench profile so that it reuses the
//! optimised dependencies of `cargo bench` instead of a second full release build.
//!
//!   cargo build --profile bench -p gpu-autoscaler-webhook --example serve
//!   target/release/examples/serve 127.0.0.1:18443 127.0.0.1:18081
//!
//! The first address serves HTTPS (all routes), the second plain-HTTP probes and metrics.

use std::time::Duration;

use gpu_autoscaler_webhook::{
    AppState, Config, TlsFiles, TlsServeOptions, probe_router, serve_tls,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:18443".into());
    let probe = args.next().unwrap_or_else(|| "127.0.0.1:18081".into());
    let dir = std::env::temp_dir().join(format!(
        "gpu-autoscaler-webhook-serve-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
    std::fs::write(dir.join("tls.crt"), cert.cert.pem())?;
    std::fs::write(dir.join("tls.key"), cert.signing_key.serialize_pem())?;

    let state = AppState::new(Config::default());
    let probes = tokio::net::TcpListener::bind(&probe).await?;
    let app = probe_router().with_state(state.clone());
    tokio::spawn(async move { axum::serve(probes, app).await });
    let options = TlsServeOptions {
        files: TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        },
        reload_interval: Duration::from_secs(10),
    };
    let mut server = serve_tls(std::net::TcpListener::bind(&listen)?, state, options).await?;
    eprintln!(
        "serving https://{} (probes on http://{probe})",
        server.local_addr
    );
    tokio::select! {
        r = server.wait() => r?,
        _ = tokio::signal::ctrl_c() => {}
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
