//! The backward path: undo every step whose command went out, newest first.

use serde_json::json;

use super::effect::{Effect, HistoryKind, LifecycleKind, Timer};
use super::event::{Phase, Reply};
use super::instance::{CompensationStatus as Comp, Failure, FailurePhase, SagaStatus, StepStatus};
use super::machine::Machine;
use crate::definition::ReplyClass;

impl Machine<'_> {
    /// Leaves the forward path. Steps waiting to retry are settled as failed (an earlier
    /// attempt went out, so they are compensated too); steps still in flight are waited for.
    pub(super) fn start_compensation(&mut self, step: Option<usize>, reason: String) {
        self.inst.status = SagaStatus::Compensating;
        self.inst.failure = Some(Failure {
            phase: FailurePhase::Forward,
            step: step.map(|i| self.step_name(i).to_owned()),
            reason: reason.clone(),
        });
        if self.inst.deadline_at.is_some() {
            self.cancel(Timer::Deadline);
        }
        self.record(HistoryKind::Compensating, step, json!({ "reason": reason }));
        self.publish(
            LifecycleKind::Compensating,
            step,
            json!({ "reason": reason }),
        );
        for idx in 0..self.inst.steps.len() {
            if self.inst.steps[idx].status == StepStatus::WaitingRetry {
                let next = self.inst.steps[idx].attempt + 1;
                let timer = self.retry_timer(idx, Phase::Command, next);
                self.cancel(timer);
                self.inst.steps[idx].status = StepStatus::Failed;
                self.mark_settled(idx);
                self.record(
                    HistoryKind::StepFailed,
                    Some(idx),
                    json!({ "reason": "retry cancelled: the saga is compensating" }),
                );
            }
        }
        self.continue_compensation();
    }

    /// Sends the next compensation once nothing is in flight; finishes when none is left.
    pub(super) fn continue_compensation(&mut self) {
        if self.inst.status != SagaStatus::Compensating {
            return;
        }
        let busy = self.inst.steps.iter().any(|s| {
            matches!(s.status, StepStatus::Running)
                || matches!(s.compensation, Comp::Running | Comp::WaitingRetry)
        });
        if busy {
            return;
        }
        let next = (0..self.inst.steps.len())
            .filter(|&i| {
                let s = &self.inst.steps[i];
                s.command_sent()
                    && self.def.steps[i].compensation.is_some()
                    && s.compensation == Comp::NotStarted
            })
            .max_by_key(|&i| self.inst.steps[i].settled_seq);
        match next {
            Some(idx) => {
                let attempt = self.inst.steps[idx].comp_attempt + 1;
                self.send_compensation(idx, attempt);
            }
            None => {
                self.inst.status = SagaStatus::Compensated;
                self.record(HistoryKind::Compensated, None, json!({}));
                self.publish(LifecycleKind::Compensated, None, json!({}));
            }
        }
    }

    fn send_compensation(&mut self, idx: usize, attempt: u32) {
        let Some(comp) = self.def.steps[idx].compensation.as_ref() else {
            return;
        };
        match self.render_message(idx, Phase::Compensation, attempt, &comp.command) {
            Ok(out) => {
                let st = &mut self.inst.steps[idx];
                st.compensation = Comp::Running;
                st.comp_attempt = attempt;
                self.record_attempt(
                    HistoryKind::CompensationSent,
                    idx,
                    Phase::Compensation,
                    attempt,
                    json!({ "topic": out.topic, "type": out.message_type, "payload": out.payload }),
                );
                self.effects.push(Effect::SendCompensation(out));
                let timer = self.timeout_timer(idx, Phase::Compensation, attempt);
                self.schedule(timer, comp.timeout);
            }
            Err(e) => {
                self.compensation_failed(idx, format!("compensation could not be rendered: {e}"))
            }
        }
    }

    pub(super) fn on_compensation_reply(&mut self, idx: usize, reply: Reply) {
        let st = &self.inst.steps[idx];
        if st.compensation != Comp::Running || st.comp_attempt != reply.attempt {
            self.ignore_reply(
                idx,
                &reply,
                "no compensation attempt with this number is awaited",
            );
            return;
        }
        let Some(comp) = self.def.steps[idx].compensation.as_ref() else {
            return;
        };
        match comp.reply.classify(&reply.reply_type) {
            ReplyClass::Undeclared => self.ignore_reply(
                idx,
                &reply,
                "reply type is not declared for this compensation",
            ),
            ReplyClass::Success => {
                let timer = self.timeout_timer(idx, Phase::Compensation, reply.attempt);
                self.cancel(timer);
                self.record_reply(idx, &reply);
                self.inst.steps[idx].compensation = Comp::Compensated;
                self.record(HistoryKind::StepCompensated, Some(idx), json!({}));
                self.continue_compensation();
            }
            ReplyClass::Failure { retryable } => {
                let timer = self.timeout_timer(idx, Phase::Compensation, reply.attempt);
                self.cancel(timer);
                self.record_reply(idx, &reply);
                let reason = format!("reply `{}`: {}", reply.reply_type, reply.payload);
                self.compensation_attempt_failed(idx, reason, retryable);
            }
        }
    }

    pub(super) fn on_compensation_timeout(&mut self, idx: usize, attempt: u32) {
        let st = &self.inst.steps[idx];
        if st.compensation != Comp::Running || st.comp_attempt != attempt {
            self.ignore_timer(idx, Phase::Compensation, attempt);
            return;
        }
        self.record_attempt(
            HistoryKind::TimedOut,
            idx,
            Phase::Compensation,
            attempt,
            json!({}),
        );
        self.compensation_attempt_failed(
            idx,
            format!("no reply to compensation attempt {attempt}"),
            true,
        );
    }

    pub(super) fn on_compensation_retry_due(&mut self, idx: usize, attempt: u32) {
        let st = &self.inst.steps[idx];
        if self.inst.status != SagaStatus::Compensating
            || st.compensation != Comp::WaitingRetry
            || attempt != st.comp_attempt + 1
        {
            self.ignore_timer(idx, Phase::Compensation, attempt);
            return;
        }
        self.send_compensation(idx, attempt);
    }

    fn compensation_attempt_failed(&mut self, idx: usize, reason: String, retryable: bool) {
        let Some(comp) = self.def.steps[idx].compensation.as_ref() else {
            return;
        };
        let st = &self.inst.steps[idx];
        let used = st.comp_attempt + 1 - st.comp_budget_start;
        let attempt = st.comp_attempt;
        if retryable && used < comp.retry.max_attempts {
            let delay = comp
                .retry
                .backoff(used, self.jitter(idx, attempt | 0x8000_0000));
            let st = &mut self.inst.steps[idx];
            st.compensation = Comp::WaitingRetry;
            st.comp_error = Some(reason.clone());
            self.record_attempt(
                HistoryKind::RetryScheduled,
                idx,
                Phase::Compensation,
                attempt + 1,
                json!({ "reason": reason, "delay_ms": delay.as_millis() as u64 }),
            );
            let timer = self.retry_timer(idx, Phase::Compensation, attempt + 1);
            self.schedule(timer, delay);
        } else {
            self.compensation_failed(idx, reason);
        }
    }

    /// Rollback cannot finish by itself: stop and wait for an operator. Later
    /// compensations are not attempted, since they may depend on this one.
    fn compensation_failed(&mut self, idx: usize, reason: String) {
        let st = &mut self.inst.steps[idx];
        st.compensation = Comp::Failed;
        st.comp_error = Some(reason.clone());
        self.inst.status = SagaStatus::Failed;
        let why = format!("rollback incomplete: compensation failed: {reason}");
        self.inst.failure = Some(Failure {
            phase: FailurePhase::Compensation,
            step: Some(self.step_name(idx).to_owned()),
            reason: why.clone(),
        });
        self.record(
            HistoryKind::CompensationFailed,
            Some(idx),
            json!({ "reason": reason }),
        );
        self.record(HistoryKind::Failed, Some(idx), json!({ "reason": why }));
        self.publish(LifecycleKind::Failed, Some(idx), json!({ "reason": why }));
    }
}
