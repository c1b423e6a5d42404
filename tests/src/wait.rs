use std::future::Future;
use std::time::Duration;

use crate::{Error, Result};

/// How often [`wait_for`] re-evaluates its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What a polled condition returns: `bool` (done or not) or `Option<T>` (done with a value).
pub trait Settled {
    type Output;
    fn settled(self) -> Option<Self::Output>;
}

impl Settled for bool {
    type Output = ();
    fn settled(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Settled for Option<T> {
    type Output = T;
    fn settled(self) -> Option<T> {
        self
    }
}

/// Polls `condition` every 100 ms until it settles, or fails with [`Error::Timeout`].
///
/// ```no_run
/// # async fn demo(client: kube::Client) -> gpu_autoscaler_testkit::Result<()> {
/// use std::time::Duration;
/// use k8s_openapi::api::core::v1::Pod;
/// let pods: kube::Api<Pod> = kube::Api::namespaced(client, "default");
/// let node = gpu_autoscaler_testkit::wait_for(Duration::from_secs(10), || async {
///     pods.get_opt("p").await.ok().flatten()?.spec?.node_name
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn wait_for<F, Fut, S>(timeout: Duration, mut condition: F) -> Result<S::Output>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = S>,
    S: Settled,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = condition().await.settled() {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::Timeout(timeout));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
