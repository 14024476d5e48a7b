//! A definition changed on disk while sagas run: running sagas finish on the version
//! they started with, new sagas use the new one.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sagaflow::engine::SagaStatus;
use sagaflow::participant::{Decision, Policy};
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

fn step(name: &str) -> String {
    format!(
        "  - name: {name}\n    command: {{topic: ver.work, type: ver.{name}, payload: {{v: \"{{{{ input.v }}}}\"}}}}\n    reply: {{success: [ver.{name}_done]}}\n    compensation: none\n"
    )
}

fn definition(steps: &[&str]) -> String {
    let mut yaml = String::from(
        "name: versioned\ndefaults: {reply_topic: ver.replies, timeout: 30s}\nsteps:\n",
    );
    for s in steps {
        yaml.push_str(&step(s));
    }
    yaml
}

fn temp_dir(yaml: &str) -> PathBuf {
    sagas_dir_with("versioned.yaml", yaml)
}

async fn start(svc: &Process, v: u32) -> Uuid {
    let url = format!("http://127.0.0.1:{}/v1/sagas/versioned", svc.port);
    let (status, body) = http("POST", &url, Some(&json!({"input": {"v": v}})), &[])
        .await
        .unwrap();
    assert_eq!(status, 201, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_sagas_keep_their_version_across_a_restart_with_a_changed_definition() {
    log_init();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let dir = temp_dir(&definition(&["a", "b", "c"]));
    let v2 = definition(&["a", "b", "c", "d"]);
    let participant_dir = temp_dir(&v2);
    let settings = settings(&db, &broker, &dir);
    let store = db.store().await;
    // Step `b` of the first saga answers late, so it is in flight across the restart.
    let policy: Policy = Arc::new(|c| {
        let slow = c.step == "b" && c.payload["v"] == json!(1);
        (
            Decision::Success,
            if slow {
                Duration::from_secs(2)
            } else {
                Duration::ZERO
            },
        )
    });
    let p = participants(
        &settings,
        load_defs(&namespaced_sagas(&participant_dir, namespace(&settings))),
        policy,
    );

    let mut svc = Process::start(&settings);
    svc.wait_ready().await;
    let first = start(&svc, 1).await;
    eventually("b to be sent", Duration::from_secs(30), || async {
        sent(&store, first)
            .await
            .contains(&"cmd:b#1".to_owned())
            .then_some(())
    })
    .await;
    // Stopped gracefully as the group's last member; the next process re-forms the group.
    assert!(svc.terminate().success(), "graceful shutdown exits 0");
    assert_eq!(saga(&store, first).await.status, SagaStatus::Running);

    std::fs::write(
        settings.runtime.sagas_dir.join("versioned.yaml"),
        namespaced_yaml(&v2, namespace(&settings)),
    )
    .unwrap();
    let svc = Process::start(&settings);
    svc.wait_ready().await;
    let second = start(&svc, 2).await;

    let old = wait_status(
        &store,
        first,
        SagaStatus::Completed,
        Duration::from_secs(30),
    )
    .await;
    let new = wait_status(
        &store,
        second,
        SagaStatus::Completed,
        Duration::from_secs(30),
    )
    .await;
    assert_ne!(
        old.version, new.version,
        "the new saga runs on the new version"
    );
    assert_eq!(sent(&store, first).await, ["cmd:a#1", "cmd:b#1", "cmd:c#1"]);
    assert_eq!(
        sent(&store, second).await,
        ["cmd:a#1", "cmd:b#1", "cmd:c#1", "cmd:d#1"]
    );
    p.stop().await;
    drop(svc);
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(participant_dir);
}
