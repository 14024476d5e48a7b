//! Retention: finished sagas (with their timelines and timers) and inbox rows are
//! deleted once they are older than the configured windows, in small batches that take
//! row locks only for the rows they delete (`SKIP LOCKED`), so neither transitions nor
//! other replicas wait on them.
//!
//! The trade-off (docs/reliability.md): once its inbox row is gone, a redelivered reply
//! is no longer recognised as a duplicate by its id. It still cannot change a finished
//! saga: the engine ignores replies to attempts that are settled, and a reply to a saga
//! that was deleted goes to the dead-letter topic as `unknown_saga`.

use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::store::{self, Store, StoreError};
use crate::telemetry::metrics;

#[derive(Debug, Clone, Copy)]
pub struct RetentionSettings {
    /// Finished sagas older than this (by last change) are deleted; `None` keeps them.
    pub finished: Option<Duration>,
    /// Inbox rows older than this are deleted; `None` keeps them.
    pub inbox: Option<Duration>,
    pub every: Duration,
    pub batch_size: i64,
}

/// What one pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    pub sagas: u64,
    pub inbox: u64,
}

/// Runs a pass every `settings.every` until cancelled.
pub async fn run(store: Store, settings: RetentionSettings, cancel: CancellationToken) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(settings.every) => {}
        }
        match run_once(&store, &settings, &cancel).await {
            Ok(r) if r != Removed::default() => {
                tracing::info!(
                    sagas = r.sagas,
                    inbox = r.inbox,
                    "retention removed old rows"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed; next pass retries"),
        }
    }
}

/// The instant `age` ago, or `None` when that is before any stored row could be (an
/// age too large to subtract keeps everything; it never wraps to "delete all").
fn cutoff(age: Duration) -> Option<chrono::DateTime<Utc>> {
    Utc::now().checked_sub_signed(chrono::Duration::from_std(age).ok()?)
}

/// One pass: batches until nothing old is left (or `cancel`).
pub async fn run_once(
    store: &Store,
    settings: &RetentionSettings,
    cancel: &CancellationToken,
) -> Result<Removed, StoreError> {
    let mut removed = Removed::default();
    let pause = Duration::from_millis(20);
    if let Some(before) = settings.finished.and_then(cutoff) {
        loop {
            let n = store::delete_finished_sagas(&store.pool, before, settings.batch_size).await?;
            removed.sagas += n;
            metrics::retention_deleted("sagas", n);
            if n < settings.batch_size as u64 || cancel.is_cancelled() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
    }
    if let Some(before) = settings.inbox.and_then(cutoff) {
        loop {
            let n = store::delete_inbox_before(&store.pool, before, settings.batch_size).await?;
            removed.inbox += n;
            metrics::retention_deleted("inbox", n);
            if n < settings.batch_size as u64 || cancel.is_cancelled() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_windows_keep_everything_rather_than_wrap() {
        assert!(cutoff(Duration::from_secs(86_400)).is_some());
        assert!(cutoff(Duration::from_secs(u64::MAX)).is_none());
        assert!(cutoff(Duration::from_secs(9_000_000_000_000)).is_none());
    }
}
