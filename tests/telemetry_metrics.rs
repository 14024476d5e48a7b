//! `/metrics` after a known set of sagas: counts by outcome, histograms with buckets,
//! gauges. One test in this binary: the metrics recorder is process-global.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use sagaflow::engine::{Phase, SagaStatus};
use sagaflow::messaging::envelope::Record;
use sagaflow::messaging::kafka;
use sagaflow::participant::{Decision, Policy};
use sagaflow::telemetry::metrics;
use serde_json::json;
use support::*;
use uuid::Uuid;

/// The value of the series `name` whose labels include every `labels` pair.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.split(['{', ' '])
                .next()
                .is_some_and(|series| series == name)
        })
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn order(id: &str, amount: f64) -> serde_json::Value {
    json!({"order_id": id, "customer_id": "c-1", "amount": amount, "currency": "EUR", "items": [{"sku": "A", "quantity": 1}]})
}

async fn start(svc: &InProcess, input: serde_json::Value) -> Uuid {
    let (status, body) = http(
        "POST",
        &svc.url("/v1/sagas/order-fulfilment"),
        Some(&json!({"input": input})),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

const DEF: (&str, &str) = ("definition", "order-fulfilment");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_a_known_set_of_sagas() {
    log_init();
    metrics::install();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let dir = repo_path("sagas");
    let mut settings = settings(&db, &broker, &dir);
    settings.runtime.metrics_interval_ms = 200;
    let svc = InProcess::start(settings.clone()).await;
    // Amount 66.5: capture declines (compensated). Order "o-retry": the first
    // reservation fails retryably, so a retry timer fires.
    let policy: Policy = Arc::new(|c| {
        let d = if c.phase == Phase::Compensation {
            Decision::Success
        } else if c.payload["amount"] == json!(66.5) && c.step == "capture_payment" {
            Decision::Failure { retryable: false }
        } else if c.payload["order_id"] == json!("o-retry")
            && c.step == "reserve_stock"
            && c.attempt == 1
        {
            Decision::Failure { retryable: true }
        } else {
            Decision::Success
        };
        (d, Duration::ZERO)
    });
    let p = participants(&settings, load_defs(&settings.runtime.sagas_dir), policy);
    let store = db.store().await;

    let mut completed = Vec::new();
    for id in ["o-1", "o-2", "o-retry"] {
        completed.push(start(&svc, order(id, 12.5)).await);
    }
    let mut compensated = Vec::new();
    for id in ["o-3", "o-4"] {
        compensated.push(start(&svc, order(id, 66.5)).await);
    }
    for id in &completed {
        wait_status(&store, *id, SagaStatus::Completed, Duration::from_secs(30)).await;
    }
    for id in &compensated {
        wait_status(
            &store,
            *id,
            SagaStatus::Compensated,
            Duration::from_secs(30),
        )
        .await;
    }
    // One unreadable message on the reply topic: dead-lettered.
    let producer = kafka::producer(&settings.kafka).unwrap();
    let garbage = Record {
        topic: topic(&settings, "orders.saga-replies"),
        key: "x".into(),
        headers: vec![],
        payload: b"not a cloudevent".to_vec(),
    };
    kafka::send(&producer, &garbage, Duration::from_secs(10))
        .await
        .unwrap();

    let text = eventually(
        "gauges and dead letter",
        Duration::from_secs(20),
        || async {
            let text = metrics::render();
            let ready = value(
                &text,
                "sagaflow_dead_lettered_total",
                &[("reason", "undecodable")],
            ) == Some(1.0)
                && value(
                    &text,
                    "sagaflow_consumer_lag",
                    &[("topic", &topic(&settings, "orders.saga-replies"))],
                )
                .is_some()
                && value(&text, "sagaflow_outbox_backlog", &[]) == Some(0.0)
                && value(&text, "sagaflow_sagas_in_flight", &[("status", "running")]) == Some(0.0);
            ready.then_some(text)
        },
    )
    .await;
    p.stop().await;
    svc.stop().await;

    let v = |name: &str, labels: &[(&str, &str)]| {
        value(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    assert_eq!(v("sagaflow_sagas_started_total", &[DEF]), 5.0);
    assert_eq!(v("sagaflow_sagas_completed_total", &[DEF]), 3.0);
    assert_eq!(v("sagaflow_sagas_compensated_total", &[DEF]), 2.0);
    assert!(value(&text, "sagaflow_sagas_failed_total", &[DEF]).is_none());

    // Histograms render as histograms: buckets, sum and count.
    let inf = ("le", "+Inf");
    let completed_l = ("status", "completed");
    assert_eq!(
        v(
            "sagaflow_saga_duration_seconds_bucket",
            &[DEF, completed_l, inf]
        ),
        3.0
    );
    assert_eq!(
        v("sagaflow_saga_duration_seconds_count", &[DEF, completed_l]),
        3.0
    );
    assert!(v("sagaflow_saga_duration_seconds_sum", &[DEF, completed_l]) > 0.0);
    assert!(text.contains("sagaflow_saga_duration_seconds_bucket{definition=\"order-fulfilment\",status=\"compensated\",le=\"0.5\"}"));
    let step = |s: &'static str, outcome: &'static str| {
        v(
            "sagaflow_step_duration_seconds_count",
            &[DEF, ("step", s), ("outcome", outcome)],
        )
    };
    assert_eq!(step("reserve_stock", "succeeded"), 5.0);
    assert_eq!(step("capture_payment", "succeeded"), 3.0);
    assert_eq!(step("capture_payment", "failed"), 2.0);
    assert_eq!(step("ship_order", "succeeded"), 3.0);
    assert!(
        v(
            "sagaflow_timer_lag_seconds_count",
            &[("timer", "retry_due")]
        ) >= 1.0,
        "the retry timer fired"
    );
    assert!(
        v(
            "sagaflow_timer_lag_seconds_bucket",
            &[("timer", "retry_due"), inf]
        ) >= 1.0
    );
    // 3×4 commands + 2×(3 commands + 2 compensations) + 1 retried command.
    let published: f64 = text
        .lines()
        .filter(|l| l.starts_with("sagaflow_outbox_published_total{"))
        .filter(|l| l.contains("commands"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(published, 23.0);
    assert!(v("sagaflow_outbox_publish_latency_seconds_count", &[]) >= 23.0);
    assert!(v("sagaflow_outbox_publish_latency_seconds_bucket", &[inf]) >= 23.0);
    assert!(v("sagaflow_db_pool_max_connections", &[]) >= 1.0);
    assert!(
        value(
            &text,
            "sagaflow_db_pool_connections",
            &[("state", "in_use")]
        )
        .is_some()
    );
    assert!(text.contains("# TYPE sagaflow_step_duration_seconds histogram"));
    assert!(text.contains("# HELP sagaflow_sagas_started_total"));
}
