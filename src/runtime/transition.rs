//! The one path every state change takes: lock the saga, run the pure engine, then
//! write the new state, its history, its outgoing messages and its timers in the same
//! transaction. Only after that commits is the input acknowledged (by the caller).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::registry::{Registry, RegistryError};
pub use super::trigger::TriggerOutcome;
use crate::definition::{Definition, InputError};
use crate::engine::{self, Effect, Env, Event, Instance, Rejection, SagaStatus, Timer, Transition};
use crate::messaging::envelope;
use crate::messaging::reply_token::{self, ReplyKeys};
use crate::store::{self, Announcement, Store, StoreError, WriteBatch};
use crate::telemetry::saga::{self as observe, InboundTrace, Observations};
use crate::telemetry::spans::Traced;
use opentelemetry::trace::SpanContext;

/// Settings the transition path needs.
#[derive(Debug, Clone)]
pub struct TransitionSettings {
    /// Where lifecycle events go; `None` disables them.
    pub lifecycle_topic: Option<String>,
    /// CloudEvents `source` of everything sagaflow emits.
    pub source: String,
    /// Signs each command's reply token.
    pub reply_keys: Arc<ReplyKeys>,
    /// Whether `started` lifecycle events carry the saga's input.
    pub lifecycle_input: bool,
    /// Whether per-step lifecycle events are published (`kafka.lifecycle_steps`).
    pub lifecycle_steps: bool,
}

#[derive(Debug, Clone)]
pub struct Applier {
    pub store: Store,
    pub registry: Arc<Registry>,
    pub settings: Arc<TransitionSettings>,
}

/// One event for one saga.
#[derive(Debug, Clone)]
pub struct Item {
    pub saga_id: Uuid,
    pub event: Event,
    /// Transport id used for exactly-once application (inbox); `None` for timers and
    /// operator actions, whose idempotence comes from the engine itself.
    pub message_id: Option<String>,
    /// The timer row this event fires (deleted in the same transaction).
    pub timer: Option<String>,
    /// Apply only if the saga still has this status when locked (a bulk action's filter,
    /// checked again where it counts); otherwise refused.
    pub only_if: Option<SagaStatus>,
}

/// What a committed batch did: per item, and each saga's status after it.
#[derive(Debug, Clone)]
pub struct Committed {
    pub applied: Vec<Applied>,
    pub statuses: HashMap<Uuid, SagaStatus>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    Changed,
    /// Applied, but the saga was already past it (recorded in history only).
    Unchanged,
    Duplicate,
    UnknownSaga,
    /// The timer was taken by another replica or cancelled meanwhile.
    TimerGone,
    /// Locked by another transaction (timer path only); try again later.
    Busy,
    Rejected(Rejection),
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl ApplyError {
    /// Deadlocks and serialization failures: the whole batch can simply be retried.
    pub fn is_transient(&self) -> bool {
        let ApplyError::Store(StoreError::Database(e)) = self else {
            return false;
        };
        match e {
            sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40P01" | "40001")),
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
            _ => false,
        }
    }
}

impl ApplyError {
    /// Errors the same input meets again on every try: a message PostgreSQL cannot store
    /// (SQLSTATE class 22, data exception, such as U+0000 in text; class 54, such as an
    /// index row too large), a saga state that no longer reads, a definition version that
    /// cannot be loaded. The consumer parks the message that causes one. Everything else
    /// counts as transient and is retried, so a database restart never parks good input.
    pub fn is_permanent(&self) -> bool {
        self.is_unreadable() || self.is_unstorable()
    }

    /// This replica cannot read the saga's state or definition version. Permanent for
    /// this binary, but a replica of another version (during a rolling upgrade or a
    /// rollback) may read it, so the consumer retries these for a while before parking.
    pub fn is_unreadable(&self) -> bool {
        matches!(
            self,
            ApplyError::Registry(
                RegistryError::MissingSnapshot { .. }
                    | RegistryError::InvalidSnapshot { .. }
                    | RegistryError::Store(StoreError::CorruptState { .. })
            ) | ApplyError::Store(StoreError::CorruptState { .. })
        )
    }

