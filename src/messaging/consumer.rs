//! The reply and trigger consumer: reads batches from Kafka, applies them in one
//! database transaction, and only then stores their offsets. A message that cannot be
//! read or routed goes to the dead-letter topic (with the reason in headers) before its
//! offset is stored, so no message is ever dropped silently.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::producer::FutureProducer;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::runtime::supervise::{Heartbeat, fault, fault_named};

use super::envelope::{self, InboundEvent, Record};
use super::{kafka, membership, reply_token};
use crate::definition::Definition;
use crate::engine::{Event, Rejection, Reply, command_id};
use crate::runtime::intake;
use crate::runtime::transition::{
    Applied, Applier, ApplyError, Item, StartOutcome, TriggerOutcome,
};
use crate::store;
use crate::telemetry::{self, metrics, saga::InboundTrace, spans::Broker};

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub batch_size: usize,
    pub linger: Duration,
    pub dead_letter_topic: String,
    pub send_timeout: Duration,
    /// How often consumer lag is exported.
    pub lag_interval: Duration,
    /// How long a reply whose saga this replica cannot read is retried before it is
    /// parked (see `ApplyError::is_unreadable`).
    pub park_unreadable_after: Duration,
    /// The group watchdog (`membership.rs`); `None`: off.
    pub watchdog: Option<membership::Watchdog>,
    /// The consumer's group and `bootstrap.servers`, named on each reply's span.
    pub group_id: String,
    pub bootstrap_servers: String,
}

/// How long without a consumer error counts as healthy when no message arrives.
const QUIET_IS_HEALTHY: Duration = Duration::from_secs(3);

