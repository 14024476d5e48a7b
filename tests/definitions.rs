#![allow(clippy::unwrap_used)]
//! Loading the example sagas and the invalid fixtures.

use std::path::Path;
use std::time::Duration;

use sagaflow::definition::node::Pos;
use sagaflow::definition::{
    self, Definition, InputError, MAX_FILE_SIZE, RetryPolicy, diagnostic::render,
};
use serde_json::json;

fn examples() -> Vec<Definition> {
    let (defs, diags) = definition::load_dir(Path::new("sagas"));
    assert!(diags.is_empty(), "{}", render(&diags));
    defs
}

#[test]
fn example_sagas_load_cleanly() {
    let names: Vec<String> = examples().into_iter().map(|d| d.name).collect();
    assert_eq!(
        names,
        ["order-fulfilment", "subscription-signup", "trip-booking"]
    );
}

/// Each invalid fixture must fail with exactly the diagnostics in its `.expected` file.
/// `BLESS=1 cargo test --test definitions` rewrites the expectations (review the diff!).
#[test]
fn invalid_fixtures_report_expected_diagnostics() {
    let dir = Path::new("tests/fixtures/invalid");
    let bless = std::env::var_os("BLESS").is_some();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("fixture dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 23, "only {} fixtures", paths.len());
    let mut failures = Vec::new();
    for path in &paths {
        let actual = match definition::load_file(path) {
            Ok(_) => "<loaded without diagnostics>\n".to_owned(),
            Err(diags) => render(&diags),
        };
        let expected_path = path.with_extension("expected");
        if bless {
            std::fs::write(&expected_path, &actual).expect("write expectation");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "--- {}\nexpected:\n{expected}actual:\n{actual}",
                path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} fixture(s) differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn example(name: &str) -> Definition {
    examples()
        .into_iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("example {name} missing"))
}

fn step_names(def: &Definition, stage: usize) -> Vec<&str> {
    def.stages[stage]
        .steps
        .iter()
        .map(|&i| def.steps[i].name.as_str())
        .collect()
}

#[test]
fn order_fulfilment_is_sequential_with_a_pivot_on_capture() {
    let def = example("order-fulfilment");
    assert_eq!(def.file, "sagas/order-fulfilment.yaml");
    assert_eq!(def.version.len(), 64);
    assert!(
        def.version
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(def.stages.len(), 4);
    assert!(
        def.stages
            .iter()
            .all(|s| s.group.is_none() && s.steps.len() == 1)
    );
    assert_eq!(def.pivot, Some(2));
    assert_eq!(def.steps[2].name, "capture_payment");
    assert_eq!(def.reply_topic, "orders.saga-replies");
    assert_eq!(def.deadline, Some(Duration::from_secs(3600)));
    let compensated: Vec<&str> = def
        .steps
        .iter()
        .filter(|s| s.compensation.is_some())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(compensated, ["reserve_stock", "authorize_payment"]);
    assert!(def.at_or_after_pivot(3) && !def.at_or_after_pivot(1));

    // Retry fields not written in a step come from `defaults.retry`, then the built-ins.
    let release = def.steps[0].compensation.as_ref().expect("release");
    assert_eq!(release.retry.max_attempts, 20);
    assert_eq!(release.retry.max_interval, Duration::from_secs(60));
    assert_eq!(release.retry.initial_interval, Duration::from_millis(250));
    assert_eq!(release.retry.multiplier, RetryPolicy::default().multiplier);
    assert_eq!(def.steps[0].timeout, Duration::from_secs(10));
    assert_eq!(def.steps[3].timeout, Duration::from_secs(60));
    assert_eq!(def.steps[1].retry.max_attempts, 5);

    let output = def.output.as_ref().expect("output").render(&json!({
        "input": {"order_id": "o-1"},
        "steps": {"capture_payment": {"reply": {"payment_id": "p-1"}},
                  "ship_order": {"reply": {"tracking_number": "TRK-9"}}},
    }));
    assert_eq!(
        output.expect("renders"),
        json!({"order_id": "o-1", "payment_id": "p-1", "tracking_number": "TRK-9"})
    );
}

#[test]
fn order_input_is_checked_against_the_schema() {
    let def = example("order-fulfilment");
    let good = json!({"order_id": "o-1", "customer_id": "c-1", "amount": 10.5, "currency": "EUR",
                      "items": [{"sku": "A", "quantity": 1}]});
    assert_eq!(def.validate_input(&good), Ok(()));
    let mut bad = good.clone();
    bad["amount"] = json!(-1);
    let errors = def.validate_input(&bad).expect_err("negative amount");
    assert_eq!(
        errors,
        [InputError {
            path: "/amount".into(),
            message: "-1 is less than the minimum of 0".into()
        }]
    );
}

#[test]
fn trip_booking_books_in_parallel_then_confirms() {
    let def = example("trip-booking");
    assert_eq!(def.stages.len(), 2);
    assert_eq!(def.stages[0].group.as_deref(), Some("book_travel"));
    assert_eq!(
        step_names(&def, 0),
        ["book_flight", "book_hotel", "book_car"]
    );
    assert_eq!(step_names(&def, 1), ["confirm_trip"]);
    assert_eq!(def.pivot, None);
    assert!(
        def.steps[..3]
            .iter()
            .all(|s| s.compensation.is_some() && s.stage == 0)
    );
    assert!(def.steps[3].compensation.is_none());
    assert_eq!(def.steps[0].retry.multiplier, 3.0);
    assert_eq!(
        def.steps[0]
            .compensation
            .as_ref()
            .expect("cancel")
            .retry
            .max_attempts,
        20
    );
}

#[test]
fn subscription_signup_is_triggered_and_conditional() {
    let def = example("subscription-signup");
    let trigger = def.trigger.as_ref().expect("trigger");
    assert_eq!(trigger.topic, "accounts.events");
    assert_eq!(trigger.event_type, "accounts.signup_completed");
    let event =
        json!({"event": {"account_id": "a-1", "email": "a@example.com", "plan": "premium"}});
    assert_eq!(trigger.key.render(&event).expect("key"), json!("a-1"));
    let input = trigger.input.render(&event).expect("input");
    assert_eq!(input["plan"], json!("premium"));
    assert_eq!(def.validate_input(&input), Ok(()));
    assert_eq!(def.deadline, Some(Duration::from_secs(2 * 86_400)));
    assert_eq!(def.pivot, Some(1));
    let gift = def.step("send_welcome_gift").expect("gift step");
    let when = gift.when.as_ref().expect("conditional");
    let ctx = |plan: &str| json!({"input": {"plan": plan, "address": {"city": "Oslo"}}});
    assert!(when.truthy(&ctx("premium")).expect("evaluates"));
    assert!(!when.truthy(&ctx("basic")).expect("evaluates"));
}

#[test]
fn file_too_large_is_rejected_before_parsing() {
    let source = format!("name: big\n# {}\n", "x".repeat(MAX_FILE_SIZE));
    let diags = definition::parse_definition("big.yaml", &source).expect_err("too large");
    assert_eq!(
        render(&diags),
        format!(
            "big.yaml:1:1: error: file is too large: {} bytes, the limit is 262144 bytes (256 KiB)\n  \
             help: split the saga or move large constants out of the definition\n",
            source.len()
        )
    );
}

#[test]
fn unreadable_file_is_a_diagnostic_at_the_start() {
    let diags = definition::load_file(Path::new("sagas/no-such-saga.yaml")).expect_err("missing");
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].pos, Pos::START);
    assert!(
        diags[0].message.starts_with("cannot read file: "),
        "{}",
        diags[0]
    );
}

#[test]
fn duplicate_saga_names_across_files_are_reported() {
    let dir = std::env::temp_dir().join(format!("sagaflow-defs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let saga = std::fs::read_to_string("sagas/trip-booking.yaml").expect("example");
    std::fs::write(dir.join("a.yaml"), &saga).expect("write");
    std::fs::write(dir.join("b.yml"), format!("# copy\n{saga}")).expect("write");
    std::fs::write(dir.join("notes.txt"), "not a saga").expect("write");
    let (defs, diags) = definition::load_dir(&dir);
    std::fs::remove_dir_all(&dir).expect("cleanup");
    assert_eq!(defs.len(), 1);
    assert_eq!(diags.len(), 1, "{}", render(&diags));
    assert!(diags[0].file.ends_with("b.yml"));
    assert_eq!(diags[0].pos, Pos { line: 2, column: 7 });
    assert_eq!(diags[0].message, "duplicate saga name `trip-booking`");
}

/// The issue asks for "what is wrong, and how to fix it": no diagnostic goes without help.
#[test]
fn every_fixture_diagnostic_has_help() {
    let (_, diags) = definition::load_dir(Path::new("tests/fixtures/invalid"));
    assert!(diags.len() > 40, "{}", render(&diags));
    let missing: Vec<String> = diags
        .iter()
        .filter(|d| d.help.as_deref().is_none_or(|h| h.trim().is_empty()))
        .map(ToString::to_string)
        .collect();
    assert!(missing.is_empty(), "without help:\n{}", missing.join("\n"));
}

const PIVOTED: &str = r#"
name: t
steps:
  - name: reserve
    command: {topic: a, type: a.reserve}
    reply: {success: [a.reserved]}
    compensation: {topic: a, type: a.release, reply: {success: [a.released]}}
  - name: charge
    pivot: true
    command: {topic: a, type: a.charge}
    reply: {success: [a.charged]}
    PIVOT_COMPENSATION
  - name: ship
    command: {topic: a, type: a.ship}
    reply: {success: [a.shipped]}
    AFTER_COMPENSATION
"#;

#[test]
fn compensation_none_is_accepted_at_and_after_the_pivot() {
    for (pivot, after) in [
        ("", ""),
        ("compensation: none", ""),
        ("", "compensation: none"),
        ("compensation: none", "compensation: none"),
    ] {
        let src = PIVOTED
            .replace("PIVOT_COMPENSATION", pivot)
            .replace("AFTER_COMPENSATION", after);
        let def = definition::parse_definition("t.yaml", &src)
            .unwrap_or_else(|d| panic!("{pivot:?} {after:?}:\n{}", render(&d)));
        assert_eq!(def.pivot, Some(1));
        assert!(def.steps[1].compensation.is_none() && def.steps[2].compensation.is_none());
    }
    let src = PIVOTED
        .replace(
            "PIVOT_COMPENSATION",
            "compensation: {topic: a, type: a.refund, reply: {success: [a.refunded]}}",
        )
        .replace("AFTER_COMPENSATION", "");
    let diags = definition::parse_definition("t.yaml", &src).expect_err("mapping at the pivot");
    assert_eq!(diags.len(), 1, "{}", render(&diags));
    assert_eq!(
        diags[0].message,
        "step `charge` is at or after the pivot, so it is never compensated"
    );
}
