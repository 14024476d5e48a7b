//! The participant contract as an AsyncAPI 3.0 document, derived from the loaded
//! definitions: which topics sagaflow writes and reads, the messages on each with their
//! CloudEvents headers and payload schemas, and how a reply is correlated with its
//! command. The application it describes is sagaflow: it *sends* commands, lifecycle
//! events and dead letters, and *receives* replies and trigger events.

use serde_json::{Map, Value as Json, json};

use super::derive::{command_schema, reply_schema, trigger_schema};
use crate::definition::{Definition, MessageSpec, ReplySpec, Step};

/// The topics that are not in the definitions.
#[derive(Debug, Clone)]
pub struct ContractTopics {
    /// `None` when lifecycle events are off.
    pub lifecycle: Option<String>,
    pub dead_letter: String,
}

impl ContractTopics {
    pub fn of(kafka: &crate::config::KafkaSettings) -> ContractTopics {
        ContractTopics {
            lifecycle: Some(kafka.lifecycle_topic.clone()).filter(|t| !t.is_empty()),
            dead_letter: kafka.dead_letter_topic.clone(),
        }
    }
}

/// A component key: AsyncAPI allows `[A-Za-z0-9._-]` only.
fn id(parts: &[&str]) -> String {
    parts
        .join(".")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn header(description: &str) -> Json {
    json!({"type": "string", "description": description})
}

/// The headers every command and compensation carries (docs/protocol.md, Commands).
fn command_headers(def: &Definition, step: &Step, phase: &str, message_type: &str) -> Json {
    json!({
        "type": "object",
        "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_sagaid",
                     "ce_sagadefinition", "ce_sagastep", "ce_sagaattempt", "ce_sagaphase",
                     "ce_sagareplyto", "ce_sagatoken", "content-type"],
        "properties": {
            "ce_specversion": {"const": "1.0"},
            "ce_id": header("The command id: the same for a redelivery, new for each attempt"),
            "ce_source": header("The sagaflow deployment (runtime.source)"),
            "ce_type": {"const": message_type},
            "ce_time": {"type": "string", "format": "date-time"},
            "ce_sagaid": {"type": "string", "format": "uuid"},
            "ce_sagadefinition": {"const": def.name},
            "ce_sagastep": {"const": step.name},
            "ce_sagaattempt": {"type": "string", "pattern": "^[1-9][0-9]*$"},
            "ce_sagaphase": {"const": phase},
            "ce_sagareplyto": {"const": def.reply_topic},
            "ce_sagatoken": header("The reply token: copy it onto the reply unchanged"),
            "content-type": {"const": "application/json"},
            "traceparent": header("W3C trace context of the send span"),
            "tracestate": header("W3C trace state, when the caller sent one"),
        }
    })
}

/// The headers a reply must carry (binary mode; docs/protocol.md, Replies).
fn reply_headers(step: &Step, phase: &str, reply_type: &str) -> Json {
    json!({
        "type": "object",
        "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_sagaid",
                     "ce_sagastep", "ce_sagaattempt", "ce_sagaphase", "ce_sagatoken"],
        "properties": {
            "ce_specversion": {"const": "1.0"},
            "ce_id": header("A new unique id for every reply message"),
            "ce_source": header("The participant service"),
            "ce_type": {"const": reply_type},
            "ce_time": {"type": "string", "format": "date-time"},
            "ce_sagaid": {"type": "string", "format": "uuid", "description": "Copied from the command"},
            "ce_sagastep": {"const": step.name},
            "ce_sagaattempt": {"type": "string", "pattern": "^[1-9][0-9]*$", "description": "Copied from the command"},
            "ce_sagaphase": {"const": phase},
            "ce_sagatoken": header("Copied from the command, unchanged"),
            "content-type": {"const": "application/json"},
            "traceparent": header("SHOULD: a child of the command's traceparent"),
        }
    })
}

