//! The state of one saga, as persisted between events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use uuid::Uuid;

use super::event::Phase;
use crate::definition::Definition;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SagaStatus {
    /// Moving forward through its steps.
    Running,
    /// Undoing completed steps, newest first.
    Compensating,
    /// Every step succeeded (or was skipped). Terminal.
    Completed,
    /// Every step whose command went out has been compensated. Terminal.
    Compensated,
    /// Ended by an operator; nothing more is sent. Terminal.
    Terminated,
    /// Stopped, waiting for an operator: compensations exhausted (rollback incomplete),
    /// a step after the pivot exhausted its retries, or the pivot's outcome is unknown.
    Failed,
}

impl SagaStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SagaStatus::Completed | SagaStatus::Compensated | SagaStatus::Terminated
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Failed => "failed",
            SagaStatus::Terminated => "terminated",
        }
    }
}

/// Where a step's command, or its compensation, stands. Both directions run the same
/// attempt machine (`engine::attempt`), so they share one set of states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not reached yet (a compensation: not started).
    Pending,
    /// Its `when:` condition was false (commands only).
    Skipped,
    /// Attempt `attempt` is out; waiting for its reply or timeout.
    Running,
    /// Attempt `attempt` failed; attempt `attempt + 1` is due on a timer.
    WaitingRetry,
    /// A success reply (for a compensation: compensated).
    Succeeded,
    /// A failure reply, a template error before anything was sent, or an operator's word.
    Failed,
    /// The last attempt timed out: the outcome is unknown until a late reply or an operator.
    TimedOut,
}

impl StepStatus {
    /// Settled: nothing more will happen to this step without an operator or a late reply.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            StepStatus::Skipped | StepStatus::Succeeded | StepStatus::Failed | StepStatus::TimedOut
        )
    }

    /// In flight: a reply or a timer is awaited.
    pub fn is_active(self) -> bool {
        matches!(self, StepStatus::Running | StepStatus::WaitingRetry)
    }
}

/// The attempts of one direction of one step: its command, or its compensation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    pub status: StepStatus,
    /// Number of the latest attempt whose message was emitted (0: none ever).
    pub attempt: u32,
    /// First attempt of the current retry budget (an operator retry starts a new budget).
    pub budget_start: u32,
    pub error: Option<String>,
    /// Attempts that went out and have no answer yet although they are no longer
    /// current (timed out, superseded, or cut short). A reply to one is late news, not
    /// a duplicate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<u32>,
    /// Attempts an operator resolved before their participant answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manual: Vec<u32>,
    /// When the step's first command went out (the forward track only): the start of
    /// the step's duration metric, kept here so that settling a step needs no read of
    /// its history. Absent in states written before it existed, or by an older replica
    /// during a rolling upgrade: those steps get no duration sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sent_at: Option<DateTime<Utc>>,
}

impl Track {
    fn new() -> Self {
        Track {
            status: StepStatus::Pending,
            attempt: 0,
            budget_start: 1,
            error: None,
            unknown: Vec::new(),
            manual: Vec::new(),
            first_sent_at: None,
        }
    }

    /// Whether attempt `n` went out and its participant's answer is still to come.
    pub fn awaits_answer(&self, n: u32) -> bool {
        (self.status == StepStatus::Running && self.attempt == n)
            || self.unknown.contains(&n)
            || self.manual.contains(&n)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "StepStateWire")]
pub struct StepState {
    pub forward: Track,
    pub compensation: Track,
    /// Payload of the success reply (or of an operator's resolution).
    pub reply: Option<Json>,
    /// Position in the order in which steps settled; compensation runs in reverse of it.
    pub settled_seq: Option<u64>,
}

impl StepState {
    fn new() -> Self {
        StepState {
            forward: Track::new(),
            compensation: Track::new(),
            reply: None,
            settled_seq: None,
        }
    }

    /// Whether any command for this step ever went out (so it may have had effects).
    pub fn command_sent(&self) -> bool {
        self.forward.attempt > 0
    }

    pub fn track(&self, phase: Phase) -> &Track {
        match phase {
            Phase::Command => &self.forward,
            Phase::Compensation => &self.compensation,
        }
    }

    pub fn track_mut(&mut self, phase: Phase) -> &mut Track {
        match phase {
            Phase::Command => &mut self.forward,
            Phase::Compensation => &mut self.compensation,
        }
    }
}

