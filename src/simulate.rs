//! Runs one saga through the engine with scripted participants and no infrastructure,
//! so a definition can be tried before it is deployed (`sagaflow simulate`).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value as Json, json};
use uuid::Uuid;

use crate::contract::example::{example_of, merged};

use crate::definition::Definition;
use crate::definition::template::Template;
use crate::engine::{
    Effect, Env, Event, Instance, Outgoing, Phase, Rejection, Reply, SagaStatus, Timer, apply,
};

/// How the scripted participants behave.
#[derive(Debug, Clone, Default)]
pub struct Script {
    /// Steps whose every attempt gets a failure reply (the first non-retryable failure
    /// type if one is declared, otherwise the first failure type).
    pub fail: HashSet<String>,
    /// Steps whose every attempt gets no reply at all.
    pub timeout: HashSet<String>,
    /// Success reply payloads by step; `{}` when absent.
    pub replies: HashMap<String, Json>,
}

/// What happened, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    Sent {
        at_ms: i64,
        message: Outgoing,
    },
    Replied {
        at_ms: i64,
        step: String,
        phase: Phase,
        attempt: u32,
        reply_type: String,
    },
    TimedOut {
        at_ms: i64,
        step: String,
        phase: Phase,
        attempt: u32,
    },
    Status {
        status: SagaStatus,
        output: Option<Json>,
        reason: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("step `{0}` given to --fail/--timeout/--reply is not in the definition")]
    UnknownStep(String),
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("the saga did not settle within {0} events")]
    DidNotSettle(usize),
}

const MAX_EVENTS: usize = 10_000;

/// Success replies the script did not specify get every field some template reads
/// (`steps.<step>.reply.<field>`), filled with a placeholder, so the run goes as far as
/// the definition allows instead of stopping at the first reference.
pub fn synthesized_replies(def: &Definition) -> HashMap<String, Json> {
    fn message(m: &crate::definition::MessageSpec) -> impl Iterator<Item = &Template> {
        std::iter::once(&m.payload)
            .chain(m.key.iter())
            .chain(m.headers.iter().map(|(_, t)| t))
    }
    let mut templates: Vec<&Template> = Vec::new();
    for step in &def.steps {
        templates.extend(message(&step.command));
        if let Some(c) = &step.compensation {
            templates.extend(message(&c.command));
        }
        templates.extend(step.when.iter());
    }
    templates.extend(def.output.iter());
    let mut replies: HashMap<String, Json> = HashMap::new();
    // A declared schema of the first success type shapes the reply, so it is accepted.
    for step in &def.steps {
        let schema = step
            .reply
            .success
            .first()
            .and_then(|t| step.reply.schemas.get(t));
        if let Some(s) = schema {
            replies.insert(step.name.clone(), example_of(&s.schema, &step.name));
        }
    }
    for path in templates.iter().filter_map(|t| t.check().ok()).flatten() {
        let parts: Vec<&str> = path.split('.').collect();
        if let ["steps", step, "reply", field, ..] = parts[..] {
            let entry = replies.entry(step.to_owned()).or_insert_with(|| json!({}));
            if let Json::Object(map) = entry {
                map.entry(field.to_owned())
                    .or_insert_with(|| json!(format!("sim-{step}-{field}")));
            }
        }
    }
    replies
}

pub fn simulate(
    def: &Definition,
    input: Json,
    script: &Script,
) -> Result<Vec<Line>, SimulateError> {
    simulate_as(def, Uuid::nil(), input, script)
}

/// [`simulate`] for a saga with this id (which templates see as `saga.id`, and command
/// ids derive from): `sagaflow contract-test` sends what it renders.
pub fn simulate_as(
    def: &Definition,
    id: Uuid,
    input: Json,
    script: &Script,
) -> Result<Vec<Line>, SimulateError> {
    for name in script
        .fail
        .iter()
        .chain(&script.timeout)
        .chain(script.replies.keys())
    {
        if def.step(name).is_none() {
            return Err(SimulateError::UnknownStep(name.clone()));
        }
    }
    let mut script = script.clone();
    for (step, reply) in synthesized_replies(def) {
        script.replies.entry(step).or_insert(reply);
    }
    let script = &script;
    let start: DateTime<Utc> = Utc.timestamp_opt(0, 0).single().unwrap_or_default();
    let mut now = start;
    let mut inst = Instance::new(id, def, input, None, now);
    let mut lines = Vec::new();
    let mut inbox: VecDeque<Event> = VecDeque::from([Event::Start]);
    let mut timers: BTreeMap<Timer, DateTime<Utc>> = BTreeMap::new();
    let mut seed = 0x5eed_u64;
    for _ in 0..MAX_EVENTS {
        let event = match inbox.pop_front() {
            Some(e) => e,
            None if inst.status == SagaStatus::Running
                || inst.status == SagaStatus::Compensating =>
            {
                let Some((timer, due)) = timers
                    .iter()
                    .min_by_key(|(_, d)| **d)
                    .map(|(t, d)| (t.clone(), *d))
                else {
                    break;
                };
                timers.remove(&timer);
                now = now.max(due);
                timer_event(timer, now, start, &mut lines)
            }
            None => break,
        };
        if let Event::Reply(r) = &event {
            lines.push(Line::Replied {
                at_ms: (now - start).num_milliseconds(),
                step: r.step.clone(),
                phase: r.phase,
                attempt: r.attempt,
                reply_type: r.reply_type.clone(),
            });
        }
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let t = apply(&inst, def, event, Env { now, random: seed })?;
        inst = t.instance;
        for effect in t.effects {
            match effect {
                Effect::SendCommand(o) | Effect::SendCompensation(o) => {
                    if let Some(reply) = answer(def, script, &o) {
                        inbox.push_back(Event::Reply(reply));
                    }
                    lines.push(Line::Sent {
                        at_ms: (now - start).num_milliseconds(),
                        message: o,
                    });
                }
                Effect::ScheduleTimer { timer, due_at } => {
                    timers.insert(timer, due_at);
                }
                Effect::CancelTimer { timer } => {
                    timers.remove(&timer);
                }
                Effect::Publish(_) | Effect::Record(_) => {}
            }
        }
        if inbox.is_empty()
            && !matches!(inst.status, SagaStatus::Running | SagaStatus::Compensating)
        {
            lines.push(Line::Status {
                status: inst.status,
                output: inst.output.clone(),
                reason: inst.failure.as_ref().map(|f| f.reason.clone()),
            });
            return Ok(lines);
        }
    }
    Err(SimulateError::DidNotSettle(MAX_EVENTS))
}

