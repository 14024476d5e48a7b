//! The forward path: stages, conditions, what a settled step means, and completion.

use serde_json::json;

use super::effect::{HistoryKind, LifecycleKind, Timer};
use super::event::Phase;
use super::instance::{Failure, FailurePhase, SagaStatus, StepStatus};
use super::machine::Machine;

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
                    match cond.truthy_in(&self.template_context()) {
                        Ok(true) => {}
                        Ok(false) => {
                            self.inst.steps[idx].forward.status = StepStatus::Skipped;
                            self.record(HistoryKind::StepSkipped, Some(idx), json!({}));
                            self.publish(LifecycleKind::StepSkipped, Some(idx), json!({}));
                            continue;
                        }
                        Err(e) => {
                            let reason = format!("condition `when` failed: {e}");
                            self.settle_failed(idx, Phase::Command, reason);
                            continue;
                        }
                    }
                }
                self.send(idx, Phase::Command, 1);
            }
            if steps
                .iter()
                .all(|&i| self.inst.steps[i].forward.status == StepStatus::Skipped)
            {
                stage += 1;
                continue;
            }
            break;
        }
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
        let status = |i: &usize| self.inst.steps[*i].forward.status;
        let failed = steps
            .iter()
            .copied()
            .find(|i| matches!(status(i), StepStatus::Failed | StepStatus::TimedOut));
        let in_flight = steps.iter().any(|i| status(i).is_active());
        match failed {
            None if !in_flight => self.enter_stage(self.inst.stage + 1),
            None => {}
            Some(idx) => {
                let track = &self.inst.steps[idx].forward;
                let reason = track.error.clone().unwrap_or_default();
                // A pivot that failed on its last attempt may still have succeeded on an
                // earlier one that timed out: rolling back is only safe once all are known.
                let unknown = track.status == StepStatus::TimedOut || !track.unknown.is_empty();
                if self.inst.past_pivot(self.def) {
                    if !in_flight {
                        self.stop_for_operator(
                            idx,
                            format!("step after the pivot failed: {reason}"),
                        );
                    }
                } else if Some(idx) == self.def.pivot && unknown {
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
            match output.render_in(&self.template_context()) {
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
}
