//! What can happen to a saga, and what the engine is told about the world.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

/// Whether a message belongs to a step's forward command or to its compensation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Command,
    Compensation,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Command => "command",
            Phase::Compensation => "compensation",
        }
    }
}

/// A participant's answer to one command or compensation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub step: String,
    pub phase: Phase,
    pub attempt: u32,
    /// CloudEvents `type` of the reply; the definition says what it means.
    pub reply_type: String,
    pub payload: Json,
    /// Transport message id (`ce_id`), kept in the history.
    pub message_id: String,
    /// The topic the reply arrived on: it counts only on the definition's reply topic.
    #[serde(default)]
    pub topic: String,
    /// CloudEvents `source` of the reply (who says they sent it), kept in the history.
    #[serde(default)]
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Begin the saga created by `Instance::new`.
    Start,
    Reply(Reply),
    /// No reply to `attempt` within the step's (or compensation's) timeout.
    StepTimeout {
        step: String,
        phase: Phase,
        attempt: u32,
    },
    /// The backoff before `attempt` has elapsed.
    RetryDue {
        step: String,
        phase: Phase,
        attempt: u32,
    },
    /// The saga-level deadline has passed.
    Deadline,
    /// An operator asks to compensate now.
    Abort {
        reason: String,
        actor: String,
    },
    /// An operator asks to go again: redrive the failed steps or compensations of a
    /// `failed` saga, or send at once the attempts waiting out a backoff.
    Retry {
        actor: String,
    },
    /// An operator settles a step's command or compensation in place of its participant.
    Resolve {
        step: String,
        phase: Phase,
        /// The attempt the operator means; refused when another one is current, so a
        /// repeated request is not applied twice.
        attempt: Option<u32>,
        outcome: Resolution,
        reason: String,
        actor: String,
    },
    /// An operator ends the saga where it stands; nothing more is sent.
    Terminate {
        reason: String,
        actor: String,
    },
}

/// What an operator says an attempt did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Resolution {
    /// As a success reply with this payload.
    Succeeded { payload: Json },
    /// As a failure reply that must not be retried; the payload, if any, is recorded.
    Failed { payload: Option<Json> },
}

/// Everything from outside that a transition may depend on. Passing these in (rather
/// than reading a clock or an RNG) is what makes `apply` deterministic and replayable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Env {
    pub now: DateTime<Utc>,
    /// Seed for backoff jitter.
    pub random: u64,
}

/// An operator request that is not safe in the saga's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the saga has already started")]
    AlreadyStarted,
    #[error("input does not match the definition's schema: {}", .0.join("; "))]
    InvalidInput(Vec<String>),
    #[error("{action} is not allowed: {reason}")]
    NotAllowed {
        action: &'static str,
        reason: String,
    },
    #[error("the event names step `{0}`, which this saga's definition does not have")]
    UnknownStep(String),
    #[error(
        "the reply arrived on `{got}`, but this saga's commands name `{expected}` as their reply topic"
    )]
    WrongReplyTopic { expected: String, got: String },
}
