//! The outbox relay: publishes rows written by committed transitions, then deletes them.
//!
//! The outbox is split into `OUTBOX_SHARDS` shards by the saga id (migration 0011). A
//! shard is published only inside a transaction that holds its advisory lock: the
//! transaction reads the shard's oldest rows, waits for the broker to acknowledge them,
//! deletes them and commits. So one saga's messages, always in one shard, go out in
//! the order they were written, while every replica, and `relay_workers` tasks in each,
//! publish different shards at once. A replica that dies mid-shard loses its
//! transaction and its lock with its connection; its rows are published again (a
//! duplicate, which participants dedupe), never skipped.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::envelope::Record;
use super::kafka::{self, HealingProducer};
use crate::runtime::supervise::{Heartbeat, fault};
use crate::store::{self, OUTBOX_SHARDS, OutboxRow, Store, StoreError, wake};
use crate::telemetry::metrics;

/// When the row's transition ran: its CloudEvents `time` (every outbox row has one).
fn written_at(row: &OutboxRow) -> Option<chrono::DateTime<chrono::Utc>> {
    let (_, t) = row.headers.iter().find(|(k, _)| k == "ce_time")?;
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub batch_size: i64,
    pub poll: Duration,
    pub send_timeout: Duration,
    /// Shards this replica publishes at once (1..=`OUTBOX_SHARDS`).
    pub workers: usize,
    /// For a fresh producer when the one in use stops delivering.
    pub kafka: crate::config::KafkaSettings,
}