    /// PostgreSQL refuses the data itself (SQLSTATE class 22 or 54).
    pub fn is_unstorable(&self) -> bool {
        let (ApplyError::Registry(RegistryError::Store(StoreError::Database(
            sqlx::Error::Database(db),
        )))
        | ApplyError::Store(StoreError::Database(sqlx::Error::Database(db)))) = self
        else {
            return false;
        };
        db.code()
            .is_some_and(|c| c.starts_with("22") || c.starts_with("54"))
    }
}

pub fn timer_key(timer: &Timer) -> String {
    serde_json::to_string(timer).unwrap_or_default()
}

/// The hash idempotency compares: of the input as a JSON value, so `1` and `1.0`, or
/// `100` and `1e2`, are one input. (serde_json maps are sorted by key, and numbers are
/// written in one form by [`canonical_numbers`].)
pub fn input_hash(input: &Json) -> String {
    text_hash(&serde_json::to_string(&canonical_numbers(input)).unwrap_or_default())
}

/// The hash earlier releases stored: of the input's text as parsed, where `1.0` and
/// `1` differ. A start whose key matches a saga started by one of them is compared with
/// both, so a client retrying across an upgrade is not told its input changed.
pub fn legacy_input_hash(input: &Json) -> String {
    text_hash(&serde_json::to_string(input).unwrap_or_default())
}

fn text_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every number that is a whole value written as a float (`1.0`, `1e2`) as an integer.
fn canonical_numbers(v: &Json) -> Json {
    match v {
        Json::Number(n) if n.is_f64() => n
            .as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map_or_else(|| v.clone(), |f| Json::from(f as i64)),
        Json::Array(items) => Json::Array(items.iter().map(canonical_numbers).collect()),
        Json::Object(map) => Json::Object(
            map.iter()
                .map(|(k, x)| (k.clone(), canonical_numbers(x)))
                .collect(),
        ),
        other => other.clone(),
    }
}

pub(super) fn random() -> u64 {
    // The low 64 bits of a v7 UUID are random: enough for jitter.
    Uuid::now_v7().as_u128() as u64
}

impl Applier {
    /// Applies `items` in one transaction, in order per saga, with the trace headers each
    /// arrived with (`traces[n]` belongs to `items[n]`; shorter or empty when there are
    /// none), so reply handling continues the participant's context. Borrowed, so a
    /// caller can still retry them one by one after a failure.
    pub async fn apply_traced(
        &self,
        items: &[Item],
        traces: &[Option<InboundTrace>],
        skip_locked: bool,
    ) -> Result<Vec<Applied>, ApplyError> {
        Ok(self
            .apply_reporting(items, traces, skip_locked)
            .await?
            .applied)
    }

