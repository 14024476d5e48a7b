//! Late replies and the operator's ways out: resolve, terminate, retry now.

use serde_json::json;

use super::fixtures::{Driver, ORDER};
use crate::engine::{
    Effect, Event, HistoryKind, Phase, Rejection, Resolution, SagaStatus, StepStatus, Timer,
};

fn order() -> Driver {
    Driver::start(ORDER, json!({"order_id": "o-1", "amount": 10}))
}

/// Reserve and authorize succeed; both attempts of the pivot time out.
fn pivot_unknown() -> Driver {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    d.reply("authorize", 1, "authorized", json!({}));
    d.timeout("capture", Phase::Command, 1);
    d.retry_due("capture", Phase::Command, 2);
    d.timeout("capture", Phase::Command, 2);
    assert_eq!(d.inst.status, SagaStatus::Failed);
    d
}

fn history(d: &Driver, kind: HistoryKind) -> Vec<serde_json::Value> {
    d.last
        .iter()
        .filter_map(|e| match e {
            Effect::Record(h) if h.kind == kind => Some(h.detail.clone()),
            _ => None,
        })
        .collect()
}

fn resolve(step: &str, phase: Phase, outcome: Resolution) -> Event {
    Event::Resolve {
        step: step.into(),
        phase,
        attempt: None,
        outcome,
        reason: "checked with the team".into(),
        actor: "ops".into(),
    }
}

