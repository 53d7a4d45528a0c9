//! Retrying start-up steps (connect, provision) until they work or shutdown is asked for.

use std::future::Future;
use std::time::Duration;

use jetmart_runtime::backoff::Backoff;
use tokio_util::sync::CancellationToken;

const BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

/// Runs `attempt` with exponential backoff (100 ms .. 5 s, [`jetmart_runtime::backoff`]) until
/// it succeeds. Returns `None` when `shutdown` fires first.
pub async fn until_ok<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut failures = 0u32;
    loop {
        match attempt().await {
            Ok(v) => return Some(v),
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = BACKOFF.delay(failures);
                tracing::warn!(step = what, error = %e, retry_in_ms = delay.as_millis() as u64, "start-up step failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}
