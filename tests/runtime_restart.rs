//! Consumer offsets across a restart. Messages that arrive while the service is down
//! must all be applied when it comes back, the first one on each partition included:
//! storing one past the end (the bug this guards against) skipped exactly that one.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use sagaflow::engine::SagaStatus;
use sagaflow::messaging::kafka;
use serde_json::json;
use support::held::*;
use support::*;

const PARTITIONS: i32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn messages_sent_while_stopped_are_all_applied_on_every_partition() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("tests/sagas-held"));
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
        send_to(&producer, &done(&settings, id, json!({})), p).await;
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
        send_to(&producer, &done(&settings, *id, json!({})), p).await;
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
