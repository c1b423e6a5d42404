//! What the three clouds share: the per-call wrapper (timeout, retry with backoff and jitter,
//! metrics), secret redaction and a short-lived cache of each group's last read.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpu_autoscaler_scaler::provider::{ProviderError, ProviderErrorKind, ProviderResult};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rand::Rng;

/// Timeout and retry settings of every cloud API call.
#[derive(Debug, Clone)]
pub struct CallPolicy {
    /// One attempt of one API call (a long-running operation has its own `operation_timeout`).
    pub timeout: Duration,
    /// Attempts for throttled or transient failures (auth, not-found and capacity are never retried).
    pub max_attempts: u32,
    /// First backoff; doubles per attempt up to `max_backoff`, with full jitter.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited out inside the call: the error goes back
    /// to the controller (kind `Throttled`, with the hint) which requeues the reconcile.
    pub max_retry_after: Duration,
    /// Wait for a long-running operation (resize, delete, VMSS update) at most this long.
    pub operation_timeout: Duration,
    /// Interval between polls of a long-running operation (the cloud's own hint wins).
    pub poll_interval: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(20),
            max_attempts: 4,
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_secs(2),
        }
    }
}

impl CallPolicy {
    /// Fast settings for tests against local emulators.
    pub fn fast() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_attempts: 4,
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(20),
        }
    }

    /// Delay before attempt `attempt + 1` (attempt counts from 1): full jitter over the
    /// exponential cap, but never shorter than the cloud's `Retry-After`.
    pub fn backoff(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let jittered = Duration::from_secs_f64(rng.random_range(0.0..=exp.as_secs_f64()));
        match retry_after {
            Some(ra) => ra.max(jittered),
            None => jittered,
        }
    }
}

/// A failed attempt: the classified error, and whether trying again may help.
#[derive(Debug)]
pub struct CallError {
    pub error: ProviderError,
    /// Network errors, timeouts and 5xx: retried like throttling.
    pub transient: bool,
}

impl CallError {
    pub fn new(error: ProviderError, transient: bool) -> Self {
        Self { error, transient }
    }
}

impl From<ProviderError> for CallError {
    fn from(error: ProviderError) -> Self {
        Self {
            error,
            transient: false,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: &'static str,
    call: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    provider: &'static str,
    call: &'static str,
    class: &'static str,
}

/// Per-API-call metrics: one count per HTTP request the provider makes (retries included),
/// errors by class and latency. Register them into the scaler's registry with
/// [`CloudMetrics::register`].
#[derive(Clone)]
pub struct CloudMetrics {
    calls: Family<CallLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<CallLabels, Histogram>,
    // The same counts, readable without parsing the exposition (tests, docs figures).
    counts: Arc<Mutex<BTreeMap<(&'static str, &'static str), u64>>>,
}

impl std::fmt::Debug for CloudMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudMetrics")
            .field("counts", &self.call_counts())
            .finish()
    }
}

impl Default for CloudMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            }),
            counts: Arc::default(),
        }
    }
}

impl CloudMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the three families to a registry (`gpu_autoscaler_cloud_api_*`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gpu_autoscaler_cloud_api_calls",
            "Cloud API requests made by the scaler's provider, retries included",
            self.calls.clone(),
        );
        registry.register(
            "gpu_autoscaler_cloud_api_errors",
            "Failed cloud API requests by error class",
            self.errors.clone(),
        );
        registry.register(
            "gpu_autoscaler_cloud_api_request_duration_seconds",
            "Latency of one cloud API request",
            self.duration.clone(),
        );
    }

    fn record(
        &self,
        provider: &'static str,
        call: &'static str,
        elapsed: Duration,
        error: Option<&'static str>,
    ) {
        let labels = CallLabels { provider, call };
        self.calls.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(class) = error {
            self.errors
                .get_or_create(&ErrorLabels {
                    provider,
                    call,
                    class,
                })
                .inc();
        }
        if let Ok(mut c) = self.counts.lock() {
            *c.entry((provider, call)).or_default() += 1;
        }
    }

    /// Requests made so far, by (provider, API call).
    pub fn call_counts(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Requests made so far, all calls together.
    pub fn total_calls(&self) -> u64 {
        self.call_counts().values().sum()
    }
}

