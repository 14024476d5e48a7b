//! The outbox relay: publishes rows written by committed transitions, then deletes them.
//!
//! The outbox is split into `OUTBOX_SHARDS` shards by the saga id (migration 0011). A
//! shard is published only inside a transaction that holds its advisory lock: a
//! batch (`outbox_batch.rs`) locks the shards with rows that no other transaction
//! holds, reads their oldest rows, waits for the broker to acknowledge them, deletes
//! them and commits. So one saga's messages, always in one shard, go out in the order
//! they were written, while every replica, with up to `outbox_relay_concurrency`
//! batches each, publishes different shards at once. A replica that dies mid-batch
//! loses its transaction and its locks with its connection; its rows are published
//! again (a duplicate, which participants dedupe), never skipped.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::FutureProducer;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use super::outbox_batch::{BatchSettings, Outcome, RelayError, publish_shards};

use super::kafka::HealingProducer;
use crate::runtime::supervise::{Heartbeat, fault};
use crate::store::{self, OUTBOX_SHARDS, Store, wake};
use crate::telemetry::spans::Broker;

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

/// Shared by the dispatcher and the batches of one replica.
struct Relay {
    store: Store,
    producer: HealingProducer,
    batch: BatchSettings,
    healthy: Arc<Heartbeat>,
}

/// The batch transaction's idle timeout: longer than the producer can wait for one
/// acknowledgement (`message.timeout.ms`, 30 s by sagaflow's default), at least 2 min.
fn idle_timeout(kafka: &crate::config::KafkaSettings) -> Duration {
    let delivery_ms = ["message.timeout.ms", "delivery.timeout.ms"]
        .iter()
        .find_map(|k| kafka.properties.get(*k)?.parse::<u64>().ok())
        .unwrap_or(30_000);
    Duration::from_millis(delivery_ms.saturating_mul(2))
        .saturating_add(Duration::from_secs(10))
        .max(Duration::from_secs(120))
}

/// Runs until cancelled, then publishes one more round of what is committed by then and
/// returns. Errors are logged and retried with backoff: a lost database or broker
/// delays messages but never loses them.
pub async fn run(
    store: Store,
    producer: FutureProducer,
    settings: RelaySettings,
    healthy: Arc<Heartbeat>,
    cancel: CancellationToken,
) {
    let woken = store.outbox_woken();
    let relay = Arc::new(Relay {
        producer: HealingProducer::new(&settings.kafka, producer),
        store,
        batch: BatchSettings {
            batch_size: settings.batch_size,
            send_timeout: settings.send_timeout,
            idle_timeout: idle_timeout(&settings.kafka),
            broker: Broker::from_bootstrap(&settings.kafka.bootstrap_servers),
        },
        healthy,
    });
    // Commits of other replicas and of other processes writing the outbox; this
    // process's own commits wake the relay directly.
    let listening = wake::listen_with(
        &relay.store.pool,
        wake::OUTBOX_CHANNEL,
        cancel.clone(),
        |origin| {
            if origin != Some(relay.store.origin()) {
                relay.store.outbox_written();
            }
        },
    );
    let mut d = Dispatcher::new(relay.clone(), &settings);
    futures::future::join(listening, d.run(woken, &cancel)).await;
}

/// A batch's shards, whether they were known to have rows, the wake-up count when it
/// started, and how it ended.
type Ended = (Vec<i16>, bool, u64, Result<Outcome, RelayError>);

