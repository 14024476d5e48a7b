//! The outbox relay: publishes rows written by committed transitions, then deletes them.
//!
//! The outbox is split into `OUTBOX_SHARDS` shards by the saga id (migration 0011). A
//! shard is published only inside a transaction that holds its advisory lock: a
//! batch's transaction locks the shards that have rows and that no other transaction
//! holds, reads their oldest rows, waits for the broker to acknowledge them, deletes
//! them and commits. So one saga's messages, always in one shard, go out in the order
//! they were written, while every replica, with up to `outbox_relay_concurrency`
//! transactions each, publishes different shards at once. A replica that dies mid-shard loses its
//! transaction and its lock with its connection; its rows are published again (a
//! duplicate, which participants dedupe), never skipped.

use std::sync::Arc;
use std::time::Duration;

use std::collections::HashSet;

use futures::StreamExt;
use futures::future::join_all;
use futures::stream::FuturesUnordered;
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
    /// Most batches (transactions) this replica has in flight at once (1..=`OUTBOX_SHARDS`).
    pub concurrency: usize,
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

/// Shared by the dispatcher and the batches of one replica.
struct Relay {
    store: Store,
    producer: HealingProducer,
    settings: RelaySettings,
    healthy: Arc<Heartbeat>,
}

/// Runs until cancelled, then publishes what is committed by then and returns. Errors
/// are logged and retried with backoff: a lost database or broker delays messages but
/// never loses them.
pub async fn run(
    store: Store,
    producer: FutureProducer,
    settings: RelaySettings,
    healthy: Arc<Heartbeat>,
    cancel: CancellationToken,
) {
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
    futures::future::join(listening, dispatch(&relay, woken, &cancel)).await;
}

/// A batch in flight: the shards it was given, and how it ended.
type InFlight<'a> = futures::future::BoxFuture<'a, (Vec<i16>, Result<usize, RelayError>)>;

/// What the dispatcher of one replica knows between wake-ups.
struct Dispatcher<'a> {
    relay: &'a Relay,
    concurrency: usize,
    in_flight: FuturesUnordered<InFlight<'a>>,
    /// Shards a batch of this replica has; other replicas are kept out by the locks.
    busy: HashSet<i16>,
    /// The last batch came back full: a backlog, so shards are split over several
    /// batches (`concurrency` of them) instead of all going into one.
    backlog: bool,
    /// Where this replica starts in the shard order, so replicas splitting a backlog
    /// start on different shards.
    offset: usize,
    backoff: Duration,
    retry_at: Option<tokio::time::Instant>,
}

impl<'a> Dispatcher<'a> {
    fn new(relay: &'a Relay) -> Dispatcher<'a> {
        let offset = uuid::Uuid::new_v4().as_bytes()[0] as usize % OUTBOX_SHARDS as usize;
        Dispatcher {
            relay,
            concurrency: relay.settings.concurrency.clamp(1, OUTBOX_SHARDS as usize),
            in_flight: FuturesUnordered::new(),
            busy: HashSet::new(),
            backlog: false,
            offset,
            backoff: Duration::from_millis(100),
            retry_at: None,
        }
    }

    fn may_start(&self, stopping: bool) -> bool {
        self.retry_at
            .is_none_or(|t| tokio::time::Instant::now() >= t)
            && self.in_flight.len() < self.concurrency
            && (!stopping || self.in_flight.is_empty())
    }

    /// Starts batches for the free shards that have rows; how many it started.
    async fn start_batches(&mut self) -> Result<usize, RelayError> {
        let free: Vec<i16> = (0..OUTBOX_SHARDS as usize)
            .map(|i| ((i + self.offset) % OUTBOX_SHARDS as usize) as i16)
            .filter(|s| !self.busy.contains(s))
            .collect();
        if free.is_empty() {
            return Ok(0);
        }
        let mut waiting = store::outbox_shards_with_rows(&self.relay.store.pool, &free).await?;
        // The query returns them sorted; keep this replica's order.
        waiting.sort_by_key(|s| free.iter().position(|f| f == s));
        let per_batch = if self.backlog {
            (OUTBOX_SHARDS as usize).div_ceil(self.concurrency)
        } else {
            OUTBOX_SHARDS as usize
        };
        let mut started = 0;
        for shards in waiting.chunks(per_batch) {
            if self.in_flight.len() >= self.concurrency {
                break;
            }
            self.busy.extend(shards);
            self.in_flight
                .push(Box::pin(batch(self.relay, shards.to_vec())));
            started += 1;
        }
        Ok(started)
    }

    fn ended(&mut self, shards: &[i16], ended: Result<usize, RelayError>) {
        for s in shards {
            self.busy.remove(s);
        }
        match ended {
            Ok(n) => {
                self.relay.healthy.ok();
                self.relay.producer.succeeded();
                self.backoff = Duration::from_millis(100);
                self.backlog = n == self.relay.settings.batch_size as usize;
            }
            Err(e) => {
                self.relay.healthy.failing();
                if matches!(e, RelayError::Broker(_)) {
                    self.relay.producer.failed();
                }
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "publishing the outbox failed; retrying");
                self.failed();
            }
        }
    }

