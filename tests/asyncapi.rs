//! The AsyncAPI document of the participant contract: served at `GET /v1/asyncapi` and
//! printed by `sagaflow asyncapi`, validated with the official AsyncAPI parser
//! (`scripts/asyncapi/check.js`, installed by `scripts/node-env`), and holding what a
//! participant team needs for each example step.
#![allow(clippy::unwrap_used)]

mod oneshot;
mod support;

use std::process::Command;

use oneshot::*;
use serde_json::Value;

/// Runs the AsyncAPI parser on `doc`: (passed, its output).
fn parser_verdict(doc: &Value) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("sagaflow-asyncapi-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("asyncapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let out = Command::new("node")
        .arg(support::repo_path("scripts/asyncapi/check.js"))
        .arg(&file)
        .output()
        .expect("node runs (scripts/node-env installs the parser)");
    std::fs::remove_dir_all(&dir).unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !text.contains("Cannot find module"),
        "run scripts/node-env first: {text}"
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_served_document_is_valid_asyncapi_and_matches_the_cli() {
    let app = app().await;
    let r = app.call("GET", "/v1/asyncapi", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (ok, out) = parser_verdict(&r.body);
    assert!(ok, "the AsyncAPI parser refuses the document:\n{out}");
    assert!(out.trim_end().ends_with("valid"), "{out}");

    let cli = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(["asyncapi", "--format", "json"])
        .current_dir(support::repo_path(""))
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let printed: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(
        printed, r.body,
        "sagaflow asyncapi prints what the API serves"
    );
}

#[test]
fn the_parser_refuses_a_broken_document() {
    // The check has teeth: a reference to a message that does not exist is an error.
    let doc = serde_json::json!({
        "asyncapi": "3.0.0",
        "info": {"title": "broken", "version": "1"},
        "channels": {"c": {"address": "t", "messages": {"m": {"$ref": "#/components/messages/missing"}}}},
    });
    let (ok, out) = parser_verdict(&doc);
    assert!(!ok, "{out}");
}

#[tokio::test]
async fn each_step_has_its_command_replies_headers_and_schemas() {
    let app = app().await;
    let doc = app.call("GET", "/v1/asyncapi", None, None).await.body;
    let messages = &doc["components"]["messages"];
    let command = &messages["order-fulfilment.reserve_stock.command"];
    assert_eq!(command["name"], "inventory.reserve_stock");
    assert_eq!(
        command["headers"]["properties"]["ce_sagastep"]["const"],
        "reserve_stock"
    );
    assert_eq!(
        command["headers"]["properties"]["ce_sagareplyto"]["const"],
        "orders.saga-replies"
    );
    for h in [
        "ce_id",
        "ce_sagaid",
        "ce_sagaattempt",
        "ce_sagaphase",
        "ce_sagatoken",
    ] {
        assert!(
            command["headers"]["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from(h)),
            "{h}"
        );
    }
    // Derived from the payload template and the input schema.
    let items = &command["payload"]["properties"]["items"];
    assert_eq!(items["type"], "array", "{command}");
    // Declared reply schemas, one message per reply type.
    let reserved =
        &messages["order-fulfilment.reserve_stock.command.reply.inventory.stock_reserved"];
    assert_eq!(
        reserved["payload"]["required"],
        serde_json::json!(["reservation_id"])
    );
    assert!(
        reserved["headers"]["required"]
            .as_array()
            .unwrap()
            .contains(&Value::from("ce_sagatoken"))
    );
    assert!(messages["order-fulfilment.reserve_stock.compensation"].is_object());
    // The send operation says where replies go and which types may come back.
    let op = &doc["operations"]["send.order-fulfilment.reserve_stock.command"];
    assert_eq!(op["action"], "send");
    assert_eq!(op["reply"]["messages"].as_array().unwrap().len(), 3);
    // Triggers, lifecycle events and dead letters have their channels too.
    let addresses: Vec<&str> = doc["channels"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|c| c["address"].as_str())
        .collect();
    for topic in [
        "accounts.events",
        "sagaflow.lifecycle",
        "sagaflow.dead-letter",
        "orders.saga-replies",
    ] {
        assert!(addresses.contains(&topic), "{topic} in {addresses:?}");
    }
}
