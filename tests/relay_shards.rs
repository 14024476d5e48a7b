//! The sharded outbox relay on Apache Kafka: every replica publishes at once, each
//! shard under its own lock, and one saga's messages still leave in the order its
//! transitions wrote them. A relay of the version before shards (one lock for the whole
//! outbox) and a sharded one never publish at the same time.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Message;
use sagaflow::messaging::relay::{self, BatchSettings, Outcome};
use serde_json::json;
use support::*;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(120);

async fn outbox_len(store: &sagaflow::store::Store) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

/// `sagaflow_outbox_published_total` of the replica on `port`, all topics.
async fn published_by(port: u16) -> f64 {
    let (_, text) = http_get(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("sagaflow_outbox_published_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Writes `per_saga` rows for each saga in one transaction, interleaved across sagas
/// (so ids of one saga are far apart), each keyed by its saga and numbered in `ce_id`.
async fn write_rows(store: &sagaflow::store::Store, topic: &str, sagas: &[Uuid], per_saga: usize) {
    let mut tx = store.pool.begin().await.unwrap();
    for seq in 0..per_saga {
        for saga in sagas {
            sqlx::query(
                "INSERT INTO outbox (saga_id, topic, key, headers, payload) VALUES ($1, $2, $3, $4, '{}')",
            )
            .bind(saga)
            .bind(topic)
            .bind(saga.to_string())
            .bind(json!([["ce_id", format!("{saga}/{seq}")], ["ce_time", "2026-11-30T00:00:00Z"]]))
            .execute(&mut *tx)
            .await
            .unwrap();
        }
    }
    sqlx::query("SELECT pg_notify('sagaflow_outbox', '')")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_publish_at_once_and_each_saga_keeps_its_order() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let mut settings = settings(&db, &broker, &repo_path("tests/sagas-held"));
    // Small batches: many transactions per shard, so the replicas interleave.
    settings.runtime.outbox_batch_size = 5;
    settings.runtime.outbox_relay_concurrency = 4;
    let store = db.store().await;
    let (a, b) = (Process::start(&settings), Process::start(&settings));
    a.wait_ready().await;
    b.wait_ready().await;
    let sagas: Vec<Uuid> = (0..64).map(|_| Uuid::new_v4()).collect();
    let per_saga = 40;
    let out = topic(&settings, "held.commands");
    write_rows(&store, &out, &sagas, per_saga).await;
    eventually("the outbox to be published", WAIT, || async {
        (outbox_len(&store).await == 0).then_some(())
    })
    .await;

    let mut messages = read_topic(&settings, &out).await;
    messages.sort_by_key(|m| (m.partition(), m.offset()));
    let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
    for m in &messages {
        let id = header(m, "ce_id").unwrap();
        let (saga, seq) = id.split_once('/').unwrap();
        seen.entry(saga.to_owned())
            .or_default()
            .push(seq.parse().unwrap());
    }
    let in_order: Vec<usize> = (0..per_saga).collect();
    for saga in &sagas {
        assert_eq!(
            seen.get(&saga.to_string()),
            Some(&in_order),
            "saga {saga}: each message once, in the order written"
        );
    }
    let (by_a, by_b) = (published_by(a.port).await, published_by(b.port).await);
    assert_eq!(by_a + by_b, (sagas.len() * per_saga) as f64);
    assert!(
        by_a > 0.0 && by_b > 0.0,
        "both replicas publish: a {by_a}, b {by_b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shard_is_published_by_one_transaction_at_a_time_and_never_beside_an_old_relay() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("tests/sagas-held"));
    let store = db.store().await;
    let producer = sagaflow::messaging::kafka::producer(&settings.kafka).unwrap();
    let batch = BatchSettings {
        batch_size: 100,
        send_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(120),
        broker: None,
    };
    let saga = Uuid::new_v4();
    let shard: i16 = sqlx::query_scalar("SELECT (get_byte(uuid_send($1), 15) % 16)::smallint")
        .bind(saga)
        .fetch_one(&store.pool)
        .await
        .unwrap();
    write_rows(&store, &topic(&settings, "held.commands"), &[saga], 3).await;
    let publish = |shards: Vec<i16>| {
        let (store, producer, batch) = (&store, &producer, &batch);
        async move {
            relay::publish_shards(store, producer, batch, &shards)
                .await
                .unwrap()
        }
    };
    let elsewhere = (shard + 1) % sagaflow::store::OUTBOX_SHARDS;

    // Another transaction (another replica's batch) holds the shard.
    let mut other = store.pool.begin().await.unwrap();
    let held = sagaflow::store::lock_outbox_shards(
        &mut other,
        &[shard, elsewhere],
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(held.locked, [shard], "only shards with rows are taken");
    assert!(held.held.is_empty());
    let empty_shard_locked: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() \
         AND objsubid = 2 AND objid = $1::int::oid)",
    )
    .bind(i32::from(elsewhere))
    .fetch_one(&mut *other)
    .await
    .unwrap();
    assert!(!empty_shard_locked, "a shard without rows is not locked");
    // A holder that vanishes without closing its connection frees the shard in 2 min.
    let idle: String =
        sqlx::query_scalar("SELECT current_setting('idle_in_transaction_session_timeout')")
            .fetch_one(&mut *other)
            .await
            .unwrap();
    assert_eq!(idle, "2min");
    assert_eq!(publish(vec![shard]).await, Outcome::HeldElsewhere);
    assert_eq!(outbox_len(&store).await, 3);
    other.rollback().await.unwrap();

    // A relay of the version before shards holds its single lock for its session.
    let mut old = store.pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(sagaflow::store::LEGACY_RELAY_LOCK)
        .execute(&mut *old)
        .await
        .unwrap();
    assert_eq!(
        publish(vec![shard]).await,
        Outcome::HeldElsewhere,
        "an old relay publishes"
    );
    assert_eq!(outbox_len(&store).await, 3);
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(sagaflow::store::LEGACY_RELAY_LOCK)
        .execute(&mut *old)
        .await
        .unwrap();

    // Another shard holds nothing of this saga's; its own shard, once free, publishes.
    assert_eq!(publish(vec![elsewhere]).await, Outcome::Published(0));
    assert_eq!(outbox_len(&store).await, 3);
    assert_eq!(publish(vec![shard, elsewhere]).await, Outcome::Published(3));
    assert_eq!(outbox_len(&store).await, 0);
}

/// The relay is woken by the commit's NOTIFY, not by its poll: with the poll at 20 s,
/// each of four sagas started one after another has its command published within 3 s
/// of the start's answer. A first saga, not timed, warms up the producer and the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_wakes_the_relay_before_its_poll() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let mut settings = settings(&db, &broker, &repo_path("tests/sagas-held"));
    settings.runtime.outbox_poll_ms = 20_000;
    let store = db.store().await;
    let svc = InProcess::start(settings.clone()).await;
    for i in 0..5 {
        let started = std::time::Instant::now();
        let (status, body) = http(
            "POST",
            &svc.url("/v1/sagas/held-order"),
            Some(&json!({"input": {"key": format!("wake-{i}")}})),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(status, 201, "{body}");
        eventually("the command to be published", WAIT, || async {
            (outbox_len(&store).await == 0).then_some(())
        })
        .await;
        let took = started.elapsed();
        assert!(
            i == 0 || took < Duration::from_secs(3),
            "saga {i}: published after {took:?}"
        );
    }
    svc.stop().await;
}

/// Other replicas learn of a commit from its announcement (`store/announce.rs`): a
/// notification on the outbox channel naming the writer, and one on the sagas channel
/// naming the saga. Whoever hears them finds the saga committed (an announcement sent
/// before the commit returned could arrive first).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_is_announced_to_other_replicas_after_its_commit() {
    use sagaflow::store::wake;
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("tests/sagas-held"));
    let store = db.store().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&store.pool)
        .await
        .unwrap();
    listener
        .listen_all([wake::OUTBOX_CHANNEL, wake::SAGAS_CHANNEL])
        .await
        .unwrap();
    let svc = InProcess::start(settings).await;
    let (status, body) = http(
        "POST",
        &svc.url("/v1/sagas/held-order"),
        Some(&json!({"input": {"key": "announced"}})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id: Uuid = body["id"].as_str().unwrap().parse().unwrap();
    let (mut writer, mut named) = (None, false);
    while writer.is_none() || !named {
        let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
            .await
            .expect("the start's announcement within 10 s")
            .unwrap();
        if n.channel() == wake::OUTBOX_CHANNEL {
            writer = Some(n.payload().to_owned());
        } else if wake::parse_saga_payload(n.payload()).contains(&id) {
            named = true;
        }
        let committed: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas WHERE id = $1")
            .bind(id)
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(committed, 1, "announced before its commit");
    }
    assert!(
        !writer.unwrap().is_empty(),
        "the outbox announcement names its writer, so its own relay can skip it"
    );
    svc.stop().await;
}
