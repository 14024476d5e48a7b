//! The state of one saga, as persisted between events.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use uuid::Uuid;

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
    /// Stopped, waiting for an operator: compensations exhausted (rollback incomplete),
    /// a step after the pivot exhausted its retries, or the pivot's outcome is unknown.
    Failed,
}

impl SagaStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, SagaStatus::Completed | SagaStatus::Compensated)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SagaStatus::Running => "running",
            SagaStatus::Compensating => "compensating",
            SagaStatus::Completed => "completed",
            SagaStatus::Compensated => "compensated",
            SagaStatus::Failed => "failed",
        }
    }
}

/// Forward progress of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Its stage has not been reached.
    Pending,
    /// Its `when:` condition was false.
    Skipped,
    /// Command `attempt` is out; waiting for its reply or timeout.
    Running,
    /// Attempt `attempt` failed; attempt `attempt + 1` is due on a timer.
    WaitingRetry,
    Succeeded,
    /// A failure reply (or a template error before anything was sent).
    Failed,
    /// The last attempt timed out: the outcome is unknown.
    TimedOut,
}

impl StepStatus {
    /// Settled: nothing more will happen to this step without an operator.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            StepStatus::Skipped | StepStatus::Succeeded | StepStatus::Failed | StepStatus::TimedOut
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompensationStatus {
    NotStarted,
    Running,
    WaitingRetry,
    Compensated,
    /// Exhausted or refused; the saga waits for an operator.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepState {
    pub status: StepStatus,
    /// Number of the latest forward attempt whose command was emitted (0: none ever).
    pub attempt: u32,
    /// First attempt of the current retry budget (an operator retry starts a new budget).
    pub budget_start: u32,
    /// Payload of the success reply.
    pub reply: Option<Json>,
    /// Position in the order in which steps settled; compensation runs in reverse of it.
    pub settled_seq: Option<u64>,
    pub error: Option<String>,
    pub compensation: CompensationStatus,
    pub comp_attempt: u32,
    pub comp_budget_start: u32,
    pub comp_error: Option<String>,
}

impl StepState {
    fn new() -> Self {
        StepState {
            status: StepStatus::Pending,
            attempt: 0,
            budget_start: 1,
            reply: None,
            settled_seq: None,
            error: None,
            compensation: CompensationStatus::NotStarted,
            comp_attempt: 0,
            comp_budget_start: 1,
            comp_error: None,
        }
    }

    /// Whether any command for this step ever went out (so it may have had effects).
    pub fn command_sent(&self) -> bool {
        self.attempt > 0
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
            .is_some_and(|p| self.steps[p].status == StepStatus::Succeeded)
    }

    /// Names of the steps currently in flight (forward or compensating).
    pub fn current_steps(&self, def: &Definition) -> Vec<String> {
        self.steps
            .iter()
            .zip(&def.steps)
            .filter(|(s, _)| {
                matches!(s.status, StepStatus::Running | StepStatus::WaitingRetry)
                    || matches!(
                        s.compensation,
                        CompensationStatus::Running | CompensationStatus::WaitingRetry
                    )
            })
            .map(|(_, d)| d.name.clone())
            .collect()
    }
}
