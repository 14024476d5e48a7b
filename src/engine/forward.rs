//! The forward path: stages, attempts, retries, conditions and completion.

use serde_json::json;

use super::effect::{Effect, HistoryKind, LifecycleKind, Timer};
use super::event::{Phase, Reply};
use super::instance::{Failure, FailurePhase, SagaStatus, StepStatus};
use super::machine::Machine;
use crate::definition::ReplyClass;

impl Machine<'_> {
    pub(super) fn start(&mut self) {
        if let Some(deadline) = self.def.deadline {
            self.inst.deadline_at = chrono::Duration::from_std(deadline)
                .ok()
                .and_then(|d| self.env.now.checked_add_signed(d));
            self.schedule(Timer::Deadline, deadline);
        }
        self.record(
            HistoryKind::Started,
            None,
            json!({ "input": self.inst.input }),
        );
        self.publish(
            LifecycleKind::Started,
            None,
            json!({ "input": self.inst.input }),
        );
        self.enter_stage(0);
    }

    /// Starts every step of `stage` (skipping those whose condition is false), moving on
    /// past stages whose steps were all skipped.
    fn enter_stage(&mut self, mut stage: usize) {
        loop {
            if stage >= self.def.stages.len() {
                self.inst.stage = stage;
                self.complete();
                return;
            }
            self.inst.stage = stage;
            let steps = self.def.stages[stage].steps.clone();
            for &idx in &steps {
                if let Some(cond) = &self.def.steps[idx].when {
                    match cond.truthy(&self.template_context()) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.inst.steps[idx].status = StepStatus::Skipped;
                            self.record(HistoryKind::StepSkipped, Some(idx), json!({}));
                            self.publish(LifecycleKind::StepSkipped, Some(idx), json!({}));
                            continue;
                        }
                        Err(e) => {
                            self.fail_unsent(idx, format!("condition `when` failed: {e}"));
                            continue;
                        }
                    }
                }
                self.send_attempt(idx, 1);
            }
            if steps
                .iter()
                .all(|&i| self.inst.steps[i].status == StepStatus::Skipped)
            {
                stage += 1;
                continue;
            }
            break;
        }
        self.check_stage();
    }

    /// Emits attempt `attempt` of a step's command and arms its timeout.
    pub(super) fn send_attempt(&mut self, idx: usize, attempt: u32) {
        let step = &self.def.steps[idx];
        match self.render_message(idx, Phase::Command, attempt, &step.command) {
            Ok(out) => {
                let st = &mut self.inst.steps[idx];
                st.status = StepStatus::Running;
                st.attempt = attempt;
                st.error = None;
                self.record_attempt(
                    HistoryKind::CommandSent,
                    idx,
                    Phase::Command,
                    attempt,
                    json!({ "topic": out.topic, "type": out.message_type, "payload": out.payload }),
                );
                self.effects.push(Effect::SendCommand(out));
                let timer = self.timeout_timer(idx, Phase::Command, attempt);
                self.schedule(timer, step.timeout);
            }
            Err(e) => self.fail_unsent(idx, format!("command could not be rendered: {e}")),
        }
    }

    /// A step failed before its command (of this attempt) went out. Nothing is retried:
    /// rendering is deterministic, so the next attempt would fail the same way.
    fn fail_unsent(&mut self, idx: usize, reason: String) {
        let st = &mut self.inst.steps[idx];
        st.status = StepStatus::Failed;
        st.error = Some(reason.clone());
        self.mark_settled(idx);
        self.record(
            HistoryKind::StepFailed,
            Some(idx),
            json!({ "reason": reason }),
        );
        self.publish(
            LifecycleKind::StepFailed,
            Some(idx),
            json!({ "reason": reason }),
        );
    }

    pub(super) fn on_command_reply(&mut self, idx: usize, reply: Reply) {
        let st = &self.inst.steps[idx];
        if st.status != StepStatus::Running || st.attempt != reply.attempt {
            let why = if reply.attempt < st.attempt {
                "stale: a later attempt is current"
            } else if reply.attempt == st.attempt {
                "duplicate: this attempt is already settled"
            } else {
                "unexpected: no such attempt was sent"
            };
            self.ignore_reply(idx, &reply, why);
            return;
        }
        match self.def.steps[idx].reply.classify(&reply.reply_type) {
            ReplyClass::Undeclared => {
                self.ignore_reply(idx, &reply, "reply type is not declared for this step")
            }
            ReplyClass::Success => {
                let timer = self.timeout_timer(idx, Phase::Command, reply.attempt);
                self.cancel(timer);
                self.record_reply(idx, &reply);
                let st = &mut self.inst.steps[idx];
                st.status = StepStatus::Succeeded;
                st.reply = Some(reply.payload);
                self.mark_settled(idx);
                self.record(HistoryKind::StepSucceeded, Some(idx), json!({}));
                self.publish(LifecycleKind::StepSucceeded, Some(idx), json!({}));
                self.after_settle();
            }
            ReplyClass::Failure { retryable } => {
                let timer = self.timeout_timer(idx, Phase::Command, reply.attempt);
                self.cancel(timer);
                self.record_reply(idx, &reply);
                let reason = format!("reply `{}`: {}", reply.reply_type, reply.payload);
                self.attempt_failed(idx, reason, retryable, false);
            }
        }
    }

    pub(super) fn on_command_timeout(&mut self, idx: usize, attempt: u32) {
        let st = &self.inst.steps[idx];
        if st.status != StepStatus::Running || st.attempt != attempt {
            self.ignore_timer(idx, Phase::Command, attempt);
            return;
        }
        self.record_attempt(
            HistoryKind::TimedOut,
            idx,
            Phase::Command,
            attempt,
            json!({}),
        );
        let reason = format!(
            "no reply within {:?} to attempt {attempt}",
            self.def.steps[idx].timeout
        );
        self.attempt_failed(idx, reason, true, true);
    }

    /// One attempt failed: retry it if allowed, otherwise settle the step as failed.
    fn attempt_failed(&mut self, idx: usize, reason: String, retryable: bool, timed_out: bool) {
        let policy = self.def.steps[idx].retry;
        let st = &self.inst.steps[idx];
        let used = st.attempt + 1 - st.budget_start;
        let attempt = st.attempt;
        if retryable && used < policy.max_attempts && self.inst.status == SagaStatus::Running {
            let delay = policy.backoff(used, self.jitter(idx, attempt));
            let st = &mut self.inst.steps[idx];
            st.status = StepStatus::WaitingRetry;
            st.error = Some(reason.clone());
            self.record_attempt(
                HistoryKind::RetryScheduled,
                idx,
                Phase::Command,
                attempt + 1,
                json!({ "reason": reason, "delay_ms": delay.as_millis() as u64 }),
            );
            let timer = self.retry_timer(idx, Phase::Command, attempt + 1);
            self.schedule(timer, delay);
            return;
        }
        let st = &mut self.inst.steps[idx];
        st.status = if timed_out {
            StepStatus::TimedOut
        } else {
            StepStatus::Failed
        };
        st.error = Some(reason.clone());
        self.mark_settled(idx);
        self.record(
            HistoryKind::StepFailed,
            Some(idx),
            json!({ "reason": reason }),
        );
        self.publish(
            LifecycleKind::StepFailed,
            Some(idx),
            json!({ "reason": reason }),
        );
        self.after_settle();
    }

    pub(super) fn on_command_retry_due(&mut self, idx: usize, attempt: u32) {
        let st = &self.inst.steps[idx];
        if self.inst.status != SagaStatus::Running
            || st.status != StepStatus::WaitingRetry
            || attempt != st.attempt + 1
        {
            self.ignore_timer(idx, Phase::Command, attempt);
            return;
        }
        self.send_attempt(idx, attempt);
        self.check_stage();
    }

    /// A forward step settled: decide what the saga does next.
    pub(super) fn after_settle(&mut self) {
        match self.inst.status {
            SagaStatus::Running => self.check_stage(),
            SagaStatus::Compensating => self.continue_compensation(),
            _ => {}
        }
    }

    /// Looks at the current stage: all done → next stage; a failure → compensate,
    /// or (after the pivot, or when the pivot's outcome is unknown) stop for an operator.
    pub(super) fn check_stage(&mut self) {
        if self.inst.status != SagaStatus::Running || self.inst.stage >= self.def.stages.len() {
            return;
        }
        let steps = &self.def.stages[self.inst.stage].steps;
        let status = |i: &usize| self.inst.steps[*i].status;
        let failed = steps
            .iter()
            .copied()
            .find(|i| matches!(status(i), StepStatus::Failed | StepStatus::TimedOut));
        let in_flight = steps
            .iter()
            .any(|i| matches!(status(i), StepStatus::Running | StepStatus::WaitingRetry));
        match failed {
            None if !in_flight => self.enter_stage(self.inst.stage + 1),
            None => {}
            Some(idx) => {
                let reason = self.inst.steps[idx].error.clone().unwrap_or_default();
                if self.inst.past_pivot(self.def) {
                    if !in_flight {
                        self.stop_for_operator(
                            idx,
                            format!("step after the pivot failed: {reason}"),
                        );
                    }
                } else if Some(idx) == self.def.pivot && status(&idx) == StepStatus::TimedOut {
                    self.stop_for_operator(
                        idx,
                        format!("outcome of the pivot step is unknown: {reason}"),
                    );
                } else {
                    self.start_compensation(Some(idx), format!("step failed: {reason}"));
                }
            }
        }
    }

    fn stop_for_operator(&mut self, idx: usize, reason: String) {
        self.inst.status = SagaStatus::Failed;
        self.inst.failure = Some(Failure {
            phase: FailurePhase::Forward,
            step: Some(self.step_name(idx).to_owned()),
            reason: reason.clone(),
        });
        self.record(HistoryKind::Failed, Some(idx), json!({ "reason": reason }));
        self.publish(
            LifecycleKind::Failed,
            Some(idx),
            json!({ "reason": reason }),
        );
    }

    fn complete(&mut self) {
        let mut detail = json!({});
        if let Some(output) = &self.def.output {
            match output.render(&self.template_context()) {
                Ok(v) => self.inst.output = Some(v),
                Err(e) => detail = json!({ "output_error": e.to_string() }),
            }
        }
        self.inst.status = SagaStatus::Completed;
        if self.inst.deadline_at.is_some() {
            self.cancel(Timer::Deadline);
        }
        self.record(HistoryKind::Completed, None, detail);
        self.publish(
            LifecycleKind::Completed,
            None,
            json!({ "output": self.inst.output }),
        );
    }

    pub(super) fn record_reply(&mut self, idx: usize, reply: &Reply) {
        self.record_attempt(
            HistoryKind::ReplyReceived,
            idx,
            reply.phase,
            reply.attempt,
            json!({
                "type": reply.reply_type,
                "payload": reply.payload,
                "message_id": reply.message_id,
                "source": reply.source,
            }),
        );
    }

    pub(super) fn ignore_reply(&mut self, idx: usize, reply: &Reply, why: &str) {
        self.record_attempt(
            HistoryKind::ReplyIgnored,
            idx,
            reply.phase,
            reply.attempt,
            json!({
                "type": reply.reply_type,
                "message_id": reply.message_id,
                "source": reply.source,
                "why": why,
            }),
        );
    }

    pub(super) fn ignore_timer(&mut self, idx: usize, phase: Phase, attempt: u32) {
        self.record_attempt(
            HistoryKind::TimerIgnored,
            idx,
            phase,
            attempt,
            json!({ "why": "the attempt this timer guards is no longer current" }),
        );
    }
}
