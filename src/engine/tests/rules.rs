//! One test per engine rule, on small definitions.

use serde_json::json;

use super::fixtures::{Driver, ORDER, TRIP, t0};
use crate::engine::{
    Effect, Event, FailurePhase, LifecycleKind, Phase, Rejection, Resolution, SagaStatus,
    StepStatus, Timer,
};

fn order() -> Driver {
    Driver::start(ORDER, json!({"order_id": "o-1", "amount": 10}))
}

fn lifecycle(d: &Driver) -> Vec<LifecycleKind> {
    d.effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish(l) => Some(l.kind),
            _ => None,
        })
        .collect()
}

#[test]
fn happy_path_runs_every_step_in_order_and_builds_output() {
    let mut d = order();
    assert_eq!(d.last_sent(), ["cmd:reserve#1"]);
    d.reply("reserve", 1, "reserved", json!({"id": "r-9"}));
    assert_eq!(d.last_sent(), ["cmd:authorize#1"]);
    let auth = d.outgoing()[1];
    assert_eq!(auth.payload, json!({"amount": 10, "reservation": "r-9"}));
    d.reply("authorize", 1, "authorized", json!({}));
    d.reply("capture", 1, "captured", json!({}));
    d.reply("ship", 1, "shipped", json!({"tracking": "T-1"}));
    assert_eq!(d.inst.status, SagaStatus::Completed);
    assert_eq!(d.inst.output, Some(json!({"tracking": "T-1"})));
    assert_eq!(
        lifecycle(&d),
        [
            LifecycleKind::Started,
            LifecycleKind::StepSucceeded,
            LifecycleKind::StepSucceeded,
            LifecycleKind::StepSucceeded,
            LifecycleKind::StepSucceeded,
            LifecycleKind::Completed
        ]
    );
}

#[test]
fn every_command_arms_a_timeout_and_a_reply_cancels_it() {
    let mut d = order();
    assert!(d.last.iter().any(|e| matches!(e, Effect::ScheduleTimer { timer: Timer::StepTimeout { step, attempt: 1, .. }, due_at } if step == "reserve" && *due_at == d.now + chrono::Duration::seconds(5))));
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    assert!(d.last.iter().any(|e| matches!(e, Effect::CancelTimer { timer: Timer::StepTimeout { step, .. } } if step == "reserve")));
}

#[test]
fn failure_compensates_completed_steps_in_reverse_order_including_the_failed_one() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": "r-9"}));
    d.reply("authorize", 1, "declined", json!({"why": "card"}));
    assert_eq!(d.inst.status, SagaStatus::Compensating);
    // The failed step went out, so it is compensated first (newest first).
    assert_eq!(d.last_sent(), ["comp:authorize#1"]);
    d.comp_reply("authorize", 1, "voided");
    assert_eq!(d.last_sent(), ["comp:reserve#1"]);
    assert_eq!(
        d.outgoing().last().map(|o| o.payload.clone()),
        Some(json!({"reservation": "r-9"}))
    );
    d.comp_reply("reserve", 1, "released");
    assert_eq!(d.inst.status, SagaStatus::Compensated);
    assert!(
        !d.all_sent()
            .iter()
            .any(|s| s.contains("capture") || s.contains("ship"))
    );
}

#[test]
fn retryable_failure_waits_for_backoff_then_sends_the_next_attempt() {
    let mut d = order();
    d.reply("reserve", 1, "busy", json!({}));
    assert_eq!(d.inst.steps[0].forward.status, StepStatus::WaitingRetry);
    let due = d.last.iter().find_map(|e| match e {
        Effect::ScheduleTimer {
            timer: Timer::RetryDue { attempt: 2, .. },
            due_at,
        } => Some(*due_at),
        _ => None,
    });
    let delay = due.map(|t| t - d.now).expect("retry scheduled");
    // 100ms with up to 50% jitter taken off.
    assert!(
        delay <= chrono::Duration::milliseconds(100) && delay >= chrono::Duration::milliseconds(50)
    );
    let first_sent = d.inst.steps[0].forward.first_sent_at;
    assert_eq!(
        first_sent,
        Some(t0()),
        "the first attempt's send time is kept"
    );
    d.now += chrono::Duration::seconds(1);
    d.retry_due("reserve", Phase::Command, 2);
    assert_eq!(d.last_sent(), ["cmd:reserve#2"]);
    // The step's duration runs from its first command, across retries.
    assert_eq!(d.inst.steps[0].forward.first_sent_at, first_sent);
    d.reply("reserve", 2, "reserved", json!({"id": 1}));
    assert_eq!(d.inst.steps[0].forward.status, StepStatus::Succeeded);
    assert_eq!(d.inst.steps[1].forward.first_sent_at, Some(d.now));
}

