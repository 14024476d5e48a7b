//! `sagaflow contract-test`: sends each step's command (rendered from an example input,
//! exactly as a saga would) to a running participant over Kafka, and judges what comes
//! back (`check.rs`). Replies are asked for on a topic of the test's own, named in each
//! command's `ce_sagareplyto`, so a sagaflow running on the same broker sees none of
//! them. Each command is sent twice, to check a repeat gets an equivalent reply, and
//! each compensation is also sent for a step that never ran.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value as Json;
use uuid::Uuid;

use super::check::{Finding, Sent, equivalent, judge};
use crate::config::KafkaSettings;
use crate::definition::Definition;
use crate::engine::{Outgoing, Phase};
use crate::messaging::envelope::{self, InboundEvent};
use crate::messaging::kafka;
use crate::messaging::reply_token::{EXT_TOKEN, ReplyKeys};
use crate::simulate::{Line, Script, simulate_as};

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(
        "saga `{0}`: no example input; pass --input {0}=JSON or add `examples` to its input schema"
    )]
    NoInput(String),
    #[error("saga `{saga}` cannot be rendered with its example input: {reason}")]
    Render { saga: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct ProbeOptions {
    pub kafka: KafkaSettings,
    /// Example inputs by saga name (else the input schema's first `examples` entry).
    pub inputs: HashMap<String, Json>,
    /// Only these steps (all when empty).
    pub steps: HashSet<String>,
    /// How long to wait for each reply.
    pub timeout: Duration,
}

/// The messages to send for one saga: every step's command, and every compensation as
/// for a step that never ran.
pub fn plan(
    def: &Definition,
    opts: &ProbeOptions,
) -> Result<Vec<(Uuid, Outgoing, bool)>, ProbeError> {
    let input = match opts.inputs.get(&def.name) {
        Some(i) => i.clone(),
        None => match &def.input_schema {
            None => Json::Object(Default::default()),
            Some(_) => def
                .example_input()
                .cloned()
                .ok_or_else(|| ProbeError::NoInput(def.name.clone()))?,
        },
    };
    let wanted = |step: &str| opts.steps.is_empty() || opts.steps.contains(step);
    let render = |id: Uuid, script: &Script| {
        simulate_as(def, id, input.clone(), script).map_err(|e| ProbeError::Render {
            saga: def.name.clone(),
            reason: e.to_string(),
        })
    };
    let mut out = Vec::new();
    let id = Uuid::now_v7();
    for line in render(id, &Script::default())? {
        if let Line::Sent { message, .. } = line
            && message.phase == Phase::Command
            && message.attempt == 1
            && wanted(&message.step)
        {
            out.push((id, message, false));
        }
    }
    for step in def
        .steps
        .iter()
        .filter(|s| s.compensation.is_some() && wanted(&s.name))
    {
        // When a step fails, its compensation goes out too: a participant is asked to
        // undo what it may never have done.
        let id = Uuid::now_v7();
        let script = Script {
            fail: HashSet::from([step.name.clone()]),
            ..Script::default()
        };
        let comp = render(id, &script)?
            .into_iter()
            .find_map(|line| match line {
                Line::Sent { message, .. }
                    if message.phase == Phase::Compensation && message.step == step.name =>
                {
                    Some(message)
                }
                _ => None,
            });
        if let Some(message) = comp {
            out.push((id, message, true));
        }
    }
    Ok(out)
}

/// Runs every check against the participant; the findings, passed and failed. Only the
/// test's own reply topic is created (and deleted at the end, whatever happened): a
/// command topic that does not exist is a finding, not something to create.
pub async fn run(defs: &[&Definition], opts: &ProbeOptions) -> Result<Vec<Finding>, ProbeError> {
    let mut plans = Vec::new();
    for def in defs {
        plans.push((*def, plan(def, opts)?));
    }
    let reply_topic = format!("sagaflow.contract-test.{}", Uuid::now_v7().simple());
    let admin = admin(&opts.kafka)?;
    create_topics(&admin, std::slice::from_ref(&reply_topic)).await?;
    let result = probe_all(&plans, &reply_topic, opts).await;
    let opts_admin = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    if let Err(e) = admin
        .delete_topics(&[reply_topic.as_str()], &opts_admin)
        .await
    {
        tracing::warn!(error = %e, topic = %reply_topic, "could not delete the test's reply topic");
    }
    result
}

type Plan<'a> = (&'a Definition, Vec<(Uuid, Outgoing, bool)>);

