//! The database connections drop under the service: it reconnects, reports the
//! outage on /readyz meanwhile, and loses nothing.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use sagaflow::engine::SagaStatus;
use sagaflow::participant::{Decision, Policy};
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

async fn start(svc: &InProcess, n: u32) -> Uuid {
    let body = json!({"input": {"order_id": format!("o-{n}"), "customer_id": "c", "amount": 1, "currency": "EUR",
                                "items": [{"sku": "A", "quantity": 1}]}});
    let (status, text) = http(
        "POST",
        &svc.url("/v1/sagas/order-fulfilment"),
        Some(&body),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{text}");
    serde_json::from_str::<Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_database_connection_killed_mid_run_loses_nothing() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let dir = repo_path("sagas");
    let settings = settings(&db, &broker, &dir);
    let svc = InProcess::start(settings.clone()).await;
    let always: Policy = Arc::new(|_c| (Decision::Success, Duration::from_millis(5)));
    let p = participants(&settings, load_defs(&settings.runtime.sagas_dir), always);

    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(start(&svc, n).await);
    }
    let admin = sqlx::PgPool::connect(support::ADMIN_URL).await.unwrap();
    // Terminate every connection the service holds (pool, relay lock, LISTEN) while
    // sagas are in flight, then again after more have started.
    let kill_all = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()) t",
        )
        .bind(&db.name)
        .fetch_one(&admin)
        .await
        .unwrap()
    };
    assert!(kill_all().await > 0);
    for n in 10..20 {
        ids.push(start(&svc, n).await);
    }
    assert!(kill_all().await > 0);
    let store = db.store().await;
    for id in &ids {
        wait_status(&store, *id, SagaStatus::Completed, Duration::from_secs(60)).await;
    }
    let ready = eventually("readiness to recover", Duration::from_secs(30), || async {
        http_get(&svc.url("/readyz"))
            .await
            .filter(|(s, _)| *s == 200)
    })
    .await;
    assert_eq!(ready.0, 200);
    p.stop().await;
    svc.stop().await;
}
