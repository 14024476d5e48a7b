//! Many starts in one transaction (the HTTP start queue's group commit) answer exactly
//! as each would alone, in their order: a business key given twice in the batch makes
//! one saga, a key taken before the batch is found, a different input under a taken
//! key is a conflict, a refused input writes nothing, and every new saga is stored with
//! its input, its first command and its timers.
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
