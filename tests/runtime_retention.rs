//! Retention: finished sagas, their timelines and old inbox rows go; unfinished and
//! failed sagas stay; and a reply redelivered after its inbox row (or its saga) is gone
//! still changes nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use sagaflow::engine::SagaStatus;
use sagaflow::messaging::kafka;
use sagaflow::runtime::retention::{self, Removed, RetentionSettings};
use serde_json::json;
use support::held::*;
use support::*;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_finished_sagas_and_inbox_rows_go_and_redelivery_changes_nothing() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("tests/sagas-held"));
    let store = db.store().await;
    let svc = InProcess::start(settings.clone()).await;
    let producer = kafka::producer(&settings.kafka).unwrap();
    let mut ids = Vec::new();
    for key in ["done", "waiting", "failing", "recent"] {
        send_to(&producer, &order_placed(&settings, key), 0).await;
        ids.push(wait_saga(&store, key).await);
    }
    let [done_id, waiting, failing, recent] = ids[..] else {
        unreachable!()
    };
    let reply = done(&settings, done_id, json!({"ok": 1}));
    send_to(&producer, &reply, 0).await;
    send_to(&producer, &done(&settings, recent, json!({})), 0).await;
    let finished = wait_status(&store, done_id, SagaStatus::Completed, WAIT).await;
    wait_status(&store, recent, SagaStatus::Completed, WAIT).await;
    sqlx::query("UPDATE sagas SET status = 'failed' WHERE id = $1")
        .bind(failing)
        .execute(&store.pool)
        .await
        .unwrap();

    let pass = |finished: Option<Duration>, inbox: Option<Duration>| {
        let store = store.clone();
        async move {
            let settings = RetentionSettings {
                finished,
                inbox,
                every: Duration::from_secs(1),
                batch_size: 2,
            };
            retention::run_once(&store, &settings, &CancellationToken::new())
                .await
                .unwrap()
        }
    };
    let week = Some(Duration::from_secs(7 * 86_400));
    let age = |table: &'static str, column: &'static str| {
        let store = store.clone();
        async move {
            sqlx::query(&format!(
                "UPDATE {table} SET {column} = {column} - interval '8 days'"
            ))
            .execute(&store.pool)
            .await
            .unwrap();
        }
    };

    // 1. Inbox rows older than the window go; sagas are untouched.
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(inbox, 6, "four trigger events and two replies");
    age("inbox", "received_at").await;
    let removed = pass(week, week).await;
    assert_eq!(removed, Removed { sagas: 0, inbox: 6 });
    // The applied reply comes again: no inbox row knows it, and still nothing changes.
    // Applying it writes its inbox row again, which is how the test knows it was read.
    send_to(&producer, &reply, 0).await;
    let reply_id = reply
        .headers
        .iter()
        .find(|(k, _)| k == "ce_id")
        .map(|(_, v)| v.clone())
        .unwrap();
    eventually("the redelivered reply to be read", WAIT, || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM inbox WHERE message_id LIKE '%|' || $1")
                .bind(&reply_id)
                .fetch_one(&store.pool)
                .await
                .unwrap();
        (n == 1).then_some(())
    })
    .await;
    let sentinel = {
        send_to(&producer, &order_placed(&settings, "sentinel"), 0).await;
        wait_saga(&store, "sentinel").await
    };
    send_to(&producer, &done(&settings, sentinel, json!({})), 0).await;
    wait_status(&store, sentinel, SagaStatus::Completed, WAIT).await;
    let again = saga(&store, done_id).await;
    assert_eq!(again.status, finished.status);
    assert_eq!(again.output, finished.output);
    assert_eq!(again.steps, finished.steps);

    // 2. Finished sagas older than the window go with their timelines; the running,
    //    the failed and the recent one stay.
    sqlx::query(
        "UPDATE sagas SET updated_at = updated_at - interval '8 days' WHERE id NOT IN ($1, $2)",
    )
    .bind(recent)
    .bind(sentinel)
    .execute(&store.pool)
    .await
    .unwrap();
    let removed = pass(week, None).await;
    assert_eq!(removed.sagas, 1, "only `done` (sentinel is recent)");
    let left: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM sagas ORDER BY created_at")
        .fetch_all(&store.pool)
        .await
        .unwrap();
    assert!(!left.contains(&done_id));
    for id in [waiting, failing, recent, sentinel] {
        assert!(left.contains(&id), "{id} kept");
    }
    assert!(timeline(&store, done_id).await.is_empty());

    // 3. The reply comes once more, for a saga that no longer exists: dead-lettered,
    //    and nothing is created.
    send_to(&producer, &reply, 0).await;
    eventually(
        "the reply to the deleted saga to be dead-lettered",
        WAIT,
        || async {
            read_topic(&settings, &settings.kafka.dead_letter_topic)
                .await
                .iter()
                .filter_map(|m| header(m, "dlq-reason"))
                .find(|r| r.contains("unknown saga"))
        },
    )
    .await;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas WHERE id = $1")
        .bind(done_id)
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    svc.stop().await;
}
