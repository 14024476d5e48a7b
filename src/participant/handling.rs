//! What a participant library does with one message, as protocol/README.md specifies
//! it for every participant library: decode the command, dead-letter what is not one,
//! decide from the stored outcomes (repeats, new attempts, compensations of steps that
//! never ran, commands after their compensation), and build the reply. Pure: no Kafka,
//! no clock other than the reply's `ce_time`. The shared vectors in protocol/vectors
//! run against it (`vector_tests.rs`), as they do against the four libraries in sdks/.

use std::collections::HashMap;

use chrono::{SecondsFormat, Utc};
use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::engine::Phase;
use crate::messaging::envelope::{self, DecodeError, InboundEvent};
use crate::messaging::reply_token;
use crate::telemetry::propagation;

use super::Command;

/// The body of a refusal: a command that arrived after its compensation.
pub const REFUSED: &str = "the step was compensated before it ran";

/// One handler's registration: the `ce_type` it answers in one phase, its success
/// reply type, and (commands only) the failure type that refuses a late command.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub phase: Phase,
    pub command_type: String,
    pub success: String,
    pub refusal: Option<String>,
}

/// A participant's registrations and identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    pub source: String,
    pub dead_letter_topic: String,
    pub handlers: Vec<Registration>,
}

impl Registry {
    fn find(&self, phase: Phase, command_type: &str) -> Option<&Registration> {
        self.handlers
            .iter()
            .find(|r| r.phase == phase && r.command_type == command_type)
    }
}

/// A message as read from Kafka.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub headers: &'a [(String, Vec<u8>)],
    pub value: Option<&'a [u8]>,
}

/// A record to produce; header values are bytes so a dead-letter copy keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub value: Vec<u8>,
}

/// What a handler returns.
#[derive(Debug, Clone, PartialEq)]
pub enum HandlerResult {
    Success(Json),
    Failure {
        reply_type: String,
        payload: Json,
        retryable: bool,
    },
}

/// The outcome stored per (saga, step, phase).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub command_id: String,
    pub success: bool,
    pub reply_type: String,
    pub payload: Json,
    pub retryable: bool,
}

/// What to do with a message once it is handled.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Reply(Outgoing),
    DeadLetter(Outgoing),
    /// Nothing to produce (a late command whose step declares no failure type).
    Skip,
}

/// Outcomes by (saga, step, phase), in memory.
#[derive(Debug, Default)]
pub struct MemoryStore(HashMap<(Uuid, String, Phase), Outcome>);

impl MemoryStore {
    fn get(&self, c: &Command, phase: Phase) -> Option<&Outcome> {
        self.0.get(&(c.saga_id, c.step.clone(), phase))
    }

    fn put(&mut self, c: &Command, outcome: Outcome) {
        self.0.insert((c.saga_id, c.step.clone(), c.phase), outcome);
    }
}

/// Handles one message: the handler is called at most once, and only when the
/// decision table of protocol/README.md says so.
pub fn process(
    registry: &Registry,
    store: &mut MemoryStore,
    msg: &Incoming<'_>,
    handler: impl FnOnce(&Command) -> HandlerResult,
) -> Action {
    let command = match decode(msg) {
        Ok(c) => c,
        Err(reason) => return Action::DeadLetter(dead_letter(registry, msg, &reason)),
    };
    let Some(registration) = registry.find(command.phase, &command.command_type) else {
        let reason = format!(
            "unknown {} type `{}`",
            command.phase.as_str(),
            command.command_type
        );
        return Action::DeadLetter(dead_letter(registry, msg, &reason));
    };
    match decide(registration, store, &command, handler) {
        Some(outcome) => Action::Reply(reply(registry, &command, &outcome)),
        None => Action::Skip,
    }
}

fn decide(
    registration: &Registration,
    store: &mut MemoryStore,
    c: &Command,
    handler: impl FnOnce(&Command) -> HandlerResult,
) -> Option<Outcome> {
    if let Some(stored) = store.get(c, c.phase) {
        let fresh_attempt = stored.retryable && stored.command_id != c.command_id;
        if !fresh_attempt {
            return Some(stored.clone());
        }
    }
    let outcome = match c.phase {
        Phase::Command if store.get(c, Phase::Compensation).is_some() => Outcome {
            command_id: c.command_id.clone(),
            success: false,
            reply_type: registration.refusal.clone()?,
            payload: json!({ "error": REFUSED }),
            retryable: false,
        },
        Phase::Compensation if !store.get(c, Phase::Command).is_some_and(|o| o.success) => {
            Outcome {
                command_id: c.command_id.clone(),
                success: true,
                reply_type: registration.success.clone(),
                payload: json!({}),
                retryable: false,
            }
        }
        _ => outcome_of(registration, c, handler(c)),
    };
    store.put(c, outcome.clone());
    Some(outcome)
}

fn outcome_of(registration: &Registration, c: &Command, result: HandlerResult) -> Outcome {
    match result {
        HandlerResult::Success(payload) => Outcome {
            command_id: c.command_id.clone(),
            success: true,
            reply_type: registration.success.clone(),
            payload,
            retryable: false,
        },
        HandlerResult::Failure {
            reply_type,
            payload,
            retryable,
        } => Outcome {
            command_id: c.command_id.clone(),
            success: false,
            reply_type,
            payload,
            retryable,
        },
    }
}

