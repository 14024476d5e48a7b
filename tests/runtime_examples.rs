//! The example sagas driven end to end over a real PostgreSQL and a real broker.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use sagaflow::engine::SagaStatus;
use sagaflow::participant::{Decision, Policy};
use serde_json::json;
use support::*;
use uuid::Uuid;

fn always(decision: Decision) -> Policy {
    Arc::new(move |_c| (decision.clone(), Duration::ZERO))
}

fn order_input(id: &str) -> serde_json::Value {
    json!({"order_id": id, "customer_id": "c-1", "amount": 12.5, "currency": "EUR", "items": [{"sku": "A", "quantity": 1}]})
}

async fn start(svc: &InProcess, name: &str, input: serde_json::Value) -> Uuid {
    let (status, body) = http(
        "POST",
        &svc.url(&format!("/v1/sagas/{name}")),
        Some(&json!({"input": input})),
        &[],
    )
    .await
    .expect("http");
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_fulfilment_happy_path_completes_with_output() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let dir = repo_path("sagas");
    let settings = settings(&db, &broker, &dir);
    let svc = InProcess::start(settings.clone()).await;
    let p = participants(
        &settings,
        load_defs(&settings.runtime.sagas_dir),
        always(Decision::Success),
    );
    let store = db.store().await;

    let id = start(&svc, "order-fulfilment", order_input("o-1")).await;
    let inst = wait_status(&store, id, SagaStatus::Completed, Duration::from_secs(30)).await;
    assert_eq!(
        inst.output.as_ref().and_then(|o| o.get("order_id")),
        Some(&json!("o-1"))
    );
    assert_eq!(
        sent(&store, id).await,
        [
            "cmd:reserve_stock#1",
            "cmd:authorize_payment#1",
            "cmd:capture_payment#1",
            "cmd:ship_order#1"
        ]
    );
    p.stop().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_step_compensates_earlier_steps_in_reverse_order() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let dir = repo_path("sagas");
    let settings = settings(&db, &broker, &dir);
    let svc = InProcess::start(settings.clone()).await;
    let policy: Policy = Arc::new(|c| {
        let d = if c.step == "capture_payment" {
            Decision::Failure { retryable: false }
        } else {
            Decision::Success
        };
        (d, Duration::ZERO)
    });
    let p = participants(&settings, load_defs(&settings.runtime.sagas_dir), policy);
    let store = db.store().await;

    let id = start(&svc, "order-fulfilment", order_input("o-2")).await;
    wait_status(&store, id, SagaStatus::Compensated, Duration::from_secs(30)).await;
    assert_eq!(
        sent(&store, id).await,
        [
            "cmd:reserve_stock#1",
            "cmd:authorize_payment#1",
            "cmd:capture_payment#1",
            "comp:authorize_payment#1",
            "comp:reserve_stock#1"
        ]
    );
    p.stop().await;
    svc.stop().await;
}
