//! A participant service written against docs/protocol.md: consumes commands and
//! compensations, answers on the reply topic they name. `sagaflow dev` runs it as the
//! demo participants of the example sagas, and the integration tests drive it with
//! scripted policies, so both exercise the same code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{Value as Json, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod handling;
mod offsets;

use crate::config::KafkaSettings;
use crate::definition::{Definition, ReplySpec};
use crate::engine::Phase;
use crate::messaging::envelope::Record;
use crate::messaging::kafka;
use crate::messaging::outbox_batch::refused_for_good;
use crate::telemetry::propagation;
use crate::telemetry::spans::{self, Broker, Consumed, MessageRef, SagaRef};

/// A command as the participant sees it.
#[derive(Debug, Clone)]
pub struct Command {
    pub saga_id: Uuid,
    pub definition: String,
    pub step: String,
    pub attempt: u32,
    pub phase: Phase,
    pub command_type: String,
    pub command_id: String,
    pub payload: Json,
    pub reply_to: String,
    /// The command's reply token, echoed on the reply (`ce_sagatoken`).
    pub token: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Command {
    fn saga(&self) -> SagaRef<'_> {
        SagaRef {
            id: self.saga_id,
            name: &self.definition,
        }
    }

    /// The command as read from `m` by `group`.
    fn received<'a>(
        &'a self,
        m: &'a OwnedMessage,
        key: &'a str,
        group: &'a str,
        broker: Option<&'a Broker>,
    ) -> MessageRef<'a> {
        MessageRef {
            step: &self.step,
            attempt: self.attempt,
            compensation: self.phase == Phase::Compensation,
            topic: m.topic(),
            message_id: &self.command_id,
            key,
            consumed: Some(Consumed {
                group,
                partition: m.partition(),
                offset: m.offset(),
                broker,
            }),
        }
    }

    /// The reply `reply_id` to this command.
    fn reply<'a>(&'a self, reply_id: &'a str, key: &'a str) -> MessageRef<'a> {
        MessageRef {
            step: &self.step,
            attempt: self.attempt,
            compensation: self.phase == Phase::Compensation,
            topic: &self.reply_to,
            message_id: reply_id,
            key,
            consumed: None,
        }
    }
}

/// What to answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Success,
    /// Reply with the step's failure type (the first non-retryable one when `retryable`
    /// is false, the first retryable one otherwise).
    Failure {
        retryable: bool,
    },
    /// The demo's "no": the step's failure type (non-retryable first), or its success
    /// type when it declares none, so every command is answered.
    Decline,
    /// Reply with exactly this type and payload.
    Custom {
        reply_type: String,
        payload: Json,
    },
    /// Never answer (the step times out).
    Silence,
}

pub type Policy = Arc<dyn Fn(&Command) -> (Decision, Duration) + Send + Sync>;

/// Each definition with the reply fields its templates read, by step.
type Known = HashMap<String, (Arc<Definition>, HashMap<String, Json>)>;
/// Outcome decided per (saga, step, phase).
type Decided = Mutex<HashMap<(Uuid, String, Phase), Decision>>;

/// The demo's policy: fail forward steps with probability `failure_rate`, answer after
/// `latency`. The outcome is fixed per (saga, step) (protocol rule 9); `run` draws a
/// decline that is a retryable failure again per attempt (rule 10, see `afresh`). A
/// command whose payload has a `demo` field is answered as it says instead (see
/// [`scripted`]), so a saga can be made to decline, stall or fail on purpose.
pub fn random_policy(failure_rate: f64, latency: Duration) -> Policy {
    Arc::new(move |c: &Command| {
        if let Some(d) = scripted(c) {
            return (d, latency);
        }
        if c.phase == Phase::Compensation {
            return (Decision::Success, latency);
        }
        // Fixed per (saga, step): a later attempt gets the first one's answer (rule 9).
        // A decline that is a retryable failure is drawn again per attempt by `run`
        // (see `afresh`).
        let declined = draw(c.saga_id, &c.step) < failure_rate;
        let d = if declined {
            Decision::Decline
        } else {
            Decision::Success
        };
        (d, latency)
    })
}

/// A number in [0, 1) fixed by (`saga`, `name`).
fn draw(saga: Uuid, name: &str) -> f64 {
    // The low 62 bits of a v5 UUID are hash bits; the two above them are the fixed
    // variant (0b10), which made every draw land in [0.5, 0.75): no step ever failed
    // below a 50 % rate. Take 53 of the hash bits only.
    let h = Uuid::new_v5(&saga, name.as_bytes()).as_u128() as u64;
    ((h & ((1u64 << 62) - 1)) >> 9) as f64 / (1u64 << 53) as f64
}