fn refusal(d: &mut Driver, event: Event) -> String {
    match d.try_apply(event) {
        Err(Rejection::NotAllowed { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_late_success_of_an_unknown_pivot_moves_the_saga_forward() {
    let mut d = pivot_unknown();
    d.reply("capture", 1, "captured", json!({"capture": "c-1"}));
    let late = history(&d, HistoryKind::LateReply);
    assert_eq!(late[0]["effect"], "settled: the step succeeded");
    assert!(history(&d, HistoryKind::ReplyIgnored).is_empty());
    assert_eq!(d.inst.status, SagaStatus::Running);
    assert_eq!(d.inst.failure, None);
    assert_eq!(d.inst.steps[2].reply, Some(json!({"capture": "c-1"})));
    assert_eq!(d.last_sent(), ["cmd:ship#1"]);
    // The other timed-out attempt's answer is late news too, and changes nothing now.
    d.reply("capture", 2, "captured", json!({}));
    let late = history(&d, HistoryKind::LateReply);
    assert_eq!(late[0]["effect"], "none: the step had already succeeded");
    // A redelivery of an answered attempt is the only kind of duplicate.
    d.reply("capture", 2, "captured", json!({}));
    let ignored = history(&d, HistoryKind::ReplyIgnored);
    assert!(ignored[0]["why"].as_str().unwrap().starts_with("duplicate"));
}

#[test]
fn late_failures_of_every_unknown_pivot_attempt_start_the_rollback() {
    let mut d = pivot_unknown();
    d.reply("capture", 2, "declined", json!({}));
    let late = history(&d, HistoryKind::LateReply);
    assert_eq!(
        late[0]["effect"],
        "none: other attempts' outcomes are still unknown"
    );
    assert_eq!(d.inst.status, SagaStatus::Failed);
    d.reply("capture", 1, "declined", json!({}));
    let late = history(&d, HistoryKind::LateReply);
    assert_eq!(
        late[0]["effect"],
        "settled: the outcome is known now, and it is a failure"
    );
    assert_eq!(d.inst.status, SagaStatus::Compensating);
    assert_eq!(d.last_sent(), ["comp:authorize#1"]);
}

#[test]
fn a_pivot_that_fails_after_an_unknown_attempt_stays_unknown() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    d.reply("authorize", 1, "authorized", json!({}));
    d.timeout("capture", Phase::Command, 1);
    d.retry_due("capture", Phase::Command, 2);
    // Attempt 2 is declined, but attempt 1 may have captured: no rollback yet.
    d.reply("capture", 2, "declined", json!({}));
    assert_eq!(d.inst.status, SagaStatus::Failed);
    assert!(!d.all_sent().iter().any(|s| s.starts_with("comp:")));
    d.reply("capture", 1, "captured", json!({}));
    assert_eq!(d.inst.status, SagaStatus::Running);
    assert_eq!(d.last_sent(), ["cmd:ship#1"]);
}

#[test]
fn a_late_reply_to_an_earlier_attempt_settles_while_a_newer_one_is_in_flight() {
    let mut d = order();
    d.timeout("reserve", Phase::Command, 1);
    d.retry_due("reserve", Phase::Command, 2);
    assert_eq!(d.last_sent(), ["cmd:reserve#2"]);
    d.reply("reserve", 1, "reserved", json!({"id": "from-1"}));
    assert_eq!(d.inst.steps[0].forward.status, StepStatus::Succeeded);
    assert_eq!(d.inst.steps[0].reply, Some(json!({"id": "from-1"})));
    // Attempt 2's timeout is cancelled; its own answer later is late, not a duplicate.
    assert!(d.last.iter().any(|e| matches!(e,
        Effect::CancelTimer { timer: Timer::StepTimeout { step, attempt: 2, .. } } if step == "reserve")));
    assert_eq!(d.last_sent(), ["cmd:authorize#1"]);
    d.reply("reserve", 2, "reserved", json!({"id": "from-2"}));
    assert_eq!(history(&d, HistoryKind::LateReply).len(), 1);
    assert_eq!(d.inst.steps[0].reply, Some(json!({"id": "from-1"})));
}

#[test]
fn a_late_success_of_a_failed_compensation_counts_as_compensated() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    d.reply("authorize", 1, "declined", json!({}));
    assert_eq!(d.last_sent(), ["comp:authorize#1"]);
    d.timeout("authorize", Phase::Compensation, 1);
    d.retry_due("authorize", Phase::Compensation, 2);
    d.timeout("authorize", Phase::Compensation, 2);
    assert_eq!(d.inst.status, SagaStatus::Failed);
    assert_eq!(d.inst.steps[1].compensation.status, StepStatus::TimedOut);
    d.comp_reply("authorize", 1, "voided");
    assert_eq!(d.inst.steps[1].compensation.status, StepStatus::Succeeded);
    assert_eq!(d.inst.status, SagaStatus::Compensating);
    assert_eq!(d.last_sent(), ["comp:reserve#1"]);
    d.comp_reply("reserve", 1, "released");
    assert_eq!(d.inst.status, SagaStatus::Compensated);
}

#[test]
fn a_late_command_success_during_rollback_is_noted_and_compensated() {
    let mut d = order();
    d.timeout("reserve", Phase::Command, 1);
    d.retry_due("reserve", Phase::Command, 2);
    d.reply("reserve", 2, "out_of_stock", json!({}));
    assert_eq!(d.last_sent(), ["comp:reserve#1"]);
    d.reply("reserve", 1, "reserved", json!({"id": "r-9"}));
    let late = history(&d, HistoryKind::LateReply);
    assert_eq!(
        late[0]["effect"],
        "noted: the step succeeded; it is compensated with the others"
    );
    assert_eq!(d.inst.steps[0].forward.status, StepStatus::Succeeded);
    assert_eq!(d.inst.status, SagaStatus::Compensating);
}

#[test]
fn resolving_a_step_in_backoff_settles_it_and_the_saga_goes_on() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    d.reply("authorize", 1, "authorized", json!({}));
    d.reply("capture", 1, "captured", json!({}));
    d.reply("ship", 1, "busy", json!({}));
    assert_eq!(d.inst.steps[3].forward.status, StepStatus::WaitingRetry);
    let reason = refusal(
        &mut d,
        Event::Abort {
            reason: "x".into(),
            actor: "ops".into(),
        },
    );
    assert!(
        reason.contains("use retry, or resolve-step (`ship`), or terminate"),
        "{reason}"
    );
    d.apply(resolve(
        "ship",
        Phase::Command,
        Resolution::Succeeded {
            payload: json!({"tracking": "by-hand"}),
        },
    ));
    let detail = history(&d, HistoryKind::OperatorResolve);
    assert_eq!(detail[0]["actor"], "ops");
    assert_eq!(detail[0]["outcome"], "succeeded");
    assert!(
        d.last.iter().any(|e| matches!(e,
        Effect::CancelTimer { timer: Timer::RetryDue { step, attempt: 2, .. } } if step == "ship"))
    );
    assert_eq!(d.inst.status, SagaStatus::Completed);
    assert_eq!(d.inst.output, Some(json!({"tracking": "by-hand"})));
}

#[test]
fn retry_skips_a_pending_backoff() {
    let mut d = order();
    d.reply("reserve", 1, "busy", json!({}));
    assert_eq!(d.inst.steps[0].forward.status, StepStatus::WaitingRetry);
    d.apply(Event::Retry {
        actor: "ops".into(),
    });
    assert_eq!(d.last_sent(), ["cmd:reserve#2"]);
    // The backoff timer was cancelled; if it fires anyway it is ignored.
    d.retry_due("reserve", Phase::Command, 2);
    assert_eq!(d.last_sent(), Vec::<String>::new());
    // Nothing waits for a backoff now: the refusal says what works instead.
    let reason = refusal(
        &mut d,
        Event::Retry {
            actor: "ops".into(),
        },
    );
    assert!(
        reason.contains("resolve-step (`reserve`), or terminate"),
        "{reason}"
    );
}

#[test]
fn an_operator_resolution_wins_over_a_later_reply_and_applies_once() {
    let mut d = order();
    let event = Event::Resolve {
        step: "reserve".into(),
        phase: Phase::Command,
        attempt: Some(1),
        outcome: Resolution::Failed { payload: None },
        reason: "no stock, confirmed by phone".into(),
        actor: "ops".into(),
    };
    d.apply(event.clone());
    assert_eq!(d.inst.status, SagaStatus::Compensating);
    let reason = refusal(&mut d, event);
    assert!(
        reason.contains("compensated with the others (or has nothing to undo); use resolve-step (the compensation of `reserve`), or terminate"),
        "{reason}"
    );
    d.reply("reserve", 1, "reserved", json!({}));
    let late = history(&d, HistoryKind::LateReply);
    assert_eq!(
        late[0]["effect"],
        "none: an operator resolved this attempt first"
    );
}

#[test]
fn resolving_a_failed_compensation_resumes_the_rollback() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    d.reply("authorize", 1, "declined", json!({}));
    d.comp_reply("authorize", 1, "broken");
    assert_eq!(d.inst.status, SagaStatus::Failed);
    let reason = refusal(
        &mut d,
        resolve(
            "authorize",
            Phase::Command,
            Resolution::Failed { payload: None },
        ),
    );
    assert!(
        reason.contains("use retry, or resolve-step (the compensation of `authorize`)"),
        "{reason}"
    );
    d.apply(resolve(
        "authorize",
        Phase::Compensation,
        Resolution::Succeeded { payload: json!({}) },
    ));
    assert_eq!(d.last_sent(), ["comp:reserve#1"]);
    d.comp_reply("reserve", 1, "released");
    assert_eq!(d.inst.status, SagaStatus::Compensated);
}

