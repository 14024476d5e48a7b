//! One attempt machine for both directions of a step, its command and its
//! compensation: send, await a reply or a timeout, retry with backoff, settle. What a
//! settled step means for the saga (next stage, next compensation, stop for an
//! operator) is each direction's business, in `forward.rs` and `compensate.rs`.

use std::time::Duration;

use serde_json::{Value as Json, json};

use super::effect::{Effect, HistoryKind, LifecycleKind};
use super::event::{Phase, Reply};
use super::instance::{SagaStatus, StepStatus, Track};
use super::machine::Machine;
use crate::definition::{MessageSpec, ReplyClass, ReplySpec, RetryPolicy};

/// What one direction of one step declares.
pub(super) struct Spec<'d> {
    pub message: &'d MessageSpec,
    pub reply: &'d ReplySpec,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

impl<'a> Machine<'a> {
    pub fn spec(&self, idx: usize, phase: Phase) -> Option<Spec<'a>> {
        let step = &self.def.steps[idx];
        match phase {
            Phase::Command => Some(Spec {
                message: &step.command,
                reply: &step.reply,
                timeout: step.timeout,
                retry: step.retry,
            }),
            Phase::Compensation => step.compensation.as_ref().map(|c| Spec {
                message: &c.command,
                reply: &c.reply,
                timeout: c.timeout,
                retry: c.retry,
            }),
        }
    }

    pub fn track(&self, idx: usize, phase: Phase) -> &Track {
        self.inst.steps[idx].track(phase)
    }

    pub fn track_mut(&mut self, idx: usize, phase: Phase) -> &mut Track {
        self.inst.steps[idx].track_mut(phase)
    }

    /// The saga status in which a direction's attempts may be retried.
    fn active_status(phase: Phase) -> SagaStatus {
        match phase {
            Phase::Command => SagaStatus::Running,
            Phase::Compensation => SagaStatus::Compensating,
        }
    }

    /// Emits attempt `attempt` and arms its timeout. A message that cannot be rendered
    /// settles the direction as failed without running what follows a failure: callers
    /// that send several steps at once decide when to look at the result.
    pub(super) fn send(&mut self, idx: usize, phase: Phase, attempt: u32) {
        let Some(spec) = self.spec(idx, phase) else {
            return;
        };
        match self.render_message(idx, phase, attempt, spec.message) {
            Ok(out) => {
                let now = self.env.now;
                let t = self.track_mut(idx, phase);
                t.status = StepStatus::Running;
                t.attempt = attempt;
                t.error = None;
                if phase == Phase::Command {
                    t.first_sent_at.get_or_insert(now);
                }
                let kind = match phase {
                    Phase::Command => HistoryKind::CommandSent,
                    Phase::Compensation => HistoryKind::CompensationSent,
                };
                let detail =
                    json!({ "topic": out.topic, "type": out.message_type, "payload": out.payload });
                self.record_attempt(kind, idx, phase, attempt, detail);
                self.effects.push(match phase {
                    Phase::Command => Effect::SendCommand(out),
                    Phase::Compensation => Effect::SendCompensation(out),
                });
                let timer = self.timeout_timer(idx, phase, attempt);
                self.schedule(timer, spec.timeout);
            }
            Err(e) => {
                let what = match phase {
                    Phase::Command => "command",
                    Phase::Compensation => "compensation",
                };
                self.settle_failed(idx, phase, format!("{what} could not be rendered: {e}"));
            }
        }
    }

    /// Sorts a reply: the current attempt's answer, late news about an earlier attempt,
    /// or a true duplicate (its attempt already has an answer).
    pub(super) fn on_reply(&mut self, idx: usize, reply: Reply) {
        let phase = reply.phase;
        let Some(spec) = self.spec(idx, phase) else {
            self.ignore_reply(idx, &reply, "unexpected: this step has no compensation");
            return;
        };
        let t = self.track(idx, phase);
        if reply.attempt == 0 || reply.attempt > t.attempt {
            self.ignore_reply(idx, &reply, "unexpected: no such attempt was sent");
            return;
        }
        // In a terminated saga an attempt still `running` was cut short: its answer is
        // awaited only while it is listed as unknown.
        let cut_short = self.inst.status == SagaStatus::Terminated
            && !t.unknown.contains(&reply.attempt)
            && !t.manual.contains(&reply.attempt);
        if !t.awaits_answer(reply.attempt) || cut_short {
            self.ignore_reply(
                idx,
                &reply,
                "duplicate: this attempt already has its answer",
            );
            return;
        }
        let class = spec.reply.classify(&reply.reply_type);
        if class == ReplyClass::Undeclared {
            self.ignore_reply(idx, &reply, "reply type is not declared for this step");
            return;
        }
        // Data that breaks its type's schema is no answer: recorded with the reason,
        // never applied, and the attempt goes on waiting (it times out and is retried
        // like one that got no reply, so a pivot is never rolled back on it).
        if let Some(why) = spec
            .reply
            .schema_violation(&reply.reply_type, &reply.payload)
        {
            let why: String = why.chars().take(1000).collect();
            self.ignore_reply(idx, &reply, &why);
            return;
        }
        let current = t.status == StepStatus::Running && t.attempt == reply.attempt;
        if !current || self.inst.status == SagaStatus::Terminated {
            self.on_late_reply(idx, reply, class);
            return;
        }
        let timer = self.timeout_timer(idx, phase, reply.attempt);
        self.cancel(timer);
        self.record_reply(idx, &reply);
        match class {
            ReplyClass::Success => {
                self.settle_succeeded(idx, phase, reply.payload);
                self.after_success(phase);
            }
            _ => {
                let retryable = class == ReplyClass::Failure { retryable: true };
                let reason = format!("reply `{}`: {}", reply.reply_type, reply.payload);
                self.attempt_failed(idx, phase, reason, retryable, false);
            }
        }
    }

    pub(super) fn on_timeout(&mut self, idx: usize, phase: Phase, attempt: u32) {
        let t = self.track(idx, phase);
        if t.status != StepStatus::Running
            || t.attempt != attempt
            || self.inst.status == SagaStatus::Terminated
        {
            self.ignore_timer(idx, phase, attempt);
            return;
        }
        self.record_attempt(HistoryKind::TimedOut, idx, phase, attempt, json!({}));
        self.track_mut(idx, phase).unknown.push(attempt);
        let timeout = self.spec(idx, phase).map(|s| s.timeout).unwrap_or_default();
        let reason = format!("no reply within {timeout:?} to attempt {attempt}");
        self.attempt_failed(idx, phase, reason, true, true);
    }

    pub(super) fn on_retry_due(&mut self, idx: usize, phase: Phase, attempt: u32) {
        let t = self.track(idx, phase);
        if self.inst.status != Self::active_status(phase)
            || t.status != StepStatus::WaitingRetry
            || attempt != t.attempt + 1
        {
            self.ignore_timer(idx, phase, attempt);
            return;
        }
        self.send(idx, phase, attempt);
        self.after_failure(phase);
    }

    /// Sends now the attempt a direction waits for on a backoff timer.
    pub(super) fn retry_now(&mut self, idx: usize, phase: Phase) {
        let next = self.track(idx, phase).attempt + 1;
        let timer = self.retry_timer(idx, phase, next);
        self.cancel(timer);
        self.send(idx, phase, next);
    }

    /// The one retry routine: an attempt failed (a failure reply or a timeout); send
    /// another after a backoff if the policy allows, otherwise settle as failed.
    pub(super) fn attempt_failed(
        &mut self,
        idx: usize,
        phase: Phase,
        reason: String,
        retryable: bool,
        timed_out: bool,
    ) {
        let policy = self.spec(idx, phase).map(|s| s.retry);
        let t = self.track(idx, phase);
        let used = t.attempt + 1 - t.budget_start;
        let attempt = t.attempt;
        if let Some(policy) = policy.filter(|p| {
            retryable && used < p.max_attempts && self.inst.status == Self::active_status(phase)
        }) {
            let delay = policy.backoff(used, self.jitter(idx, phase, attempt));
            let t = self.track_mut(idx, phase);
            t.status = StepStatus::WaitingRetry;
            t.error = Some(reason.clone());
            let detail = json!({ "reason": reason, "delay_ms": delay.as_millis() as u64 });
            self.record_attempt(HistoryKind::RetryScheduled, idx, phase, attempt + 1, detail);
            let timer = self.retry_timer(idx, phase, attempt + 1);
            self.schedule(timer, delay);
            return;
        }
        if timed_out {
            self.settle_timed_out(idx, phase, reason);
        } else {
            self.settle_failed(idx, phase, reason);
        }
        self.after_failure(phase);
    }

    pub(super) fn settle_succeeded(&mut self, idx: usize, phase: Phase, payload: Json) {
        self.track_mut(idx, phase).status = StepStatus::Succeeded;
        match phase {
            Phase::Command => {
                self.inst.steps[idx].reply = Some(payload);
                if self.inst.steps[idx].settled_seq.is_none() {
                    self.mark_settled(idx);
                }
                self.record(HistoryKind::StepSucceeded, Some(idx), json!({}));
                self.publish(LifecycleKind::StepSucceeded, Some(idx), json!({}));
            }
            Phase::Compensation => {
                self.record(HistoryKind::StepCompensated, Some(idx), json!({}));
            }
        }
    }

    /// Settled with an answer that says it failed.
    pub(super) fn settle_failed(&mut self, idx: usize, phase: Phase, reason: String) {
        self.settle_unsuccessful(idx, phase, StepStatus::Failed, reason);
    }

    /// Settled without an answer: the last attempt timed out.
    fn settle_timed_out(&mut self, idx: usize, phase: Phase, reason: String) {
        self.settle_unsuccessful(idx, phase, StepStatus::TimedOut, reason);
    }

    fn settle_unsuccessful(
        &mut self,
        idx: usize,
        phase: Phase,
        status: StepStatus,
        reason: String,
    ) {
        let t = self.track_mut(idx, phase);
        t.status = status;
        t.error = Some(reason.clone());
        match phase {
            Phase::Command => {
                self.mark_settled(idx);
                let detail = json!({ "reason": reason });
                self.record(HistoryKind::StepFailed, Some(idx), detail.clone());
                self.publish(LifecycleKind::StepFailed, Some(idx), detail);
            }
            Phase::Compensation => self.compensation_failed(idx, reason),
        }
    }

    /// What follows a direction's success: the saga's next move.
    pub(super) fn after_success(&mut self, phase: Phase) {
        match phase {
            Phase::Command => self.after_settle(),
            Phase::Compensation => self.continue_compensation(),
        }
    }

    /// What follows a failed attempt. A compensation that settles as failed has
    /// stopped the saga already; one that retries needs nothing.
    pub(super) fn after_failure(&mut self, phase: Phase) {
        if phase == Phase::Command {
            self.after_settle();
        }
    }

    pub(super) fn record_reply(&mut self, idx: usize, reply: &Reply) {
        self.record_attempt(
            HistoryKind::ReplyReceived,
            idx,
            reply.phase,
            reply.attempt,
            reply_detail(reply),
        );
    }

    pub(super) fn ignore_reply(&mut self, idx: usize, reply: &Reply, why: &str) {
        let mut detail = reply_detail(reply);
        detail["why"] = json!(why);
        if let Some(map) = detail.as_object_mut() {
            map.remove("payload");
        }
        self.record_attempt(
            HistoryKind::ReplyIgnored,
            idx,
            reply.phase,
            reply.attempt,
            detail,
        );
    }

    pub(super) fn ignore_timer(&mut self, idx: usize, phase: Phase, attempt: u32) {
        let why = if self.inst.status == SagaStatus::Terminated {
            "the saga was terminated"
        } else {
            "the attempt this timer guards is no longer current"
        };
        self.record_attempt(
            HistoryKind::TimerIgnored,
            idx,
            phase,
            attempt,
            json!({ "why": why }),
        );
    }
}

pub(super) fn reply_detail(reply: &Reply) -> Json {
    json!({
        "type": reply.reply_type,
        "payload": reply.payload,
        "message_id": reply.message_id,
        "source": reply.source,
    })
}