/// Runs cloud API calls for one provider: a timeout per attempt, retries of throttled and
/// transient failures with backoff and jitter (honouring `Retry-After`), and a metric per request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub provider: &'static str,
    pub policy: CallPolicy,
    pub metrics: CloudMetrics,
}

impl Caller {
    pub fn new(provider: &'static str, policy: CallPolicy, metrics: CloudMetrics) -> Self {
        Self {
            provider,
            policy,
            metrics,
        }
    }

    /// `operation` is the trait method (error and log field); `call` the cloud API (metric).
    pub async fn call<T, F, Fut>(
        &self,
        operation: &'static str,
        call: &'static str,
        mut f: F,
    ) -> ProviderResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = match tokio::time::timeout(self.policy.timeout, f()).await {
                Ok(r) => r,
                Err(_) => Err(CallError::new(
                    ProviderError::other(
                        operation,
                        format!("{call} timed out after {:?}", self.policy.timeout),
                    ),
                    true,
                )),
            };
            let class = match &result {
                Ok(_) => None,
                Err(e) if e.transient && e.error.kind == ProviderErrorKind::Other => {
                    Some("transient")
                }
                Err(e) => Some(e.error.kind.as_str()),
            };
            self.metrics
                .record(self.provider, call, started.elapsed(), class);
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let mut error = err.error;
            error.operation = operation;
            error.message = redact(&error.message);
            let retryable = error.kind == ProviderErrorKind::Throttled || err.transient;
            let hint_too_long = error
                .retry_after
                .is_some_and(|ra| ra > self.policy.max_retry_after);
            if !retryable || hint_too_long || attempt >= self.policy.max_attempts {
                if error.kind == ProviderErrorKind::Auth {
                    // Said once per failed call with what to check; the controller backs off.
                    tracing::error!(provider = self.provider, call, error = %error.message, "cloud credentials rejected");
                }
                return Err(error);
            }
            let delay = self
                .policy
                .backoff(attempt, error.retry_after, &mut rand::rng());
            tracing::debug!(
                provider = self.provider,
                call,
                attempt,
                ?delay,
                kind = error.kind.as_str(),
                "retrying cloud call"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// Masks anything that looks like a credential in a message that came from a cloud or an SDK:
/// bearer tokens, AWS signatures and session tokens, access keys, SAS signatures, client secrets.
pub fn redact(message: &str) -> String {
    const MARKERS: &[&str] = &[
        "Bearer ",
        "bearer ",
        "access_token",
        "X-Amz-Signature=",
        "X-Amz-Security-Token=",
        "Signature=",
        "Credential=",
        "client_secret",
        "sig=",
        "refresh_token",
        "id_token",
    ];
    let mut out = message.to_string();
    for marker in MARKERS {
        let mut from = 0;
        while let Some(pos) = out[from..].find(marker) {
            let start = from + pos + marker.len();
            // Skip separators between a key and its value (`": "`, `=`).
            let value_start = out[start..]
                .find(|c: char| !matches!(c, '"' | ':' | '=' | ' '))
                .map_or(out.len(), |i| start + i);
            let value_end = out[value_start..]
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '&' | ',' | '}' | '\''))
                .map_or(out.len(), |i| value_start + i);
            if value_end > value_start {
                out.replace_range(value_start..value_end, "[redacted]");
            }
            from = (value_start + "[redacted]".len()).min(out.len());
        }
    }
    // AWS access key ids (AKIA/ASIA + 16 upper-case alphanumerics).
    for prefix in ["AKIA", "ASIA"] {
        let mut from = 0;
        while let Some(pos) = out[from..].find(prefix) {
            let start = from + pos;
            let end = start + 20;
            let is_key = out.len() >= end
                && out.is_char_boundary(end)
                && out[start..end]
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
            if is_key {
                out.replace_range(start..end, "[redacted-key-id]");
                from = start + "[redacted-key-id]".len();
            } else {
                from = start + prefix.len();
            }
        }
    }
    out
}

