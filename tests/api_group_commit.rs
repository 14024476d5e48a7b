//! Starts over HTTP share transactions (group commit) and still answer exactly as one
//! by one: concurrent starts with one business key make one saga, the others get it
//! back, and every 201 names a saga that is stored with its input.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};
use support::*;
use tokio::sync::Barrier;

const DISTINCT: usize = 96;
const SAME_KEY: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_share_commits_and_one_key_still_makes_one_saga() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("tests/sagas-fast"));
    let svc = InProcess::start(settings).await;
    let url = svc.url("/v1/sagas/fast-warmup");

    let barrier = Arc::new(Barrier::new(DISTINCT + SAME_KEY));
    let mut calls = Vec::new();
    for n in 0..DISTINCT + SAME_KEY {
        let (url, barrier) = (url.clone(), barrier.clone());
        let key = if n < DISTINCT {
            format!("k-{n}")
        } else {
            "shared".into()
        };
        calls.push(tokio::spawn(async move {
            barrier.wait().await;
            let body = json!({"input": {}, "key": key});
            let (status, text) = http("POST", &url, Some(&body), &[]).await.unwrap();
            let v: Value = serde_json::from_str(&text).unwrap();
            (key, status, v)
        }));
    }
    let mut created = HashSet::new();
    let mut shared = Vec::new();
    for call in calls {
        let (key, status, v) = call.await.unwrap();
        let id = v["id"].as_str().unwrap_or_else(|| panic!("{v}")).to_owned();
        if key == "shared" {
            shared.push((status, id));
        } else {
            assert_eq!(status, 201, "{key}: {v}");
            assert!(created.insert(id), "{key}: an id answered twice");
        }
    }
    let first: Vec<_> = shared.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(first.len(), 1, "one start creates the saga: {shared:?}");
    assert!(
        shared
            .iter()
            .all(|(s, id)| *id == first[0].1 && (*s == 201 || *s == 200)),
        "the other starts with the key get it back: {shared:?}"
    );

    let store = db.store().await;
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sagas s JOIN saga_inputs i ON i.saga_id = s.id")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(stored as usize, DISTINCT + 1);
    // Rows inserted by one transaction share its id (`xmin`) until they are updated;
    // nothing answers these sagas' commands, so each row is as its start wrote it.
    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM saga_inputs")
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert!(
        (transactions as usize) < DISTINCT + 1,
        "{} starts took {transactions} transactions: none was shared",
        DISTINCT + 1
    );
    eprintln!("{} starts in {transactions} transactions", DISTINCT + 1);
    svc.stop().await;
}