    /// [`apply_traced`](Self::apply_traced), also returning each saga's status as the
    /// transaction committed it, so a caller can answer without reading it again.
    pub async fn apply_reporting(
        &self,
        items: &[Item],
        traces: &[Option<InboundTrace>],
        skip_locked: bool,
    ) -> Result<Committed, ApplyError> {
        let mut attempt = 0;
        loop {
            match self.try_apply_batch(items, traces, skip_locked).await {
                Err(e) if e.is_transient() && attempt < 5 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, "transient database error; retrying batch");
                }
                Ok((committed, observed)) => {
                    // Metrics only for what committed: a retried batch must not count twice.
                    observed.record();
                    return Ok(committed);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_apply_batch(
        &self,
        items: &[Item],
        traces: &[Option<InboundTrace>],
        skip_locked: bool,
    ) -> Result<(Committed, Observations), ApplyError> {
        let mut tx = self.store.begin().await?;
        let mut results: Vec<Option<Applied>> = vec![None; items.len()];

        let mut saga_ids: Vec<Uuid> = items.iter().map(|i| i.saga_id).collect();
        saga_ids.sort();
        saga_ids.dedup();
        let locked = store::lock_sagas(&mut tx, &saga_ids, skip_locked).await?;
        let mut sagas: HashMap<Uuid, (Instance, Option<String>)> = locked
            .into_iter()
            .map(|l| (l.instance.id, (l.instance, l.trace_context)))
            .collect();

        // Only messages for known sagas enter the inbox: a reply for an unknown saga is
        // dead-lettered by the caller, and must be again if it is redelivered.
        let (ids, inbox_sagas): (Vec<String>, Vec<Option<Uuid>>) = items
            .iter()
            .filter(|i| sagas.contains_key(&i.saga_id))
            .filter_map(|i| i.message_id.clone().map(|m| (m, Some(i.saga_id))))
            .unzip();
        let fresh = store::claim_inbox(&mut tx, &ids, &inbox_sagas).await?;
        let mut seen_in_batch = std::collections::HashSet::new();
        for (n, item) in items.iter().enumerate() {
            if let Some(m) = &item.message_id
                && sagas.contains_key(&item.saga_id)
                && (!fresh.contains(m) || !seen_in_batch.insert(m.clone()))
            {
                results[n] = Some(Applied::Duplicate);
            }
        }

        let (timer_sagas, timer_keys): (Vec<Uuid>, Vec<String>) = items
            .iter()
            .filter(|i| sagas.contains_key(&i.saga_id))
            .filter_map(|i| i.timer.clone().map(|t| (i.saga_id, t)))
            .unzip();
        let live_timers = if timer_keys.is_empty() {
            Default::default()
        } else {
            store::take_timers(&mut tx, &timer_sagas, &timer_keys).await?
        };

        let mut batch = WriteBatch::default();
        let now = Utc::now();
        // Kept open until the transaction ends, so they cover the commit and can carry
        // its error.
        let mut open_spans: Vec<Traced> = Vec::new();
        let mut observed = Observations::default();
        for (n, item) in items.iter().enumerate() {
            if n == items.len() / 2 && n > 0 {
                // Half the batch is staged in the open transaction.
                crate::runtime::supervise::fault("apply.mid_batch");
            }
            if results[n].is_some() {
                continue;
            }
            let Some((inst, trace)) = sagas.get_mut(&item.saga_id) else {
                results[n] = Some(if skip_locked {
                    Applied::Busy
                } else {
                    Applied::UnknownSaga
                });
                continue;
            };
            if let Some(t) = &item.timer
                && !live_timers.contains(&(item.saga_id, t.clone()))
            {
                results[n] = Some(Applied::TimerGone);
                continue;
            }
            if let Some(want) = item.only_if.filter(|want| *want != inst.status) {
                results[n] = Some(Applied::Rejected(Rejection::NotAllowed {
                    action: "bulk",
                    reason: format!(
                        "the saga is {} now, no longer {}: it left the filter",
                        inst.status.as_str(),
                        want.as_str()
                    ),
                }));
                continue;
            }
            let def = self
                .registry
                .version(&self.store, &inst.definition, &inst.version)
                .await?;
            let env = Env {
                now,
                random: random(),
            };
            let inbound = traces.get(n).and_then(Option::as_ref);
            let span = observe::event_span(inst, trace.as_deref(), &item.event, inbound);
            let applied = span
                .span
                .in_scope(|| engine::apply(inst, &def, item.event.clone(), env));
            match applied {
                Ok(t) => {
                    let changed = t.changed(inst);
                    observe::annotate(&span, &t);
                    observed.transition(inst.status, &t, &def, now);
                    self.stage(&mut batch, &def, &t, Some(&span.context), now);
                    if changed {
                        batch.update_saga(&t.instance, t.instance.spotlight_step(&def));
                    }
                    *inst = t.instance;
                    results[n] = Some(if changed {
                        Applied::Changed
                    } else {
                        Applied::Unchanged
                    });
                }
                Err(rejection) => {
                    observe::rejected(&span, &rejection);
                    results[n] = Some(Applied::Rejected(rejection));
                }
            }
            open_spans.push(span);
        }
        // A rejected message goes to the dead-letter topic after this commits; if that
        // publish fails and the batch is redelivered, it must be rejected again rather
        // than dropped as a duplicate, so it leaves no inbox row.
        let rejected: Vec<String> = items
            .iter()
            .zip(&results)
            .filter(|(_, r)| matches!(r, Some(Applied::Rejected(_))))
            .filter_map(|(i, _)| i.message_id.clone())
            .collect();
        if !rejected.is_empty() {
            store::unclaim_inbox(&mut tx, &rejected).await?;
        }
        let announcement = batch.announcement();
        let written = async {
            batch.flush(&mut tx).await?;
            tx.commit().await.map_err(StoreError::from)
        }
        .await;
        // Also after a failed commit, which may have committed all the same: a spare
        // relay round and a spare look by live streams are cheap.
        self.store.committed(announcement);
        if let Err(e) = &written {
            for s in &open_spans {
                s.error("database", e.to_string());
            }
        }
        written?;
        let applied = results
            .into_iter()
            .map(|r| r.unwrap_or(Applied::Unchanged))
            .collect();
        let statuses = sagas
            .iter()
            .map(|(id, (inst, _))| (*id, inst.status))
            .collect();
        Ok((Committed { applied, statuses }, observed))
    }

    /// Turns a transition's effects into rows of the batch. Each command gets a
    /// producer span, a child of `parent` (the span of the event being applied), whose
    /// context travels in the message's `traceparent`/`tracestate`.
    pub fn stage(
        &self,
        batch: &mut WriteBatch,
        def: &Definition,
        t: &Transition,
        parent: Option<&SpanContext>,
        now: DateTime<Utc>,
    ) {
        let id = t.instance.id;
        for effect in &t.effects {
            match effect {
                Effect::SendCommand(o) | Effect::SendCompensation(o) => {
                    let span = observe::send_span(parent, &t.instance, o);
                    let mut headers = span.headers();
                    headers.push((
                        format!("ce_{}", reply_token::EXT_TOKEN),
                        self.settings.reply_keys.sign(o.command_id),
                    ));
                    let record = envelope::encode_command(
                        o,
                        id,
                        &def.name,
                        &self.settings.source,
                        now,
                        &headers,
                    );
                    batch.outbox(id, record);
                }
                Effect::ScheduleTimer { timer, due_at } => {
                    batch.schedule(id, timer_key(timer), *due_at)
                }
                Effect::CancelTimer { timer } => batch.cancel(id, timer_key(timer)),
                Effect::Record(h) => batch.history(id, h),
                Effect::Publish(l) if !self.settings.lifecycle_steps && l.kind.is_per_step() => {}
                Effect::Publish(l) => {
                    if let Some(topic) = &self.settings.lifecycle_topic {
                        // Unique per event (two transitions of one saga can share a batch and a clock reading).
                        let event_id = Uuid::now_v7();
                        let record = envelope::encode_lifecycle(
                            l,
                            &envelope::LifecycleContext {
                                saga_id: id,
                                definition: &def.name,
                                status: t.instance.status.as_str(),
                                event_id,
                                topic,
                                source: &self.settings.source,
                                now,
                                include_input: self.settings.lifecycle_input,
                            },
                        );
                        batch.outbox(id, record);
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct StartRequest {
    pub definition: String,
    pub input: Json,
    /// Business / idempotency key.
    pub key: Option<String>,
    /// Caller-chosen id (tests); a new UUIDv7 otherwise.
    pub id: Option<Uuid>,
    /// The caller's `traceparent` (optionally followed by a newline and its
    /// `tracestate`); the saga's trace continues it.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    /// A new saga, and its status after the start (running, or already finished when
    /// every step was skipped).
    Created(Uuid, SagaStatus),
    /// Same key, same input: the saga started earlier.
    Existing(Uuid),
    /// Same key, different input.
    Conflict(Uuid),
    UnknownDefinition,
    /// Every place the input breaks the definition's schema.
    InvalidInput(Vec<InputError>),
    Rejected(Rejection),
}

impl StartOutcome {
    /// What its commit announces: a new saga, whose first messages wait in the outbox.
    pub fn announcement(&self) -> Announcement {
        match self {
            StartOutcome::Created(id, _) => Announcement {
                outbox: true,
                sagas: vec![*id],
            },
            _ => Announcement::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idempotency_compares_inputs_as_json_values() {
        let a = json!({"amount": 1, "items": [{"q": 100}], "rate": 0.5});
        let b: Json = serde_json::from_str(r#"{"rate":0.50,"items":[{"q":1e2}],"amount":1.0}"#)
            .expect("JSON");
        assert_eq!(input_hash(&a), input_hash(&b));
        assert_ne!(input_hash(&a), input_hash(&json!({"amount": 2})));
        assert_ne!(input_hash(&json!(1.5)), input_hash(&json!(1)));
        assert_ne!(input_hash(&json!("1")), input_hash(&json!(1)));
        // What an earlier release stored for an input without floats is unchanged.
        assert_eq!(input_hash(&a), legacy_input_hash(&a));
    }

    #[tokio::test]
    async fn per_step_lifecycle_events_are_left_out_when_turned_off() {
        use crate::engine::{Lifecycle, LifecycleKind};
        let (defs, _) = crate::definition::load_dir(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sagas"
        )));
        let def = defs.into_iter().next().unwrap_or_else(|| panic!("a saga"));
        let publish = |kind| {
            Effect::Publish(Lifecycle {
                kind,
                step: None,
                detail: json!({}),
            })
        };
        let t = Transition {
            instance: Instance::new(Uuid::now_v7(), &def, json!({}), None, Utc::now()),
            effects: vec![
                publish(LifecycleKind::Started),
                publish(LifecycleKind::StepSucceeded),
                publish(LifecycleKind::StepSkipped),
                publish(LifecycleKind::StepFailed),
                publish(LifecycleKind::Completed),
            ],
        };
        for (steps, published) in [(true, 5), (false, 2)] {
            let applier = Applier {
                // Never connected: staging does no I/O.
                store: Store::from_pool(
                    sqlx::PgPool::connect_lazy("postgres://unused@127.0.0.1/unused")
                        .unwrap_or_else(|e| panic!("{e}")),
                ),
                registry: Arc::new(Registry::new(Vec::new())),
                settings: Arc::new(TransitionSettings {
                    lifecycle_topic: Some("sagaflow.lifecycle".into()),
                    source: "/sagaflow".into(),
                    reply_keys: Arc::new(
                        ReplyKeys::new(vec![ReplyKeys::random_key()], true)
                            .unwrap_or_else(|e| panic!("{e}")),
                    ),
                    lifecycle_input: false,
                    lifecycle_steps: steps,
                }),
            };
            let mut batch = WriteBatch::default();
            applier.stage(&mut batch, &def, &t, None, Utc::now());
            assert_eq!(batch.outbox_len(), published, "lifecycle_steps: {steps}");
        }
    }
}
