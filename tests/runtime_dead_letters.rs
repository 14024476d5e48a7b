//! Dead letters an operator can act on, over a real PostgreSQL and Apache Kafka: a
//! trigger event rejected by the loaded definition is kept, listed and inspected; once
//! a fixed definition is loaded it is redriven and starts its saga exactly once; a
//! second redrive is refused, and another dead letter is discarded with a reason.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use sagaflow::engine::SagaStatus;
use sagaflow::messaging::kafka;
use sagaflow::participant::Decision;
use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

async fn call(svc: &InProcess, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, text) = http(method, &svc.url(path), body.as_ref(), &[])
        .await
        .unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_letter_fixed_by_a_reload_is_redriven_and_applied_once() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("tests/sagas-fast"));
    let dir = settings.runtime.sagas_dir.clone();
    let svc = InProcess::start(settings.clone()).await;
    let policy = Arc::new(|_: &_| (Decision::Success, Duration::ZERO));
    let p = participants(&settings, load_defs(&dir), policy);
    let store = db.store().await;
    let warm = start_saga(&svc.url(""), "fast-warmup", json!({})).await;
    wait_status(&store, warm, SagaStatus::Completed, WAIT).await;

    // A shop sends `userId`; the definition reads `user_id`: the trigger is rejected.
    let producer = kafka::producer(&settings.kafka).unwrap();
    let signups = topic(&settings, "fast.signups");
    let event = |id: &str| {
        cloud_event(
            signups.clone(),
            "u-1",
            (id, "/tests/shop", "fast.signup_completed"),
            &json!({"userId": "u-1", "plan": "pro"}),
        )
    };
    for id in ["signup-1", "signup-2"] {
        kafka::send(&producer, &event(id), Duration::from_secs(30))
            .await
            .unwrap();
    }
    let listed = eventually("both events to be dead-lettered", WAIT, || async {
        let (_, page) = call(
            &svc,
            "GET",
            "/v1/dead-letters?status=open&kind=trigger_rejected",
            None,
        )
        .await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        (items.len() == 2).then_some(items)
    })
    .await;
    let (newest, oldest) = (
        listed[0]["id"].as_i64().unwrap(),
        listed[1]["id"].as_i64().unwrap(),
    );
    assert_eq!(listed[1]["source_topic"], signups.as_str());
    assert!(
        listed[1]["reason"]
            .as_str()
            .unwrap()
            .contains("fast-trigger"),
        "{}",
        listed[1]
    );
    let (status, detail) = call(&svc, "GET", &format!("/v1/dead-letters/{oldest}"), None).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["payload"], r#"{"plan":"pro","userId":"u-1"}"#);
    assert_eq!(detail["redrivable"], true);

    // The fix: a definition that reads either spelling, loaded without a restart.
    let file = dir.join("fast-trigger.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap().replace(
        "{{ event.user_id }}",
        "{{ event.user_id | default(event.userId) }}",
    );
    std::fs::write(&file, yaml).unwrap();
    let (status, report) = call(&svc, "POST", "/v1/definitions/reload", None).await;
    assert_eq!(status, 200, "{report}");

    let body = json!({"reason": "fast-trigger reads userId now (OPS-51)"});
    let path = format!("/v1/dead-letters/{oldest}/redrive");
    let (status, summary) = call(&svc, "POST", &path, Some(body.clone())).await;
    assert_eq!(
        (status, summary["status"].as_str()),
        (200, Some("redriven")),
        "{summary}"
    );
    let (status, problem) = call(&svc, "POST", &path, Some(body)).await;
    assert_eq!(status, 409, "a second redrive is refused: {problem}");

    let started = eventually("the redriven event to start its saga", WAIT, || async {
        sqlx::query_scalar::<_, uuid::Uuid>(
            "SELECT id FROM sagas WHERE definition = 'fast-trigger' AND business_key = 'u-1'",
        )
        .fetch_optional(&store.pool)
        .await
        .unwrap()
    })
    .await;
    let inst = wait_status(&store, started, SagaStatus::Completed, WAIT).await;
    assert_eq!(inst.input["user_id"], "u-1");

    // The other one is the same signup sent twice: discard it, with a reason.
    let path = format!("/v1/dead-letters/{newest}/discard");
    let (status, problem) = call(&svc, "POST", &path, Some(json!({"reason": ""}))).await;
    assert_eq!(status, 422, "{problem}");
    let (status, summary) = call(
        &svc,
        "POST",
        &path,
        Some(json!({"reason": "duplicate of signup-1"})),
    )
    .await;
    assert_eq!(
        (status, summary["status"].as_str()),
        (200, Some("discarded")),
        "{summary}"
    );
    let (_, detail) = call(&svc, "GET", &format!("/v1/dead-letters/{newest}"), None).await;
    assert_eq!(detail["resolved_by"], "anonymous");
    assert_eq!(detail["resolution"], "duplicate of signup-1");

    // The operator CLI sees the same: one discarded, and it cannot be redriven now.
    let cli = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sagaflow"))
            .arg("dead-letters")
            .args(args)
            .env("SAGAFLOW_API_URL", svc.url(""))
            .output()
            .unwrap()
    };
    let o = cli(&["list", "--status", "discarded", "-o", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let page: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(page["items"][0]["id"], newest);
    let o = cli(&["show", &newest.to_string()]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("resolution        duplicate of signup-1"));
    let o = cli(&["redrive", &newest.to_string()]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // Exactly one saga, and nothing is open or dead-lettered again.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sagas WHERE definition = 'fast-trigger'")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let (_, open) = call(&svc, "GET", "/v1/dead-letters?status=open", None).await;
    assert_eq!(open["items"], json!([]), "{open}");
    p.stop().await;
    svc.stop().await;
}