#[test]
fn terminate_ends_any_unfinished_saga_and_nothing_more_is_sent() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    d.reply("authorize", 1, "authorized", json!({}));
    d.reply("capture", 1, "captured", json!({}));
    d.reply("ship", 1, "busy", json!({}));
    d.retry_due("ship", Phase::Command, 2);
    d.apply(Event::Terminate {
        reason: "shipped by hand".into(),
        actor: "ops".into(),
    });
    assert_eq!(d.inst.status, SagaStatus::Terminated);
    assert!(d.inst.status.is_terminal());
    assert!(d.last.iter().any(|e| matches!(
        e,
        Effect::CancelTimer {
            timer: Timer::StepTimeout { .. }
        }
    )));
    assert_eq!(
        history(&d, HistoryKind::Terminated)[0]["reason"],
        "shipped by hand"
    );
    // A timer that fires anyway and a reply that arrives anyway change nothing.
    d.timeout("ship", Phase::Command, 2);
    assert_eq!(d.last_sent(), Vec::<String>::new());
    d.reply("ship", 2, "shipped", json!({}));
    assert_eq!(d.inst.status, SagaStatus::Terminated);
    assert_eq!(
        history(&d, HistoryKind::LateReply)[0]["effect"],
        "none: the saga was terminated"
    );
    let reason = refusal(
        &mut d,
        Event::Terminate {
            reason: "again".into(),
            actor: "ops".into(),
        },
    );
    assert!(
        reason.contains("the saga is terminated; nothing is left to do"),
        "{reason}"
    );
}