/// The answer a command's `demo` field asks for: a comma-separated list of `success`,
/// `decline` or `silence`, one per attempt, the last one repeating (`silence,success`
/// leaves the first attempt unanswered and answers the next). `None` when the field is
/// absent or holds another word.
pub fn scripted(c: &Command) -> Option<Decision> {
    let list = c.payload.get("demo")?.as_str()?;
    let words: Vec<&str> = list.split(',').map(str::trim).collect();
    let index = (c.attempt.max(1) as usize - 1).min(words.len() - 1);
    match words[index] {
        "success" => Some(Decision::Success),
        "decline" => Some(Decision::Decline),
        "silence" => Some(Decision::Silence),
        _ => None,
    }
}

/// Every command and compensation topic of these definitions, sorted.
pub fn command_topics(defs: &[Definition]) -> Vec<String> {
    let mut topics: Vec<String> = defs
        .iter()
        .flat_map(|d| {
            d.steps.iter().flat_map(|s| {
                std::iter::once(s.command.topic.clone())
                    .chain(s.compensation.as_ref().map(|c| c.command.topic.clone()))
            })
        })
        .collect();
    topics.sort();
    topics.dedup();
    topics
}

#[derive(Debug, Clone)]
pub struct ParticipantSettings {
    pub kafka: KafkaSettings,
    pub group_id: String,
    pub topics: Vec<String>,
}

/// Reply payloads: every field some template reads from this step's reply, so the
/// saga's later steps and output render.
fn success_payload(
    defs: &HashMap<String, (Arc<Definition>, HashMap<String, Json>)>,
    c: &Command,
) -> Json {
    let mut payload = defs
        .get(&c.definition)
        .and_then(|(_, replies)| replies.get(&c.step).cloned())
        .unwrap_or_else(|| json!({}));
    if let Json::Object(map) = &mut payload {
        // Text becomes per saga; other values already fit the reply's schema.
        for v in map.values_mut().filter(|v| v.is_string()) {
            *v = json!(format!(
                "{}-{}",
                c.step,
                &c.saga_id.simple().to_string()[..8]
            ));
        }
        map.insert("processed_at".into(), json!(Utc::now().to_rfc3339()));
    }
    payload
}

fn reply_type(def: &Definition, c: &Command, decision: &Decision) -> Option<(String, bool)> {
    let spec = reply_spec(def, c)?;
    match decision {
        Decision::Success => Some((spec.success.first()?.clone(), true)),
        Decision::Failure { retryable } => {
            let f = spec
                .failure
                .iter()
                .find(|f| f.retryable == *retryable)
                .or_else(|| spec.failure.first())?;
            Some((f.reply_type.clone(), false))
        }
        Decision::Decline => Some(
            match spec
                .failure
                .iter()
                .find(|f| !f.retryable)
                .or_else(|| spec.failure.first())
            {
                Some(f) => (f.reply_type.clone(), false),
                None => (spec.success.first()?.clone(), true),
            },
        ),
        Decision::Custom { reply_type, .. } => Some((reply_type.clone(), true)),
        Decision::Silence => None,
    }
}

/// The replies `c`'s step (or its compensation) declares.
fn reply_spec<'a>(def: &'a Definition, c: &Command) -> Option<&'a ReplySpec> {
    let step = def.step(&c.step)?;
    Some(match c.phase {
        Phase::Command => &step.reply,
        Phase::Compensation => &step.compensation.as_ref()?.reply,
    })
}