/// The command in `msg`, or why it is not one (the `dlq-reason`).
pub fn decode(msg: &Incoming<'_>) -> Result<Command, String> {
    let event = envelope::decode(msg.headers, msg.value).map_err(|e| e.to_string())?;
    command_of(event).map_err(|e| e.to_string())
}

fn command_of(ev: InboundEvent) -> Result<Command, DecodeError> {
    let required = |name: &'static str| ev.ext(name).ok_or(DecodeError::Missing(name));
    let invalid = |name: &'static str, reason: String| DecodeError::BadAttribute { name, reason };
    let saga_id = required(envelope::EXT_SAGA_ID)?
        .parse()
        .map_err(|e: uuid::Error| invalid(envelope::EXT_SAGA_ID, e.to_string()))?;
    let step = required(envelope::EXT_STEP)?.to_owned();
    let attempt = required(envelope::EXT_ATTEMPT)?
        .parse::<u32>()
        .ok()
        .filter(|a| *a >= 1)
        .ok_or_else(|| {
            invalid(
                envelope::EXT_ATTEMPT,
                "must be a whole number from 1".into(),
            )
        })?;
    let phase = match required(envelope::EXT_PHASE)? {
        "command" => Phase::Command,
        "compensation" => Phase::Compensation,
        other => {
            let reason = format!("`{other}` is neither `command` nor `compensation`");
            return Err(invalid(envelope::EXT_PHASE, reason));
        }
    };
    let reply_to = required(envelope::EXT_REPLY_TO)?.to_owned();
    let token = required(reply_token::EXT_TOKEN)?.to_owned();
    Ok(Command {
        saga_id,
        definition: ev
            .ext(envelope::EXT_DEFINITION)
            .unwrap_or_default()
            .to_owned(),
        step,
        attempt,
        phase,
        traceparent: ev.ext("traceparent").map(str::to_owned),
        tracestate: ev.ext("tracestate").map(str::to_owned),
        command_type: ev.event_type,
        command_id: ev.id,
        payload: ev.data,
        reply_to,
        token: Some(token),
    })
}

/// The reply carrying `outcome`, in binary mode, to the topic the command names.
pub fn reply(registry: &Registry, c: &Command, outcome: &Outcome) -> Outgoing {
    let trace = propagation::parse(c.traceparent.as_deref(), c.tracestate.as_deref())
        .map(|parent| propagation::headers(&propagation::child_of(&parent)))
        .unwrap_or_default();
    let id = Uuid::new_v4().to_string();
    let headers = reply_headers(c, &id, &registry.source, &outcome.reply_type, &trace);
    Outgoing {
        topic: c.reply_to.clone(),
        key: Some(c.saga_id.to_string().into_bytes()),
        headers: headers
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect(),
        value: serde_json::to_vec(&outcome.payload).unwrap_or_default(),
    }
}

/// The headers of the reply `id` to `c`: the CloudEvents attributes, the saga
/// attributes and token copied from the command, then `trace_headers`.
pub fn reply_headers(
    c: &Command,
    id: &str,
    source: &str,
    reply_type: &str,
    trace_headers: &[(String, String)],
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = vec![
        ("ce_specversion".into(), envelope::SPEC_VERSION.into()),
        ("ce_id".into(), id.into()),
        ("ce_source".into(), source.into()),
        ("ce_type".into(), reply_type.into()),
        (
            "ce_time".into(),
            Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        ),
        ("content-type".into(), envelope::CONTENT_TYPE_JSON.into()),
        ("ce_sagaid".into(), c.saga_id.to_string()),
        ("ce_sagastep".into(), c.step.clone()),
        ("ce_sagaattempt".into(), c.attempt.to_string()),
        ("ce_sagaphase".into(), c.phase.as_str().into()),
    ];
    if let Some(token) = &c.token {
        headers.push((format!("ce_{}", reply_token::EXT_TOKEN), token.clone()));
    }
    headers.extend(trace_headers.iter().cloned());
    headers
}

/// A copy of `msg` for the dead-letter topic: the original key, value and headers,
/// then why and where it came from.
pub fn dead_letter(registry: &Registry, msg: &Incoming<'_>, reason: &str) -> Outgoing {
    let mut headers = msg.headers.to_vec();
    headers.extend([
        ("dlq-reason".to_owned(), reason.as_bytes().to_vec()),
        (
            "dlq-original-topic".to_owned(),
            msg.topic.as_bytes().to_vec(),
        ),
        (
            "dlq-original-partition".to_owned(),
            msg.partition.to_string().into_bytes(),
        ),
        (
            "dlq-original-offset".to_owned(),
            msg.offset.to_string().into_bytes(),
        ),
    ]);
    Outgoing {
        topic: registry.dead_letter_topic.clone(),
        key: msg.key.map(<[u8]>::to_vec),
        headers,
        value: msg.value.unwrap_or_default().to_vec(),
    }
}

#[cfg(test)]
#[path = "vector_tests.rs"]
mod vector_tests;
