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

/// Copies saga `template`, its row and its timer rows, `n` times with fresh ids, in one
/// statement: ten thousand sagas waiting on a timer without ten thousand starts.
async fn clone_saga(store: &sagaflow::store::Store, template: uuid::Uuid, n: i64) {
    sqlx::query(
        "WITH t AS (SELECT * FROM sagas WHERE id = $1), \
         s AS ( \
           INSERT INTO sagas (id, definition, version, status, input_hash, state, created_at, updated_at) \
           SELECT g.id, t.definition, t.version, t.status, t.input_hash, \
                  jsonb_set(t.state, '{id}', to_jsonb(g.id::text)), now(), now() \
           FROM t, (SELECT gen_random_uuid() AS id FROM generate_series(1, $2::bigint)) g \
           RETURNING id) \
         INSERT INTO timers (saga_id, timer, due_at) \
         SELECT s.id, tm.timer, tm.due_at FROM s, timers tm WHERE tm.saga_id = $1",
    )
    .bind(template)
    .bind(n)
    .execute(&store.pool)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_fire_ten_thousand_timers_each_exactly_once() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let dir = sagas_dir_with("timing-out.yaml", TIMING_OUT_SLOWLY);
    let mut settings = settings(&db, &broker, &dir);
    // Claims smaller than the backlog, so both replicas find due timers to take.
    settings.runtime.timer_batch_size = 100;
    let store = db.store().await;
    let a = Process::start(&settings);
    let b = Process::start(&settings);
    a.wait_ready().await;
    b.wait_ready().await;
    let n = 10_000;
    let template = start_saga(
        &format!("http://127.0.0.1:{}", a.port),
        "timing-out",
        json!({"n": 0}),
    )
    .await;
    clone_saga(&store, template, n - 1).await;
    sqlx::query("UPDATE timers SET due_at = now() + interval '1 second'")
        .execute(&store.pool)
        .await
        .unwrap();
    eventually(
        "every saga to time out and end",
        Duration::from_secs(300),
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
    let timed_out_sagas = count(
        &store,
        "SELECT count(DISTINCT saga_id) FROM saga_history WHERE kind = 'timed_out'",
    )
    .await;
    assert_eq!(
        (timeouts, timed_out_sagas),
        (n, n),
        "each step timeout fired exactly once"
    );
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

/// One step nobody answers, timing out after an hour: the test breaks a saga's state
/// and then brings the timers forward itself (a 3 s timeout fired first on a busy machine).
const TIMING_OUT_SLOWLY: &str = "\
name: timing-out
defaults: {reply_topic: tick.replies, timeout: 1h, retry: {max_attempts: 1}}
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
    // Polled: a round that finds the saga's row busy gives the claim back, and the next
    // round takes it again (seen once under a loaded machine).
    let held = format!(
        "SELECT count(*) FROM timers \
         WHERE saga_id = '{broken}' AND claimed_until > now() AND parked_reason IS NULL"
    );
    eventually(
        "the broken saga's timer to keep a claim, unparked",
        Duration::from_secs(10),
        || async { (count(&store, &held).await == 1).then_some(()) },
    )
    .await;
    svc.stop().await;
}

/// The timer loop is woken by the NOTIFY of a commit that writes a timer due soon, not
/// by its poll: with the poll at 5 s, each of four 200 ms step timeouts, started one
/// after another, fires within 2.5 s of being due (with the poll alone, the loop sleeps
/// 5 s after each firing, so every later one is about 4.8 s late). A first saga, not
/// timed, warms up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timer_due_soon_wakes_the_loop_before_its_poll() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let mut settings = settings(&db, &broker, &sagas_dir());
    settings.runtime.timer_poll_ms = 5000;
    let store = db.store().await;
    let svc = InProcess::start(settings).await;
    for i in 0..5 {
        let id = start_saga(&svc.url(""), "timing-out", json!({"n": i})).await;
        wait_status(
            &store,
            id,
            sagaflow::engine::SagaStatus::Compensated,
            Duration::from_secs(30),
        )
        .await;
        let late: f64 = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM (h.at - s.created_at))::float8 - 0.2 \
             FROM saga_history h JOIN sagas s ON s.id = h.saga_id \
             WHERE h.saga_id = $1 AND h.kind = 'timed_out'",
        )
        .bind(id)
        .fetch_one(&store.pool)
        .await
        .unwrap();
        assert!(
            i == 0 || late < 2.5,
            "saga {i}: the timeout fired {late:.2} s late"
        );
    }
    svc.stop().await;
}
