//! The example Python participant (docs/examples/participant.py, confluent-kafka)
//! against the real service: proof that docs/protocol.md is enough to write a
//! participant in another language.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sagaflow::config::Settings;
use sagaflow::engine::SagaStatus;
use serde_json::json;
use support::*;
use uuid::Uuid;

const PYTHON: &str = ".venv/bin/python";

/// Fails (never skips) when the virtualenv or its confluent-kafka is missing.
fn require_python() {
    let python = repo_path(PYTHON);
    let probe = Command::new(&python)
        .args(["-c", "import confluent_kafka"])
        .current_dir(repo_path(""))
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{} cannot import confluent_kafka ({}): run scripts/test (or scripts/python-env) first",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "{} is missing ({e}): run scripts/test (or scripts/python-env) first",
            python.display()
        ),
    }
}

/// The Python participant as a child process, killed when dropped (declare it after the
/// broker so it goes first).
struct PythonParticipant(Child);

impl PythonParticipant {
    fn start(settings: &Settings, topics: &[String], fail_steps: &str) -> PythonParticipant {
        require_python();
        let child = Command::new(repo_path(PYTHON))
            .arg(repo_path("docs/examples/participant.py"))
            .current_dir(repo_path(""))
            .env("BOOTSTRAP_SERVERS", &settings.kafka.bootstrap_servers)
            .env("COMMAND_TOPICS", topics.join(","))
            .env(
                "GROUP_ID",
                format!("python-participant-{}", Uuid::new_v4().simple()),
            )
            .env("FETCH_WAIT_MAX_MS", "5")
            .env("FAIL_STEPS", fail_steps)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .spawn()
            .expect("start the python participant");
        PythonParticipant(child)
    }

    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.0.try_wait() {
            panic!("the python participant exited early: {status}");
        }
    }

    fn stop(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for PythonParticipant {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn order_input(id: &str) -> serde_json::Value {
    json!({"order_id": id, "customer_id": "c-1", "amount": 12.5, "currency": "EUR",
           "items": [{"sku": "A", "quantity": 1}]})
}

async fn start_order(svc: &InProcess, input: serde_json::Value) -> Uuid {
    let (status, body) = http(
        "POST",
        &svc.url("/v1/sagas/order-fulfilment"),
        Some(&json!({"input": input})),
        &[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )],
    )
    .await
    .expect("http");
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

/// Reply payloads the saga recorded, by `phase:step`.
async fn replies(store: &sagaflow::store::Store, id: Uuid) -> Vec<(String, serde_json::Value)> {
    timeline(store, id)
        .await
        .into_iter()
        .filter(|h| h.kind == "reply_received")
        .map(|h| {
            (
                format!(
                    "{}:{}",
                    h.phase.unwrap_or_default(),
                    h.step.unwrap_or_default()
                ),
                h.detail,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_participant_completes_order_fulfilment() {
    log_init();
    require_python();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let dir = repo_path("sagas");
    let settings = settings(&db, &broker, &dir);
    let svc = InProcess::start(settings.clone()).await;
    let defs: Vec<_> = load_defs(&settings.runtime.sagas_dir)
        .into_iter()
        .filter(|d| d.name == "order-fulfilment")
        .collect();
    let mut python = PythonParticipant::start(&settings, &command_topics(&defs), "");
    let store = db.store().await;

    let id = start_order(&svc, order_input("o-py-1")).await;
    let inst = wait_status(&store, id, SagaStatus::Completed, Duration::from_secs(60)).await;
    python.assert_running();
    let prefix = &id.simple().to_string()[..8];
    // The output is built from the Python participant's reply data.
    assert_eq!(
        inst.output,
        Some(json!({
            "order_id": "o-py-1",
            "payment_id": format!("payment-{prefix}"),
            "tracking_number": format!("tracking-{prefix}"),
        }))
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
    let replies = replies(&store, id).await;
    let types: Vec<_> = replies
        .iter()
        .map(|(at, d)| format!("{at}={}", d["type"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        types,
        [
            "command:reserve_stock=inventory.stock_reserved",
            "command:authorize_payment=payments.authorized",
            "command:capture_payment=payments.captured",
            "command:ship_order=shipping.shipment_created"
        ]
    );
    // capture_payment's command was rendered from authorize_payment's reply.
    let capture = timeline(&store, id)
        .await
        .into_iter()
        .find(|h| h.kind == "command_sent" && h.step.as_deref() == Some("capture_payment"))
        .unwrap();
    assert_eq!(
        capture.detail["payload"]["authorization_id"],
        json!(format!("authorization-{prefix}"))
    );

    python.stop();
    svc.stop().await;
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_participant_failure_compensates_in_reverse_order() {
    log_init();
    require_python();
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let dir = repo_path("sagas");
    let settings = settings(&db, &broker, &dir);
    let svc = InProcess::start(settings.clone()).await;
    let defs: Vec<_> = load_defs(&settings.runtime.sagas_dir)
        .into_iter()
        .filter(|d| d.name == "order-fulfilment")
        .collect();
    let mut python = PythonParticipant::start(&settings, &command_topics(&defs), "capture_payment");
    let store = db.store().await;

    let id = start_order(&svc, order_input("o-py-2")).await;
    let inst = wait_status(&store, id, SagaStatus::Compensated, Duration::from_secs(60)).await;
    python.assert_running();
    let failure = inst.failure.expect("the saga records why it compensated");
    assert_eq!(failure.step.as_deref(), Some("capture_payment"));
    assert!(
        failure.reason.contains("payments.capture_rejected"),
        "{failure:?}"
    );
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
    let replies = replies(&store, id).await;
    let compensations: Vec<_> = replies
        .iter()
        .filter(|(at, _)| at.starts_with("compensation:"))
        .map(|(at, d)| {
            (
                at.as_str(),
                d["type"].clone(),
                d["payload"]["undone"].clone(),
            )
        })
        .collect();
    // Both steps had run, so the participant reports real undos, newest first.
    assert_eq!(
        compensations,
        [
            (
                "compensation:authorize_payment",
                json!("payments.authorization_voided"),
                json!(true)
            ),
            (
                "compensation:reserve_stock",
                json!("inventory.stock_released"),
                json!(true)
            ),
        ]
    );

    python.stop();
    svc.stop().await;
    drop(broker);
}
