//! The backward path: undo every step whose command went out, newest first.

use serde_json::json;

use super::effect::{HistoryKind, LifecycleKind, Timer};
use super::event::Phase;
use super::instance::{Failure, FailurePhase, SagaStatus, StepStatus};
use super::machine::Machine;

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
            if self.inst.steps[idx].forward.status == StepStatus::WaitingRetry {
                let next = self.inst.steps[idx].forward.attempt + 1;
                let timer = self.retry_timer(idx, Phase::Command, next);
                self.cancel(timer);
                self.inst.steps[idx].forward.status = StepStatus::Failed;
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
        let busy =
            self.inst.steps.iter().any(|s| {
                s.forward.status == StepStatus::Running || s.compensation.status.is_active()
            });
        if busy {
            return;
        }
        let next = (0..self.inst.steps.len())
            .filter(|&i| {
                let s = &self.inst.steps[i];
                s.command_sent()
                    && self.def.steps[i].compensation.is_some()
                    && s.compensation.status == StepStatus::Pending
            })
            .max_by_key(|&i| self.inst.steps[i].settled_seq);
        match next {
            Some(idx) => {
                let attempt = self.inst.steps[idx].compensation.attempt + 1;
                self.send(idx, Phase::Compensation, attempt);
            }
            None => {
                self.inst.status = SagaStatus::Compensated;
                self.record(HistoryKind::Compensated, None, json!({}));
                self.publish(LifecycleKind::Compensated, None, json!({}));
            }
        }
    }

    /// Rollback cannot finish by itself: stop and wait for an operator. Later
    /// compensations are not attempted, since they may depend on this one.
    pub(super) fn compensation_failed(&mut self, idx: usize, reason: String) {
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
