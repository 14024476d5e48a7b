//! Spans and metrics of the transition path, from engine types (the only part of
//! telemetry that knows the engine, so `runtime` stays about persistence).

use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry::trace::SpanContext;

use super::metrics;
use super::propagation;
use super::spans::{self, MessageRef, SagaRef, Traced};
use crate::definition::Definition;
use crate::engine::{
    Effect, Event, HistoryKind, Instance, Outgoing, Phase, Rejection, SagaStatus, Transition,
};

/// Trace headers and origin of an inbound reply.
#[derive(Debug, Clone, Default)]
pub struct InboundTrace {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub topic: String,
    pub key: String,
    pub partition: i32,
    pub offset: i64,
    /// The consumer group that read it.
    pub group: String,
    pub broker: Option<spans::Broker>,
}

impl InboundTrace {
    fn consumed(&self) -> spans::Consumed<'_> {
        spans::Consumed {
            group: &self.group,
            partition: self.partition,
            offset: self.offset,
            broker: self.broker.as_ref(),
        }
    }
}

/// The span of one event applied to a saga: a reply continues the participant's
/// context; anything else (timer, operator) is a child of the saga's stored context.
pub fn event_span(
    inst: &Instance,
    stored: Option<&str>,
    event: &Event,
    inbound: Option<&InboundTrace>,
) -> Traced {
    let saga_cx = propagation::from_stored(stored);
    let saga = SagaRef {
        id: inst.id,
        name: &inst.definition,
    };
    let (name, step) = match event {
        Event::Reply(r) => {
            let reply_cx = inbound.and_then(|i| {
                propagation::parse(i.traceparent.as_deref(), i.tracestate.as_deref())
            });
            let m = MessageRef {
                step: &r.step,
                attempt: r.attempt,
                compensation: r.phase == Phase::Compensation,
                topic: inbound.map(|i| i.topic.as_str()).unwrap_or_default(),
                message_id: &r.message_id,
                key: inbound.map(|i| i.key.as_str()).unwrap_or_default(),
                consumed: inbound.map(InboundTrace::consumed),
            };
            return spans::process_reply(
                reply_cx.as_ref(),
                saga_cx.as_ref(),
                saga,
                m,
                &r.reply_type,
            );
        }
        Event::Start => ("start", None),
        Event::StepTimeout {
            step,
            phase: Phase::Command,
            ..
        } => ("timeout", Some(step.as_str())),
        Event::StepTimeout { step, .. } => ("compensation timeout", Some(step.as_str())),
        Event::RetryDue {
            step,
            phase: Phase::Command,
            ..
        } => ("retry due", Some(step.as_str())),
        Event::RetryDue { step, .. } => ("compensation retry due", Some(step.as_str())),
        Event::Deadline => ("deadline", None),
        Event::Abort { .. } => ("operator abort", None),
        Event::Retry { .. } => ("operator retry", None),
        Event::Resolve { step, .. } => ("operator resolve", Some(step.as_str())),
        Event::Terminate { .. } => ("operator terminate", None),
    };
    spans::saga_event(saga_cx.as_ref(), saga, name, step)
}

/// The creation span of one outgoing command or compensation.
pub fn send_span(parent: Option<&SpanContext>, inst: &Instance, out: &Outgoing) -> Traced {
    let id = out.command_id.to_string();
    spans::create(
        parent,
        SagaRef {
            id: inst.id,
            name: &inst.definition,
        },
        MessageRef {
            step: &out.step,
            attempt: out.attempt,
            compensation: out.phase == Phase::Compensation,
            topic: &out.topic,
            message_id: &id,
            key: &out.key,
            consumed: None,
        },
        inst.status.as_str(),
    )
}

/// Records the saga's new status on its span and marks failures as span errors.
pub fn annotate(span: &Traced, t: &Transition) {
    span.attr("saga.status", t.instance.status.as_str());
    for e in &t.effects {
        if let Effect::Record(h) = e {
            let failure = match h.kind {
                HistoryKind::StepFailed => Some("step_failed"),
                // A failed (or timed-out) attempt that will be retried.
                HistoryKind::RetryScheduled => Some("attempt_failed"),
                HistoryKind::TimedOut => Some("timed_out"),
                HistoryKind::CompensationFailed => Some("compensation_failed"),
                HistoryKind::DeadlineExceeded => Some("deadline_exceeded"),
                _ => None,
            };
            if let Some(kind) = failure {
                span.error(
                    kind,
                    format!("{kind}: {}", h.step.as_deref().unwrap_or("saga")),
                );
            }
        }
    }
    if t.instance.status == SagaStatus::Failed {
        span.error("saga_failed", "the saga stopped and waits for an operator");
    }
}

pub fn rejected(span: &Traced, rejection: &Rejection) {
    span.error("rejected", rejection.to_string());
    span.span
        .in_scope(|| tracing::warn!(%rejection, "event rejected"));
}

/// A step that settled in a transition (for its duration histogram).
#[derive(Debug, Clone)]
pub struct Settled {
    pub definition: String,
    pub step: String,
    pub outcome: &'static str,
    /// From the step's first command to its settling.
    pub took: Duration,
}

/// What a batch did, recorded as metrics only once its transaction has committed.
#[derive(Debug, Default)]
pub struct Observations {
    ended: Vec<(String, &'static str, Duration)>,
    pub settled: Vec<Settled>,
}

impl Observations {
    pub fn transition(
        &mut self,
        before: SagaStatus,
        t: &Transition,
        def: &Definition,
        now: DateTime<Utc>,
    ) {
        let after = t.instance.status;
        if after != before
            && matches!(
                after,
                SagaStatus::Completed
                    | SagaStatus::Compensated
                    | SagaStatus::Failed
                    | SagaStatus::Terminated
            )
        {
            let age = (now - t.instance.created_at).to_std().unwrap_or_default();
            self.ended
                .push((t.instance.definition.clone(), after.as_str(), age));
        }
        for e in &t.effects {
            if let Effect::Record(h) = e {
                let outcome = match h.kind {
                    HistoryKind::StepSucceeded => "succeeded",
                    HistoryKind::StepFailed => "failed",
                    _ => continue,
                };
                let Some(step) = &h.step else { continue };
                // A step whose first command went out before its saga's state kept that
                // time (an older version) gets no sample.
                let first_sent = def
                    .steps
                    .iter()
                    .position(|s| s.name == *step)
                    .and_then(|i| t.instance.steps.get(i))
                    .and_then(|s| s.forward.first_sent_at);
                if let Some(sent) = first_sent {
                    self.settled.push(Settled {
                        definition: t.instance.definition.clone(),
                        step: step.clone(),
                        outcome,
                        took: (h.at - sent).to_std().unwrap_or_default(),
                    });
                }
            }
        }
    }

    pub fn record(self) {
        for (definition, status, age) in self.ended {
            metrics::saga_ended(&definition, status, age);
        }
        for s in self.settled {
            metrics::step_settled(&s.definition, &s.step, s.outcome, s.took);
        }
    }
}
