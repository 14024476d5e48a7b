//! The outbox relay: publishes rows written by committed transitions, in id order,
//! then deletes them. One replica at a time holds the relay (a PostgreSQL advisory
//! lock), which is what keeps each saga's messages in order across replicas.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::producer::FutureProducer;
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgListener};
use tokio_util::sync::CancellationToken;

use crate::runtime::supervise::{Heartbeat, fault};

use super::envelope::Record;
use super::kafka;
use crate::store::{self, OutboxRow, Store, StoreError};
use crate::telemetry::metrics;
use rdkafka::error::KafkaError;

/// When the row's transition ran: its CloudEvents `time` (every outbox row has one).
fn written_at(row: &OutboxRow) -> Option<chrono::DateTime<chrono::Utc>> {
    let (_, t) = row.headers.iter().find(|(k, _)| k == "ce_time")?;
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// Arbitrary constant naming the relay's advisory lock.
const RELAY_LOCK: i64 = 0x5a6a_f10e;

#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub database_url: String,
    pub batch_size: i64,
    pub poll: Duration,
    pub send_timeout: Duration,
    /// For a fresh producer when the one in use stops delivering.
    pub kafka: crate::config::KafkaSettings,
}

/// Why a relay round failed. A broker error keeps the leadership (the lock and its
/// connection are fine); only a database error gives it up.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database")]
    Database(#[from] StoreError),
    #[error("database")]
    Sql(#[from] sqlx::Error),
    #[error("the broker did not acknowledge a message; it is retried in order")]
    Broker(#[source] KafkaError),
}

/// Runs until cancelled. Errors are logged and retried with backoff: a lost database
/// or broker delays messages but never loses them (rows stay until acknowledged).
pub async fn run(
    store: Store,
    producer: FutureProducer,
    settings: RelaySettings,
    healthy: Arc<Heartbeat>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    // Failed rounds in a row replace the producer (see `kafka::HealingProducer`).
    let producer = kafka::HealingProducer::new(&settings.kafka, producer);
    while !cancel.is_cancelled() {
        match lead(&store, &producer, &settings, &healthy, &cancel).await {
            Ok(()) => return,
            Err(e) => {
                healthy.failing();
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "outbox relay lost its database connection; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn lead(
    store: &Store,
    producer: &kafka::HealingProducer,
    settings: &RelaySettings,
    healthy: &Heartbeat,
    cancel: &CancellationToken,
) -> Result<(), RelayError> {
    // The lock lives as long as this connection: if the process dies, PostgreSQL
    // releases it and another replica takes over.
    let mut lock_conn = PgConnection::connect(&settings.database_url).await?;
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut lock_conn)
            .await?;
        if got {
            break;
        }
        healthy.ok();
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    tracing::info!("this replica now publishes the outbox");
    let mut listener = PgListener::connect(&settings.database_url).await?;
    listener.listen("sagaflow_outbox").await?;
    let mut backoff = Duration::from_millis(100);
    loop {
        fault("relay.round");
        // Still the leader? A dead lock connection means another replica may lead now.
        sqlx::query("SELECT 1").execute(&mut lock_conn).await?;
        let published = match publish_once(store, &producer.get(), settings).await {
            Ok(n) => {
                healthy.ok();
                producer.succeeded();
                backoff = Duration::from_millis(100);
                n
            }
            Err(RelayError::Broker(e)) => {
                healthy.failing();
                tracing::warn!(error = %e, "publishing failed; retrying with the lock held");
                producer.failed();
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            Err(e) => return Err(e),
        };
        if published == settings.batch_size as usize {
            continue;
        }
        if cancel.is_cancelled() {
            return Ok(());
        }
        tokio::select! {
            _ = cancel.cancelled() => {
                // Publish what the last transactions wrote before stopping.
                publish_once(store, &producer.get(), settings).await?;
                return Ok(());
            }
            n = listener.recv() => { n?; }
            _ = tokio::time::sleep(settings.poll) => {}
        }
    }
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

/// Publishes one batch; returns how many rows were published and deleted (rows the
/// broker refuses for good are parked and counted too).
pub async fn publish_once(
    store: &Store,
    producer: &FutureProducer,
    settings: &RelaySettings,
) -> Result<usize, RelayError> {
    let rows = store::outbox_batch(&store.pool, settings.batch_size).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let records: Vec<Record> = rows
        .iter()
        .map(|r| Record {
            topic: r.topic.clone(),
            key: r.key.clone(),
            headers: r.headers.clone(),
            payload: r.payload.clone(),
        })
        .collect();
    let results = join_all(
        records
            .iter()
            .map(|r| kafka::send(producer, r, settings.send_timeout)),
    )
    .await;
    // Delete only up to the first failure: anything after it is sent again next round
    // (a duplicate, which consumers dedupe) rather than overtaking the failed message.
    // A row refused for good is parked instead, and the rows behind it go on.
    let mut done = Vec::with_capacity(rows.len());
    let mut parked = Vec::new();
    let mut failure = None;
    let now = chrono::Utc::now();
    for (row, result) in rows.iter().zip(results) {
        match result {
            Ok(()) => {
                done.push(row.id);
                metrics::published(
                    &row.topic,
                    written_at(row).map(|at| (now - at).to_std().unwrap_or_default()),
                );
            }
            Err(e) if refused_for_good(&e) => parked.push((row, e)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // The broker has acknowledged these rows; they are not deleted yet.
    fault("relay.after_ack");
    store::outbox_delete(&store.pool, &done).await?;
    for (row, e) in &parked {
        let reason = format!("the broker refuses this message: {e}");
        tracing::error!(outbox_id = row.id, saga_id = %row.saga_id, topic = %row.topic, %reason, "outbox row parked");
        store::park_outbox_row(&store.pool, row.id, &reason).await?;
        metrics::outbox_parked(&row.topic);
    }
    match failure {
        Some(e) => Err(RelayError::Broker(e)),
        None => Ok(done.len() + parked.len()),
    }
}
