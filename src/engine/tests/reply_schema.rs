//! Replies whose data breaks their type's schema are no answer: recorded, never
//! applied, and the attempt waits on (it times out and is retried).

use serde_json::json;

use super::fixtures::Driver;
use crate::engine::{Effect, HistoryKind, Phase, SagaStatus, StepStatus};

const RESERVE: &str = r#"
name: schemas
defaults:
  timeout: 5s
  retry: {max_attempts: 2, initial_interval: 100ms}
steps:
  - name: reserve
    command: {topic: inventory, type: reserve}
    reply:
      success: [reserved]
      failure: [{type: out_of_stock}]
      schemas:
        reserved: {type: object, required: [id], properties: {id: {type: string}}}
        out_of_stock: {type: object, required: [sku], properties: {sku: {type: string}}}
    compensation: {topic: inventory, type: release, reply: {success: [released]}}
  - name: pay
    pivot: true
    command: {topic: payments, type: pay, payload: {reservation: "{{ steps.reserve.reply.id }}"}}
    reply:
      success: [paid]
      schemas:
        paid: {type: object, required: [receipt]}
"#;

fn ignored_reasons(d: &Driver) -> Vec<String> {
    d.last
        .iter()
        .filter_map(|e| match e {
            Effect::Record(h) if h.kind == HistoryKind::ReplyIgnored => {
                h.detail["why"].as_str().map(str::to_owned)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_success_reply_that_breaks_its_schema_is_not_applied() {
    let mut d = Driver::start(RESERVE, json!({}));
    d.reply("reserve", 1, "reserved", json!({"id": 42}));
    assert_eq!(
        ignored_reasons(&d),
        ["reply `reserved` breaks its schema: /id: value is not of type \"string\""]
    );
    assert_eq!(d.inst.steps[0].forward.status, StepStatus::Running);
    assert_eq!(d.inst.steps[0].reply, None);
    assert!(d.last_sent().is_empty(), "nothing moves on");
    // The attempt times out like one that got no reply, and is retried.
    d.timeout("reserve", Phase::Command, 1);
    d.retry_due("reserve", Phase::Command, 2);
    assert_eq!(d.last_sent(), ["cmd:reserve#2"]);
    d.reply("reserve", 2, "reserved", json!({"id": "r-1"}));
    assert_eq!(d.last_sent(), ["cmd:pay#1"]);
    assert_eq!(
        d.outgoing().last().unwrap().payload,
        json!({"reservation": "r-1"})
    );
}

#[test]
fn a_failure_reply_that_breaks_its_schema_is_not_applied_either() {
    let mut d = Driver::start(RESERVE, json!({}));
    d.reply("reserve", 1, "out_of_stock", json!({"why": "gone"}));
    assert!(
        ignored_reasons(&d)[0].contains("\"sku\" is a required property"),
        "{:?}",
        ignored_reasons(&d)
    );
    assert_eq!(d.inst.status, SagaStatus::Running);
    d.reply("reserve", 1, "out_of_stock", json!({"sku": "A"}));
    assert_eq!(d.inst.status, SagaStatus::Compensating);
}

#[test]
fn an_invalid_late_reply_does_not_settle_a_pivot_of_unknown_outcome() {
    let mut d = Driver::start(RESERVE, json!({}));
    d.reply("reserve", 1, "reserved", json!({"id": "r-1"}));
    for attempt in 1..=2 {
        d.timeout("pay", Phase::Command, attempt);
        if attempt == 1 {
            d.retry_due("pay", Phase::Command, 2);
        }
    }
    assert_eq!(
        d.inst.status,
        SagaStatus::Failed,
        "the pivot's outcome is unknown"
    );
    d.reply("pay", 1, "paid", json!({}));
    assert!(ignored_reasons(&d)[0].contains("breaks its schema"));
    assert_eq!(d.inst.status, SagaStatus::Failed);
    d.reply("pay", 2, "paid", json!({"receipt": "x"}));
    assert_eq!(d.inst.status, SagaStatus::Completed);
}
