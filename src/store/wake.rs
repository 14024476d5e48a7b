//! Wake-ups by `LISTEN`/`NOTIFY`: a commit that wrote outbox rows is announced after
//! it (`announce.rs`), one that wrote a timer due soon notifies at commit, and the
//! loops that wait for such rows are woken at once instead of at their next poll.
//! Notifications are a shortcut, never the only way: each loop still polls, so a lost
//! connection only delays work.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Channel notified by commits that wrote outbox rows.
pub const OUTBOX_CHANNEL: &str = "sagaflow_outbox";
/// Channel notified by commits that wrote a timer due within `TIMER_NOTIFY_HORIZON`.
pub const TIMERS_CHANNEL: &str = "sagaflow_timers";
/// Channel notified with the ids of the sagas a commit changed (space-separated, at
/// most [`SAGAS_PER_NOTIFICATION`] per notification), for the API's live streams.
pub const SAGAS_CHANNEL: &str = "sagaflow_sagas";
/// 37 bytes each: well under PostgreSQL's 8,000-byte payload limit.
pub const SAGAS_PER_NOTIFICATION: usize = 150;
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
    listen_with(pool, channel, cancel, |_| {
        wake.send_modify(|n| *n = n.wrapping_add(1));
    })
    .await;
}

/// Calls `on` with each notification's payload on `channel`, and with `None` after
/// each (re)connection and each lost connection (notifications sent while nobody
/// listened are lost: the caller must look for itself), until cancelled.
pub async fn listen_with(
    pool: &PgPool,
    channel: &str,
    cancel: CancellationToken,
    mut on: impl FnMut(Option<&str>),
) {
    loop {
        let listener = async {
            let mut l = PgListener::connect_with(pool).await?;
            l.listen(channel).await?;
            Ok::<_, sqlx::Error>(l)
        };
        match listener.await {
            Ok(mut l) => {
                on(None);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        // `recv` would reconnect a lost connection without a word, and
                        // what was notified meanwhile would be missed unnoticed.
                        n = l.try_recv() => match n {
                            Ok(Some(n)) => on(Some(n.payload())),
                            Ok(None) => {
                                tracing::warn!(channel, "notification connection lost; reconnecting");
                                on(None);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, channel, "notifications lost; polling until they are back");
                                break;
                            }
                        },
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, channel, "cannot listen for notifications; polling")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// The payloads announcing `ids` on [`SAGAS_CHANNEL`]: each id once, in chunks.
pub fn saga_payloads<'a>(ids: impl Iterator<Item = &'a uuid::Uuid>) -> Vec<String> {
    let mut unique: Vec<&uuid::Uuid> = ids.collect();
    unique.sort_unstable();
    unique.dedup();
    unique
        .chunks(SAGAS_PER_NOTIFICATION)
        .map(|chunk| {
            let mut text = String::with_capacity(chunk.len() * 37);
            for id in chunk {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(&id.to_string());
            }
            text
        })
        .collect()
}

/// The saga ids in a payload of [`SAGAS_CHANNEL`] (anything else is skipped).
pub fn parse_saga_payload(payload: &str) -> Vec<uuid::Uuid> {
    payload
        .split_ascii_whitespace()
        .filter_map(|id| id.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saga_ids_travel_once_each_in_chunks_under_the_payload_limit() {
        let ids: Vec<uuid::Uuid> = (0..400).map(|_| uuid::Uuid::now_v7()).collect();
        let twice = ids.iter().chain(&ids);
        let payloads = saga_payloads(twice);
        assert_eq!(payloads.len(), 3);
        assert!(payloads.iter().all(|p| p.len() < 8000));
        let mut back: Vec<uuid::Uuid> = payloads
            .iter()
            .flat_map(|p| parse_saga_payload(p))
            .collect();
        back.sort_unstable();
        let mut expected = ids.clone();
        expected.sort_unstable();
        assert_eq!(back, expected);
        assert!(saga_payloads(std::iter::empty()).is_empty());
    }
}
