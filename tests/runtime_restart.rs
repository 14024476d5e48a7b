//! Consumer offsets across a restart. Messages that arrive while the service is down
//! must all be applied when it comes back, the first one on each partition included:
//! storing one past the end (the bug this guards against) skipped exactly that one.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use rdkafka::producer::FutureProducer;
use rdkafka::util::Timeout;
use sagaflow::config::Settings;
use sagaflow::engine::{Phase, SagaStatus};
use sagaflow::messaging::envelope::Record;
use sagaflow::messaging::kafka;
use sagaflow::participant::{self, Command};
use sagaflow::store::Store;
use serde_json::json;
use support::*;
use uuid::Uuid;

const PARTITIONS: i32 = 4;

/// Produces `record` to partition `partition` of its topic.
async fn send_to(producer: &FutureProducer, record: &Record, partition: i32) {
    producer
        .send(
            kafka::to_future_record(record).partition(partition),
            Timeout::After(Duration::from_secs(30)),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

fn order_placed(settings: &Settings, key: &str) -> Record {
    Record {
        topic: topic(settings, "restart.orders"),
        key: key.to_owned(),
        headers: vec![
            ("ce_specversion".into(), "1.0".into()),
            ("ce_id".into(), format!("placed-{key}")),
            ("ce_source".into(), "/tests/shop".into()),
            ("ce_type".into(), "restart.order_placed".into()),
            ("content-type".into(), "application/json".into()),
        ],
        payload: serde_json::to_vec(&json!({"key": key})).unwrap(),
    }
}

/// The success reply to attempt 1 of step `wait` of saga `saga`.
fn done(settings: &Settings, saga: Uuid) -> Record {
    let command = Command {
        saga_id: saga,
        definition: "restart-wait".into(),
        step: "wait".into(),
        attempt: 1,
        phase: Phase::Command,
        command_type: "restart.wait".into(),
        command_id: Uuid::new_v4().to_string(),
        payload: json!({}),
        reply_to: topic(settings, "restart.replies"),
        traceparent: None,
        tracestate: None,
    };
    participant::reply_record(&command, "restart.done", &json!({}))
}

async fn saga_by_key(store: &Store, key: &str) -> Option<Uuid> {
    sqlx::query_scalar("SELECT id FROM sagas WHERE business_key = $1")
        .bind(key)
        .fetch_optional(&store.pool)
        .await
        .unwrap()
}

async fn wait_saga(store: &Store, key: &str) -> Uuid {
    eventually(
        &format!("a saga for {key}"),
        Duration::from_secs(60),
        || async { saga_by_key(store, key).await },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_sent_while_stopped_are_all_applied_on_every_partition() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("tests/sagas-restart"));
    assert_eq!(settings.kafka.topic_partitions, PARTITIONS);
    let store = db.store().await;
    let producer = kafka::producer(&settings.kafka).unwrap();

    // Before the stop, every partition of both topics carries messages the service
    // applies, so each has a committed offset at its end when the service stops. The
    // `held-*` sagas are left waiting for their reply.
    let svc = InProcess::start(settings.clone()).await;
    for p in 0..PARTITIONS {
        for prefix in ["warm", "held"] {
            send_to(
                &producer,
                &order_placed(&settings, &format!("{prefix}-{p}")),
                p,
            )
            .await;
        }
    }
    for p in 0..PARTITIONS {
        let id = wait_saga(&store, &format!("warm-{p}")).await;
        send_to(&producer, &done(&settings, id), p).await;
        wait_status(&store, id, SagaStatus::Completed, Duration::from_secs(60)).await;
    }
    let mut held = Vec::new();
    for p in 0..PARTITIONS {
        held.push(wait_saga(&store, &format!("held-{p}")).await);
    }
    svc.stop().await;

    // While it is down: a trigger event and a reply on every partition.
    for (p, id) in (0..PARTITIONS).zip(&held) {
        send_to(&producer, &order_placed(&settings, &format!("late-{p}")), p).await;
        send_to(&producer, &done(&settings, *id), p).await;
    }

    let svc = InProcess::start(settings.clone()).await;
    for id in &held {
        wait_status(&store, *id, SagaStatus::Completed, Duration::from_secs(60)).await;
    }
    for p in 0..PARTITIONS {
        let id = wait_saga(&store, &format!("late-{p}")).await;
        assert_eq!(
            sent(&store, id).await,
            ["cmd:wait#1"],
            "the late saga {p} started"
        );
    }
    let dead = read_topic(&settings, &settings.kafka.dead_letter_topic).await;
    assert!(dead.is_empty(), "nothing is dead-lettered");
    svc.stop().await;
}
