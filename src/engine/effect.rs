//! What a transition asks the outside world to do.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use uuid::Uuid;

use super::event::Phase;

/// A message to publish: a step's command or its compensation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outgoing {
    /// Deterministic from (saga, step, phase, attempt): re-applying the same event yields
    /// the same id, so a participant can dedupe on it.
    pub command_id: Uuid,
    pub step: String,
    pub phase: Phase,
    pub attempt: u32,
    pub topic: String,
    pub key: String,
    pub message_type: String,
    pub payload: Json,
    pub headers: Vec<(String, String)>,
    pub reply_topic: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "timer", rename_all = "snake_case")]
pub enum Timer {
    StepTimeout {
        step: String,
        phase: Phase,
        attempt: u32,
    },
    RetryDue {
        step: String,
        phase: Phase,
        attempt: u32,
    },
    Deadline,
}

impl Timer {
    /// The event a timer delivers when it fires.
    pub fn into_event(self) -> super::event::Event {
        use super::event::Event;
        match self {
            Timer::StepTimeout {
                step,
                phase,
                attempt,
            } => Event::StepTimeout {
                step,
                phase,
                attempt,
            },
            Timer::RetryDue {
                step,
                phase,
                attempt,
            } => Event::RetryDue {
                step,
                phase,
                attempt,
            },
            Timer::Deadline => Event::Deadline,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleKind {
    Started,
    StepSucceeded,
    StepFailed,
    StepSkipped,
    Completed,
    Compensating,
    Compensated,
    Failed,
    Terminated,
}

impl LifecycleKind {
    /// Events about one step rather than the saga (`kafka.lifecycle_steps`).
    pub fn is_per_step(self) -> bool {
        matches!(
            self,
            LifecycleKind::StepSucceeded | LifecycleKind::StepFailed | LifecycleKind::StepSkipped
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub kind: LifecycleKind,
    pub step: Option<String>,
    pub detail: Json,
}

/// What the timeline records. One or more per transition, even when nothing changes
/// (a duplicate reply is recorded as ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryKind {
    Started,
    CommandSent,
    CompensationSent,
    ReplyReceived,
    ReplyIgnored,
    TimedOut,
    RetryScheduled,
    StepSucceeded,
    StepFailed,
    StepSkipped,
    StageStarted,
    Compensating,
    StepCompensated,
    CompensationFailed,
    Completed,
    Compensated,
    Failed,
    DeadlineExceeded,
    TimerIgnored,
    OperatorAbort,
    OperatorRetry,
    /// A reply to an attempt whose outcome was unknown (it timed out, was superseded,
    /// or an operator resolved it): `detail.effect` says what it changed.
    LateReply,
    OperatorResolve,
    Terminated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub kind: HistoryKind,
    pub step: Option<String>,
    pub phase: Option<Phase>,
    pub attempt: Option<u32>,
    pub command_id: Option<Uuid>,
    pub detail: Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    SendCommand(Outgoing),
    SendCompensation(Outgoing),
    ScheduleTimer { timer: Timer, due_at: DateTime<Utc> },
    CancelTimer { timer: Timer },
    Publish(Lifecycle),
    Record(HistoryEntry),
}
