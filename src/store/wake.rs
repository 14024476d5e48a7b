//! Wake-ups by `LISTEN`/`NOTIFY`: a transaction that writes outbox rows or timers
//! notifies a channel at commit, and the loops that wait for such rows are woken at
//! once instead of at their next poll. Notifications are a shortcut, never the only
//! way: each loop still polls, so a lost connection only delays work.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Channel notified by commits that wrote outbox rows.
pub const OUTBOX_CHANNEL: &str = "sagaflow_outbox";
/// Channel notified by commits that wrote a timer due within `TIMER_NOTIFY_HORIZON`.
pub const TIMERS_CHANNEL: &str = "sagaflow_timers";
/// Timers due later need no wake-up: the timer loop never sleeps longer than this
/// (`runtime.timer_poll_ms` is capped at it), so it reads them in time on its own.
pub const TIMER_NOTIFY_HORIZON: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// Bumps `wake` on every notification of `channel`, on a connection of its own opened
/// with `pool`'s settings, until cancelled. Also bumps it after each (re)connection, so
/// rows committed while nobody listened are looked at.
pub async fn listen(
    pool: &PgPool,
    channel: &str,
    wake: watch::Sender<u64>,
    cancel: CancellationToken,
) {
    let bump = || wake.send_modify(|n| *n = n.wrapping_add(1));
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(pool).await?;
            l.listen(channel).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match listener.await {
            Ok(mut l) => {
                bump();
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        n = l.recv() => match n {
                            Ok(_) => bump(),
                            Err(e) => {
                                tracing::warn!(error = %e, channel, "wake-ups lost; polling until they are back");
                                break;
                            }
                        },
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, channel, "cannot listen for wake-ups; polling"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