/// Collects channels, operations and messages.
#[derive(Default)]
struct Doc {
    channels: Map<String, Json>,
    operations: Map<String, Json>,
    messages: Map<String, Json>,
}

impl Doc {
    fn channel(&mut self, topic: &str, description: &str) -> String {
        let key = id(&["topic", topic]);
        self.channels.entry(key.clone()).or_insert_with(
            || json!({"address": topic, "description": description, "messages": {}}),
        );
        key
    }

    /// Adds `message` to `channel` and returns its reference within the channel.
    fn message(&mut self, channel: &str, key: String, message: Json) -> Json {
        self.messages.insert(key.clone(), message);
        if let Some(messages) = self.channels[channel]["messages"].as_object_mut() {
            messages.insert(
                key.clone(),
                json!({"$ref": format!("#/components/messages/{key}")}),
            );
        }
        json!({"$ref": format!("#/channels/{channel}/messages/{key}")})
    }

    fn operation(
        &mut self,
        key: String,
        action: &str,
        channel: &str,
        messages: Vec<Json>,
    ) -> &mut Json {
        self.operations.insert(
            key.clone(),
            json!({
                "action": action,
                "channel": {"$ref": format!("#/channels/{channel}")},
                "messages": messages,
            }),
        );
        &mut self.operations[&key]
    }
}

/// One step's command or compensation, and the replies it awaits.
fn exchange(
    doc: &mut Doc,
    def: &Definition,
    step: &Step,
    phase: &str,
    msg: &MessageSpec,
    reply: &ReplySpec,
) {
    let out = doc.channel(&msg.topic, "Commands and compensations for a participant");
    let replies = doc.channel(&def.reply_topic, "Replies of participants to sagaflow");
    let base = [def.name.as_str(), step.name.as_str(), phase];
    let command_key = id(&base);
    let command = json!({
        "name": msg.message_type,
        "title": format!("{} {} of {}", phase, step.name, def.name),
        "contentType": "application/json",
        "headers": command_headers(def, step, phase, &msg.message_type),
        "payload": command_schema(def, msg),
        "correlationId": {"$ref": "#/components/correlationIds/command"},
        "bindings": {"kafka": {"key": {"type": "string", "description": "The rendered `key` template, else the saga id"}}},
    });
    let command_ref = doc.message(&out, command_key.clone(), command);
    let types = reply
        .success
        .iter()
        .map(|t| (t, "success"))
        .chain(reply.failure.iter().map(|f| {
            (
                &f.reply_type,
                if f.retryable {
                    "retryable failure"
                } else {
                    "failure"
                },
            )
        }));
    let mut reply_refs = Vec::new();
    for (reply_type, meaning) in types {
        let key = id(&[
            def.name.as_str(),
            step.name.as_str(),
            phase,
            "reply",
            reply_type,
        ]);
        let message = json!({
            "name": reply_type,
            "title": format!("{meaning} of {phase} {}", step.name),
            "contentType": "application/json",
            "headers": reply_headers(step, phase, reply_type),
            "payload": reply_schema(def, step, phase, reply, reply_type),
            "correlationId": {"$ref": "#/components/correlationIds/reply"},
        });
        reply_refs.push(doc.message(&replies, key, message));
    }
    let op = doc.operation(id(&["send", &command_key]), "send", &out, vec![command_ref]);
    op["reply"] = json!({
        "channel": {"$ref": format!("#/channels/{replies}")},
        "address": {"location": "$message.header#/ce_sagareplyto",
                     "description": "The reply topic the command names"},
        "messages": reply_refs.clone(),
    });
    doc.operation(
        id(&["receive", &command_key, "reply"]),
        "receive",
        &replies,
        reply_refs,
    );
}