fn timer_event(
    timer: Timer,
    now: DateTime<Utc>,
    start: DateTime<Utc>,
    lines: &mut Vec<Line>,
) -> Event {
    if let Timer::StepTimeout {
        step,
        phase,
        attempt,
    } = &timer
    {
        lines.push(Line::TimedOut {
            at_ms: (now - start).num_milliseconds(),
            step: step.clone(),
            phase: *phase,
            attempt: *attempt,
        });
    }
    timer.into_event()
}

/// The scripted participant's reply to one message, or `None` for no reply.
fn answer(def: &Definition, script: &Script, o: &Outgoing) -> Option<Reply> {
    let step = def.step(&o.step)?;
    let (reply_type, payload) = match o.phase {
        Phase::Command if script.timeout.contains(&o.step) => return None,
        Phase::Command if script.fail.contains(&o.step) => {
            let failure = step
                .reply
                .failure
                .iter()
                .find(|f| !f.retryable)
                .or_else(|| step.reply.failure.first());
            match failure {
                Some(f) => {
                    let schema = step.reply.schemas.get(&f.reply_type);
                    let data = schema.map_or(json!({}), |s| example_of(&s.schema, &o.step));
                    (
                        f.reply_type.clone(),
                        merged(json!({"error": "simulated failure"}), data),
                    )
                }
                None => return None,
            }
        }
        Phase::Command => (
            step.reply.success.first()?.clone(),
            script
                .replies
                .get(&o.step)
                .cloned()
                .unwrap_or_else(|| json!({})),
        ),
        Phase::Compensation => {
            let spec = &step.compensation.as_ref()?.reply;
            let reply_type = spec.success.first()?.clone();
            let data = spec
                .schemas
                .get(&reply_type)
                .map_or(json!({}), |s| example_of(&s.schema, &o.step));
            (reply_type, data)
        }
    };
    Some(Reply {
        step: o.step.clone(),
        phase: o.phase,
        attempt: o.attempt,
        reply_type,
        payload,
        message_id: format!("sim-{}", o.command_id),
        topic: o.reply_topic.clone(),
        source: "/simulate".into(),
    })
}

/// Human-readable rendering, one event per line.
pub fn render(lines: &[Line]) -> String {
    let mut out = String::new();
    for line in lines {
        let _ = match line {
            Line::Sent { at_ms, message: o } => writeln!(
                out,
                "{:>8}  send {:<12} {}#{}  topic={} type={} key={}\n          payload {}",
                format_ms(*at_ms),
                o.phase.as_str(),
                o.step,
                o.attempt,
                o.topic,
                o.message_type,
                o.key,
                o.payload
            ),
            Line::Replied {
                at_ms,
                step,
                phase,
                attempt,
                reply_type,
            } => writeln!(
                out,
                "{:>8}  recv {:<12} {step}#{attempt}  type={reply_type}",
                format_ms(*at_ms),
                format!("{}-reply", phase.as_str())
            ),
            Line::TimedOut {
                at_ms,
                step,
                phase,
                attempt,
            } => writeln!(
                out,
                "{:>8}  timeout {:<9} {step}#{attempt}",
                format_ms(*at_ms),
                phase.as_str()
            ),
            Line::Status {
                status,
                output,
                reason,
            } => {
                let mut s = format!("status: {}", status.as_str());
                if let Some(r) = reason {
                    s.push_str(&format!(" ({r})"));
                }
                if let Some(o) = output {
                    s.push_str(&format!("\noutput: {o}"));
                }
                writeln!(out, "{s}")
            }
        };
    }
    out
}

fn format_ms(ms: i64) -> String {
    format!("+{}.{:03}s", ms / 1000, ms % 1000)
}
