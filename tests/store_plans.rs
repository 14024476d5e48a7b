//! The queries that must hold at scale read indexes, never the whole `sagas` table:
//! every documented list filter (newest first, one page), the scans of unfinished
//! sagas at start-up and for the gauges, and retention. Checked with EXPLAIN ANALYZE
//! on `SAGAFLOW_PLAN_ROWS` sagas (200,000 here; docs/reliability.md has the figures for
//! 1,000,000: `SAGAFLOW_PLAN_ROWS=1000000 cargo nextest run --test store_plans
//! --no-capture`).
#![allow(clippy::unwrap_used)]

mod support;

use chrono::{Duration, Utc};
use sagaflow::store::{self, SagaFilter};
use serde_json::Value;
use sqlx::Execute;
use support::*;

/// Every node of a JSON plan, depth first.
fn nodes(plan: &Value, out: &mut Vec<Value>) {
    out.push(plan.clone());
    for child in plan["Plans"].as_array().into_iter().flatten() {
        nodes(child, out);
    }
}

/// EXPLAIN ANALYZE of `sql` with `args`: (the plan's nodes, execution ms).
async fn explain<'q>(
    pool: &sqlx::PgPool,
    mut query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> (Vec<Value>, f64) {
    let sql = format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", query.sql());
    let args = query.take_arguments().unwrap().unwrap_or_default();
    let plan: Value = sqlx::query_scalar_with(&sql, args)
        .fetch_one(pool)
        .await
        .unwrap();
    let mut all = Vec::new();
    nodes(&plan[0]["Plan"], &mut all);
    (all, plan[0]["Execution Time"].as_f64().unwrap())
}

fn summary(nodes: &[Value]) -> String {
    nodes
        .iter()
        .map(|n| {
            let index = n["Index Name"]
                .as_str()
                .map(|i| format!(" on {i}"))
                .unwrap_or_default();
            format!("{}{index}", n["Node Type"].as_str().unwrap_or("?"))
        })
        .collect::<Vec<_>>()
        .join(" > ")
}

