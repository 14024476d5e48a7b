//! The floor sagaflow is compared against: the same PostgreSQL and broker doing only
//! the bare minimum per step of a 3-step saga. Produce a command → an echo participant
//! answers → consume the reply → one transaction that updates the saga row and inserts
//! an outbox row → produce the next command. Replies are batched per transaction the
//! way sagaflow batches them (first message, then up to `batch` more within `linger`),
//! offsets are stored only after the commit, the outbox rows of one batch are deleted
//! in the next batch's transaction. No CloudEvents, no history, no timers, no inbox,
//! no lifecycle events, no JSON: that is the point of a floor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::future::join_all;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use sagaflow::config::KafkaSettings;
use sagaflow::messaging::kafka;
use sqlx::{PgPool, Row};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::consume;

use crate::{Kind, Terminal};

pub const COMMANDS: &str = "baseline.commands";
pub const REPLIES: &str = "baseline.replies";
const STEPS: i32 = 3;

#[derive(Clone)]
pub struct Baseline {
    pool: PgPool,
    producer: FutureProducer,
    pub steps: Arc<AtomicU64>,
}

impl std::fmt::Debug for Baseline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Baseline")
    }
}

pub async fn create_topics(
    kafka: &KafkaSettings,
    names: &[&str],
    partitions: i32,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .create()?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(&topics, &opts).await? {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => anyhow::bail!("cannot create topic {t}: {code:?}"),
        }
    }
    Ok(())
}