#[test]
fn timeout_is_retried_then_exhausted_as_unknown_outcome_and_compensated() {
    let mut d = order();
    d.timeout("reserve", Phase::Command, 1);
    d.retry_due("reserve", Phase::Command, 2);
    d.timeout("reserve", Phase::Command, 2);
    assert_eq!(d.inst.steps[0].forward.status, StepStatus::TimedOut);
    assert_eq!(d.inst.status, SagaStatus::Compensating);
    assert_eq!(d.last_sent(), ["comp:reserve#1"]);
    // The compensation renders even without a reply, thanks to `default(none)`.
    assert_eq!(
        d.outgoing().last().map(|o| o.payload.clone()),
        Some(json!({"reservation": null}))
    );
}

#[test]
fn stale_and_duplicate_replies_change_nothing() {
    let mut d = order();
    d.reply("reserve", 1, "busy", json!({}));
    d.retry_due("reserve", Phase::Command, 2);
    let before = d.inst.clone();
    let t = d.reply("reserve", 1, "reserved", json!({"id": "late"}));
    assert_eq!(
        t.instance, before,
        "a reply to attempt 1 while attempt 2 is out is stale"
    );
    assert_eq!(d.last_sent(), Vec::<String>::new());
    d.reply("reserve", 2, "reserved", json!({"id": "ok"}));
    let before = d.inst.clone();
    let t = d.reply("reserve", 2, "reserved", json!({"id": "ok"}));
    assert_eq!(t.instance, before);
    assert!(
        matches!(&t.effects[..], [Effect::Record(h)] if h.kind == crate::engine::HistoryKind::ReplyIgnored)
    );
}

#[test]
fn undeclared_reply_type_is_recorded_and_ignored() {
    let mut d = order();
    let before = d.inst.clone();
    let t = d.reply("reserve", 1, "something_else", json!({}));
    assert_eq!(t.instance, before);
}

#[test]
fn stale_timers_are_ignored() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    let before = d.inst.clone();
    assert_eq!(d.timeout("reserve", Phase::Command, 1).instance, before);
    assert_eq!(d.retry_due("authorize", Phase::Command, 2).instance, before);
}

#[test]
fn after_the_pivot_failures_stop_for_an_operator_and_retry_redrives_forward() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    d.reply("authorize", 1, "authorized", json!({}));
    d.reply("capture", 1, "captured", json!({}));
    d.reply("ship", 1, "no_courier", json!({}));
    assert_eq!(d.inst.status, SagaStatus::Failed);
    assert_eq!(
        d.inst.failure.as_ref().map(|f| f.phase),
        Some(FailurePhase::Forward)
    );
    assert!(!d.all_sent().iter().any(|s| s.starts_with("comp:")));
    let err = d.try_apply(Event::Abort {
        reason: "x".into(),
        actor: "ops".into(),
    });
    assert!(matches!(
        err,
        Err(Rejection::NotAllowed {
            action: "abort",
            ..
        })
    ));
    d.apply(Event::Retry {
        actor: "ops".into(),
    });
    assert_eq!(d.last_sent(), ["cmd:ship#2"]);
    d.reply("ship", 2, "shipped", json!({"tracking": "T"}));
    assert_eq!(d.inst.status, SagaStatus::Completed);
}

#[test]
fn pivot_with_unknown_outcome_waits_for_an_operator() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    d.reply("authorize", 1, "authorized", json!({}));
    d.timeout("capture", Phase::Command, 1);
    d.retry_due("capture", Phase::Command, 2);
    d.timeout("capture", Phase::Command, 2);
    assert_eq!(d.inst.status, SagaStatus::Failed);
    assert!(!d.all_sent().iter().any(|s| s.starts_with("comp:")));
    // Abort would gamble on the unknown; the refusal names what works.
    let refused = d.try_apply(Event::Abort {
        reason: "bank says no capture".into(),
        actor: "ops".into(),
    });
    let Err(Rejection::NotAllowed { reason, .. }) = refused else {
        panic!("abort of an unknown pivot: {refused:?}")
    };
    assert!(reason.contains("resolve-step (`capture`)"), "{reason}");
    // The operator learns it did not happen: resolving it as failed rolls back.
    d.apply(Event::Resolve {
        step: "capture".into(),
        phase: Phase::Command,
        attempt: Some(2),
        outcome: Resolution::Failed { payload: None },
        reason: "bank says no capture".into(),
        actor: "ops".into(),
    });
    assert_eq!(d.inst.status, SagaStatus::Compensating);
    assert_eq!(d.last_sent(), ["comp:authorize#1"]);
}