#[test]
fn a_failed_saga_past_its_pivot_can_be_terminated() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    d.reply("authorize", 1, "authorized", json!({}));
    d.reply("capture", 1, "captured", json!({}));
    d.reply("ship", 1, "no_courier", json!({}));
    assert_eq!(d.inst.status, SagaStatus::Failed);
    let reason = refusal(
        &mut d,
        Event::Abort {
            reason: "x".into(),
            actor: "ops".into(),
        },
    );
    assert!(
        reason.contains("can only go forward; use retry, or resolve-step (`ship`), or terminate"),
        "{reason}"
    );
    d.apply(Event::Terminate {
        reason: "refunded by hand".into(),
        actor: "ops".into(),
    });
    assert_eq!(d.inst.status, SagaStatus::Terminated);
    assert_eq!(d.last_sent(), Vec::<String>::new());
}

#[test]
fn a_declined_pivot_with_an_unknown_earlier_attempt_can_be_rolled_back() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    d.reply("authorize", 1, "authorized", json!({}));
    d.timeout("capture", Phase::Command, 1);
    d.retry_due("capture", Phase::Command, 2);
    d.reply("capture", 2, "declined", json!({}));
    assert_eq!(d.inst.status, SagaStatus::Failed);
    // The operator learns attempt 1 did not capture either: resolving it failed rolls back.
    let mut resolved = Driver::start(ORDER, json!({"order_id": "o-1", "amount": 10}));
    resolved.inst = d.inst.clone();
    resolved.apply(resolve(
        "capture",
        Phase::Command,
        Resolution::Failed { payload: None },
    ));
    assert_eq!(resolved.inst.status, SagaStatus::Compensating);
    assert_eq!(resolved.last_sent(), ["comp:authorize#1"]);
    // Or attempt 1's own late failure does the same.
    d.reply("capture", 1, "declined", json!({}));
    assert_eq!(
        history(&d, HistoryKind::LateReply)[0]["effect"],
        "settled: the outcome is known now, and it is a failure"
    );
    assert_eq!(d.inst.status, SagaStatus::Compensating);
    assert_eq!(d.last_sent(), ["comp:authorize#1"]);
}

#[test]
fn a_terminated_saga_takes_each_cut_short_answer_once_and_its_deadline_is_cancelled() {
    let mut d = Driver::start(super::fixtures::TRIP, json!({"car": false}));
    d.apply(Event::Terminate {
        reason: "cancelled by phone".into(),
        actor: "ops".into(),
    });
    assert!(d.last.iter().any(|e| matches!(
        e,
        Effect::CancelTimer {
            timer: Timer::Deadline
        }
    )));
    d.reply("prepare", 1, "prepared", json!({}));
    assert_eq!(history(&d, HistoryKind::LateReply).len(), 1);
    d.reply("prepare", 1, "prepared", json!({}));
    let ignored = history(&d, HistoryKind::ReplyIgnored);
    assert!(
        ignored[0]["why"].as_str().unwrap().starts_with("duplicate"),
        "{ignored:?}"
    );
}

#[test]
fn a_refusal_names_abort_when_abort_works() {
    let mut d = order();
    let reason = refusal(
        &mut d,
        Event::Retry {
            actor: "ops".into(),
        },
    );
    assert!(
        reason.contains("use abort, or resolve-step (`reserve`), or terminate"),
        "{reason}"
    );
}