/// Why a shard's round failed. Neither kind stops the relay: the shard's rows stay
/// where they are and the round is tried again with backoff.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database")]
    Database(#[from] StoreError),
    #[error("database")]
    Sql(#[from] sqlx::Error),
    #[error("the broker did not acknowledge a message; it is retried in order")]
    Broker(#[source] KafkaError),
}

/// Shared by the workers of one replica.
struct Relay {
    store: Store,
    producer: HealingProducer,
    settings: RelaySettings,
    healthy: Arc<Heartbeat>,
}

/// Runs until cancelled, then publishes what is committed by then (one more pass over
/// each worker's shards) and returns. Errors are logged and retried with backoff: a
/// lost database or broker delays messages but never loses them.
pub async fn run(
    store: Store,
    producer: FutureProducer,
    settings: RelaySettings,
    healthy: Arc<Heartbeat>,
    cancel: CancellationToken,
) {
    let workers = settings.workers.clamp(1, OUTBOX_SHARDS as usize);
    let (wake, woken) = watch::channel(0u64);
    let relay = Relay {
        producer: HealingProducer::new(&settings.kafka, producer),
        store,
        settings,
        healthy,
    };
    let listening = wake::listen(
        &relay.store.pool,
        wake::OUTBOX_CHANNEL,
        wake,
        cancel.clone(),
    );
    let working = join_all((0..workers).map(|w| {
        let shards: Vec<i16> = (0..OUTBOX_SHARDS)
            .filter(|s| *s as usize % workers == w)
            .collect();
        worker(&relay, shards, woken.clone(), &cancel)
    }));
    futures::future::join(listening, working).await;
}

/// Publishes `shards` in turn whenever woken (or every `poll`), until cancelled.
async fn worker(
    relay: &Relay,
    shards: Vec<i16>,
    mut woken: watch::Receiver<u64>,
    cancel: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        // A wake-up that arrives during the pass below makes the next wait return at once.
        woken.borrow_and_update();
        let stopping = cancel.is_cancelled();
        fault("relay.round");
        match pass(relay, &shards).await {
            Ok(full) => {
                relay.healthy.ok();
                relay.producer.succeeded();
                backoff = Duration::from_millis(100);
                if stopping {
                    return;
                }
                if full {
                    continue;
                }
            }
            Err(e) => {
                relay.healthy.failing();
                if matches!(e, RelayError::Broker(_)) {
                    relay.producer.failed();
                }
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "publishing the outbox failed; retrying");
                if stopping {
                    return;
                }
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = woken.changed() => {}
            _ = tokio::time::sleep(relay.settings.poll) => {}
        }
    }
}

/// One batch from each shard no other transaction holds; whether any batch was full
/// (more rows are waiting).
async fn pass(relay: &Relay, shards: &[i16]) -> Result<bool, RelayError> {
    let mut full = false;
    for &shard in shards {
        let published =
            publish_shard(&relay.store, &relay.producer.get(), &relay.settings, shard).await?;
        full |= published == Some(relay.settings.batch_size as usize);
    }
    Ok(full)
}

/// Whether the broker will refuse this message whatever we do: retrying it would
/// block every row behind it forever.
fn refused_for_good(e: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    e.rdkafka_error_code().is_some_and(|code| {
        matches!(
            code,
            C::MessageSizeTooLarge
                | C::MessageBatchTooLarge
                | C::InvalidMessageSize
                | C::InvalidRecord
                | C::InvalidTopic
                | C::TopicAuthorizationFailed
                | C::UnknownTopic
        )
    })
}

/// Publishes one batch of `shard`, in one transaction holding the shard's lock; how
/// many rows were published or parked, or `None` if another transaction holds it.
pub async fn publish_shard(
    store: &Store,
    producer: &FutureProducer,
    settings: &RelaySettings,
    shard: i16,
) -> Result<Option<usize>, RelayError> {
    let mut tx = store.pool.begin().await?;
    if !store::lock_outbox_shard(&mut tx, shard).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    let rows = store::outbox_batch(&mut tx, shard, settings.batch_size).await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok(Some(0));
    }
    let results = join_all(rows.iter().map(|r| {
        let record = Record {
            topic: r.topic.clone(),
            key: r.key.clone(),
            headers: r.headers.clone(),
            payload: r.payload.clone(),
        };
        async move { kafka::send(producer, &record, settings.send_timeout).await }
    }))
    .await;
    let sent = settle(&rows, results);
    // The broker has acknowledged these rows; they are not deleted yet.
    fault("relay.after_ack");
    let ids: Vec<i64> = sent.done.iter().map(|r| r.id).collect();
    store::outbox_delete(&mut tx, &ids).await?;
    for (row, e) in &sent.parked {
        let reason = format!("the broker refuses this message: {e}");
        tracing::error!(outbox_id = row.id, saga_id = %row.saga_id, topic = %row.topic, %reason, "outbox row parked");
        store::park_outbox_row(&mut tx, row.id, &reason).await?;
    }
    tx.commit().await?;
    let now = chrono::Utc::now();
    for row in &sent.done {
        let waited = written_at(row).map(|at| (now - at).to_std().unwrap_or_default());
        metrics::published(&row.topic, waited);
    }
    for (row, _) in &sent.parked {
        metrics::outbox_parked(&row.topic);
    }
    match sent.failure {
        Some(e) => Err(RelayError::Broker(e)),
        None => Ok(Some(sent.done.len() + sent.parked.len())),
    }
}

/// What became of one batch's sends.
struct Sent<'a> {
    done: Vec<&'a OutboxRow>,
    parked: Vec<(&'a OutboxRow, KafkaError)>,
    failure: Option<KafkaError>,
}

/// Deletes only up to the first failure: anything after it is sent again next round
/// (a duplicate, which consumers dedupe) rather than overtaking the failed message. A
/// row refused for good is parked instead, and the rows behind it go on.
fn settle<'a>(rows: &'a [OutboxRow], results: Vec<Result<(), KafkaError>>) -> Sent<'a> {
    let mut sent = Sent {
        done: Vec::with_capacity(rows.len()),
        parked: Vec::new(),
        failure: None,
    };
    for (row, result) in rows.iter().zip(results) {
        match result {
            Ok(()) => sent.done.push(row),
            Err(e) if refused_for_good(&e) => sent.parked.push((row, e)),
            Err(e) => {
                sent.failure = Some(e);
                break;
            }
        }
    }
    sent
}