#[test]
fn exhausted_compensation_fails_awaiting_operator_and_retry_resumes_rollback() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    d.reply("authorize", 1, "declined", json!({}));
    d.comp_reply("authorize", 1, "busy");
    d.retry_due("authorize", Phase::Compensation, 2);
    d.comp_reply("authorize", 2, "busy");
    assert_eq!(d.inst.status, SagaStatus::Failed);
    assert_eq!(
        d.inst.failure.as_ref().map(|f| f.phase),
        Some(FailurePhase::Compensation)
    );
    assert!(lifecycle(&d).contains(&LifecycleKind::Failed));
    // Rollback is not continued past the failed compensation.
    assert!(!d.all_sent().contains(&"comp:reserve#1".to_owned()));
    d.apply(Event::Retry {
        actor: "ops".into(),
    });
    assert_eq!(d.last_sent(), ["comp:authorize#3"]);
    d.comp_reply("authorize", 3, "voided");
    d.comp_reply("reserve", 1, "released");
    assert_eq!(d.inst.status, SagaStatus::Compensated);
}

#[test]
fn non_retryable_compensation_failure_stops_at_once() {
    let mut d = order();
    d.reply("reserve", 1, "out_of_stock", json!({}));
    d.comp_reply("reserve", 1, "broken");
    assert_eq!(d.inst.status, SagaStatus::Failed);
}

#[test]
fn abort_compensates_now_and_is_idempotent() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    d.apply(Event::Abort {
        reason: "customer cancelled".into(),
        actor: "alice".into(),
    });
    assert_eq!(d.inst.status, SagaStatus::Compensating);
    // authorize#1 is in flight: wait for it before compensating.
    assert_eq!(d.last_sent(), Vec::<String>::new());
    let before = d.inst.clone();
    d.apply(Event::Abort {
        reason: "again".into(),
        actor: "alice".into(),
    });
    assert_eq!(d.inst, before);
    d.reply("authorize", 1, "authorized", json!({}));
    assert_eq!(d.last_sent(), ["comp:authorize#1"]);
    d.comp_reply("authorize", 1, "voided");
    d.comp_reply("reserve", 1, "released");
    assert_eq!(d.inst.status, SagaStatus::Compensated);
    assert!(d.try_apply(Event::Retry { actor: "x".into() }).is_err());
}

#[test]
fn abort_is_refused_while_the_pivot_is_in_flight() {
    let mut d = order();
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    d.reply("authorize", 1, "authorized", json!({}));
    let r = d.try_apply(Event::Abort {
        reason: "x".into(),
        actor: "a".into(),
    });
    assert!(matches!(r, Err(Rejection::NotAllowed { .. })));
}

#[test]
fn parallel_group_failure_waits_for_siblings_then_compensates_all_that_went_out() {
    let mut d = Driver::start(TRIP, json!({"car": true}));
    d.reply("prepare", 1, "prepared", json!({}));
    assert_eq!(d.last_sent(), ["cmd:flight#1", "cmd:hotel#1", "cmd:car#1"]);
    d.reply("hotel", 1, "booked", json!({}));
    d.reply("flight", 1, "nope", json!({}));
    assert_eq!(d.inst.status, SagaStatus::Compensating);
    assert_eq!(
        d.last_sent(),
        Vec::<String>::new(),
        "car is still in flight"
    );
    d.reply("car", 1, "booked", json!({}));
    // Settled order: hotel, flight, car → compensate car, flight, hotel.
    assert_eq!(d.last_sent(), ["comp:car#1"]);
    d.comp_reply("car", 1, "cancelled");
    assert_eq!(d.last_sent(), ["comp:flight#1"]);
    d.comp_reply("flight", 1, "cancelled");
    assert_eq!(d.last_sent(), ["comp:hotel#1"]);
    d.comp_reply("hotel", 1, "cancelled");
    assert_eq!(d.inst.status, SagaStatus::Compensated);
}