#[tokio::test]
async fn list_filters_unfinished_scans_and_retention_read_indexes() {
    let rows: i64 = std::env::var("SAGAFLOW_PLAN_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let db = TestDb::new().await;
    let store = db.store().await;
    let pool = &store.pool;
    sqlx::query(
        "INSERT INTO definition_snapshots (name, version, source, file) \
         SELECT 'def-' || d, 'v1', '', 'x.yaml' FROM generate_series(0, 9) d",
    )
    .execute(pool)
    .await
    .unwrap();
    // One saga a second going back in time: 1 % failed, 2 % running, the rest finished.
    sqlx::query(
        "INSERT INTO sagas (id, definition, version, status, business_key, input_hash, state, created_at, updated_at) \
         SELECT gen_random_uuid(), 'def-' || (i % 10), 'v1', \
                CASE WHEN i % 100 = 0 THEN 'failed' WHEN i % 50 = 1 THEN 'running' \
                     WHEN i % 7 = 0 THEN 'compensated' ELSE 'completed' END, \
                'key-' || i, 'h', '{}'::jsonb, \
                now() - make_interval(secs => i), now() - make_interval(secs => i) + interval '2 seconds' \
         FROM generate_series(1, $1) i",
    )
    .bind(rows)
    .execute(pool)
    .await
    .unwrap();
    // What search reads: the step a saga is at, its failure, its input.
    sqlx::query(
        "UPDATE sagas SET current_step = 'step-' || (hashtext(id::text) & 7), \
         failure_reason = CASE WHEN status = 'failed' \
           THEN 'step after the pivot failed: reply `ship_lost`: courier ' || business_key END \
         WHERE status IN ('failed', 'running')",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO saga_inputs (saga_id, input) \
         SELECT id, jsonb_build_object('customer_id', 'c-' || (hashtext(id::text) & 4095), 'amount', 10) FROM sagas",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE sagas").execute(pool).await.unwrap();
    sqlx::query("ANALYZE saga_inputs")
        .execute(pool)
        .await
        .unwrap();

    let hour_ago = Utc::now() - Duration::hours(1);
    let day_ago = Utc::now() - Duration::days(1);
    let filters: Vec<(&str, SagaFilter)> = vec![
        ("no filter", SagaFilter::default()),
        (
            "definition",
            SagaFilter {
                definition: Some("def-3".into()),
                ..Default::default()
            },
        ),
        (
            "status failed",
            SagaFilter {
                status: Some("failed".into()),
                ..Default::default()
            },
        ),
        (
            "status running",
            SagaFilter {
                status: Some("running".into()),
                ..Default::default()
            },
        ),
        (
            "key",
            SagaFilter {
                key: Some("key-4242".into()),
                ..Default::default()
            },
        ),
        (
            "definition and status",
            SagaFilter {
                definition: Some("def-0".into()),
                status: Some("failed".into()),
                ..Default::default()
            },
        ),
        (
            "created in a day",
            SagaFilter {
                created_after: Some(day_ago),
                created_before: Some(hour_ago),
                ..Default::default()
            },
        ),
        (
            "updated in the last hour",
            SagaFilter {
                updated_after: Some(hour_ago),
                ..Default::default()
            },
        ),
        (
            "updated before a day ago",
            SagaFilter {
                updated_before: Some(day_ago),
                ..Default::default()
            },
        ),
        (
            "current step",
            SagaFilter {
                step: Some("step-3".into()),
                ..Default::default()
            },
        ),
        (
            "text in the failure",
            SagaFilter {
                failure: Some("courier key-4200".into()),
                ..Default::default()
            },
        ),
        (
            "key prefix",
            SagaFilter {
                key_prefix: Some("key-4242".into()),
                ..Default::default()
            },
        ),
        (
            "input field",
            SagaFilter {
                input_contains: Some(serde_json::json!({"customer_id": "c-42"})),
                ..Default::default()
            },
        ),
        (
            "a later page",
            SagaFilter {
                status: Some("failed".into()),
                after: Some((day_ago, uuid::Uuid::max())),
                ..Default::default()
            },
        ),
    ];
    let mut report = Vec::new();
    for (name, filter) in &filters {
        let mut q = store::list_query(filter, 51);
        let (plan, ms) = explain(pool, q.build()).await;
        report.push(format!("{name:<26} {ms:>8.2} ms  {}", summary(&plan)));
        for n in &plan {
            assert_ne!(n["Node Type"], "Seq Scan", "{name}: {}", summary(&plan));
        }
    }
    // Counts by status for a filter (a page's `counts`).
    let counted = SagaFilter {
        definition: Some("def-3".into()),
        step: Some("step-1".into()),
        ..Default::default()
    };
    let sql = "EXPLAIN (ANALYZE, FORMAT JSON) SELECT status, count(*) FROM (SELECT status FROM sagas \
               WHERE definition = $1 AND current_step = $2 LIMIT 100000) AS m GROUP BY status";
    let plan: Value = sqlx::query_scalar(sql)
        .bind(counted.definition.clone())
        .bind(counted.step.clone())
        .fetch_one(pool)
        .await
        .unwrap();
    let mut all = Vec::new();
    nodes(&plan[0]["Plan"], &mut all);
    let ms = plan[0]["Execution Time"].as_f64().unwrap();
    report.push(format!(
        "{:<26} {ms:>8.2} ms  {}",
        "counts by status",
        summary(&all)
    ));
    for n in &all {
        assert_ne!(n["Node Type"], "Seq Scan", "counts: {}", summary(&all));
    }
    let before = Utc::now() - Duration::days(2);
    for (name, query) in [
        ("count unfinished", sqlx::query(store::COUNT_UNFINISHED)),
        ("versions in use", sqlx::query(store::VERSIONS_IN_USE)),
        (
            "retention batch",
            sqlx::query(store::DELETE_FINISHED)
                .bind(before)
                .bind(1000_i64),
        ),
    ] {
        let (plan, ms) = explain(pool, query).await;
        report.push(format!("{name:<26} {ms:>8.2} ms  {}", summary(&plan)));
        for n in &plan {
            assert_ne!(n["Node Type"], "Seq Scan", "{name}: {}", summary(&plan));
        }
    }
    println!("{rows} sagas\n{}", report.join("\n"));
}