/// Runs until cancelled; then finishes the batch in hand and commits offsets.
pub async fn run(
    applier: Applier,
    consumer: StreamConsumer,
    dlq: FutureProducer,
    settings: ConsumerSettings,
    healthy: Arc<Heartbeat>,
    cancel: CancellationToken,
) {
    healthy.ok();
    let consumer = Arc::new(consumer);
    tokio::spawn(report_lag(
        consumer.clone(),
        settings.lag_interval,
        cancel.clone(),
    ));
    // Cancelled by the watchdog: this loop then ends, and supervision stops the process.
    let wedged = CancellationToken::new();
    let applying = Arc::new(AtomicBool::new(false));
    if let Some(dog) = settings.watchdog.clone() {
        tokio::spawn(membership::watch(
            consumer.clone(),
            dog,
            applying.clone(),
            wedged.clone(),
            cancel.clone(),
        ));
    }
    // Lingering only pays when replies come in bursts: after a batch of one, take what
    // is already buffered and go (saves the linger on every hop of a lone saga).
    let mut last_batch = 0usize;
    loop {
        // A consumer error marks the consumer unhealthy; a quiet spell without one marks it
        // healthy again, so a transient error (a topic not yet visible at start-up, a
        // rebalance) does not hold readiness down until the next message arrives.
        let first = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = wedged.cancelled() => return,
            m = tokio::time::timeout(QUIET_IS_HEALTHY, consumer.recv()) => match m {
                Ok(m) => m,
                Err(_) => {
                    healthy.ok();
                    continue;
                }
            },
        };
        let mut batch = match first {
            Ok(m) => vec![m.detach()],
            Err(e) => {
                healthy.failing();
                tracing::warn!(error = %e, "kafka consumer error");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                continue;
            }
        };
        healthy.ok();
        let linger = if last_batch > 1 {
            settings.linger
        } else {
            Duration::ZERO
        };
        let deadline = Instant::now() + linger;
        while batch.len() < settings.batch_size {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(m)) => batch.push(m.detach()),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consumer error");
                    break;
                }
                Err(_) => break,
            }
        }
        last_batch = batch.len();
        applying.store(true, Ordering::Relaxed);
        fault("consumer.batch");
        // A batch in hand is finished even during shutdown: its effects are committed
        // with its offsets, or neither.
        let mut backoff = Duration::from_millis(100);
        let failing_since = Instant::now();
        loop {
            let park_unreadable = failing_since.elapsed() >= settings.park_unreadable_after;
            match process(&applier, &dlq, &settings, &batch, park_unreadable).await {
                Ok(()) => break,
                Err(e) => {
                    healthy.failing();
                    tracing::error!(error = %e, source = ?std::error::Error::source(&e), "applying a batch failed; retrying");
                    if wedged.is_cancelled() {
                        // Not stored: a fresh process reads the batch again.
                        return;
                    }
                    if cancel.is_cancelled() && backoff > Duration::from_secs(2) {
                        // Offsets are not stored: the batch is redelivered after restart.
                        return commit(&consumer);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        // The batch's transaction has committed; its offsets are not stored yet.
        fault("consumer.after_commit");
        kafka::store_consumed(consumer.as_ref(), &batch);
        applying.store(false, Ordering::Relaxed);
        if fault_named("consumer.leave_group") {
            // Test hook: a member that leaves its group and never rejoins (the watchdog's case).
            consumer.unsubscribe();
        }
    }
    commit(&consumer);
}

/// Exports consumer lag per assigned partition: high watermark minus the next offset
/// this consumer will process (its position, else its committed offset). The
/// watermark query is a broker round trip, so it runs off the async threads. A
/// partition that moved to another replica is reported as 0 here from then on, so the
/// sum over replicas stays right and no stale figure pages anyone.
async fn report_lag(consumer: Arc<StreamConsumer>, every: Duration, cancel: CancellationToken) {
    let mut reported: HashSet<(String, i32)> = HashSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let c = consumer.clone();
        let Ok(Some(assigned)) = tokio::task::spawn_blocking(move || lag_once(&c)).await else {
            continue;
        };
        for (topic, partition) in reported.difference(&assigned) {
            metrics::consumer_lag(topic, *partition, 0);
        }
        reported = assigned;
    }
}

/// Reports the lag of each assigned partition; the partitions (`None`: unknown now).
fn lag_once(consumer: &StreamConsumer) -> Option<HashSet<(String, i32)>> {
    let timeout = Duration::from_secs(2);
    let assigned = consumer.assignment().ok()?;
    let position = consumer.position().ok();
    let committed = consumer.committed(timeout).ok();
    let offset_in = |list: &Option<rdkafka::TopicPartitionList>, t: &str, p: i32| {
        list.as_ref()
            .and_then(|l| l.find_partition(t, p))
            .and_then(|e| e.offset().to_raw())
            .filter(|o| *o >= 0)
    };
    let mut partitions = HashSet::new();
    for e in assigned.elements() {
        let (t, p) = (e.topic(), e.partition());
        partitions.insert((t.to_owned(), p));
        let Ok((low, high)) = consumer.fetch_watermarks(t, p, timeout) else {
            continue;
        };
        let next = offset_in(&position, t, p)
            .or_else(|| offset_in(&committed, t, p))
            .unwrap_or(low);
        metrics::consumer_lag(t, p, high - next);
    }
    Some(partitions)
}

fn commit(consumer: &StreamConsumer) {
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "final offset commit did not happen (nothing stored?)");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("dead-letter publish failed")]
    DeadLetter(#[source] rdkafka::error::KafkaError),
    #[error("recording a dead letter failed")]
    Record(#[source] crate::store::StoreError),
}

enum Route {
    Reply(usize),
    /// With the definitions it triggers, read once: a reload meanwhile cannot make the
    /// event start nothing and vanish.
    Trigger(InboundEvent, Vec<Arc<Definition>>),
    /// Another business event on a trigger topic: not ours, not an error.
    Ignored,
    /// Reason kind (a metric label) and the full reason (a header).
    Dead(&'static str, String),
}

/// What became of one reply of a batch: applied, or parked because applying it fails
/// for a reason that will not go away (the reason).
type Outcome = Result<Applied, String>;

async fn process(
    applier: &Applier,
    dlq: &FutureProducer,
    settings: &ConsumerSettings,
    batch: &[OwnedMessage],
    park_unreadable: bool,
) -> Result<(), ConsumeError> {
    let mut items = Vec::new();
    let mut traces = Vec::new();
    let routes: Vec<Route> = batch
        .iter()
        .map(|m| route(applier, settings, m, &mut items, &mut traces))
        .collect();
    let results = apply(applier, &items, &traces, park_unreadable).await?;
    for (m, route) in batch.iter().zip(routes) {
        let reason = match route {
            Route::Dead(kind, reason) => Some((kind, reason)),
            Route::Ignored => None,
            Route::Reply(i) => reply_rejection(m, &results[i]),
            Route::Trigger(ev, defs) => trigger(applier, &defs, &ev)
                .await?
                .map(|r| ("trigger_rejected", r)),
        };
        if let Some((kind, reason)) = reason {
            keep_dead_letter(applier, m, kind, &reason).await?;
            dead_letter(dlq, settings, m, &reason).await?;
            metrics::dead_lettered(kind);
        }
    }
    Ok(())
}

/// Decodes and checks one message; a reply is added to `items` (and its trace headers
/// to `traces`) to be applied with the rest of the batch.
fn route(
    applier: &Applier,
    settings: &ConsumerSettings,
    m: &OwnedMessage,
    items: &mut Vec<Item>,
    traces: &mut Vec<Option<InboundTrace>>,
) -> Route {
    let ev = match envelope::decode(&kafka::headers_of(m), m.payload()) {
        Err(e) => return Route::Dead("undecodable", e.to_string()),
        Ok(ev) => ev,
    };
    if let Some(problem) = intake::event_problem(&ev) {
        return Route::Dead("invalid", problem);
    }
    let triggered = applier.registry.triggered_by(m.topic(), &ev.event_type);
    if !triggered.is_empty() {
        return Route::Trigger(ev, triggered);
    }
    if applier.registry.is_trigger_topic(m.topic()) {
        // Replies are never read from trigger topics: whoever may publish business
        // events there must not be able to answer commands.
        // Only what carries a reply token is a misdirected reply; other events (a
        // lifecycle event on a lifecycle topic that triggers sagas, say) are not ours.
        if ev.ext(reply_token::EXT_TOKEN).is_none() {
            metrics::ignored("not_a_trigger");
            return Route::Ignored;
        }
        return Route::Dead(
            "wrong_topic",
            format!(
                "a reply on trigger topic `{}`: replies count only on the reply topic their command named",
                m.topic()
            ),
        );
    }
    let addr = match envelope::reply_address(&ev) {
        Err(e) => return Route::Dead("unroutable", format!("unroutable reply: {e}")),
        Ok(addr) => addr,
    };
    let command = command_id(addr.saga_id, &addr.step, addr.phase, addr.attempt);
    let token = ev.ext(reply_token::EXT_TOKEN);
    if let Err(problem) = applier.settings.reply_keys.check(command, token) {
        return Route::Dead("unauthenticated", problem.to_string());
    }
    if telemetry::log_payloads() {
        tracing::debug!(saga_id = %addr.saga_id, step = %addr.step, reply_type = %ev.event_type, payload = %ev.data, "reply received");
    }
    traces.push(Some(InboundTrace {
        traceparent: ev.ext("traceparent").map(str::to_owned),
        tracestate: ev.ext("tracestate").map(str::to_owned),
        topic: m.topic().to_owned(),
        key: m
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        partition: m.partition(),
        offset: m.offset(),
        group: settings.group_id.clone(),
        broker: Broker::from_bootstrap(&settings.bootstrap_servers),
    }));
    items.push(Item {
        saga_id: addr.saga_id,
        event: Event::Reply(Reply {
            step: addr.step,
            phase: addr.phase,
            attempt: addr.attempt,
            reply_type: ev.event_type.clone(),
            payload: ev.data,
            message_id: ev.id.clone(),
            topic: m.topic().to_owned(),
            source: ev.source.clone(),
        }),
        message_id: Some(format!("{}|{}", ev.source, ev.id)),
        timer: None,

        only_if: None,
    });
    Route::Reply(items.len() - 1)
}

/// Applies the batch's replies in one transaction. If that fails for a reason that is
/// not transient, one of them is poison: they are applied one by one, and each that
/// fails that way is parked (dead-lettered by the caller) so it blocks nothing else. A
/// reply whose saga this replica cannot read is parked only once `park_unreadable`;
/// until then the error is returned and the whole batch retried, as for any other.
async fn apply(
    applier: &Applier,
    items: &[Item],
    traces: &[Option<InboundTrace>],
    park_unreadable: bool,
) -> Result<Vec<Outcome>, ConsumeError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    match applier.apply_traced(items, traces, false).await {
        Ok(results) => return Ok(results.into_iter().map(Ok).collect()),
        Err(e) if e.is_permanent() => {
            tracing::warn!(error = %error_chain(&e), "a batch failed for a reason that is not transient; applying its replies one by one");
        }
        Err(e) => return Err(e.into()),
    }
    let mut results = Vec::with_capacity(items.len());
    for (item, trace) in items.iter().zip(traces) {
        let one = std::slice::from_ref(item);
        match applier
            .apply_traced(one, std::slice::from_ref(trace), false)
            .await
        {
            Ok(mut r) => results.push(Ok(r.remove(0))),
            Err(e) if e.is_unstorable() || (e.is_unreadable() && park_unreadable) => {
                let reason = format!("reply could not be applied: {}", error_chain(&e));
                tracing::error!(saga_id = %item.saga_id, %reason, "reply parked on the dead-letter topic");
                results.push(Err(reason));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(results)
}

/// `error: source: source…`, for a dead-letter reason an operator can act on.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Why an applied (or parked) reply goes to the dead-letter topic, if it does.
fn reply_rejection(m: &OwnedMessage, outcome: &Outcome) -> Option<(&'static str, String)> {
    match outcome {
        Err(reason) => Some(("apply_failed", reason.clone())),
        Ok(Applied::UnknownSaga) => Some(("unknown_saga", "reply for an unknown saga".to_owned())),
        Ok(Applied::Rejected(Rejection::UnknownStep(s))) => Some((
            "unknown_step",
            format!("reply names step `{s}`, which the saga does not have"),
        )),
        Ok(Applied::Rejected(wrong @ Rejection::WrongReplyTopic { .. })) => {
            Some(("wrong_topic", wrong.to_string()))
        }
        Ok(Applied::Duplicate) => {
            tracing::debug!(
                topic = m.topic(),
                offset = m.offset(),
                "duplicate reply ignored"
            );
            None
        }
        Ok(_) => None,
    }
}

/// Starts every saga this event triggers; returns a dead-letter reason if it cannot.
async fn trigger(
    applier: &Applier,
    defs: &[Arc<Definition>],
    ev: &InboundEvent,
) -> Result<Option<String>, ConsumeError> {
    let mut problems = Vec::new();
    for def in defs {
        let outcome = match applier.start_from_trigger(def, ev).await {
            Ok(outcome) => outcome,
            Err(e) if e.is_unstorable() => {
                problems.push(format!(
                    "{}: could not be applied: {}",
                    def.name,
                    error_chain(&e)
                ));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match outcome {
            TriggerOutcome::Started(StartOutcome::Created(id, _)) => {
                tracing::info!(saga_id = %id, definition = %def.name, "saga started by trigger");
            }
            TriggerOutcome::Started(StartOutcome::Conflict(id)) => problems.push(format!(
                "{}: business key already used by saga {id} with a different input",
                def.name
            )),
            TriggerOutcome::Started(_) | TriggerOutcome::Duplicate => {}
            TriggerOutcome::Invalid(reason) => problems.push(format!("{}: {reason}", def.name)),
        }
    }
    Ok((!problems.is_empty()).then(|| format!("trigger rejected: {}", problems.join("; "))))
}

/// Keeps the dead letter in PostgreSQL for operators (list, redrive, discard), before
/// its offset can be stored: a crash in between records it again, which is a no-op.
async fn keep_dead_letter(
    applier: &Applier,
    m: &OwnedMessage,
    kind: &str,
    reason: &str,
) -> Result<(), ConsumeError> {
    let headers = kafka::headers_of(m);
    let saga_id = headers
        .iter()
        .find(|(k, _)| k == "ce_sagaid")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse().ok());
    let record = store::NewDeadLetter {
        kind: kind.to_owned(),
        reason: reason.chars().take(MAX_REASON).collect(),
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec).unwrap_or_default(),
        headers,
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        saga_id,
    };
    store::record_dead_letter(&applier.store.pool, &record)
        .await
        .map_err(ConsumeError::Record)
}

/// Longest dead-letter reason kept (characters).
const MAX_REASON: usize = 2000;

async fn dead_letter(
    dlq: &FutureProducer,
    settings: &ConsumerSettings,
    m: &OwnedMessage,
    reason: &str,
) -> Result<(), ConsumeError> {
    tracing::warn!(
        topic = m.topic(),
        partition = m.partition(),
        offset = m.offset(),
        reason,
        "message dead-lettered"
    );
    let mut headers: Vec<(String, String)> = kafka::headers_of(m)
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    // Bounded: a reason quoting a large message must not make its dead letter too large.
    headers.push((
        "dlq-reason".into(),
        reason.chars().take(MAX_REASON).collect(),
    ));
    headers.push(("dlq-original-topic".into(), m.topic().to_owned()));
    headers.push(("dlq-original-partition".into(), m.partition().to_string()));
    headers.push(("dlq-original-offset".into(), m.offset().to_string()));
    let record = Record {
        topic: settings.dead_letter_topic.clone(),
        key: m
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        headers,
        payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    };
    kafka::send(dlq, &record, settings.send_timeout)
        .await
        .map_err(ConsumeError::DeadLetter)
}
