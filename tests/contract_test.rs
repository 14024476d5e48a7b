//! `sagaflow contract-test` against participants on Apache Kafka: it passes a correct
//! participant and fails a broken one, naming each broken rule, with exit status 1.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use sagaflow::participant::{Decision, Policy};
use serde_json::json;
use support::*;

/// Settings for the example sagas in a namespace of their own, with their topics created.
async fn setup() -> (TestDb, Broker, sagaflow::config::Settings) {
    let db = TestDb::new().await;
    let broker = Broker::shared();
    let settings = settings(&db, &broker, &repo_path("sagas"));
    let (defs, _) = sagaflow::definition::load_dir(&settings.runtime.sagas_dir);
    sagaflow::runtime::service::ensure_topics(
        &settings,
        &sagaflow::runtime::registry::Registry::new(defs),
    )
    .await
    .unwrap();
    (db, broker, settings)
}

/// Runs the binary against the namespaced example sagas: (exit code, stdout). It
/// blocks its thread, so the tests run on a multi-thread runtime and the participants
/// answer meanwhile.
fn contract_test(settings: &sagaflow::config::Settings, extra: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .arg("contract-test")
        .arg("--bootstrap-servers")
        .arg(&settings.kafka.bootstrap_servers)
        .arg("--dir")
        .arg(&settings.runtime.sagas_dir)
        .args(["--timeout-ms", "8000"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), format!("{stdout}{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_participant_passes() {
    let (_db, _broker, settings) = setup().await;
    let ok: Policy = Arc::new(|_c| (Decision::Success, Duration::ZERO));
    let p = participants(&settings, load_defs(&settings.runtime.sagas_dir), ok);
    let (code, out) = contract_test(&settings, &["--saga", "order-fulfilment"]);
    p.stop().await;
    assert_eq!(code, 0, "{out}");
    // Four commands and two compensations, each checked and repeated.
    assert!(
        out.contains(
            "ok    order-fulfilment reserve_stock command: returns every field the saga reads"
        ),
        "{out}"
    );
    assert!(out.contains("ok    order-fulfilment authorize_payment compensation: compensation of a step that never ran succeeds"), "{out}");
    assert!(
        out.contains(
            "ok    order-fulfilment ship_order command: answers a repeat with an equivalent reply"
        ),
        "{out}"
    );
    // Every step reached: 4 commands and 2 compensations, 7 checks each.
    assert!(out.contains("42 checks, 0 failed"), "{out}");
    let (code, out) = contract_test(&settings, &["--step", "reserve_stok"]);
    assert_eq!(
        code, 2,
        "a misspelt step is a usage mistake, not an empty pass: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_participant_fails_with_every_broken_rule_named() {
    let (_db, _broker, settings) = setup().await;
    // reserve_stock: data without the field the saga reads (and its schema requires);
    // authorize_payment: a type the step does not declare; the compensation of
    // reserve_stock: "nothing to undo" answered as a failure; ship_order: silence.
    let broken: Policy = Arc::new(|c| {
        let d = match (c.step.as_str(), c.phase.as_str()) {
            ("reserve_stock", "command") => Decision::Custom {
                reply_type: "inventory.stock_reserved".into(),
                payload: json!({"reservation": 7}),
            },
            ("authorize_payment", "command") => Decision::Custom {
                reply_type: "payments.ok".into(),
                payload: json!({}),
            },
            ("reserve_stock", "compensation") => Decision::Custom {
                reply_type: "inventory.out_of_stock".into(),
                payload: json!({"error": "never reserved"}),
            },
            ("ship_order", _) => Decision::Silence,
            _ => Decision::Success,
        };
        (d, Duration::ZERO)
    });
    let p = participants(&settings, load_defs(&settings.runtime.sagas_dir), broken);
    let (code, out) = contract_test(&settings, &["--saga", "order-fulfilment"]);
    p.stop().await;
    assert_eq!(code, 1, "{out}");
    for expected in [
        "FAIL  order-fulfilment reserve_stock command: payload matches its schema: reply `inventory.stock_reserved` breaks its schema",
        "FAIL  order-fulfilment reserve_stock command: returns every field the saga reads: the saga's templates read reservation_id, missing from the reply",
        "FAIL  order-fulfilment authorize_payment command: replies with a declared type: `payments.ok` is not declared for this step",
        "FAIL  order-fulfilment reserve_stock compensation: compensation of a step that never ran succeeds",
        "FAIL  order-fulfilment ship_order command: answers: no reply",
        "ok    order-fulfilment capture_payment command: answers",
    ] {
        assert!(out.contains(expected), "{expected}\nin\n{out}");
    }
}
