//! One relay batch: a transaction that locks some outbox shards, publishes their
//! oldest rows in id order, deletes what the broker acknowledged and commits. The
//! dispatcher that starts batches is `relay.rs`.

use std::time::Duration;

use futures::future::join_all;
use opentelemetry::KeyValue;
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;

use super::envelope::Record;
use super::kafka;
use crate::runtime::supervise::fault;
use crate::store::{self, OutboxRow, Store, StoreError};
use crate::telemetry::metrics;
use crate::telemetry::spans::{self, Broker, Outgoing, Traced};

/// Why a batch failed. Neither kind stops the relay: the rows stay where they are and
/// the batch is tried again with backoff.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("database")]
    Database(#[from] StoreError),
    #[error("database (connection or statement)")]
    Sql(#[from] sqlx::Error),
    #[error("the broker did not acknowledge a message; it is retried in order")]
    Broker(#[source] KafkaError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Rows the broker acknowledged or refused for good (parked); 0 if the shards it
    /// was given had no rows, or emptied meanwhile.
    Published(usize),
    /// Another transaction held every shard with rows it was given (another replica's
    /// batch, or a relay of the version before shards): that holder publishes them.
    HeldElsewhere,
}

/// What a batch needs to know.
#[derive(Debug, Clone)]
pub struct BatchSettings {
    pub batch_size: i64,
    pub send_timeout: Duration,
    /// The batch transaction's `idle_in_transaction_session_timeout`.
    pub idle_timeout: Duration,
    /// Named on the batch's span (`server.address`, `server.port`).
    pub broker: Option<Broker>,
}

/// Publishes one batch, in one transaction, from those of `shards` it can lock.
pub async fn publish_shards(
    store: &Store,
    producer: &FutureProducer,
    settings: &BatchSettings,
    shards: &[i16],
) -> Result<Outcome, RelayError> {
    let mut tx = store.pool.begin().await?;
    let locks = store::lock_outbox_shards(&mut tx, shards, settings.idle_timeout).await?;
    let locked = locks.locked;
    if locked.is_empty() {
        tx.rollback().await?;
        return Ok(match locks.held.is_empty() {
            true => Outcome::Published(0),
            false => Outcome::HeldElsewhere,
        });
    }
    let rows = store::outbox_batch(&mut tx, &locked, settings.batch_size).await?;
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(Outcome::Published(0));
    }
    let span = publish_span(&rows, settings);
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
    sent.trace(&span);
    // The send is over once the broker has answered for every message; the deletes
    // and the commit are the outbox's business, not the publish's.
    drop(span);
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
    sent.count();
    match sent.failure {
        Some(e) => Err(RelayError::Broker(e)),
        None => Ok(Outcome::Published(sent.done.len() + sent.parked.len())),
    }
}

/// What became of one batch's sends.
struct Sent<'a> {
    done: Vec<&'a OutboxRow>,
    parked: Vec<(&'a OutboxRow, KafkaError)>,
    failure: Option<KafkaError>,
}

impl Sent<'_> {
    /// Marks the batch's span failed when the broker refused a message.
    fn trace(&self, span: &Traced) {
        for (row, e) in &self.parked {
            let id = header(row, "ce_id").unwrap_or_default().to_owned();
            span.event(
                "message refused",
                vec![
                    KeyValue::new("messaging.message.id", id),
                    KeyValue::new("error.type", error_type(e)),
                ],
            );
            span.error(error_type(e), format!("the broker refuses a message: {e}"));
        }
        if let Some(e) = &self.failure {
            span.error(
                error_type(e),
                format!("a message was not acknowledged: {e}"),
            );
        }
    }

    /// Metrics, once the deletes have committed.
    fn count(&self) {
        let now = chrono::Utc::now();
        for row in &self.done {
            let waited = written_at(row).map(|at| (now - at).to_std().unwrap_or_default());
            metrics::published(&row.topic, waited);
        }
        for (row, _) in &self.parked {
            metrics::outbox_parked(&row.topic);
        }
    }
}

/// The producer span of a batch: one span with a link per message (spans.rs says why).
fn publish_span(rows: &[OutboxRow], settings: &BatchSettings) -> Traced {
    let outgoing: Vec<Outgoing<'_>> = rows
        .iter()
        .map(|r| Outgoing {
            topic: &r.topic,
            key: &r.key,
            headers: &r.headers,
        })
        .collect();
    spans::publish(&outgoing, settings.broker.as_ref())
}

/// `error.type` of a failed send: librdkafka's error code (`MessageTimedOut`, …).
fn error_type(e: &KafkaError) -> String {
    e.rdkafka_error_code()
        .map_or_else(|| "publish".to_owned(), |code| format!("{code:?}"))
}

fn header<'a>(row: &'a OutboxRow, name: &str) -> Option<&'a str> {
    let (_, v) = row.headers.iter().find(|(k, _)| k == name)?;
    Some(v)
}

/// When the row's transition ran: its CloudEvents `time` (every outbox row has one).
fn written_at(row: &OutboxRow) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = header(row, "ce_time")?;
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
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

/// Whether the broker will refuse this message whatever we do: retrying it would
/// block every row behind it forever.
pub(crate) fn refused_for_good(e: &KafkaError) -> bool {
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
