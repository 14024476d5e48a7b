//! What `sagaflow contract-test` checks in one reply, and how it reports it. Kept apart
//! from the Kafka plumbing (`probe.rs`) so each rule is tested without a broker.

use std::collections::BTreeSet;

use serde_json::Value as Json;

use crate::definition::{Definition, ReplyClass};
use crate::engine::{Outgoing, Phase};
use crate::messaging::envelope::InboundEvent;
use crate::simulate::synthesized_replies;

/// One verdict: which message, which rule, and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub saga: String,
    pub step: String,
    pub phase: Phase,
    pub rule: &'static str,
    /// `None` when the rule holds, else what breaks it.
    pub problem: Option<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = format!(
            "{} {} {}: {}",
            self.saga,
            self.step,
            self.phase.as_str(),
            self.rule
        );
        match &self.problem {
            None => write!(f, "ok    {head}"),
            Some(p) => write!(f, "FAIL  {head}: {p}"),
        }
    }
}

/// What was sent, to judge a reply against.
#[derive(Debug, Clone)]
pub struct Sent {
    pub saga_id: uuid::Uuid,
    pub message: Outgoing,
    pub token: String,
    /// A compensation of a step whose command was never sent: it must succeed.
    pub never_ran: bool,
}

/// Every rule one reply must follow, each with `None` when it holds or what breaks it.
pub fn judge(
    def: &Definition,
    sent: &Sent,
    reply: &InboundEvent,
) -> Vec<(&'static str, Option<String>)> {
    let o = &sent.message;
    let mut out = Vec::new();
    let expect = |name: &str, want: &str| match reply.ext(name) {
        Some(v) if v == want => None,
        Some(v) => Some(format!("`ce_{name}` is `{v}`, the command's is `{want}`")),
        None => Some(format!("`ce_{name}` is missing (copy it from the command)")),
    };
    let copied = [
        expect("sagaid", &sent.saga_id.to_string()),
        expect("sagastep", &o.step),
        expect("sagaphase", o.phase.as_str()),
        expect("sagaattempt", &o.attempt.to_string()),
        expect("sagatoken", &sent.token),
    ];
    out.push((
        "copies the saga headers and the reply token",
        copied
            .into_iter()
            .flatten()
            .reduce(|a, b| format!("{a}; {b}")),
    ));
    let fresh_id = (reply.id == o.command_id.to_string())
        .then(|| "`ce_id` repeats the command's id; every reply needs a new one".to_owned());
    out.push(("has its own ce_id", fresh_id));
    let Some(step) = def.step(&o.step) else {
        return out;
    };
    let spec = match o.phase {
        Phase::Command => &step.reply,
        Phase::Compensation => match &step.compensation {
            Some(c) => &c.reply,
            None => return out,
        },
    };
    let class = spec.classify(&reply.event_type);
    let declared = (class == ReplyClass::Undeclared).then(|| {
        let mut types: Vec<&str> = spec.success.iter().map(String::as_str).collect();
        types.extend(spec.failure.iter().map(|f| f.reply_type.as_str()));
        format!(
            "`{}` is not declared for this step; declared: {}",
            reply.event_type,
            types.join(", ")
        )
    });
    out.push(("replies with a declared type", declared));
    if sent.never_ran {
        let ok = (class != ReplyClass::Success).then(|| {
            format!(
                "answered `{}`; \"nothing to undo\" is a success reply",
                reply.event_type
            )
        });
        out.push(("compensation of a step that never ran succeeds", ok));
    }
    out.push((
        "payload matches its schema",
        spec.schema_violation(&reply.event_type, &reply.data),
    ));
    if class == ReplyClass::Success && o.phase == Phase::Command {
        let missing: Vec<String> = read_fields(def, &o.step)
            .into_iter()
            .filter(|f| reply.data.get(f).is_none_or(Json::is_null))
            .collect();
        let problem = (!missing.is_empty()).then(|| {
            format!(
                "the saga's templates read {}, missing from the reply",
                missing.join(", ")
            )
        });
        out.push(("returns every field the saga reads", problem));
    }
    out
}

/// Fields of a step's success reply that the saga's templates read.
pub fn read_fields(def: &Definition, step: &str) -> BTreeSet<String> {
    synthesized_replies(def)
        .remove(step)
        .and_then(|r| r.as_object().map(|m| m.keys().cloned().collect()))
        .unwrap_or_default()
}

/// A repeat of a command must get the same outcome: the same type and the same values
/// for every field the saga reads or the type's schema requires (other fields, such as
/// a timestamp of the answer, may differ).
pub fn equivalent(
    def: &Definition,
    sent: &Sent,
    first: &InboundEvent,
    again: &InboundEvent,
) -> Option<String> {
    if first.event_type != again.event_type {
        return Some(format!(
            "the repeat got `{}`, the first delivery `{}`",
            again.event_type, first.event_type
        ));
    }
    let step = def.step(&sent.message.step);
    let (mut fields, spec) = match sent.message.phase {
        Phase::Command => (read_fields(def, &sent.message.step), step.map(|s| &s.reply)),
        Phase::Compensation => (
            BTreeSet::new(),
            step.and_then(|s| s.compensation.as_ref()).map(|c| &c.reply),
        ),
    };
    if let Some(schema) = spec.and_then(|r| r.schemas.get(&first.event_type)) {
        let required = schema.schema["required"].as_array().into_iter().flatten();
        fields.extend(required.filter_map(|f| f.as_str().map(str::to_owned)));
    }
    let differ: Vec<String> = fields
        .into_iter()
        .filter(|f| first.data.get(f) != again.data.get(f))
        .collect();
    (!differ.is_empty()).then(|| {
        format!(
            "the repeat's {} differ from the first reply's",
            differ.join(", ")
        )
    })
}
