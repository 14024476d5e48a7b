//! End to end over a real port: the service with auth on, a broker and participants.
//! Sagas are started over HTTP and watched until they finish, found with filters and
//! pages, and aborted by an operator whose token name lands in the timeline.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use sagaflow::config::{Scope, Settings, TokenSettings};
use sagaflow::engine::Phase;
use sagaflow::participant::{Decision, Policy};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::*;

const WAIT: Duration = Duration::from_secs(30);
const READ: &str = "Bearer read-secret";
const WRITE: &str = "Bearer write-secret";
const ADMIN: &str = "Bearer admin-secret";

fn token(name: &str, secret: &str, scopes: &[Scope]) -> TokenSettings {
    TokenSettings {
        name: name.into(),
        sha256: Sha256::digest(secret.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        scopes: scopes.to_vec(),
    }
}

fn with_auth(mut s: Settings) -> Settings {
    s.api.auth.enabled = true;
    s.api.auth.tokens = vec![
        token("dashboard", "read-secret", &[Scope::Read]),
        token("checkout", "write-secret", &[Scope::Write]),
        token("oncall", "admin-secret", &[Scope::Read, Scope::Admin]),
    ];
    s
}

async fn call(method: &str, url: &str, body: Option<Value>, auth: &str) -> (u16, Value) {
    let headers = [("Authorization", auth)];
    let (status, text) = http(method, url, body.as_ref(), &headers).await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls `url` until the saga is `status`; on timeout, fails with the saga as last seen.
async fn wait_for(url: &str, status: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (code, body) = call("GET", url, None, READ).await;
        if code == 200 && body["status"] == status {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {url} to be {status}; last seen: {code} {body:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn sagas_started_over_http_finish_and_are_listed_with_filters_and_pages() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let dir = repo_path("tests/sagas-fast");
    let settings = with_auth(settings(&db, &broker, &dir));
    let svc = InProcess::start(settings.clone()).await;
    let policy: Policy = Arc::new(|_| (Decision::Success, Duration::ZERO));
    let p = participants(&settings, load_defs(&settings.runtime.sagas_dir), policy);

    let start = svc.url("/v1/sagas/fast-warmup");
    let (status, _) = call("POST", &start, Some(json!({"input": {}})), "Bearer nope").await;
    assert_eq!(status, 401);
    let (status, _) = call("POST", &start, Some(json!({"input": {}})), READ).await;
    assert_eq!(status, 403);
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = json!({"input": {}, "key": format!("warm-{n}")});
        let (status, started) = call("POST", &start, Some(body), WRITE).await;
        assert_eq!(status, 201, "{started}");
        ids.push(started["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let saga = wait_for(&svc.url(&format!("/v1/sagas/{id}")), "completed").await;
        let kinds: Vec<&str> = saga["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        assert!(kinds.len() >= 3, "{kinds:?}");
    }
    // The console's picture of a finished saga: every step marked as succeeded.
    let graph = svc.url(&format!("/v1/sagas/{}/graph", ids[0]));
    let svg = [("Authorization", READ), ("Accept", "image/svg+xml")];
    let (status, text) = http("GET", &graph, None, &svg).await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("<svg "), "{text}");
    let ping = "data-step=\"ping\" data-phase=\"command\" data-state=\"succeeded\"";
    assert!(text.contains(ping), "{text}");

    // Two pages of two, newest first, filtered by definition and status.
    let mut seen = Vec::new();
    let mut url = svc.url("/v1/sagas?definition=fast-warmup&status=completed&limit=2");
    loop {
        let (status, page) = call("GET", &url, None, READ).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_str().unwrap().to_owned()),
        );
        let Some(cursor) = page["next_cursor"].as_str() else {
            break;
        };
        url = svc.url(&format!(
            "/v1/sagas?definition=fast-warmup&status=completed&limit=2&cursor={cursor}"
        ));
    }
    ids.reverse();
    assert_eq!(seen, ids);
    let (_, by_key) = call("GET", &svc.url("/v1/sagas?key=warm-1"), None, READ).await;
    assert_eq!(by_key["items"][0]["id"].as_str(), Some(ids[1].as_str()));

    p.stop().await;
    svc.stop().await;
}

#[tokio::test]
async fn an_operator_aborts_over_http_and_is_named_in_the_timeline() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let dir = repo_path("tests/sagas-fast");
    let settings = with_auth(settings(&db, &broker, &dir));
    let svc = InProcess::start(settings.clone()).await;
    // Forward steps answer slowly (within their timeout) so the abort finds the saga
    // still running before its pivot.
    let policy: Policy = Arc::new(|c| match c.phase {
        Phase::Compensation => (Decision::Success, Duration::ZERO),
        _ => (Decision::Success, Duration::from_millis(300)),
    });
    let p = participants(&settings, load_defs(&settings.runtime.sagas_dir), policy);
    // The participants' group must have formed first: the steps' 400 ms timeouts and
    // three attempts leave no room for a slow join, and a compensation nobody answers
    // ends the saga `failed`, not `compensated`.
    let (status, warmup) = call(
        "POST",
        &svc.url("/v1/sagas/fast-warmup"),
        Some(json!({"input": {}})),
        WRITE,
    )
    .await;
    assert_eq!(status, 201, "{warmup}");
    let warmup = warmup["id"].as_str().unwrap().to_owned();
    wait_for(&svc.url(&format!("/v1/sagas/{warmup}")), "completed").await;

    let (status, started) = call(
        "POST",
        &svc.url("/v1/sagas/fast-linear"),
        Some(json!({"input": {"order_id": "o-1"}})),
        WRITE,
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let id = started["id"].as_str().unwrap().to_owned();
    let abort = svc.url(&format!("/v1/sagas/{id}/abort"));
    let reason = json!({"reason": "customer called"});
    assert_eq!(
        call("POST", &abort, Some(reason.clone()), WRITE).await.0,
        403
    );
    let (status, body) = call("POST", &abort, Some(reason.clone()), ADMIN).await;
    assert_eq!(status, 200, "{body}");
    // Idempotent.
    assert_eq!(call("POST", &abort, Some(reason), ADMIN).await.0, 200);

    let saga = wait_for(&svc.url(&format!("/v1/sagas/{id}")), "compensated").await;
    let aborts: Vec<&Value> = saga["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "operator_abort")
        .collect();
    assert_eq!(aborts[0]["detail"]["actor"], "oncall", "{aborts:?}");
    assert_eq!(aborts[0]["detail"]["reason"], "customer called");

    // Nothing left to retry: 409 with the reason.
    let (status, problem) = call(
        "POST",
        &svc.url(&format!("/v1/sagas/{id}/retry")),
        None,
        ADMIN,
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].is_string());

    p.stop().await;
    svc.stop().await;
}