/// Starts batches for the shards that have no batch of this replica yet, whenever
/// woken, a batch ends or `poll` passes, with at most `concurrency` batches in flight.
/// At low load one batch takes every such shard: one transaction per wake-up, as with
/// a single relay. Once a batch comes back full (a backlog), the shards that have rows
/// are split over several batches, which wait for the broker side by side.
struct Dispatcher {
    relay: Arc<Relay>,
    poll: Duration,
    concurrency: usize,
    /// Spawned, so they make progress while the dispatcher waits for the database.
    in_flight: JoinSet<Ended>,
    /// Shards a batch of this replica has.
    busy: HashSet<i16>,
    /// Shards another transaction held at the last try; left alone until the next
    /// poll (their holder drains them, and looks again if woken meanwhile).
    held_elsewhere: HashSet<i16>,
    /// The last batch that published came back full.
    backlog: bool,
    /// Something may have been written since the last batch looked: a wake-up, a
    /// poll, the end of a backoff, or a wake-up during a batch (see `wakes`).
    due: bool,
    /// Wake-ups so far. A round started by a wake-up leaves out the shards a batch
    /// still holds, so the batch itself, when it ends, looks again if it was woken
    /// for while it ran: the commit may have written to its shards after it read them.
    wakes: u64,
    /// Where this replica starts in the shard order, so that replicas splitting a
    /// backlog mostly start on different shards.
    offset: usize,
    backoff: Duration,
    retry_at: Option<tokio::time::Instant>,
    /// The poll: a fixed beat, so batches ending often do not postpone it.
    next_poll: tokio::time::Instant,
    /// A batch or read failed and no batch has been acknowledged since: readiness
    /// stays false until one is, or until nothing is left to publish.
    failure_pending: bool,
}

impl Dispatcher {
    fn new(relay: Arc<Relay>, settings: &RelaySettings) -> Dispatcher {
        let offset = uuid::Uuid::new_v4().as_bytes()[0] as usize % OUTBOX_SHARDS as usize;
        Dispatcher {
            relay,
            poll: settings.poll,
            concurrency: settings.concurrency.clamp(1, OUTBOX_SHARDS as usize),
            in_flight: JoinSet::new(),
            busy: HashSet::new(),
            held_elsewhere: HashSet::new(),
            backlog: false,
            due: true,
            wakes: 0,
            offset,
            backoff: Duration::from_millis(100),
            retry_at: None,
            next_poll: tokio::time::Instant::now() + settings.poll,
            failure_pending: false,
        }
    }

    /// A heartbeat that reports the last outcome that says something.
    fn beat(&self) {
        if self.failure_pending {
            self.relay.healthy.failing();
        } else {
            self.relay.healthy.ok();
        }
    }

    async fn run(&mut self, mut woken: watch::Receiver<u64>, cancel: &CancellationToken) {
        // Once stopping: the round started then is the last one.
        let mut last_round_started = false;
        loop {
            // A wake-up from here on makes the wait below return at once.
            woken.borrow_and_update();
            let stopping = cancel.is_cancelled();
            if stopping && self.in_flight.is_empty() && last_round_started {
                return;
            }
            if stopping && !last_round_started {
                // The last round tries every shard again.
                self.held_elsewhere.clear();
                self.due = true;
            }
            let wanted = self.due || self.backlog;
            if wanted && self.may_start() && (!stopping || self.in_flight.is_empty()) {
                fault("relay.round");
                last_round_started = stopping;
                match self.start_batches().await {
                    Ok(0) if stopping => return,
                    Ok(0) if self.held_elsewhere.is_empty() && self.busy.is_empty() => {
                        // Nothing left to publish, and the database answered.
                        self.failure_pending = false;
                        self.beat();
                    }
                    Ok(_) => self.beat(),
                    Err(e) => {
                        self.failure_pending = true;
                        self.beat();
                        tracing::warn!(error = %e, "reading the outbox failed; retrying");
                        if stopping {
                            return;
                        }
                        self.failed();
                    }
                }
            }
            self.wait(&mut woken, cancel, stopping).await;
        }
    }

    fn may_start(&self) -> bool {
        self.retry_at
            .is_none_or(|t| tokio::time::Instant::now() >= t)
            && self.in_flight.len() < self.concurrency
    }