/// Parses a `Retry-After` header: delta seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    (at.with_timezone(&chrono::Utc) - now).to_std().ok()
}

/// The last read of each group, so that `target_size` and `in_flight` of one reconcile share
/// one request (and AWS reads all groups in one). Writes always read fresh.
#[derive(Debug)]
pub struct ReadCache<V> {
    ttl: Duration,
    entries: Mutex<BTreeMap<String, (Instant, V)>>,
}

impl<V: Clone> ReadCache<V> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        let (at, v) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    pub fn put(&self, key: &str, value: V) {
        if let Ok(mut e) = self.entries.lock() {
            e.insert(key.to_string(), (Instant::now(), value));
        }
    }

    pub fn invalidate(&self, key: &str) {
        if let Ok(mut e) = self.entries.lock() {
            e.remove(key);
        }
    }
}

/// Classifies an HTTP status the way all three clouds use them, before looking at error codes.
pub fn kind_for_status(status: u16) -> (ProviderErrorKind, bool) {
    match status {
        401 | 403 => (ProviderErrorKind::Auth, false),
        404 => (ProviderErrorKind::NotFound, false),
        429 => (ProviderErrorKind::Throttled, false),
        500..=599 => (ProviderErrorKind::Other, true),
        _ => (ProviderErrorKind::Other, false),
    }
}

/// The message an auth failure carries: what failed and what to check, never the credential.
pub fn auth_message(cloud: &str, detail: &str, hint: &str) -> String {
    format!(
        "{cloud} rejected the scaler's credentials ({}); {hint}",
        redact(detail)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn redaction_masks_tokens_and_keys() {
        let m = r#"Authorization: Bearer ya29.secretTOKEN more {"access_token":"abc.def"} AKIAIOSFODNN7EXAMPLE x-sig sig=Zm9v&se=1"#;
        let r = redact(m);
        assert!(!r.contains("ya29.secretTOKEN"), "{r}");
        assert!(!r.contains("abc.def"), "{r}");
        assert!(!r.contains("AKIAIOSFODNN7EXAMPLE"), "{r}");
        assert!(!r.contains("Zm9v"), "{r}");
        assert!(r.contains("more"));
        assert_eq!(redact("nothing secret here"), "nothing secret here");
    }

    #[test]
    fn backoff_is_jittered_capped_and_honours_retry_after() {
        let p = CallPolicy::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 1..10 {
            let d = p.backoff(attempt, None, &mut rng);
            assert!(d <= p.max_backoff, "{d:?}");
        }
        let d = p.backoff(1, Some(Duration::from_secs(3)), &mut rng);
        assert!(d >= Duration::from_secs(3));
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .map(|d| d.with_timezone(&chrono::Utc));
        let now = now.unwrap_or_else(|_| chrono::Utc::now());
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Mon, 01 Jan 2024 00:00:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[tokio::test]
    async fn caller_retries_throttling_but_not_auth() {
        let metrics = CloudMetrics::new();
        let caller = Caller::new("test", CallPolicy::fast(), metrics.clone());
        let mut n = 0;
        let r: ProviderResult<u32> = caller
            .call("op", "Describe", || {
                n += 1;
                let attempt = n;
                async move {
                    if attempt < 3 {
                        Err(
                            ProviderError::new(ProviderErrorKind::Throttled, "op", "slow down")
                                .into(),
                        )
                    } else {
                        Ok(attempt)
                    }
                }
            })
            .await;
        assert_eq!(r, Ok(3));
        let r: ProviderResult<u32> = caller
            .call("op", "Describe", || async {
                Err(ProviderError::new(ProviderErrorKind::Auth, "op", "Bearer abc denied").into())
            })
            .await;
        let e = r.err().map(|e| (e.kind, e.message));
        assert_eq!(
            e,
            Some((
                ProviderErrorKind::Auth,
                "Bearer [redacted] denied".to_string()
            ))
        );
        assert_eq!(metrics.total_calls(), 4);
    }
}
