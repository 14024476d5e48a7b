//! Reloading definitions without a restart, over a real PostgreSQL and Apache Kafka:
//! a changed file gives new sagas a new version while running ones keep theirs; an
//! invalid file, or one that needs a topic the consumer does not read, changes nothing;
//! SIGHUP does what the endpoint does.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use sagaflow::engine::SagaStatus;
use sagaflow::participant::Decision;
use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(30);

async fn post(svc: &InProcess, path: &str) -> (u16, Value) {
    let (status, text) = http("POST", &svc.url(path), None, &[]).await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn current_version(svc: &InProcess, name: &str) -> String {
    let (_, text) = http_get(&svc.url(&format!("/v1/definitions/{name}")))
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["current"]["version"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_checks_everything_first_and_running_sagas_keep_their_version() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("tests/sagas-fast"));
    let dir = settings.runtime.sagas_dir.clone();
    let svc = InProcess::start(settings.clone()).await;
    let policy = Arc::new(|_: &_| (Decision::Success, Duration::ZERO));
    let p = participants(&settings, load_defs(&dir), policy);
    let store = db.store().await;
    let first = start_saga(&svc.url(""), "fast-warmup", json!({})).await;
    wait_status(&store, first, SagaStatus::Completed, WAIT).await;
    let v1 = current_version(&svc, "fast-warmup").await;

    // A changed file: a new version for new sagas.
    let file = dir.join("fast-warmup.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{yaml}\n# changed\n")).unwrap();
    let (status, report) = post(&svc, "/v1/definitions/reload").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["changed"], json!(["fast-warmup"]), "{report}");
    let v2 = current_version(&svc, "fast-warmup").await;
    assert_ne!(v1, v2);
    let second = start_saga(&svc.url(""), "fast-warmup", json!({})).await;
    let inst = wait_status(&store, second, SagaStatus::Completed, WAIT).await;
    assert_eq!(inst.version, v2);
    assert_eq!(saga(&store, first).await.version, v1);

    // An invalid file: refused with its file, line and column; nothing changes.
    std::fs::write(dir.join("broken.yaml"), "name: broken\nstepz: []\n").unwrap();
    let (status, problem) = post(&svc, "/v1/definitions/reload").await;
    assert_eq!(status, 422, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("broken.yaml:2:1"), "{detail}");
    assert_eq!(current_version(&svc, "fast-warmup").await, v2);
    std::fs::remove_file(dir.join("broken.yaml")).unwrap();

    // A definition replying on a topic the consumer does not read: restart instead.
    let extra = yaml
        .replace("name: fast-warmup", "name: fast-extra")
        .replace("fast.replies", "fast.extra.replies");
    std::fs::write(dir.join("fast-extra.yaml"), &extra).unwrap();
    let (status, problem) = post(&svc, "/v1/definitions/reload").await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("fast.extra.replies"),
        "{problem}"
    );
    let (status, _) = http_get(&svc.url("/v1/definitions/fast-extra"))
        .await
        .unwrap();
    assert_eq!(status, 404);
    std::fs::remove_file(dir.join("fast-extra.yaml")).unwrap();

    // Dropping the only definition a trigger topic starts: the consumer would keep
    // reading it for nothing, so that takes a restart.
    let trigger = dir.join("fast-trigger.yaml");
    let kept = std::fs::read_to_string(&trigger).unwrap();
    std::fs::remove_file(&trigger).unwrap();
    let (status, problem) = post(&svc, "/v1/definitions/reload").await;
    assert_eq!(status, 409, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("fast.signups"),
        "{problem}"
    );
    std::fs::write(&trigger, kept).unwrap();

    // SIGHUP reloads too.
    std::fs::write(&file, format!("{yaml}\n# changed again\n")).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually("SIGHUP to load the new version", WAIT, || async {
        let v = current_version(&svc, "fast-warmup").await;
        (v != v2).then_some(())
    })
    .await;
    p.stop().await;
    svc.stop().await;
}