/// The command in `m`, decoded as every participant library does
/// ([`handling::decode`]); `None` for a message that is not one.
pub fn read_command(m: &OwnedMessage) -> Option<Command> {
    let headers = kafka::headers_of(m);
    let incoming = handling::Incoming {
        topic: m.topic(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key(),
        headers: &headers,
        value: m.payload(),
    };
    handling::decode(&incoming).ok()
}

/// The reply to `c`, continuing its trace: its `traceparent` is a new child of the
/// command's context (a participant that records spans uses [`reply_record_traced`]).
pub fn reply_record(c: &Command, reply_type: &str, payload: &Json) -> Record {
    let cx = propagation::parse(c.traceparent.as_deref(), c.tracestate.as_deref());
    let trace = cx
        .map(|cx| propagation::headers(&propagation::synthetic_child(Some(&cx))))
        .unwrap_or_default();
    let id = Uuid::now_v7().to_string();
    reply_record_traced(c, &id, reply_type, payload, &trace)
}

/// The reply `id` to `c` carrying `trace_headers` (`traceparent`/`tracestate` of the
/// span that sends it, which names `id` as its `messaging.message.id`).
pub fn reply_record_traced(
    c: &Command,
    id: &str,
    reply_type: &str,
    payload: &Json,
    trace_headers: &[(String, String)],
) -> Record {
    let headers = handling::reply_headers(
        c,
        id,
        "/sagaflow/demo-participant",
        reply_type,
        trace_headers,
    );
    Record {
        topic: c.reply_to.clone(),
        key: c.saga_id.to_string(),
        headers,
        payload: serde_json::to_vec(payload).unwrap_or_default(),
    }
}

/// Runs until cancelled. A command's offset is committed only once its reply is
/// acknowledged (or it needs none); a reply the broker refuses is sent again until it is
/// acknowledged, so a broker outage delays replies and loses none.
pub async fn run(
    defs: Vec<Arc<Definition>>,
    settings: ParticipantSettings,
    policy: Policy,
    cancel: CancellationToken,
) -> Result<(), rdkafka::error::KafkaError> {
    let consumer: Arc<StreamConsumer> = Arc::new(kafka::create(&kafka::consumer_config(
        &settings.kafka,
        &settings.group_id,
    ))?);
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let answerer = Answerer {
        producer: Arc::new(kafka::HealingProducer::new(
            &settings.kafka,
            kafka::producer(&settings.kafka)?,
        )),
        defs: Arc::new(
            defs.into_iter()
                .map(|d| {
                    (
                        d.name.clone(),
                        (d.clone(), crate::simulate::synthesized_replies(&d)),
                    )
                })
                .collect(),
        ),
        broker: Broker::from_bootstrap(&settings.kafka.bootstrap_servers),
        offsets: Offsets {
            consumer: Arc::downgrade(&consumer),
            pending: Arc::default(),
        },
        cancel: cancel.clone(),
    };
    // Outcome per (saga, step, phase): a retried attempt gets the first answer again.
    let decided: Decided = Mutex::default();
    loop {
        let m = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            m = consumer.recv() => m,
        };
        let m = match m {
            Ok(m) => m.detach(),
            Err(e) => {
                tracing::warn!(error = %e, "participant consumer error");
                continue;
            }
        };
        answerer.offsets.received(&m);
        let Some(cmd) = read_command(&m) else {
            tracing::warn!(
                topic = m.topic(),
                "participant ignored a message that is not a sagaflow command"
            );
            answerer.offsets.done(&m);
            continue;
        };
        let (fresh, delay) = policy(&cmd);
        let def = answerer.defs.get(&cmd.definition).map(|(d, _)| d.as_ref());
        let fresh = afresh(&policy, def, &cmd, fresh);
        let decision = decide(&decided, &cmd, fresh);
        let process = spans::participant_process(
            // The participant's work is a child of the command's producer span; its
            // reply is a child of that, so sagaflow's reply handling continues this trace.
            propagation::parse(cmd.traceparent.as_deref(), cmd.tracestate.as_deref()).as_ref(),
            cmd.saga(),
            cmd.received(
                &m,
                &String::from_utf8_lossy(m.key().unwrap_or_default()),
                &settings.group_id,
                answerer.broker.as_ref(),
            ),
        );
        let answerer = answerer.clone();
        tokio::spawn(async move {
            // No timer for no delay: even a zero sleep waits for the timer wheel's next
            // millisecond tick, which showed as 0.8 ms a step in the bench's hop split.
            if !delay.is_zero() {
                tokio::select! {
                    _ = answerer.cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            if answerer.answer(&cmd, &decision, &process).await {
                answerer.offsets.done(&m);
            }
        });
    }
}

/// A decline whose reply is a retryable failure (the step declares no other) is that
/// failure, and nothing was done: each later attempt is evaluated afresh (rule 10) rather
/// than declined until the step's attempts run out. The policy is asked again under a
/// saga id of the attempt's own, so a random policy draws again, and a scripted answer
/// (which goes by attempt) stays as scripted. Any other outcome stays as the policy
/// decided it for the step (rule 9).
fn afresh(
    policy: &Policy,
    def: Option<&Definition>,
    cmd: &Command,
    decision: Decision,
) -> Decision {
    let retryable = decision == Decision::Decline
        && def
            .and_then(|def| reply_spec(def, cmd))
            .is_some_and(|spec| {
                !spec.failure.is_empty() && spec.failure.iter().all(|f| f.retryable)
            });
    if !retryable {
        return decision;
    }
    let again = if cmd.attempt > 1 {
        let name = format!("{}/{}", cmd.step, cmd.attempt);
        let attempt = Command {
            saga_id: Uuid::new_v5(&cmd.saga_id, name.as_bytes()),
            ..cmd.clone()
        };
        policy(&attempt).0
    } else {
        decision
    };
    match again {
        Decision::Decline => Decision::Failure { retryable: true },
        other => other,
    }
}

/// The outcome for `cmd`: the one decided for an earlier attempt of its step, unless
/// that was silence or a retryable failure (transient: decided again each attempt).
fn decide(decided: &Decided, cmd: &Command, fresh: Decision) -> Decision {
    let mut d = decided.lock().unwrap_or_else(|p| p.into_inner());
    let key = (cmd.saga_id, cmd.step.clone(), cmd.phase);
    match d.get(&key) {
        Some(
            earlier @ (Decision::Success
            | Decision::Failure { retryable: false }
            | Decision::Decline
            | Decision::Custom { .. }),
        ) => earlier.clone(),
        _ => {
            d.insert(key, fresh.clone());
            fresh
        }
    }
}

/// What each command's handling task shares.
#[derive(Clone)]
struct Answerer {
    producer: Arc<kafka::HealingProducer>,
    defs: Arc<Known>,
    broker: Option<Broker>,
    offsets: Offsets,
    cancel: CancellationToken,
}

impl Answerer {
    /// Replies to `cmd` as `decision` says; whether its offset may be committed (false
    /// only when cancelled before the reply was acknowledged).
    async fn answer(&self, cmd: &Command, decision: &Decision, process: &spans::Traced) -> bool {
        let Some((def, _)) = self.defs.get(&cmd.definition) else {
            return true;
        };
        let Some((reply_type, success)) = reply_type(def, cmd, decision) else {
            return true;
        };
        let payload = match (decision, success) {
            (Decision::Custom { payload, .. }, _) => payload.clone(),
            (_, true) => success_payload(&self.defs, cmd),
            (_, false) => json!({"error": "declined by participant"}),
        };
        if !success {
            process.error("declined", format!("declined with {reply_type}"));
        }
        let (key, id) = (cmd.saga_id.to_string(), Uuid::now_v7().to_string());
        let reply = spans::participant_reply(
            &process.context,
            cmd.saga(),
            cmd.reply(&id, &key),
            self.broker.as_ref(),
        );
        let record = reply_record_traced(cmd, &id, &reply_type, &payload, &reply.headers());
        match self.send_until_acknowledged(&record).await {
            Ok(()) => true,
            Err(e) => {
                reply.error("publish", e.to_string());
                false
            }
        }
    }

    /// Sends `record` until the broker acknowledges it; the last error if cancelled first.
    async fn send_until_acknowledged(
        &self,
        record: &Record,
    ) -> Result<(), rdkafka::error::KafkaError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let sent = kafka::send(&self.producer.get(), record, Duration::from_secs(30)).await;
            let e = match sent {
                Ok(()) => {
                    self.producer.succeeded();
                    return Ok(());
                }
                Err(e) => e,
            };
            // A topic that does not exist yet may be created (protocol.md: retry); a
            // reply refused for any other lasting reason would hold its partition's
            // commits back for ever, so it is given up, loudly.
            let unknown_topic =
                e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::UnknownTopic);
            if refused_for_good(&e) && !unknown_topic {
                tracing::error!(error = %e, topic = %record.topic, "participant reply refused for good; given up");
                return Ok(());
            }
            self.producer.failed();
            tracing::warn!(error = %e, retry_in = ?backoff, "participant reply failed");
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(e),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// Stores each partition's committable position as replies are acknowledged; the
/// consumer's automatic commit sends it to the broker. Not reset when a partition is
/// revoked and assigned again: a reply still being retried from before keeps its offset
/// open, so the position stored may be below one another member committed meanwhile,
/// which redelivers commands (answered again, as a redelivery is), never skips one.
#[derive(Clone)]
struct Offsets {
    /// Weak: handling tasks still running when `run` returns do not keep the consumer
    /// (and its group membership) alive.
    consumer: std::sync::Weak<StreamConsumer>,
    pending: Arc<Mutex<offsets::Pending>>,
}

impl Offsets {
    fn received(&self, m: &OwnedMessage) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.received(m.topic(), m.partition(), m.offset());
    }

    fn done(&self, m: &OwnedMessage) {
        // Stored under the lock, so a lower position never overwrites a higher one.
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(next), Some(consumer)) = (
            pending.done(m.topic(), m.partition(), m.offset()),
            self.consumer.upgrade(),
        ) else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        let stored = tpl
            .add_partition_offset(m.topic(), m.partition(), Offset::Offset(next))
            .and_then(|()| consumer.store_offsets(&tpl));
        if let Err(e) = stored {
            // The partition was revoked meanwhile: its new owner reads from the last commit.
            tracing::debug!(error = %e, topic = m.topic(), "participant offset not stored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_policy_fails_at_about_the_requested_rate() {
        let policy = random_policy(0.1, Duration::ZERO);
        let n = 4000;
        let failed = (0..n)
            .filter(|_| {
                let c = Command {
                    saga_id: Uuid::new_v4(),
                    definition: "d".into(),
                    step: "s".into(),
                    attempt: 1,
                    phase: Phase::Command,
                    command_type: "t".into(),
                    command_id: "i".into(),
                    payload: json!({}),
                    reply_to: "r".into(),
                    token: None,
                    traceparent: None,
                    tracestate: None,
                };
                policy(&c).0 != Decision::Success
            })
            .count();
        let rate = failed as f64 / n as f64;
        assert!((0.07..0.13).contains(&rate), "failure rate {rate}");
    }

    fn command(attempt: u32, payload: Json) -> Command {
        Command {
            saga_id: Uuid::new_v4(),
            definition: "d".into(),
            step: "s".into(),
            attempt,
            phase: Phase::Compensation,
            command_type: "t".into(),
            command_id: "i".into(),
            payload,
            reply_to: "r".into(),
            token: None,
            traceparent: None,
            tracestate: None,
        }
    }

    #[test]
    fn a_demo_field_scripts_the_answer_per_attempt_and_the_last_one_repeats() {
        let policy = random_policy(1.0, Duration::ZERO);
        let script = json!({"demo": "silence, success"});
        assert_eq!(policy(&command(1, script.clone())).0, Decision::Silence);
        assert_eq!(policy(&command(2, script.clone())).0, Decision::Success);
        assert_eq!(policy(&command(7, script)).0, Decision::Success);
        let declined = command(1, json!({"demo": "decline"}));
        assert_eq!(policy(&declined).0, Decision::Decline);
        // Another word, or no field, leaves the answer to the failure rate.
        assert_eq!(scripted(&command(1, json!({"demo": "maybe"}))), None);
        assert_eq!(scripted(&command(1, json!({"demo": 3}))), None);
        assert_eq!(scripted(&command(1, json!({}))), None);
    }
    fn example() -> Definition {
        crate::definition::parse_definition(
            "order-fulfilment.yaml",
            include_str!("../../sagas/order-fulfilment.yaml"),
        )
        .expect("the example parses")
    }

    #[test]
    fn a_retryable_decline_is_drawn_again_per_attempt_and_any_other_answer_stays() {
        let (def, policy) = (example(), random_policy(0.5, Duration::ZERO));
        let answer = |c: &Command| afresh(&policy, Some(&def), c, policy(c).0);
        let (mut declined_first, mut declined_again) = (0, 0);
        for _ in 0..4000 {
            let mut c = command(1, json!({}));
            c.phase = Phase::Command;
            c.step = "ship_order".into();
            let first = answer(&c);
            c.attempt = 2;
            let second = answer(&c);
            assert_eq!(second, answer(&c), "a repeat of attempt 2 gets its answer");
            if first == Decision::Success {
                assert_eq!(
                    second,
                    Decision::Success,
                    "attempt 2 of a step that succeeded"
                );
            } else {
                assert_eq!(first, Decision::Failure { retryable: true });
                declined_first += 1;
                declined_again += usize::from(second != Decision::Success);
            }
            // A step refused for good is refused on every attempt, with no memory of it.
            c.step = "reserve_stock".into();
            c.attempt = 1;
            let refused = answer(&c);
            c.attempt = 3;
            assert_eq!(
                answer(&c),
                refused,
                "rule 9: a later attempt gets the first answer"
            );
        }
        let again = declined_again as f64 / declined_first as f64;
        assert!((0.4..0.6).contains(&again), "declined again: {again}");
    }

    #[test]
    fn a_scripted_answer_stays_as_scripted_on_a_retryable_step() {
        let (def, policy) = (example(), random_policy(0.0, Duration::ZERO));
        let mut c = command(2, json!({"demo": "success, decline"}));
        c.phase = Phase::Command;
        c.step = "ship_order".into();
        assert_eq!(
            afresh(&policy, Some(&def), &c, policy(&c).0),
            Decision::Failure { retryable: true }
        );
        c.step = "reserve_stock".into();
        assert_eq!(
            afresh(&policy, Some(&def), &c, policy(&c).0),
            Decision::Decline
        );
        assert_eq!(
            afresh(&policy, None, &c, Decision::Decline),
            Decision::Decline
        );
    }
}
