//! The validated, typed form of a saga definition: what the engine runs.
//!
//! Built only by `decode` + `validate`; holding one means every rule in
//! docs/definitions.md has been checked.

use std::time::Duration;

use crate::definition::node::Pos;
use crate::definition::template::Template;

/// Where the engine should send replies when a definition names no reply topic.
pub const DEFAULT_REPLY_TOPIC: &str = "sagaflow.replies";
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Definition {
    pub name: String,
    pub description: String,
    /// Hex SHA-256 of the source text: the exact version a saga is pinned to.
    pub version: String,
    /// The YAML text this was built from (kept so a snapshot can be re-loaded).
    pub source: String,
    /// The file it came from, for messages.
    pub file: String,
    pub input_schema: Option<Schema>,
    pub reply_topic: String,
    /// Saga-level deadline measured from start.
    pub deadline: Option<Duration>,
    pub trigger: Option<Trigger>,
    /// Every step in declaration order; a step's index here is its identity.
    pub steps: Vec<Step>,
    /// Execution order: a stage is one step or one parallel group.
    pub stages: Vec<Stage>,
    /// Index (into `steps`) of the pivot step, if any.
    pub pivot: Option<usize>,
    pub output: Option<Template>,
    /// Problems that do not make it invalid (plain scalars YAML 1.1 reads otherwise).
    pub warnings: Vec<crate::definition::Diagnostic>,
}

/// A JSON Schema written in a definition (the input's, a command's, a reply type's).
#[derive(Debug, Clone)]
pub struct Schema {
    pub schema: serde_json::Value,
    /// `schema` compiled once at load; shared because compiling is costly.
    pub validator: std::sync::Arc<jsonschema::Validator>,
}

impl Schema {
    /// Every place `value` breaks the schema, each message without the offending value
    /// (for data that is kept where its sender's readers should not see it).
    pub fn masked_violations(
        &self,
        value: &serde_json::Value,
    ) -> Vec<crate::definition::InputError> {
        self.validator
            .iter_errors(value)
            .map(|e| crate::definition::InputError {
                path: e.instance_path().as_str().to_owned(),
                message: e.masked().to_string(),
            })
            .collect()
    }

