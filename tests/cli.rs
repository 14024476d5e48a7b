//! The `sagaflow` binary as a user runs it.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

fn sagaflow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const ORDER_INPUT: &str = r#"{"order_id":"o-1","customer_id":"c-1","amount":42.5,"currency":"EUR","items":[{"sku":"A","quantity":1}]}"#;

#[test]
fn validate_accepts_the_example_sagas() {
    let o = sagaflow(&["validate", "sagas"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("order-fulfilment"));
}

#[test]
fn validate_rejects_invalid_files_with_every_error_and_exit_1() {
    let o = sagaflow(&["validate", "tests/fixtures/invalid"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("tests/fixtures/invalid/"), "{err}");
    assert!(err.contains(": error: "), "{err}");
}

#[test]
fn validate_json_output_is_machine_readable() {
    let o = sagaflow(&["validate", "--format", "json", "tests/fixtures/invalid"]);
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(report["valid"], false);
    let first = &report["errors"][0];
    assert!(
        first["line"].as_u64().is_some() && first["column"].as_u64().is_some(),
        "{first}"
    );
    assert!(first["message"].is_string() && first["file"].is_string());
}

#[test]
fn simulate_failing_third_step_compensates_the_first_two_in_reverse() {
    let o = sagaflow(&[
        "simulate",
        "sagas/order-fulfilment.yaml",
        "--input",
        ORDER_INPUT,
        "--fail",
        "capture_payment",
    ]);
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
    let out = stdout(&o);
    let sends: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(" send "))
        .map(|l| l.split_whitespace().nth(3).unwrap_or_default())
        .collect();
    let comps: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("send compensation"))
        .map(|l| l.split_whitespace().nth(3).unwrap_or_default())
        .collect();
    assert_eq!(comps, ["authorize_payment#1", "reserve_stock#1"], "{out}");
    assert!(!sends.iter().any(|s| s.starts_with("ship_order")), "{out}");
    assert!(out.contains("status: compensated"), "{out}");
    assert_eq!(o.status.code(), Some(3), "compensated exits 3");
}

#[test]
fn simulate_happy_path_completes_with_output() {
    let o = sagaflow(&[
        "simulate",
        "sagas/order-fulfilment.yaml",
        "--input",
        ORDER_INPUT,
        "--reply",
        r#"ship_order={"tracking_number":"TRK-1"}"#,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("status: completed"), "{out}");
    assert!(out.contains("TRK-1"), "{out}");
}

#[test]
fn simulate_rejects_input_that_breaks_the_schema() {
    let o = sagaflow(&[
        "simulate",
        "sagas/order-fulfilment.yaml",
        "--input",
        r#"{"amount":-1}"#,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("schema"), "{}", stderr(&o));
}

#[test]
fn graph_prints_a_mermaid_flowchart() {
    let o = sagaflow(&["graph", "order-fulfilment"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("flowchart"), "{out}");
    assert!(out.contains("capture_payment"), "{out}");
}

#[test]
fn graph_draws_the_same_chart_as_svg() {
    let o = sagaflow(&["graph", "order-fulfilment", "--svg"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("<svg"), "{out}");
    for step in [
        "reserve_stock",
        "authorize_payment",
        "capture_payment",
        "ship_order",
    ] {
        assert!(
            out.contains(&format!("data-step=\"{step}\"")),
            "{step} missing:\n{out}"
        );
    }
    assert!(out.trim_end().ends_with("</svg>"), "{out}");
}

#[test]
fn serve_refuses_to_start_with_invalid_definitions() {
    let o = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .arg("serve")
        .env("SAGAFLOW_API__AUTH__ALLOW_UNAUTHENTICATED", "true")
        .env("SAGAFLOW_RUNTIME__SAGAS_DIR", "tests/fixtures/invalid")
        .env(
            "SAGAFLOW_DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/never",
        )
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs");
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("saga definitions are invalid"), "{err}");
    assert!(err.contains("tests/fixtures/invalid/"), "{err}");
    assert!(err.contains(": error: "), "{err}");
}

#[test]
fn serve_refuses_to_start_without_access_control_unless_told() {
    let o = Command::new(env!("CARGO_BIN_EXE_sagaflow"))
        .arg("serve")
        .env_remove("SAGAFLOW_API__AUTH__ENABLED")
        .env_remove("SAGAFLOW_API__AUTH__ALLOW_UNAUTHENTICATED")
        .env(
            "SAGAFLOW_DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/never",
        )
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs");
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("api.auth.allow_unauthenticated"), "{err}");
}

#[test]
fn payload_constants_are_sent_as_written() {
    let o = sagaflow(&["simulate", "tests/fixtures/values/yaml-1.1-lookalikes.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for exact in [
        r#""country":"NO""#,
        r#""flag":"on""#,
        r#""zip":"012345""#,
        r#""answer":"y""#,
        r#""time":"1:30""#,
        r#""n":42"#,
        r#""ratio":0.5"#,
        r#""yes_key":true"#,
    ] {
        assert!(out.contains(exact), "{exact} in {out}");
    }
}

#[test]
fn simulate_exit_codes_say_how_the_saga_ended() {
    // A step after the pivot that fails for good leaves the saga `failed`.
    let o = sagaflow(&[
        "simulate",
        "sagas/order-fulfilment.yaml",
        "--input",
        ORDER_INPUT,
        "--fail",
        "ship_order",
    ]);
    assert!(stdout(&o).contains("status: failed"), "{}", stdout(&o));
    assert_eq!(o.status.code(), Some(4));
    let o = sagaflow(&[
        "simulate",
        "sagas/order-fulfilment.yaml",
        "--input",
        ORDER_INPUT,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn validate_warns_about_yaml_11_lookalikes_and_still_passes() {
    let o = sagaflow(&["validate", "tests/fixtures/values/yaml-1.1-lookalikes.yaml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    for (at, text) in [
        (
            ":9:",
            "`NO` is the string \"NO\" here (YAML 1.2), but YAML 1.1 tools read it as the boolean false",
        ),
        (":9:", "`on` is the string \"on\" here"),
        (
            ":9:",
            "`012345` is the string \"012345\" here (YAML 1.2), but YAML 1.1 tools read it as an octal number (5349)",
        ),
        (":9:", "`y` is the string"),
        // A key too: `n: 42` is `false: 42` to YAML 1.1.
        (
            ":9:",
            "`n` is the string \"n\" here (YAML 1.2), but YAML 1.1 tools read it as the boolean false",
        ),
        (
            ":9:",
            "`1:30` is the string \"1:30\" here (YAML 1.2), but YAML 1.1 tools read it as the number 90 (base 60)",
        ),
    ] {
        assert!(
            err.lines()
                .any(|l| l.contains(at) && l.contains("warning:") && l.contains(text)),
            "{text} in {err}"
        );
    }
    assert!(err.contains("help: quote it ('NO')"), "{err}");
    assert!(err.contains("6 warning(s)"), "{err}");
    let o = sagaflow(&["validate", "--format", "json", "tests/fixtures/values"]);
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["warnings"].as_array().unwrap().len(), 6, "{report}");
    assert_eq!(report["warnings"][0]["severity"], "warning");
}

#[test]
fn validate_refuses_an_empty_directory() {
    let dir = std::env::temp_dir().join(format!("sagaflow-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "not a saga").unwrap();
    let o = sagaflow(&["validate", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("error: no saga definitions here"),
        "{}",
        stderr(&o)
    );
}