async fn probe_all(
    plans: &[Plan<'_>],
    reply_topic: &str,
    opts: &ProbeOptions,
) -> Result<Vec<Finding>, ProbeError> {
    let consumer = reply_consumer(&opts.kafka, reply_topic)?;
    let producer = kafka::producer(&opts.kafka)?;
    let existing = existing_topics(&consumer)?;
    let keys =
        ReplyKeys::new(vec![ReplyKeys::random_key()], true).map_err(|_| ProbeError::Render {
            saga: String::new(),
            reason: "reply key".into(),
        })?;
    let mut inbox = Inbox {
        consumer,
        seen: Vec::new(),
    };
    let mut findings = Vec::new();
    for (def, plan) in plans {
        findings.extend(unreached(def, plan, opts));
        for (saga_id, message, never_ran) in plan {
            let mut message = message.clone();
            if !existing.contains(&message.topic) {
                findings.push(Finding {
                    saga: def.name.clone(),
                    step: message.step.clone(),
                    phase: message.phase,
                    rule: "its command topic exists",
                    problem: Some(format!(
                        "topic `{}` does not exist on this broker",
                        message.topic
                    )),
                });
                continue;
            }
            message.reply_topic = reply_topic.to_owned();
            let sent = Sent {
                saga_id: *saga_id,
                token: keys.sign(message.command_id),
                message,
                never_ran: *never_ran,
            };
            findings.extend(exchange(def, &sent, &producer, &mut inbox, opts.timeout).await?);
        }
    }
    Ok(findings)
}

/// A step the example input never reaches (skipped by `when:`) would pass unchecked.
fn unreached(
    def: &Definition,
    plan: &[(Uuid, Outgoing, bool)],
    opts: &ProbeOptions,
) -> Vec<Finding> {
    def.steps
        .iter()
        .filter(|s| opts.steps.is_empty() || opts.steps.contains(&s.name))
        .filter(|s| !plan.iter().any(|(_, o, _)| o.step == s.name && o.phase == Phase::Command))
        .map(|s| Finding {
            saga: def.name.clone(),
            step: s.name.clone(),
            phase: Phase::Command,
            rule: "is reached by the example input",
            problem: Some("the example input never sends this command (a `when:` skips it); pass another --input".into()),
        })
        .collect()
}

fn existing_topics(consumer: &StreamConsumer) -> Result<HashSet<String>, ProbeError> {
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect())
}

/// Sends one command twice and judges both replies.
async fn exchange(
    def: &Definition,
    sent: &Sent,
    producer: &rdkafka::producer::FutureProducer,
    inbox: &mut Inbox,
    timeout: Duration,
) -> Result<Vec<Finding>, ProbeError> {
    let o = &sent.message;
    let finding = |rule, problem| Finding {
        saga: def.name.clone(),
        step: o.step.clone(),
        phase: o.phase,
        rule,
        problem,
    };
    let headers = [(format!("ce_{EXT_TOKEN}"), sent.token.clone())];
    let record = envelope::encode_command(
        o,
        sent.saga_id,
        &def.name,
        "/sagaflow/contract-test",
        Utc::now(),
        &headers,
    );
    kafka::send(producer, &record, timeout).await?;
    let Some(first) = inbox.next(sent, timeout).await else {
        let wait = format!("no reply on `ce_sagareplyto` within {timeout:?}");
        return Ok(vec![finding("answers", Some(wait))]);
    };
    let mut out = vec![finding("answers", None)];
    out.extend(
        judge(def, sent, &first)
            .into_iter()
            .map(|(rule, p)| finding(rule, p)),
    );
    kafka::send(producer, &record, timeout).await?;
    let problem = match inbox.next(sent, timeout).await {
        None => Some(format!(
            "no reply to the repeated command within {timeout:?}"
        )),
        Some(again) => equivalent(def, sent, &first, &again),
    };
    out.push(finding(
        "answers a repeat with an equivalent reply",
        problem,
    ));
    Ok(out)
}

/// Replies read so far, matched to commands by saga, step, phase and attempt.
struct Inbox {
    consumer: StreamConsumer,
    seen: Vec<InboundEvent>,
}

impl Inbox {
    async fn next(&mut self, sent: &Sent, timeout: Duration) -> Option<InboundEvent> {
        let saga = sent.saga_id.to_string();
        let matches = |e: &InboundEvent| {
            e.ext("sagaid") == Some(saga.as_str())
                && e.ext("sagastep") == Some(sent.message.step.as_str())
                && e.ext("sagaphase") == Some(sent.message.phase.as_str())
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = self.seen.iter().position(matches) {
                return Some(self.seen.remove(i));
            }
            let m = tokio::time::timeout_at(deadline, self.consumer.recv())
                .await
                .ok()?;
            let Ok(m) = m else { continue };
            let m = m.detach();
            let headers = kafka::headers_of(&m);
            // An undecodable reply matches nothing: the command then goes unanswered.
            if let Ok(ev) = envelope::decode(&headers, m.payload()) {
                self.seen.push(ev);
            }
        }
    }
}

fn admin(settings: &KafkaSettings) -> Result<AdminClient<DefaultClientContext>, ProbeError> {
    Ok(kafka::create(&kafka::admin_config(settings))?)
}

/// Creates the reply topic and any command topic that is missing.
async fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    names: &[String],
) -> Result<(), ProbeError> {
    let mut unique: Vec<&String> = names.iter().collect();
    unique.sort();
    unique.dedup();
    let topics: Vec<NewTopic> = unique
        .iter()
        .map(|n| NewTopic::new(n, 1, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &opts).await? {
        if let Err((topic, code)) = result
            && code != rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists
        {
            tracing::warn!(%topic, ?code, "could not create topic");
        }
    }
    Ok(())
}

fn reply_consumer(settings: &KafkaSettings, topic: &str) -> Result<StreamConsumer, ProbeError> {
    let group = format!("sagaflow-contract-test-{}", Uuid::now_v7().simple());
    let consumer: StreamConsumer = kafka::create(&kafka::consumer_config(settings, &group))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    Ok(consumer)
}