    /// Every place `value` breaks the schema (empty when it conforms).
    pub fn violations(&self, value: &serde_json::Value) -> Vec<crate::definition::InputError> {
        self.validator
            .iter_errors(value)
            .map(|e| crate::definition::InputError {
                path: e.instance_path().as_str().to_owned(),
                message: e.to_string(),
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Stage {
    /// The group's name for a parallel group; `None` for a single step.
    pub group: Option<String>,
    /// Indexes into `Definition::steps`, in declaration order.
    pub steps: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub index: usize,
    /// Index into `Definition::stages`.
    pub stage: usize,
    pub pos: Pos,
    pub command: MessageSpec,
    pub reply: ReplySpec,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// `None` when declared `compensation: none` (or the step is at or after the pivot).
    pub compensation: Option<Compensation>,
    pub pivot: bool,
    /// Evaluated when the step's stage is reached; false skips the step.
    pub when: Option<Template>,
}

/// A message sagaflow sends: a command or a compensation.
#[derive(Debug, Clone)]
pub struct MessageSpec {
    pub topic: String,
    /// CloudEvents `type` of the message.
    pub message_type: String,
    pub payload: Template,
    /// Kafka key; the saga id when absent.
    pub key: Option<Template>,
    /// Extra Kafka headers, values templated.
    pub headers: Vec<(String, Template)>,
    /// The JSON Schema of the rendered payload, if declared: the participant's contract
    /// (AsyncAPI, `sagaflow contract-test`, `simulate`).
    pub schema: Option<Schema>,
}

#[derive(Debug, Clone)]
pub struct Compensation {
    pub command: MessageSpec,
    pub reply: ReplySpec,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone, Default)]
pub struct ReplySpec {
    pub success: Vec<String>,
    pub failure: Vec<FailureType>,
    /// The JSON Schema of a reply type's data, for the types that declare one.
    pub schemas: std::collections::BTreeMap<String, Schema>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureType {
    pub reply_type: String,
    pub retryable: bool,
}

/// How a reply type is to be read for one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyClass {
    Success,
    Failure {
        retryable: bool,
    },
    /// Not declared for this step.
    Undeclared,
}

impl ReplySpec {
    pub fn classify(&self, reply_type: &str) -> ReplyClass {
        if self.success.iter().any(|t| t == reply_type) {
            return ReplyClass::Success;
        }
        match self.failure.iter().find(|f| f.reply_type == reply_type) {
            Some(f) => ReplyClass::Failure {
                retryable: f.retryable,
            },
            None => ReplyClass::Undeclared,
        }
    }

    /// Why `payload` is not valid data for `reply_type`, if its schema says so.
    pub fn schema_violation(
        &self,
        reply_type: &str,
        payload: &serde_json::Value,
    ) -> Option<String> {
        // Masked: the timeline keeps the reason, and replies may carry personal data.
        let errors = self.schemas.get(reply_type)?.masked_violations(payload);
        if errors.is_empty() {
            return None;
        }
        let list: Vec<String> = errors
            .iter()
            .map(|e| {
                let at = if e.path.is_empty() {
                    "/"
                } else {
                    e.path.as_str()
                };
                format!("{at}: {}", e.message)
            })
            .collect();
        Some(format!(
            "reply `{reply_type}` breaks its schema: {}",
            list.join("; ")
        ))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = no retry).
    pub max_attempts: u32,
    pub initial_interval: Duration,
    pub multiplier: f64,
    pub max_interval: Duration,
    /// Fraction in [0, 1] of each delay that is randomised away.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_interval: Duration::from_millis(500),
            multiplier: 2.0,
            max_interval: Duration::from_secs(30),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Delay before attempt `failed_attempt + 1`, given a uniform `random` in [0, 1).
    ///
    /// Exponential with a cap, then reduced by up to `jitter` of itself, so retries of
    /// many sagas failing together spread out and never exceed `max_interval`.
    pub fn backoff(&self, failed_attempt: u32, random: f64) -> Duration {
        let exponent = failed_attempt.saturating_sub(1).min(64) as i32;
        let base = self.initial_interval.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max_interval.as_secs_f64());
        let jittered = capped * (1.0 - self.jitter * random.clamp(0.0, 1.0));
        Duration::from_secs_f64(jittered.max(0.0))
    }
}

#[derive(Debug, Clone)]
pub struct Trigger {
    pub topic: String,
    /// CloudEvents `type` of the events that start this saga.
    pub event_type: String,
    /// Expression over `event` giving the business key (idempotency key).
    pub key: Template,
    /// Builds the saga input from `event`.
    pub input: Template,
}

impl Definition {
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The input schema's first `examples` entry, if it has one.
    pub fn example_input(&self) -> Option<&serde_json::Value> {
        self.input_schema.as_ref()?.schema.get("examples")?.get(0)
    }

    /// True when `step` comes strictly after the pivot stage (or is the pivot).
    pub fn at_or_after_pivot(&self, step: usize) -> bool {
        match self.pivot {
            Some(p) => self.steps[step].stage >= self.steps[p].stage,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_caps_and_jitter_only_shortens() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_interval: Duration::from_millis(100),
            multiplier: 2.0,
            max_interval: Duration::from_millis(500),
            jitter: 0.5,
        };
        assert_eq!(p.backoff(1, 0.0), Duration::from_millis(100));
        assert_eq!(p.backoff(2, 0.0), Duration::from_millis(200));
        assert_eq!(p.backoff(3, 0.0), Duration::from_millis(400));
        assert_eq!(p.backoff(4, 0.0), Duration::from_millis(500));
        assert_eq!(p.backoff(40, 0.0), Duration::from_millis(500));
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(50));
    }

    #[test]
    fn replies_are_classified_by_type() {
        let spec = ReplySpec {
            success: vec!["ok".into()],
            failure: vec![FailureType {
                reply_type: "busy".into(),
                retryable: true,
            }],
            schemas: Default::default(),
        };
        assert_eq!(spec.classify("ok"), ReplyClass::Success);
        assert_eq!(
            spec.classify("busy"),
            ReplyClass::Failure { retryable: true }
        );
        assert_eq!(spec.classify("what"), ReplyClass::Undeclared);
    }
}