impl Baseline {
    pub async fn setup(
        pool: PgPool,
        kafka_settings: &KafkaSettings,
        partitions: i32,
        batch: usize,
        linger: Duration,
        cancel: CancellationToken,
    ) -> anyhow::Result<(Baseline, mpsc::UnboundedReceiver<Terminal>)> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS baseline_sagas (id UUID PRIMARY KEY, step INT NOT NULL, \
               updated_at TIMESTAMPTZ NOT NULL); \
             CREATE TABLE IF NOT EXISTS baseline_outbox (id BIGSERIAL PRIMARY KEY, saga_id UUID NOT NULL, \
               topic TEXT NOT NULL, payload BYTEA NOT NULL);",
        )
        .execute(&pool)
        .await
        .context("baseline tables")?;
        create_topics(kafka_settings, &[COMMANDS, REPLIES], partitions).await?;
        let producer = kafka::producer(kafka_settings)?;
        let steps = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::unbounded_channel();

        // The echo participant.
        let echo: StreamConsumer = consume::own_group(kafka_settings, "baseline-echo")
            .set("enable.auto.offset.store", "true")
            .create()?;
        echo.subscribe(&[COMMANDS])?;
        let p = producer.clone();
        let counted = steps.clone();
        let c = cancel.clone();
        tokio::spawn(async move {
            while let Some(m) = consume::next(&echo, &c).await {
                counted.fetch_add(1, Ordering::Relaxed);
                let key = m.key().map(<[u8]>::to_vec).unwrap_or_default();
                let payload = m.payload().map(<[u8]>::to_vec).unwrap_or_default();
                let p = p.clone();
                tokio::spawn(async move {
                    let _ = p
                        .send(
                            FutureRecord::to(REPLIES)
                                .key(&key[..])
                                .payload(&payload[..]),
                            Timeout::After(Duration::from_secs(30)),
                        )
                        .await;
                });
            }
        });

        // The orchestrator.
        let consumer: StreamConsumer =
            consume::own_group(kafka_settings, "baseline-orchestrator").create()?;
        consumer.subscribe(&[REPLIES])?;
        let me = Baseline {
            pool,
            producer,
            steps,
        };
        let orchestrator = me.clone();
        tokio::spawn(async move {
            if let Err(e) = orchestrator
                .orchestrate(consumer, batch, linger, tx, cancel)
                .await
            {
                eprintln!("baseline orchestrator failed: {e:#}");
            }
        });
        Ok((me, rx))
    }

    async fn produce(&self, rows: &[(i64, Uuid, Vec<u8>)]) -> anyhow::Result<()> {
        let results = join_all(rows.iter().map(|(_, saga, payload)| {
            let key = saga.to_string();
            async move {
                self.producer
                    .send(
                        FutureRecord::to(COMMANDS)
                            .key(key.as_str())
                            .payload(&payload[..]),
                        Timeout::After(Duration::from_secs(30)),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| e)
            }
        }))
        .await;
        for r in results {
            r?;
        }
        Ok(())
    }

    /// Starts `n` sagas in one transaction and publishes their first commands.
    /// Also returns when the start transaction had committed (its command goes out after).
    pub async fn start_timed(&self, n: usize) -> anyhow::Result<(Vec<Uuid>, std::time::Instant)> {
        let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO baseline_sagas (id, step, updated_at) SELECT u, 0, now() FROM UNNEST($1::uuid[]) u",
        )
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
        let rows = insert_outbox(&mut tx, &ids, &vec![0; ids.len()]).await?;
        tx.commit().await?;
        let committed = std::time::Instant::now();
        self.produce(&rows).await?;
        let done: Vec<i64> = rows.iter().map(|r| r.0).collect();
        sqlx::query("DELETE FROM baseline_outbox WHERE id = ANY($1)")
            .bind(&done)
            .execute(&self.pool)
            .await?;
        Ok((ids, committed))
    }

    async fn orchestrate(
        &self,
        consumer: StreamConsumer,
        batch_size: usize,
        linger: Duration,
        terminal: mpsc::UnboundedSender<Terminal>,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let published: Mutex<Vec<i64>> = Mutex::default();
        while let Some(first) = consume::next(&consumer, &cancel).await {
            let mut batch = vec![first.detach()];
            let deadline = Instant::now() + linger;
            while batch.len() < batch_size {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(m.detach()),
                    _ => break,
                }
            }
            let ids: Vec<Uuid> = batch
                .iter()
                .filter_map(|m| saga_of_payload(m.payload()?))
                .collect();
            let to_delete =
                std::mem::take(&mut *published.lock().unwrap_or_else(|p| p.into_inner()));
            let mut tx = self.pool.begin().await?;
            if !to_delete.is_empty() {
                sqlx::query("DELETE FROM baseline_outbox WHERE id = ANY($1)")
                    .bind(&to_delete)
                    .execute(&mut *tx)
                    .await?;
            }
            let updated = sqlx::query(
                "UPDATE baseline_sagas s SET step = s.step + 1, updated_at = now() \
                 FROM UNNEST($1::uuid[]) AS u(id) WHERE s.id = u.id RETURNING s.id, s.step",
            )
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
            let (mut next_ids, mut next_steps, mut finished) = (Vec::new(), Vec::new(), Vec::new());
            for r in updated {
                let id: Uuid = r.get(0);
                let step: i32 = r.get(1);
                if step < STEPS {
                    next_ids.push(id);
                    next_steps.push(step);
                } else {
                    finished.push(id);
                }
            }
            let rows = if next_ids.is_empty() {
                Vec::new()
            } else {
                insert_outbox(&mut tx, &next_ids, &next_steps).await?
            };
            tx.commit().await?;
            let at = Instant::now();
            for id in finished {
                let _ = terminal.send(Terminal {
                    id,
                    kind: Kind::Completed,
                    at: at.into_std(),
                });
            }
            self.produce(&rows).await?;
            published
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(rows.iter().map(|r| r.0));
            sagaflow::messaging::kafka::store_consumed(&consumer, &batch);
        }
        Ok(())
    }
}

/// The saga a baseline command or reply is for: its payload is `id:step`.
pub fn saga_of_payload(payload: &[u8]) -> Option<Uuid> {
    let text = std::str::from_utf8(payload).ok()?;
    Uuid::parse_str(text.split(':').next()?).ok()
}

async fn insert_outbox(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    ids: &[Uuid],
    steps: &[i32],
) -> anyhow::Result<Vec<(i64, Uuid, Vec<u8>)>> {
    let rows = sqlx::query(
        "INSERT INTO baseline_outbox (saga_id, topic, payload) \
         SELECT u.id, 'baseline.commands', convert_to(u.id::text || ':' || u.step, 'UTF8') \
         FROM UNNEST($1::uuid[], $2::int4[]) AS u(id, step) RETURNING id, saga_id, payload",
    )
    .bind(ids)
    .bind(steps)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}
