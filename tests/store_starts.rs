//! Many starts in one transaction (the HTTP start queue's group commit) answer exactly
//! as each would alone, in their order: a business key given twice in the batch makes
//! one saga, a key taken before the batch is found, a different input under a taken
//! key is a conflict, a refused input writes nothing, and every new saga is stored with
//! its input, its first command and its timers. Two transactions starting one key
//! concurrently: the second waits for the first, and finds its saga when it commits or
//! makes its own when it rolls back.
#![allow(clippy::unwrap_used)]

mod oneshot;
mod support;

use sagaflow::definition::Definition;
use sagaflow::runtime::start::Start;
use sagaflow::runtime::transition::{StartOutcome, StartRequest};
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

fn order(n: u32) -> Value {
    json!({"order_id": format!("ord-{n}"), "customer_id": "c", "amount": 1,
           "currency": "EUR", "items": [{"sku": "A", "quantity": 1}]})
}

fn request(input: Value, key: Option<&str>) -> StartRequest {
    StartRequest {
        definition: "order-fulfilment".into(),
        input,
        key: key.map(str::to_owned),
        id: None,
        traceparent: None,
    }
}

fn start<'a>(def: &'a Definition, input: Value, key: Option<&str>) -> Start<'a> {
    Start {
        def,
        req: request(input, key),
        span: tracing::Span::none(),
    }
}

fn created(o: &StartOutcome) -> Uuid {
    match o {
        StartOutcome::Created(id, _) => *id,
        other => panic!("not created: {other:?}"),
    }
}

#[tokio::test]
async fn starts_in_one_transaction_answer_as_each_would_alone() {
    let db = TestDb::new().await;
    let applier = oneshot::applier(&db).await;
    let def = applier.registry.current("order-fulfilment").unwrap();
    let held = created(
        &applier
            .start(request(order(0), Some("held")))
            .await
            .unwrap(),
    );

    let mut tx = applier.store.begin().await.unwrap();
    let starts = vec![
        start(&def, order(1), Some("k")),
        start(&def, order(1), Some("k")),
        start(&def, order(2), Some("k")),
        start(&def, order(0), Some("held")),
        start(&def, order(9), Some("held")),
        start(&def, json!({"order_id": "no customer"}), None),
        start(&def, order(3), None),
    ];
    let out = applier.start_many_in_tx(&mut tx, starts).await.unwrap();
    tx.commit().await.unwrap();

    let first = created(&out[0]);
    assert_eq!(out[1], StartOutcome::Existing(first), "{out:?}");
    assert_eq!(out[2], StartOutcome::Conflict(first), "{out:?}");
    assert_eq!(out[3], StartOutcome::Existing(held), "{out:?}");
    assert_eq!(out[4], StartOutcome::Conflict(held), "{out:?}");
    assert!(matches!(out[5], StartOutcome::InvalidInput(_)), "{out:?}");
    let keyless = created(&out[6]);

    let pool = &applier.store.pool;
    let rows: Vec<(Uuid, Value, i64, i64, i64)> = sqlx::query_as(
        "SELECT s.id, i.input, \
            (SELECT count(*) FROM outbox o WHERE o.saga_id = s.id), \
            (SELECT count(*) FROM timers t WHERE t.saga_id = s.id), \
            (SELECT count(*) FROM saga_history h WHERE h.saga_id = s.id AND h.kind = 'command_sent') \
         FROM sagas s JOIN saga_inputs i ON i.saga_id = s.id ORDER BY s.created_at, s.id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    assert_eq!(ids, vec![held, first, keyless], "one saga per new start");
    for (id, input, outbox, timers, sent) in &rows {
        let n = if *id == held {
            0
        } else if *id == first {
            1
        } else {
            3
        };
        assert_eq!(*input, order(n), "saga {id} keeps its own input");
        assert!(
            *outbox >= 1,
            "saga {id}: its first command waits in the outbox"
        );
        assert_eq!(
            (*timers, *sent),
            (2, 1),
            "saga {id}: one command sent; its step's timeout and the saga's deadline set"
        );
    }
}

/// Starts `key` in a transaction of its own on another task; returns its outcome once
/// committed.
fn start_elsewhere(
    applier: &sagaflow::runtime::transition::Applier,
    key: &'static str,
    n: u32,
) -> tokio::task::JoinHandle<StartOutcome> {
    let applier = applier.clone();
    tokio::spawn(async move {
        let def = applier.registry.current("order-fulfilment").unwrap();
        let mut tx = applier.store.begin().await.unwrap();
        let mut out = applier
            .start_many_in_tx(&mut tx, vec![start(&def, order(n), Some(key))])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        out.pop().unwrap()
    })
}

/// Polls until some transaction of this database waits for a lock.
async fn until_a_start_waits(pool: &sqlx::PgPool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second start never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_started_by_two_transactions_at_once_makes_one_saga() {
    let db = TestDb::new().await;
    let applier = oneshot::applier(&db).await;
    let def = applier.registry.current("order-fulfilment").unwrap();
    let pool = applier.store.pool.clone();

    for commit in [true, false] {
        let key = if commit { "committed" } else { "rolled-back" };
        let mut first = applier.store.begin().await.unwrap();
        let mine = applier
            .start_many_in_tx(&mut first, vec![start(&def, order(1), Some(key))])
            .await
            .unwrap();
        let mine = created(&mine[0]);
        let second = start_elsewhere(&applier, key, 1);
        until_a_start_waits(&pool).await;
        if commit {
            first.commit().await.unwrap();
            assert_eq!(second.await.unwrap(), StartOutcome::Existing(mine));
        } else {
            first.rollback().await.unwrap();
            let theirs = created(&second.await.unwrap());
            assert_ne!(
                theirs, mine,
                "the rolled-back saga is gone; the second made its own"
            );
        }
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 2, "one saga per key");
}
