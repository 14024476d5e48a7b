//! Events that come from people and clocks rather than participants. Every refusal
//! names the actions that do work in the saga's state, so an operator is never left
//! without a way out.

use serde_json::json;

use super::effect::{HistoryKind, LifecycleKind, Timer};
use super::event::{Phase, Rejection, Resolution};
use super::instance::{FailurePhase, SagaStatus, StepStatus};
use super::machine::Machine;

fn not_allowed(action: &'static str, reason: String) -> Rejection {
    Rejection::NotAllowed { action, reason }
}

impl Machine<'_> {
    /// The pivot is in flight: rolling back now could undo the steps before a pivot that
    /// then succeeds, so deadline and abort wait for it to settle.
    fn pivot_in_flight(&self) -> Option<usize> {
        self.def
            .pivot
            .filter(|&p| self.inst.steps[p].forward.status.is_active())
    }

    /// The pivot timed out, or an attempt of it did: it may have succeeded.
    fn pivot_unknown(&self) -> Option<usize> {
        self.def.pivot.filter(|&p| {
            let t = &self.inst.steps[p].forward;
            t.status == StepStatus::TimedOut
                || (t.status == StepStatus::Failed && !t.unknown.is_empty())
        })
    }

    /// Steps (with their direction) an operator could resolve right now.
    fn resolvable(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (idx, st) in self.inst.steps.iter().enumerate() {
            for phase in [Phase::Command, Phase::Compensation] {
                let status = st.track(phase).status;
                let settled_here = matches!(status, StepStatus::Failed | StepStatus::TimedOut)
                    && self.stopped_in(phase);
                if status.is_active() || settled_here {
                    let name = self.step_name(idx);
                    out.push(match phase {
                        Phase::Command => format!("`{name}`"),
                        Phase::Compensation => format!("the compensation of `{name}`"),
                    });
                }
            }
        }
        out
    }

    fn abort_possible(&self) -> bool {
        match self.inst.status {
            SagaStatus::Running => {
                !self.inst.past_pivot(self.def)
                    && self.pivot_in_flight().is_none()
                    && self.pivot_unknown().is_none()
            }
            _ => false,
        }
    }

    fn retry_possible(&self) -> bool {
        match self.inst.status {
            SagaStatus::Failed => true,
            SagaStatus::Running | SagaStatus::Compensating => {
                let phase = self.active_phase();
                self.inst
                    .steps
                    .iter()
                    .any(|s| s.track(phase).status == StepStatus::WaitingRetry)
            }
            _ => false,
        }
    }

    fn active_phase(&self) -> Phase {
        if self.inst.status == SagaStatus::Compensating {
            Phase::Compensation
        } else {
            Phase::Command
        }
    }

    /// "use …" naming every operator action that works now, except `except`.
    fn ways_out(&self, except: &str) -> String {
        if self.inst.status.is_terminal() {
            return format!(
                "the saga is {}; nothing is left to do",
                self.inst.status.as_str()
            );
        }
        let mut ways = Vec::new();
        if except != "abort" && self.abort_possible() {
            ways.push("abort".to_owned());
        }
        if except != "retry" && self.retry_possible() {
            ways.push("retry".to_owned());
        }
        let resolvable = self.resolvable();
        if !resolvable.is_empty() {
            ways.push(format!("resolve-step ({})", resolvable.join(", ")));
        }
        ways.push("terminate".to_owned());
        format!("use {}", ways.join(", or "))
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
        let refuse =
            |m: &Self, why: String| not_allowed("abort", format!("{why}; {}", m.ways_out("abort")));
        match self.inst.status {
            SagaStatus::Compensating | SagaStatus::Compensated => {
                // Idempotent: the saga is already doing (or has done) what abort asks.
                let detail = json!({ "actor": actor, "reason": reason, "effect": "none: already rolling back" });
                self.record(HistoryKind::OperatorAbort, None, detail);
                return Ok(());
            }
            SagaStatus::Completed | SagaStatus::Terminated => {
                return Err(refuse(
                    self,
                    format!("the saga is {}", self.inst.status.as_str()),
                ));
            }
            SagaStatus::Failed
                if self
                    .inst
                    .failure
                    .as_ref()
                    .is_some_and(|f| f.phase == FailurePhase::Compensation) =>
            {
                return Err(refuse(
                    self,
                    "the saga is rolling back already and a compensation failed".into(),
                ));
            }
            _ => {}
        }
        if let Some(pivot) = self.def.pivot.filter(|_| self.inst.past_pivot(self.def)) {
            let why = format!(
                "the saga has passed its pivot step `{}` and can only go forward",
                self.step_name(pivot)
            );
            return Err(refuse(self, why));
        }
        if let Some(pivot) = self.pivot_in_flight() {
            let why = format!(
                "the pivot step `{}` is in flight, and rolling back could undo work before a pivot that succeeds",
                self.step_name(pivot)
            );
            return Err(refuse(self, why));
        }
        if let Some(pivot) = self.pivot_unknown() {
            let why = format!(
                "the outcome of the pivot step `{}` is unknown: ask its participant, then resolve it as failed to roll back, or as succeeded to go forward",
                self.step_name(pivot)
            );
            return Err(refuse(self, why));
        }
        self.record(
            HistoryKind::OperatorAbort,
            None,
            json!({ "actor": actor, "reason": reason }),
        );
        self.start_compensation(None, format!("aborted by {actor}: {reason}"));
        Ok(())
    }

    pub(super) fn on_retry(&mut self, actor: String) -> Result<(), Rejection> {
        match self.inst.status {
            SagaStatus::Failed => {
                self.redrive(actor);
                Ok(())
            }
            SagaStatus::Running | SagaStatus::Compensating if self.retry_possible() => {
                self.retry_waiting_now(actor);
                Ok(())
            }
            SagaStatus::Running | SagaStatus::Compensating => Err(not_allowed(
                "retry",
                format!(
                    "no attempt is waiting for a backoff: the saga is {} with its current attempts in flight; wait for their replies, or {}",
                    self.inst.status.as_str(),
                    self.ways_out("retry")
                ),
            )),
            _ => Err(not_allowed("retry", self.ways_out("retry"))),
        }
    }

    /// Sends now every attempt of the active direction that waits out a backoff.
    fn retry_waiting_now(&mut self, actor: String) {
        let phase = self.active_phase();
        let waiting: Vec<usize> = (0..self.inst.steps.len())
            .filter(|&i| self.inst.steps[i].track(phase).status == StepStatus::WaitingRetry)
            .collect();
        let names: Vec<&str> = waiting.iter().map(|&i| self.step_name(i)).collect();
        let detail = json!({ "actor": actor, "effect": "backoff skipped", "steps": names });
        self.record(HistoryKind::OperatorRetry, None, detail);
        for idx in waiting {
            self.retry_now(idx, phase);
        }
        self.after_failure(phase);
    }

    /// Redrives a `failed` saga from where it stopped, with fresh retry budgets.
    fn redrive(&mut self, actor: String) {
        let Some(failure) = self.inst.failure.as_ref().map(|f| f.phase) else {
            return;
        };
        self.record(HistoryKind::OperatorRetry, None, json!({ "actor": actor }));
        self.inst.failure = None;
        match failure {
            FailurePhase::Compensation => {
                for st in &mut self.inst.steps {
                    let t = &mut st.compensation;
                    if matches!(t.status, StepStatus::Failed | StepStatus::TimedOut) {
                        t.status = StepStatus::Pending;
                        t.budget_start = t.attempt + 1;
                        t.error = None;
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
                    if matches!(st.forward.status, StepStatus::Failed | StepStatus::TimedOut) {
                        st.forward.budget_start = st.forward.attempt + 1;
                        st.settled_seq = None;
                        let next = st.forward.attempt + 1;
                        self.send(idx, Phase::Command, next);
                    }
                }
                self.check_stage();
            }
        }
    }

    pub(super) fn on_terminate(&mut self, reason: String, actor: String) -> Result<(), Rejection> {
        if self.inst.status.is_terminal() {
            return Err(not_allowed("terminate", self.ways_out("terminate")));
        }
        for idx in 0..self.inst.steps.len() {
            for phase in [Phase::Command, Phase::Compensation] {
                self.stand_down(idx, phase);
            }
        }
        if self.inst.deadline_at.is_some() {
            self.cancel(Timer::Deadline);
        }
        self.inst.status = SagaStatus::Terminated;
        let detail = json!({ "actor": actor, "reason": reason });
        self.record(HistoryKind::Terminated, None, detail.clone());
        self.publish(LifecycleKind::Terminated, None, detail);
        Ok(())
    }

    pub(super) fn on_resolve(
        &mut self,
        idx: usize,
        phase: Phase,
        attempt: Option<u32>,
        outcome: Resolution,
        reason: String,
        actor: String,
    ) -> Result<(), Rejection> {
        let name = self.step_name(idx);
        let refuse = |m: &Self, why: String| {
            not_allowed(
                "resolve-step",
                format!("{why}; {}", m.ways_out("resolve-step")),
            )
        };
        if self.inst.status.is_terminal() {
            return Err(refuse(
                self,
                format!("the saga is {}", self.inst.status.as_str()),
            ));
        }
        if self.spec(idx, phase).is_none() {
            return Err(refuse(self, format!("step `{name}` has no compensation")));
        }
        let t = self.track(idx, phase);
        if let Some(n) = attempt.filter(|&n| n != t.attempt) {
            return Err(refuse(
                self,
                format!(
                    "attempt {n} of `{name}` is not current: attempt {} is",
                    t.attempt
                ),
            ));
        }
        let stopped_here = self.stopped_in(phase);
        let rolling_back =
            phase == Phase::Command && self.inst.status != SagaStatus::Running && !stopped_here;
        let status = t.status;
        let still_unknown = !t.unknown.is_empty();
        let failing = matches!(outcome, Resolution::Failed { .. });
        match status {
            StepStatus::Running | StepStatus::WaitingRetry => {}
            StepStatus::Failed | StepStatus::TimedOut if rolling_back => {
                return Err(refuse(
                    self,
                    format!(
                        "the saga is rolling back: `{name}` is compensated with the others (or has nothing to undo)"
                    ),
                ));
            }
            StepStatus::Failed if failing && !still_unknown => {
                return Err(refuse(self, format!("`{name}` has failed already")));
            }
            StepStatus::Failed | StepStatus::TimedOut => {}
            other => {
                let what = serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                return Err(refuse(
                    self,
                    format!("`{name}` is {what}: there is no attempt to resolve"),
                ));
            }
        }
        let attempt = self.track(idx, phase).attempt;
        let mut detail = json!({ "actor": actor, "reason": reason, "outcome": if failing { "failed" } else { "succeeded" } });
        match &outcome {
            Resolution::Succeeded { payload }
            | Resolution::Failed {
                payload: Some(payload),
            } => {
                detail["payload"] = payload.clone();
            }
            Resolution::Failed { payload: None } => {}
        }
        self.record_attempt(HistoryKind::OperatorResolve, idx, phase, attempt, detail);
        self.stand_down(idx, phase);
        let t = self.track_mut(idx, phase);
        let unknown = std::mem::take(&mut t.unknown);
        t.manual.extend(unknown);
        match outcome {
            Resolution::Succeeded { payload } => self.succeed_out_of_turn(idx, phase, payload),
            Resolution::Failed { .. } if status.is_active() => {
                self.settle_failed(
                    idx,
                    phase,
                    format!("resolved as failed by {actor}: {reason}"),
                );
                self.after_failure(phase);
            }
            Resolution::Failed { .. } => {
                self.settle_known_failure(
                    idx,
                    phase,
                    format!("resolved as failed by {actor}: {reason}"),
                );
            }
        }
        Ok(())
    }
}
