//! The timer loop: fires step timeouts, retry backoffs and saga deadlines stored in
//! PostgreSQL. Safe with several replicas: each firing locks the saga row and deletes
//! the timer row in the transaction that applies it, so a timer fires once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::transition::{Applied, Applier, Item};
use crate::engine::Timer;
use crate::store;
use crate::telemetry::metrics;

#[derive(Debug, Clone)]
pub struct TimerSettings {
    pub batch_size: i64,
    pub max_sleep: Duration,
}

pub async fn run(
    applier: Applier,
    settings: TimerSettings,
    healthy: Arc<AtomicBool>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !cancel.is_cancelled() {
        match fire_due(&applier, &settings).await {
            Ok(fired) => {
                healthy.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(100);
                if fired.busy > 0 || fired.fired as i64 >= settings.batch_size {
                    // More are due (or some sagas were busy): go again soon.
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(if fired.busy > 0 { 5 } else { 0 })) => {}
                    }
                    continue;
                }
                // At least a few ms: a row that cannot fire must not make this spin.
                let sleep = match store::next_timer_due(&applier.store.pool).await {
                    Ok(Some(due)) => (due - Utc::now())
                        .to_std()
                        .unwrap_or_default()
                        .clamp(Duration::from_millis(5), settings.max_sleep),
                    Ok(None) => settings.max_sleep,
                    Err(_) => settings.max_sleep,
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(sleep) => {}
                }
            }
            Err(e) => {
                healthy.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "timer loop failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Fired {
    pub fired: usize,
    pub busy: usize,
}

/// Fires the timers due now; returns how many fired and how many were skipped because
/// another transaction held their saga.
pub async fn fire_due(
    applier: &Applier,
    settings: &TimerSettings,
) -> Result<Fired, super::transition::ApplyError> {
    let due = store::due_timers(&applier.store.pool, Utc::now(), settings.batch_size).await?;
    if due.is_empty() {
        return Ok(Fired::default());
    }
    let now = Utc::now();
    let (items, lags): (Vec<Item>, Vec<(&'static str, Duration)>) = due
        .into_iter()
        .filter_map(|(saga_id, key, due_at)| {
            let timer: Timer = match serde_json::from_str(&key) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(%saga_id, timer = %key, error = %e, "unreadable timer row");
                    return None;
                }
            };
            let kind = match timer {
                Timer::StepTimeout { .. } => "step_timeout",
                Timer::RetryDue { .. } => "retry_due",
                Timer::Deadline => "deadline",
            };
            let lag = (now - due_at).to_std().unwrap_or_default();
            let item = Item {
                saga_id,
                event: timer.into_event(),
                message_id: None,
                timer: Some(key),
            };
            Some((item, (kind, lag)))
        })
        .unzip();
    let results = applier.apply_batch(items, true).await?;
    for (r, (kind, lag)) in results.iter().zip(lags) {
        if matches!(r, Applied::Changed | Applied::Unchanged) {
            metrics::timer_fired(kind, lag);
        }
    }
    Ok(Fired {
        fired: results
            .iter()
            .filter(|r| matches!(r, Applied::Changed | Applied::Unchanged))
            .count(),
        busy: results
            .iter()
            .filter(|r| matches!(r, Applied::Busy))
            .count(),
    })
}