    fn failed(&mut self) {
        self.retry_at = Some(tokio::time::Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
    }
}

/// Starts batches for the shards that have rows and no batch of this replica yet,
/// whenever woken, a batch ends or `poll` passes, with at most `concurrency` batches in
/// flight. At low load one batch takes every such shard: one transaction per wake-up,
/// as with a single relay. Once a batch comes back full (a backlog), shards are split
/// over several batches, which wait for the broker side by side, on every replica.
async fn dispatch(relay: &Relay, mut woken: watch::Receiver<u64>, cancel: &CancellationToken) {
    let mut d = Dispatcher::new(relay);
    loop {
        // A wake-up from here on makes the wait below return at once.
        woken.borrow_and_update();
        let stopping = cancel.is_cancelled();
        if d.may_start(stopping) {
            fault("relay.round");
            match d.start_batches().await {
                Ok(0) if stopping => return,
                Ok(0) => relay.healthy.ok(),
                Ok(_) => {}
                Err(e) => {
                    relay.healthy.failing();
                    tracing::warn!(error = %e, "reading the outbox failed; retrying");
                    if stopping {
                        return;
                    }
                    d.failed();
                }
            }
        }
        let pause = d.retry_at.map_or(relay.settings.poll, |t| {
            t.saturating_duration_since(tokio::time::Instant::now())
        });
        tokio::select! {
            Some((shards, ended)) = d.in_flight.next() => {
                let failed = ended.is_err();
                d.ended(&shards, ended);
                if failed && stopping && d.in_flight.is_empty() {
                    // What is left stays in the outbox for the next process.
                    return;
                }
            }
            _ = cancel.cancelled(), if !stopping => {}
            _ = woken.changed(), if !stopping => {}
            _ = tokio::time::sleep(pause) => {
                d.retry_at = d.retry_at.filter(|t| tokio::time::Instant::now() < *t);
            }
        }
    }
}

async fn batch(relay: &Relay, shards: Vec<i16>) -> (Vec<i16>, Result<usize, RelayError>) {
    let producer = relay.producer.get();
    let ended = publish_shards(&relay.store, &producer, &relay.settings, &shards).await;
    (shards, ended)
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

/// Publishes one batch, in one transaction, from those of `shards` it can lock; how
/// many rows were published or parked.
pub async fn publish_shards(
    store: &Store,
    producer: &FutureProducer,
    settings: &RelaySettings,
    shards: &[i16],
) -> Result<usize, RelayError> {
    let mut tx = store.pool.begin().await?;
    let locked = store::lock_outbox_shards(&mut tx, shards).await?;
    let rows = if locked.is_empty() {
        Vec::new()
    } else {
        store::outbox_batch(&mut tx, &locked, settings.batch_size).await?
    };
    if rows.is_empty() {
        tx.rollback().await?;
        return Ok(0);
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
        None => Ok(sent.done.len() + sent.parked.len()),
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
