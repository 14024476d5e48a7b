//! Events that come from people and clocks rather than participants.

use serde_json::json;

use super::effect::HistoryKind;
use super::event::Rejection;
use super::instance::{CompensationStatus as Comp, FailurePhase, SagaStatus, StepStatus};
use super::machine::Machine;

impl Machine<'_> {
    /// The pivot is in flight: rolling back now could undo the steps before a pivot that
    /// then succeeds, so deadline and abort wait for it to settle.
    fn pivot_in_flight(&self) -> Option<usize> {
        self.def.pivot.filter(|&p| {
            matches!(
                self.inst.steps[p].status,
                StepStatus::Running | StepStatus::WaitingRetry
            )
        })
    }

    pub(super) fn on_deadline(&mut self) {
        let past_pivot = self.inst.past_pivot(self.def);
        if self.inst.status != SagaStatus::Running || past_pivot || self.pivot_in_flight().is_some()
        {
            let why = if self.inst.status != SagaStatus::Running {
                "the saga is no longer running forward"
            } else {
                "the pivot has been reached; the saga can only go forward"
            };
            self.record(
                HistoryKind::DeadlineExceeded,
                None,
                json!({ "enforced": false, "why": why }),
            );
            return;
        }
        self.record(
            HistoryKind::DeadlineExceeded,
            None,
            json!({ "enforced": true }),
        );
        self.start_compensation(None, "saga deadline exceeded".to_owned());
    }

    pub(super) fn on_abort(&mut self, reason: String, actor: String) -> Result<(), Rejection> {
        let not_allowed = |reason: String| Rejection::NotAllowed {
            action: "abort",
            reason,
        };
        let detail = json!({ "actor": actor, "reason": reason });
        match self.inst.status {
            SagaStatus::Compensating | SagaStatus::Compensated => {
                // Idempotent: the saga is already doing (or has done) what abort asks.
                self.record(HistoryKind::OperatorAbort, None, json!({ "actor": actor, "reason": reason, "effect": "none: already rolling back" }));
                return Ok(());
            }
            SagaStatus::Completed => {
                return Err(not_allowed("the saga has completed".into()));
            }
            SagaStatus::Failed
                if self
                    .inst
                    .failure
                    .as_ref()
                    .is_some_and(|f| f.phase == FailurePhase::Compensation) =>
            {
                return Err(not_allowed(
                    "the saga is already rolling back and a compensation failed; use retry".into(),
                ));
            }
            _ => {}
        }
        if let Some(pivot) = self.def.pivot.filter(|_| self.inst.past_pivot(self.def)) {
            return Err(not_allowed(format!(
                "the saga has passed its pivot step `{}` and can only go forward; use retry",
                self.step_name(pivot)
            )));
        }
        if let Some(pivot) = self.pivot_in_flight() {
            return Err(not_allowed(format!(
                "the pivot step `{}` is in flight; once it settles the saga either rolls back by itself or can only go forward",
                self.step_name(pivot)
            )));
        }
        self.record(HistoryKind::OperatorAbort, None, detail);
        self.start_compensation(None, format!("aborted by {actor}: {reason}"));
        Ok(())
    }

    pub(super) fn on_retry(&mut self, actor: String) -> Result<(), Rejection> {
        let failure = match (&self.inst.status, &self.inst.failure) {
            (SagaStatus::Failed, Some(f)) => f.phase,
            (status, _) => {
                return Err(Rejection::NotAllowed {
                    action: "retry",
                    reason: format!(
                        "the saga is {}; only a failed saga waiting for an operator can be retried",
                        status.as_str()
                    ),
                });
            }
        };
        self.record(HistoryKind::OperatorRetry, None, json!({ "actor": actor }));
        self.inst.failure = None;
        match failure {
            FailurePhase::Compensation => {
                for st in &mut self.inst.steps {
                    if st.compensation == Comp::Failed {
                        st.compensation = Comp::NotStarted;
                        st.comp_budget_start = st.comp_attempt + 1;
                        st.comp_error = None;
                    }
                }
                self.inst.status = SagaStatus::Compensating;
                self.continue_compensation();
            }
            FailurePhase::Forward => {
                self.inst.status = SagaStatus::Running;
                let stage = self.def.stages[self.inst.stage].steps.clone();
                for idx in stage {
                    let st = &mut self.inst.steps[idx];
                    if matches!(st.status, StepStatus::Failed | StepStatus::TimedOut) {
                        st.budget_start = st.attempt + 1;
                        st.settled_seq = None;
                        let next = st.attempt + 1;
                        self.send_attempt(idx, next);
                    }
                }
                self.check_stage();
            }
        }
        Ok(())
    }
}
