//! The timer loop: fires step timeouts, retry backoffs and saga deadlines stored in
//! PostgreSQL. Every replica runs it: each claims a batch of due timers that no other
//! replica holds (`FOR UPDATE SKIP LOCKED`, with a lease), and each firing locks the saga
//! row and deletes the timer row in the transaction that applies it, so a timer fires
//! once. A row that cannot be read is parked, never retried. Between rounds the loop
//! sleeps until the next due timer, woken early by the `NOTIFY` of a commit that wrote a
//! timer due sooner (`store::wake`), and never longer than `runtime.timer_poll_ms`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::runtime::supervise::{Heartbeat, fault};

use super::transition::{Applied, Applier, Item};
use crate::engine::Timer;
use crate::store::{self, wake};
use crate::telemetry::metrics;

#[derive(Debug, Clone)]
pub struct TimerSettings {
    pub batch_size: i64,
    pub max_sleep: Duration,
}

pub async fn run(
    applier: Applier,
    settings: TimerSettings,
    healthy: Arc<Heartbeat>,
    cancel: CancellationToken,
) {
    let (wake, woken) = watch::channel(0u64);
    let listening = wake::listen(
        &applier.store.pool,
        wake::TIMERS_CHANNEL,
        wake,
        cancel.clone(),
    );
    futures::future::join(
        listening,
        fire_loop(&applier, &settings, &healthy, woken, &cancel),
    )
    .await;
}

/// Fires due timers, then sleeps until the next one is due, at most `max_sleep`, or
/// until a commit writes a timer due sooner (a `NOTIFY`).
async fn fire_loop(
    applier: &Applier,
    settings: &TimerSettings,
    healthy: &Heartbeat,
    mut woken: watch::Receiver<u64>,
    cancel: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !cancel.is_cancelled() {
        fault("timers.round");
        woken.borrow_and_update();
        let sleep = match fire_due(applier, settings).await {
            Ok(fired) => {
                if fired.fired > 0 {
                    // A timer's transaction has committed.
                    fault("timers.after_commit");
                }
                healthy.ok();
                backoff = Duration::from_millis(100);
                if fired.busy > 0 {
                    // Another transaction held some sagas: try them again soon.
                    Duration::from_millis(5)
                } else if fired.fired as i64 >= settings.batch_size {
                    continue;
                } else {
                    until_next_due(applier, settings).await
                }
            }
            Err(e) => {
                healthy.failing();
                tracing::warn!(error = %e, "timer loop failed; retrying");
                backoff = (backoff * 2).min(Duration::from_secs(5));
                backoff / 2
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = woken.changed() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// At least a few ms, so a row that cannot fire does not make the loop spin.
async fn until_next_due(applier: &Applier, settings: &TimerSettings) -> Duration {
    match store::next_timer_due(&applier.store.pool).await {
        Ok(Some(due)) => (due - Utc::now())
            .to_std()
            .unwrap_or_default()
            .clamp(Duration::from_millis(5), settings.max_sleep),
        Ok(None) | Err(_) => settings.max_sleep,
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Fired {
    pub fired: usize,
    pub busy: usize,
}

/// Applies a batch that failed for a reason that is not transient timer by timer, so
/// one broken saga does not hold back every timer claimed with it. A timer whose
/// transition PostgreSQL cannot store is parked; one whose saga this replica cannot
/// read keeps its claim and is tried again once the lease lapses. `None` for those.
async fn one_by_one(
    applier: &Applier,
    items: &[Item],
) -> Result<Vec<Option<Applied>>, super::transition::ApplyError> {
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        match applier
            .apply_traced(std::slice::from_ref(item), &[], true)
            .await
        {
            Ok(mut r) => results.push(Some(r.remove(0))),
            Err(e) if e.is_unstorable() => {
                let key = item.timer.clone().unwrap_or_default();
                let reason = format!("timer cannot be applied: {e}");
                tracing::error!(saga_id = %item.saga_id, timer = %key, %reason, "timer parked");
                store::park_timer(&applier.store.pool, item.saga_id, &key, &reason).await?;
                metrics::timer_parked();
                results.push(None);
            }
            Err(e) if e.is_unreadable() => {
                // A replica of another version may read this saga (a rolling upgrade):
                // the timer keeps its claim and is tried again when the lease lapses.
                tracing::error!(saga_id = %item.saga_id, error = %e, "a due timer's saga cannot be read here; retried after the claim lease");
                results.push(None);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(results)
}

/// How long a claimed timer stays hidden from other replicas. Firing takes one
/// transaction; if this replica dies first, another fires the timer once this lapses.
const CLAIM_LEASE: Duration = Duration::from_secs(30);

/// Fires the timers due now that no other replica has claimed; returns how many fired
/// and how many were given back because another transaction held their saga.
pub async fn fire_due(
    applier: &Applier,
    settings: &TimerSettings,
) -> Result<Fired, super::transition::ApplyError> {
    let pool = &applier.store.pool;
    let now = Utc::now();
    let lease = chrono::Duration::from_std(CLAIM_LEASE).unwrap_or_default();
    let due = store::claim_due_timers(pool, now, now + lease, settings.batch_size).await?;
    if due.is_empty() {
        return Ok(Fired::default());
    }
    let mut items = Vec::with_capacity(due.len());
    let mut lags = Vec::with_capacity(due.len());
    for (saga_id, key, due_at) in due {
        let timer: Timer = match serde_json::from_str(&key) {
            Ok(t) => t,
            Err(e) => {
                let reason = format!("timer row cannot be read: {e}");
                tracing::error!(%saga_id, timer = %key, %reason, "timer parked");
                store::park_timer(pool, saga_id, &key, &reason).await?;
                metrics::timer_parked();
                continue;
            }
        };
        let kind = match timer {
            Timer::StepTimeout { .. } => "step_timeout",
            Timer::RetryDue { .. } => "retry_due",
            Timer::Deadline => "deadline",
        };
        lags.push((kind, (now - due_at).to_std().unwrap_or_default()));
        items.push(Item {
            saga_id,
            event: timer.into_event(),
            message_id: None,
            timer: Some(key),

            only_if: None,
        });
    }
    let results = match applier.apply_traced(&items, &[], true).await {
        Ok(results) => results.into_iter().map(Some).collect(),
        Err(e) if e.is_permanent() => one_by_one(applier, &items).await?,
        Err(e) => return Err(e),
    };
    let (mut busy_sagas, mut busy_keys) = (Vec::new(), Vec::new());
    let mut fired = 0;
    for ((r, (kind, lag)), item) in results.iter().zip(lags).zip(&items) {
        match r {
            Some(Applied::Changed | Applied::Unchanged) => {
                metrics::timer_fired(kind, lag);
                fired += 1;
            }
            Some(Applied::Busy) => {
                busy_sagas.push(item.saga_id);
                busy_keys.push(item.timer.clone().unwrap_or_default());
            }
            _ => {}
        }
    }
    if !busy_sagas.is_empty() {
        store::release_timers(pool, &busy_sagas, &busy_keys).await?;
    }
    Ok(Fired {
        fired,
        busy: busy_sagas.len(),
    })
}