fn fixed_channels(doc: &mut Doc, topics: &ContractTopics) {
    if let Some(topic) = &topics.lifecycle {
        lifecycle_channel(doc, topic);
    }
    let dlq = doc.channel(
        &topics.dead_letter,
        "Messages sagaflow could not apply, with the reason",
    );
    dead_letter_message(doc, &dlq);
}

fn lifecycle_channel(doc: &mut Doc, topic: &str) {
    let lifecycle = doc.channel(topic, "Lifecycle events of every saga (sagaflow.saga.*)");
    let event = json!({
        "name": "sagaflow.saga.*",
        "title": "A saga's lifecycle event: started, step_succeeded, step_failed, step_skipped, completed, compensating, compensated, failed, terminated",
        "contentType": "application/json",
        "headers": {"type": "object", "required": ["ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_sagaid", "ce_sagadefinition"],
                    "properties": {"ce_type": {"type": "string", "pattern": "^sagaflow\\.saga\\.[a-z_]+$"}}},
        "payload": {"type": "object", "required": ["saga_id", "definition", "status", "step", "detail"],
                    "properties": {"saga_id": {"type": "string", "format": "uuid"}, "definition": {"type": "string"},
                                   "status": {"type": "string"}, "step": {"type": ["string", "null"]}, "detail": {}}},
    });
    let r = doc.message(&lifecycle, "lifecycle".into(), event);
    doc.operation("send.lifecycle".into(), "send", &lifecycle, vec![r]);
}

fn dead_letter_message(doc: &mut Doc, dlq: &str) {
    let letter = json!({
        "name": "dead-letter",
        "title": "The original message (key, headers, payload) and why it was not applied",
        "headers": {"type": "object", "required": ["dlq-reason"],
                    "properties": {"dlq-reason": header("Why the message was not applied")}},
        "payload": {},
    });
    let r = doc.message(dlq, "dead-letter".into(), letter);
    doc.operation("send.dead-letter".into(), "send", dlq, vec![r]);
}

/// The AsyncAPI 3.0 document for `defs` (sorted by name, so the output is stable).
pub fn document(defs: &[&Definition], topics: &ContractTopics) -> Json {
    let mut doc = Doc::default();
    let mut defs = defs.to_vec();
    defs.sort_by(|a, b| a.name.cmp(&b.name));
    for def in &defs {
        for step in &def.steps {
            exchange(&mut doc, def, step, "command", &step.command, &step.reply);
            if let Some(c) = &step.compensation {
                exchange(&mut doc, def, step, "compensation", &c.command, &c.reply);
            }
        }
        if let Some(trigger) = &def.trigger {
            let ch = doc.channel(&trigger.topic, "Business events that start sagas");
            let key = id(&[def.name.as_str(), "trigger"]);
            let event = json!({
                "name": trigger.event_type,
                "title": format!("The event that starts {}", def.name),
                "contentType": "application/json",
                "payload": trigger_schema(def, trigger),
            });
            let r = doc.message(&ch, key.clone(), event);
            doc.operation(id(&["receive", &key]), "receive", &ch, vec![r]);
        }
    }
    fixed_channels(&mut doc, topics);
    let versions: Vec<String> = defs
        .iter()
        .map(|d| format!("{} {}", d.name, &d.version[..12.min(d.version.len())]))
        .collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "sagaflow participant contract",
            "version": versions.join(", "),
            "description": "What sagaflow sends to participants and what it accepts back, derived from the loaded saga definitions. The rules that are not schemas (deduplication, reply tokens, offsets) are in docs/protocol.md.",
        },
        "defaultContentType": "application/json",
        "channels": doc.channels,
        "operations": doc.operations,
        "components": {
            "messages": doc.messages,
            "correlationIds": {
                "command": {"description": "A command is identified by its saga, step, phase and attempt", "location": "$message.header#/ce_id"},
                "reply": {"description": "A reply names the command's saga, step, phase and attempt; ce_sagatoken proves it answers that command", "location": "$message.header#/ce_sagatoken"},
            },
        },
    })
}
