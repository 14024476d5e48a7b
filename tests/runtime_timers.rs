//! Timers in PostgreSQL, fired by every replica: each due timer is claimed by one replica
//! (FOR UPDATE SKIP LOCKED, with a lease) and fires exactly once; a row that cannot be
//! read is parked instead of being retried forever.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use support::*;

/// One step that nobody answers, timing out after 200 ms; no retry, nothing to undo.
const TIMING_OUT: &str = "\
name: timing-out
defaults: {reply_topic: tick.replies, timeout: 200ms, retry: {max_attempts: 1}}
steps:
  - name: wait
    command: {topic: tick.commands, type: tick.wait, payload: {n: \"{{ input.n }}\"}}
    reply: {success: [tick.done]}
    compensation: none
";

fn sagas_dir() -> PathBuf {
    sagas_dir_with("timing-out.yaml", TIMING_OUT)
}

async fn count(store: &sagaflow::store::Store, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&store.pool)
        .await
        .unwrap()
}

/// `sagaflow_timer_lag_seconds_count{timer="step_timeout"}` of the replica on `port`.
async fn fired_by(port: u16) -> f64 {
    let (_, text) = http_get(&format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("sagaflow_timer_lag_seconds_count") && l.contains("step_timeout"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_the_timers_and_each_fires_once() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let mut settings = settings(&db, &broker, &sagas_dir());
    // Small claims, so both replicas find due timers to take.
    settings.runtime.timer_batch_size = 20;
    let store = db.store().await;
    let a = Process::start(&settings);
    let b = Process::start(&settings);
    a.wait_ready().await;
    b.wait_ready().await;
    let n = 600;
    for i in 0..n {
        let port = if i % 2 == 0 { a.port } else { b.port };
        start_saga(
            &format!("http://127.0.0.1:{port}"),
            "timing-out",
            json!({"n": i}),
        )
        .await;
    }
    eventually(
        "every saga to time out and end",
        Duration::from_secs(120),
        || async {
            (count(
                &store,
                "SELECT count(*) FROM sagas WHERE status = 'compensated'",
            )
            .await
                == n)
                .then_some(())
        },
    )
    .await;
    let timeouts = count(
        &store,
        "SELECT count(*) FROM saga_history WHERE kind = 'timed_out'",
    )
    .await;
    assert_eq!(timeouts, n, "each step timeout fired exactly once");
    assert_eq!(count(&store, "SELECT count(*) FROM timers").await, 0);
    let (by_a, by_b) = (fired_by(a.port).await, fired_by(b.port).await);
    assert_eq!(by_a + by_b, n as f64, "a: {by_a}, b: {by_b}");
    assert!(
        by_a > 0.0 && by_b > 0.0,
        "both replicas fire timers: a {by_a}, b {by_b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreadable_timer_row_is_parked_and_the_others_fire() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &sagas_dir());
    let store = db.store().await;
    let svc = InProcess::start(settings).await;
    let base = svc.url("");
    let first = start_saga(&base, "timing-out", json!({"n": 1})).await;
    // A row nothing can read, due now, beside the saga's real timer.
    sqlx::query("INSERT INTO timers (saga_id, timer, due_at) VALUES ($1, 'not a timer', now())")
        .bind(first)
        .execute(&store.pool)
        .await
        .unwrap();
    let reason: String = eventually("the row to be parked", Duration::from_secs(30), || async {
        sqlx::query_scalar("SELECT parked_reason FROM timers WHERE timer = 'not a timer'")
            .fetch_one(&store.pool)
            .await
            .ok()
            .flatten()
    })
    .await;
    assert!(reason.contains("cannot be read"), "{reason}");
    let second = start_saga(&base, "timing-out", json!({"n": 2})).await;
    for id in [first, second] {
        wait_status(
            &store,
            id,
            sagaflow::engine::SagaStatus::Compensated,
            Duration::from_secs(30),
        )
        .await;
    }
    svc.stop().await;
}

/// One step nobody answers, timing out after 3 s: long enough to break a saga's state
/// before its timer is due.
const TIMING_OUT_SLOWLY: &str = "\
name: timing-out
defaults: {reply_topic: tick.replies, timeout: 3s, retry: {max_attempts: 1}}
steps:
  - name: wait
    command: {topic: tick.commands, type: tick.wait, payload: {n: \"{{ input.n }}\"}}
    reply: {success: [tick.done]}
    compensation: none
";

/// A saga whose state no longer reads used to fail every batch of timers claimed with
/// it, for ever; the others now fire, and its own timer waits for a replica that can
/// read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saga_that_cannot_be_read_holds_back_no_other_timer() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(
        &db,
        &broker,
        &sagas_dir_with("timing-out.yaml", TIMING_OUT_SLOWLY),
    );
    let store = db.store().await;
    let svc = InProcess::start(settings).await;
    let base = svc.url("");
    let broken = start_saga(&base, "timing-out", json!({"n": 1})).await;
    let others = [
        start_saga(&base, "timing-out", json!({"n": 2})).await,
        start_saga(&base, "timing-out", json!({"n": 3})).await,
    ];
    sqlx::query("UPDATE sagas SET state = '{\"not\": \"a saga\"}' WHERE id = $1")
        .bind(broken)
        .execute(&store.pool)
        .await
        .unwrap();
    // All three due at one instant, so one claim takes them together.
    sqlx::query("UPDATE timers SET due_at = now() + interval '1 second'")
        .execute(&store.pool)
        .await
        .unwrap();
    for id in others {
        wait_status(
            &store,
            id,
            sagaflow::engine::SagaStatus::Compensated,
            Duration::from_secs(20),
        )
        .await;
    }
    let waiting = count(
        &store,
        &format!(
            "SELECT count(*) FROM timers WHERE saga_id = '{broken}' AND claimed_until > now()"
        ),
    )
    .await;
    assert_eq!(waiting, 1, "the broken saga's timer keeps its claim");
    svc.stop().await;
}