    /// Until a batch ends, a wake-up, a poll or the end of a backoff.
    async fn wait(
        &mut self,
        woken: &mut watch::Receiver<u64>,
        cancel: &CancellationToken,
        stopping: bool,
    ) {
        let until = self
            .retry_at
            .map_or(self.next_poll, |t| t.min(self.next_poll));
        tokio::select! {
            Some(joined) = self.in_flight.join_next() => match joined {
                Ok((shards, had_rows, wakes, ended)) => {
                    if wakes != self.wakes {
                        self.due = true;
                    }
                    self.ended(&shards, had_rows, ended);
                }
                // A batch that panicked takes the relay with it: supervision reports it.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
            _ = cancel.cancelled(), if !stopping => {}
            // Not a reason to try held shards again: their holder looks again itself.
            _ = woken.changed(), if !stopping => {
                self.due = true;
                self.wakes += 1;
            }
            _ = tokio::time::sleep_until(until) => {
                let now = tokio::time::Instant::now();
                self.retry_at = self.retry_at.filter(|t| now < *t);
                self.due = true;
                if now >= self.next_poll {
                    // Shards held elsewhere at the last try are tried again once per poll.
                    self.held_elsewhere.clear();
                    self.next_poll = now + self.poll;
                }
            }
        }
    }

    /// Starts batches for the free shards that have rows; how many it started.
    async fn start_batches(&mut self) -> Result<usize, RelayError> {
        let free: Vec<i16> = (0..OUTBOX_SHARDS as usize)
            .map(|i| ((i + self.offset) % OUTBOX_SHARDS as usize) as i16)
            .filter(|s| !self.busy.contains(s) && !self.held_elsewhere.contains(s))
            .collect();
        if free.is_empty() {
            return Ok(0);
        }
        if !self.backlog {
            // One batch tries every free shard: it locks those no one holds and reads
            // their rows, and when all are empty it rolls back, which is no commit.
            // Asking first which shards have rows would cost a commit every round.
            self.due = false;
            self.spawn_batch(free, false);
            return Ok(1);
        }
        let mut waiting = store::outbox_shards_with_rows(&self.relay.store.pool, &free).await?;
        // The query returns them sorted; keep this replica's order.
        waiting.sort_by_key(|s| free.iter().position(|f| f == s));
        let slots = self.concurrency - self.in_flight.len();
        let per_batch = waiting.len().div_ceil(slots).max(1);
        let mut started = 0;
        for shards in waiting.chunks(per_batch).take(slots) {
            self.spawn_batch(shards.to_vec(), true);
            started += 1;
        }
        Ok(started)
    }

    fn spawn_batch(&mut self, shards: Vec<i16>, had_rows: bool) {
        self.busy.extend(&shards);
        let relay = self.relay.clone();
        let wakes = self.wakes;
        self.in_flight.spawn(async move {
            let producer = relay.producer.get();
            let ended = publish_shards(&relay.store, &producer, &relay.batch, &shards).await;
            (shards, had_rows, wakes, ended)
        });
    }

    fn ended(&mut self, shards: &[i16], had_rows: bool, ended: Result<Outcome, RelayError>) {
        for s in shards {
            self.busy.remove(s);
        }
        match ended {
            Ok(Outcome::Published(0)) => {
                self.backlog = false;
                if self.busy.is_empty() && self.held_elsewhere.is_empty() {
                    // Every shard this replica tried was empty: nothing is left to publish.
                    self.failure_pending = false;
                }
                self.beat();
            }
            Ok(Outcome::Published(n)) => {
                // No round just in case more was written meanwhile: a commit after this
                // batch read its shards wakes the relay during the batch (see `wakes`).
                // Only a full batch says for itself that rows are waiting (`backlog`).
                // Only acknowledgements prove the producer works.
                self.relay.producer.succeeded();
                self.backoff = Duration::from_millis(100);
                self.backlog = n == self.relay.batch.batch_size as usize;
                self.failure_pending = false;
                self.beat();
            }
            // A batch of every free shard does not say which were held: it is tried
            // again at the next wake-up, at the cost of a rollback.
            Ok(Outcome::HeldElsewhere) => {
                if had_rows {
                    self.held_elsewhere.extend(shards);
                }
                self.beat();
            }
            Err(e) => {
                self.failure_pending = true;
                self.beat();
                // Batches failing together (one broker stall) count as one failure, so
                // the producer is replaced after three failed rounds, not three batches.
                if matches!(e, RelayError::Broker(_)) && self.retry_at.is_none() {
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
