//! Keeping the published spot rates current: from a file (re-read when it changes) or from a
//! ConfigMap (watched). A document that does not parse is logged and the previous rates stay.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use crate::rates::{CONFIGMAP_KEY, RatesError, SpotRates, SpotRatesDoc};
use crate::server::Extender;

/// Reads and validates a rates file.
pub fn load_rates_file(path: &std::path::Path, default_rate: f64) -> Result<SpotRates, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    SpotRatesDoc::parse(&text)
        .map(|doc| SpotRates::new(doc).with_default_rate(default_rate))
        .map_err(|e: RatesError| format!("{}: {e}", path.display()))
}

/// Re-reads `path` whenever its modification time changes (checked every `every`).
pub async fn watch_rates_file(
    ext: Arc<Extender>,
    path: PathBuf,
    default_rate: f64,
    every: Duration,
) {
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut last: Option<SystemTime> = mtime(&path);
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = mtime(&path);
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        match load_rates_file(&path, default_rate) {
            Ok(rates) => {
                tracing::info!(path = %path.display(), pools = rates.published().pools.len(),
                    instance_types = rates.published().instance_types.len(), "spot rates reloaded");
                ext.set_rates(rates);
            }
            Err(e) => {
                tracing::warn!(error = %e, "spot rates file changed but is invalid; keeping the previous rates")
            }
        }
    }
}

/// Watches ConfigMap `namespace/name` and applies its `rates.json` key on every change. A
/// deleted ConfigMap leaves the last rates in place (the bundled advisor still backs them).
pub async fn watch_rates_configmap(
    ext: Arc<Extender>,
    client: Client,
    namespace: String,
    name: String,
    default_rate: f64,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher::watcher(api, cfg).default_backoff();
    futures::pin_mut!(stream);
    while let Some(ev) = stream.next().await {
        let cm = match ev {
            Ok(Event::Apply(cm)) | Ok(Event::InitApply(cm)) => cm,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "spot rates ConfigMap watch error; retrying");
                continue;
            }
        };
        let Some(text) = cm.data.as_ref().and_then(|d| d.get(CONFIGMAP_KEY)) else {
            tracing::warn!(%namespace, %name, key = CONFIGMAP_KEY, "spot rates ConfigMap lacks its key");
            continue;
        };
        match SpotRatesDoc::parse(text) {
            Ok(doc) => {
                tracing::info!(%namespace, %name, pools = doc.pools.len(),
                    instance_types = doc.instance_types.len(), "spot rates updated");
                ext.set_rates(SpotRates::new(doc).with_default_rate(default_rate));
            }
            Err(e) => tracing::warn!(%namespace, %name, error = %e,
                "spot rates ConfigMap is invalid; keeping the previous rates"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_file_loads_and_reports_errors_with_path() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("rates.json");
        std::fs::write(&good, r#"{"pools":{"p":0.1}}"#).unwrap();
        let r = load_rates_file(&good, 0.2).unwrap();
        assert_eq!(r.published().pools["p"], 0.1);
        assert_eq!(r.default_rate, 0.2);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"pools":{"p":-1}}"#).unwrap();
        let e = load_rates_file(&bad, 0.2).unwrap_err();
        assert!(
            e.contains("bad.json") && e.contains("between 0 and 1"),
            "{e}"
        );
        assert!(
            load_rates_file(&dir.path().join("none"), 0.2)
                .unwrap_err()
                .contains("cannot read")
        );
    }
}