#[test]
fn conditional_step_is_skipped_and_never_compensated() {
    let mut d = Driver::start(TRIP, json!({"car": false}));
    d.reply("prepare", 1, "prepared", json!({}));
    assert_eq!(d.last_sent(), ["cmd:flight#1", "cmd:hotel#1"]);
    assert_eq!(d.inst.steps[3].forward.status, StepStatus::Skipped);
    d.reply("flight", 1, "booked", json!({"no": "F1"}));
    d.reply("hotel", 1, "booked", json!({}));
    assert_eq!(d.last_sent(), ["cmd:confirm#1"]);
    assert_eq!(
        d.outgoing().last().map(|o| o.payload.clone()),
        Some(json!({"flight": {"no": "F1"}}))
    );
    d.reply("confirm", 1, "nope", json!({}));
    assert!(!d.all_sent().iter().any(|s| s.contains("car")));
    assert_eq!(d.last_sent(), ["comp:confirm#1"]);
}

#[test]
fn deadline_before_the_pivot_compensates() {
    let mut d = Driver::start(TRIP, json!({"car": false}));
    assert!(d.last.iter().any(|e| matches!(
        e,
        Effect::ScheduleTimer {
            timer: Timer::Deadline,
            ..
        }
    )));
    d.reply("prepare", 1, "prepared", json!({}));
    d.reply("flight", 1, "booked", json!({}));
    d.apply(Event::Deadline);
    assert_eq!(d.inst.status, SagaStatus::Compensating);
    d.reply("hotel", 1, "busy", json!({}));
    // Hotel's attempt 1 went out and failed: no retry while compensating; it is compensated.
    assert_eq!(d.last_sent(), ["comp:hotel#1"]);
}

#[test]
fn a_step_whose_template_cannot_render_fails_without_sending() {
    let mut d = Driver::start(ORDER, json!({"order_id": "o-1"}));
    d.reply("reserve", 1, "reserved", json!({"id": 1}));
    // `input.amount` is missing: authorize is never sent, reserve is compensated.
    assert_eq!(d.last_sent(), ["comp:reserve#1"]);
    assert_eq!(d.inst.steps[1].forward.attempt, 0);
}

#[test]
fn start_twice_is_rejected() {
    let mut d = order();
    assert_eq!(
        d.try_apply(Event::Start).err(),
        Some(Rejection::AlreadyStarted)
    );
}

#[test]
fn command_ids_are_deterministic_per_attempt() {
    let a = order();
    let b = order();
    assert_eq!(a.outgoing()[0].command_id, b.outgoing()[0].command_id);
    let mut c = order();
    c.reply("reserve", 1, "busy", json!({}));
    c.retry_due("reserve", Phase::Command, 2);
    assert_ne!(c.outgoing()[0].command_id, c.outgoing()[1].command_id);
}

#[test]
fn start_checks_the_input_schema() {
    let def = super::fixtures::definition(crate::engine::tests::fixtures::SCHEMA);
    let inst = crate::engine::Instance::new(
        uuid::Uuid::nil(),
        &def,
        json!({"amount": -1}),
        None,
        super::fixtures::t0(),
    );
    let env = crate::engine::Env {
        now: super::fixtures::t0(),
        random: 0,
    };
    match crate::engine::apply(&inst, &def, Event::Start, env) {
        Err(Rejection::InvalidInput(errors)) => {
            assert!(errors[0].starts_with("/amount"), "{errors:?}")
        }
        other => panic!("expected invalid input, got {other:?}"),
    }
}

#[test]
fn a_reply_counts_only_on_the_definitions_reply_topic() {
    let mut d = order();
    let before = d.inst.clone();
    let forged = Event::Reply(crate::engine::Reply {
        step: "reserve".into(),
        phase: Phase::Command,
        attempt: 1,
        reply_type: "reserved".into(),
        payload: json!({"id": "r-1"}),
        message_id: "forged-1".into(),
        topic: "accounts.events".into(),
        source: "/intruder".into(),
    });
    let rejected = d.try_apply(forged);
    assert!(
        matches!(&rejected, Err(Rejection::WrongReplyTopic { got, .. }) if got == "accounts.events"),
        "{rejected:?}"
    );
    assert_eq!(d.inst, before);
    d.reply("reserve", 1, "reserved", json!({"id": "r-9"}));
    assert_eq!(d.last_sent(), ["cmd:authorize#1"]);
}
