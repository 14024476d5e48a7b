//! Poison outbox rows: a message the broker refuses for good is parked with its reason
//! (moved to `outbox_parked`, noted in its saga's timeline, counted) and never blocks
//! the rows behind it. Each case runs against the real broker: a message larger than
//! the producer's and broker's 1 MB limit, and a topic the broker refuses to take
//! writes for (an internal topic).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use sagaflow::telemetry::metrics;
use serde_json::json;
use support::held::*;
use support::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_the_broker_refuses_are_parked_and_block_nothing() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("tests/sagas-held"));
    let store = db.store().await;
    let svc = InProcess::start(settings.clone()).await;
    let producer = sagaflow::messaging::kafka::producer(&settings.kafka).unwrap();
    send_to(&producer, &order_placed(&settings, "victim"), 0).await;
    let victim = wait_saga(&store, "victim").await;
    wait_status(&store, victim, sagaflow::engine::SagaStatus::Running, WAIT).await;
    eventually("the victim's command to be published", WAIT, || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        (n == 0).then_some(())
    })
    .await;

    // Committed in one transaction, in this order, so the relay sees them in one batch.
    let out = topic(&settings, "held.commands");
    let mut tx = store.pool.begin().await.unwrap();
    for (topic, key, payload) in [
        (out.as_str(), "before", b"{}".to_vec()),
        (out.as_str(), "too-large", vec![b'x'; 2 * 1024 * 1024]),
        ("__consumer_offsets", "refused-topic", b"{}".to_vec()),
        (out.as_str(), "after", b"{}".to_vec()),
    ] {
        sqlx::query(
            "INSERT INTO outbox (saga_id, topic, key, headers, payload) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(victim)
        .bind(topic)
        .bind(key)
        .bind(json!([["ce_id", key], ["ce_time", "2026-11-30T00:00:00Z"]]))
        .bind(payload)
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let published = eventually(
        "the rows around the poison to be published",
        WAIT,
        || async {
            let mut keys: Vec<String> = read_topic(&settings, &out)
                .await
                .iter()
                .filter_map(|m| header(m, "ce_id"))
                .filter(|k| k == "before" || k == "after")
                .collect();
            // The two may sit on different partitions: compare them unordered.
            keys.sort();
            (keys.len() == 2).then_some(keys)
        },
    )
    .await;
    assert_eq!(published, ["after", "before"]);
    let parked: Vec<(String, String)> =
        sqlx::query_as("SELECT key, reason FROM outbox_parked ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap();
    assert_eq!(parked.len(), 2, "{parked:?}");
    assert_eq!(parked[0].0, "too-large");
    assert!(
        parked[0].1.contains("the broker refuses this message"),
        "{parked:?}"
    );
    assert_eq!(parked[1].0, "refused-topic");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    let noted = timeline(&store, victim)
        .await
        .into_iter()
        .filter(|h| h.kind == "message_parked")
        .count();
    assert_eq!(noted, 2);
    assert!(metrics::render().contains(metrics::OUTBOX_PARKED));
    let (status, body) = http_get(&svc.url("/readyz")).await.unwrap();
    assert_eq!(status, 200, "{body}");
    svc.stop().await;
}
