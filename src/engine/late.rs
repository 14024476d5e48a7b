//! Late replies: answers to attempts that timed out, were superseded by a newer attempt,
//! or were resolved by an operator first. They are news about what a participant did,
//! so they can settle an outcome that was unknown. The rules (docs/definitions.md,
//! "Late replies"):
//!
//! - a late success settles a direction that has not succeeded yet: a newer attempt in
//!   flight or a pending backoff is cancelled, and a saga stopped `failed` over that
//!   direction resumes (a pivot whose outcome was unknown moves the saga forward, a
//!   compensation counts as compensated);
//! - a late success of a command while the saga rolls back marks the step succeeded
//!   (its compensation runs, or ran, with the others);
//! - a late failure changes something only when it was the last unknown about a step
//!   that timed out: the outcome is then known to be a failure, and a pivot that
//!   stopped the saga for being unknown starts the rollback;
//! - after an operator resolved the attempt, or after the saga was terminated, a
//!   reply is recorded and changes nothing;
//! - `duplicate` is kept for replies to attempts that already had their answer.

use serde_json::{Value as Json, json};

use super::attempt::reply_detail;
use super::effect::HistoryKind;
use super::event::{Phase, Reply};
use super::instance::{FailurePhase, SagaStatus, StepStatus};
use super::machine::Machine;
use crate::definition::ReplyClass;

/// What a late reply does.
enum Late {
    /// It settles the direction as succeeded and the saga goes on from there.
    Settles,
    /// The step's command succeeded after all, but the saga is rolling back.
    SucceededDuringRollback,
    /// The outcome was unknown and is now known to be a failure.
    KnownFailed,
    /// Recorded only.
    Noted(&'static str),
}

impl Machine<'_> {
    pub(super) fn on_late_reply(&mut self, idx: usize, reply: Reply, class: ReplyClass) {
        let phase = reply.phase;
        let attempt = reply.attempt;
        let by_operator = self.track(idx, phase).manual.contains(&attempt);
        let t = self.track_mut(idx, phase);
        t.unknown.retain(|&a| a != attempt);
        t.manual.retain(|&a| a != attempt);
        let success = class == ReplyClass::Success;
        let late = if self.inst.status == SagaStatus::Terminated {
            Late::Noted("none: the saga was terminated")
        } else if by_operator {
            Late::Noted("none: an operator resolved this attempt first")
        } else if success {
            self.late_success(idx, phase)
        } else {
            self.late_failure(idx, phase)
        };
        let effect = match &late {
            Late::Settles if phase == Phase::Command => "settled: the step succeeded",
            Late::Settles => "settled: the step is compensated",
            Late::SucceededDuringRollback => {
                "noted: the step succeeded; it is compensated with the others"
            }
            Late::KnownFailed => "settled: the outcome is known now, and it is a failure",
            Late::Noted(why) => why,
        };
        let mut detail = reply_detail(&reply);
        detail["effect"] = json!(effect);
        self.record_attempt(HistoryKind::LateReply, idx, phase, attempt, detail);
        match late {
            Late::Settles => self.settle_late_success(idx, phase, reply.payload),
            Late::SucceededDuringRollback => {
                self.stand_down(idx, phase);
                let st = &mut self.inst.steps[idx];
                st.forward.status = StepStatus::Succeeded;
                st.forward.error = None;
                if st.compensation.status == StepStatus::Pending {
                    st.reply = Some(reply.payload);
                }
                if st.settled_seq.is_none() {
                    self.mark_settled(idx);
                }
                self.continue_compensation();
            }
            Late::KnownFailed => {
                let reason = format!("late reply `{}`: {}", reply.reply_type, reply.payload);
                self.settle_known_failure(idx, phase, reason);
            }
            Late::Noted(_) => {}
        }
    }

    fn late_success(&self, idx: usize, phase: Phase) -> Late {
        let status = self.track(idx, phase).status;
        if status == StepStatus::Succeeded {
            return Late::Noted("none: the step had already succeeded");
        }
        let rolling_back = match self.inst.status {
            SagaStatus::Compensating | SagaStatus::Compensated => true,
            SagaStatus::Failed => self.failure_phase() == Some(FailurePhase::Compensation),
            _ => false,
        };
        match (phase, status) {
            (_, StepStatus::Pending | StepStatus::Skipped) => Late::Noted("none"),
            (Phase::Command, _) if rolling_back => Late::SucceededDuringRollback,
            (Phase::Command, _) if self.inst.status == SagaStatus::Completed => Late::Noted("none"),
            (Phase::Compensation, _) if !rolling_back => Late::Noted("none"),
            _ => Late::Settles,
        }
    }