/// Stored states written before the two directions shared one attempt machine had
/// paired `comp_*` fields; they are read as they were meant.
#[derive(Deserialize)]
#[serde(untagged)]
enum StepStateWire {
    Current {
        forward: Track,
        compensation: Track,
        reply: Option<Json>,
        settled_seq: Option<u64>,
    },
    Legacy {
        status: StepStatus,
        attempt: u32,
        budget_start: u32,
        reply: Option<Json>,
        settled_seq: Option<u64>,
        error: Option<String>,
        compensation: LegacyCompensation,
        comp_attempt: u32,
        comp_budget_start: u32,
        comp_error: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum LegacyCompensation {
    NotStarted,
    Running,
    WaitingRetry,
    Compensated,
    Failed,
}

impl From<StepStateWire> for StepState {
    fn from(wire: StepStateWire) -> Self {
        match wire {
            StepStateWire::Current {
                forward,
                compensation,
                reply,
                settled_seq,
            } => StepState {
                forward,
                compensation,
                reply,
                settled_seq,
            },
            StepStateWire::Legacy {
                status,
                attempt,
                budget_start,
                reply,
                settled_seq,
                error,
                compensation,
                comp_attempt,
                comp_budget_start,
                comp_error,
            } => StepState {
                forward: Track {
                    status,
                    attempt,
                    budget_start,
                    error,
                    // The old shape did not say which attempts timed out; the last one
                    // did when the step is `timed_out`, so its late reply still counts.
                    unknown: if status == StepStatus::TimedOut {
                        vec![attempt]
                    } else {
                        Vec::new()
                    },
                    manual: Vec::new(),
                    first_sent_at: None,
                },
                compensation: Track {
                    status: match compensation {
                        LegacyCompensation::NotStarted => StepStatus::Pending,
                        LegacyCompensation::Running => StepStatus::Running,
                        LegacyCompensation::WaitingRetry => StepStatus::WaitingRetry,
                        LegacyCompensation::Compensated => StepStatus::Succeeded,
                        LegacyCompensation::Failed => StepStatus::Failed,
                    },
                    attempt: comp_attempt,
                    budget_start: comp_budget_start,
                    error: comp_error,
                    unknown: Vec::new(),
                    manual: Vec::new(),
                    first_sent_at: None,
                },
                reply,
                settled_seq,
            },
        }
    }
}

/// Why a saga left the forward path or stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub phase: FailurePhase,
    pub step: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePhase {
    /// A forward step failed: before the pivot this starts compensation.
    Forward,
    /// A compensation could not be completed: rollback incomplete.
    Compensation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: Uuid,
    pub definition: String,
    /// Content hash of the definition this saga is pinned to.
    pub version: String,
    pub status: SagaStatus,
    pub input: Json,
    /// Business key (idempotency key) it was started with, if any.
    pub key: Option<String>,
    /// Index of the current forward stage; `stages.len()` once all are done.
    pub stage: usize,
    /// One entry per definition step, same order.
    pub steps: Vec<StepState>,
    pub output: Option<Json>,
    pub failure: Option<Failure>,
    /// Source of `settled_seq` values.
    pub seq: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deadline_at: Option<DateTime<Utc>>,
}

impl Instance {
    /// A saga that has not started yet; `apply(Event::Start)` starts it.
    pub fn new(
        id: Uuid,
        def: &Definition,
        input: Json,
        key: Option<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Instance {
            id,
            definition: def.name.clone(),
            version: def.version.clone(),
            status: SagaStatus::Running,
            input,
            key,
            stage: 0,
            steps: def.steps.iter().map(|_| StepState::new()).collect(),
            output: None,
            failure: None,
            seq: 0,
            created_at: now,
            updated_at: now,
            deadline_at: None,
        }
    }

    /// True once the pivot step has succeeded: from then on the saga only goes forward.
    pub fn past_pivot(&self, def: &Definition) -> bool {
        def.pivot
            .is_some_and(|p| self.steps[p].forward.status == StepStatus::Succeeded)
    }

    /// The step an operator looks for this saga by: where it stopped when `failed`,
    /// else the first step in flight; none once finished.
    pub fn spotlight_step(&self, def: &Definition) -> Option<String> {
        if self.status == SagaStatus::Failed {
            return self.failure.as_ref().and_then(|f| f.step.clone());
        }
        self.current_steps(def).into_iter().next()
    }

    /// Names of the steps currently in flight (forward or compensating).
    pub fn current_steps(&self, def: &Definition) -> Vec<String> {
        if self.status.is_terminal() {
            return Vec::new();
        }
        self.steps
            .iter()
            .zip(&def.steps)
            .filter(|(s, _)| s.forward.status.is_active() || s.compensation.status.is_active())
            .map(|(_, d)| d.name.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_stored_before_the_shared_attempt_machine_still_load() {
        let legacy = serde_json::json!({
            "status": "timed_out", "attempt": 2, "budget_start": 1, "reply": null,
            "settled_seq": 3, "error": "no reply", "compensation": "compensated",
            "comp_attempt": 1, "comp_budget_start": 1, "comp_error": null
        });
        let st: StepState = serde_json::from_value(legacy).expect("legacy shape loads");
        assert_eq!(st.forward.status, StepStatus::TimedOut);
        assert_eq!(st.forward.attempt, 2);
        assert_eq!(st.forward.error.as_deref(), Some("no reply"));
        assert_eq!(st.forward.unknown, [2], "its late reply is still news");
        assert_eq!(st.compensation.status, StepStatus::Succeeded);
        assert_eq!(st.compensation.attempt, 1);
        assert_eq!(st.settled_seq, Some(3));
        // And the current shape round-trips.
        let again: StepState =
            serde_json::from_value(serde_json::to_value(&st).expect("serializes"))
                .expect("current shape loads");
        assert_eq!(again, st);
    }
}