    fn late_failure(&self, idx: usize, phase: Phase) -> Late {
        let t = self.track(idx, phase);
        // A pivot that failed on its last attempt stopped the saga while an earlier
        // attempt was unknown: this was the last unknown, so now it can roll back.
        let pivot_waits =
            phase == Phase::Command && self.def.pivot == Some(idx) && self.stopped_in(phase);
        match t.status {
            StepStatus::Succeeded => Late::Noted("none: the step had already succeeded"),
            StepStatus::Running | StepStatus::WaitingRetry => {
                Late::Noted("none: a later attempt decides")
            }
            StepStatus::TimedOut if t.unknown.is_empty() => Late::KnownFailed,
            StepStatus::Failed if t.unknown.is_empty() && pivot_waits => Late::KnownFailed,
            StepStatus::TimedOut | StepStatus::Failed if !t.unknown.is_empty() => {
                Late::Noted("none: other attempts' outcomes are still unknown")
            }
            _ => Late::Noted("none: the step had already failed"),
        }
    }

    fn failure_phase(&self) -> Option<FailurePhase> {
        self.inst.failure.as_ref().map(|f| f.phase)
    }

    /// The saga stopped `failed` in this direction: a step forward (or the pivot's
    /// unknown outcome) for commands, rollback incomplete for compensations.
    pub(super) fn stopped_in(&self, phase: Phase) -> bool {
        let direction = match phase {
            Phase::Command => FailurePhase::Forward,
            Phase::Compensation => FailurePhase::Compensation,
        };
        self.inst.status == SagaStatus::Failed && self.failure_phase() == Some(direction)
    }

    /// Settles a direction as succeeded out of turn: whatever it was waiting for is
    /// cancelled.
    fn settle_late_success(&mut self, idx: usize, phase: Phase, payload: Json) {
        self.stand_down(idx, phase);
        self.succeed_out_of_turn(idx, phase, payload);
    }

    /// Settles a direction as succeeded when it was not waiting for that answer (it
    /// was stood down first); a saga stopped over this direction resumes.
    pub(super) fn succeed_out_of_turn(&mut self, idx: usize, phase: Phase, payload: Json) {
        if self.stopped_in(phase) {
            self.resume(phase);
        }
        self.settle_succeeded(idx, phase, payload);
        self.after_success(phase);
    }

    /// Settles a direction whose outcome was unknown as failed; a pivot that stopped
    /// the saga for being unknown then lets the rollback start.
    pub(super) fn settle_known_failure(&mut self, idx: usize, phase: Phase, reason: String) {
        let t = self.track_mut(idx, phase);
        t.status = StepStatus::Failed;
        t.error = Some(reason);
        let pivot_stopped =
            phase == Phase::Command && self.def.pivot == Some(idx) && self.stopped_in(phase);
        if pivot_stopped {
            self.resume(phase);
            self.check_stage();
        }
    }

    /// Cancels whatever a direction was waiting for. An attempt in flight keeps its
    /// place among the unknowns, so its own reply is late news too.
    pub(super) fn stand_down(&mut self, idx: usize, phase: Phase) {
        let t = self.track(idx, phase);
        let (status, attempt) = (t.status, t.attempt);
        match status {
            StepStatus::Running => {
                let timer = self.timeout_timer(idx, phase, attempt);
                self.cancel(timer);
                self.track_mut(idx, phase).unknown.push(attempt);
            }
            StepStatus::WaitingRetry => {
                let timer = self.retry_timer(idx, phase, attempt + 1);
                self.cancel(timer);
            }
            _ => {}
        }
    }

    /// A saga stopped `failed` goes back to the direction it stopped in.
    pub(super) fn resume(&mut self, phase: Phase) {
        self.inst.failure = None;
        self.inst.status = match phase {
            Phase::Command => SagaStatus::Running,
            Phase::Compensation => SagaStatus::Compensating,
        };
    }
}
