//! Everything one transaction writes, flushed with a handful of set-based statements
//! (UNNEST) whatever the number of sagas in it: this is what lets many transitions
//! share one commit.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use uuid::Uuid;

use super::{StoreError, Tx};
use crate::engine::{HistoryEntry, Instance};
use crate::messaging::envelope::Record;

#[derive(Debug, Default)]
pub struct WriteBatch {
    saga_ids: Vec<Uuid>,
    saga_status: Vec<String>,
    /// The engine's Instance as JSON text: serialized once, cast to jsonb by PostgreSQL.
    saga_state: Vec<String>,
    saga_updated: Vec<DateTime<Utc>>,
    saga_step: Vec<Option<String>>,
    saga_reason: Vec<Option<String>>,

    hist_saga: Vec<Uuid>,
    hist_at: Vec<DateTime<Utc>>,
    hist_kind: Vec<String>,
    hist_step: Vec<Option<String>>,
    hist_phase: Vec<Option<String>>,
    hist_attempt: Vec<Option<i32>>,
    hist_command: Vec<Option<Uuid>>,
    hist_detail: Vec<Json>,

    out_saga: Vec<Uuid>,
    out_topic: Vec<String>,
    out_key: Vec<String>,
    out_headers: Vec<Json>,
    out_payload: Vec<Vec<u8>>,

    timer_saga: Vec<Uuid>,
    timer_key: Vec<String>,
    timer_due: Vec<DateTime<Utc>>,

    cancel_saga: Vec<Uuid>,
    cancel_key: Vec<String>,

    /// The writing store's [`origin`](super::Store::origin), sent with the outbox wake-up.
    origin: String,
}

fn as_text<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Json::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Straight to text: going through `serde_json::Value` first costs a second full
/// serialization and an allocation per field (it showed in profiles of the consumer).
fn state_text(inst: &Instance) -> String {
    serde_json::to_string(inst).unwrap_or_else(|_| "null".to_owned())
}

impl WriteBatch {
    /// A batch whose outbox wake-up names `store` as its writer.
    pub fn for_store(store: &super::Store) -> WriteBatch {
        WriteBatch {
            origin: store.origin().to_owned(),
            ..WriteBatch::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.saga_ids.is_empty()
            && self.hist_saga.is_empty()
            && self.out_saga.is_empty()
            && self.timer_saga.is_empty()
            && self.cancel_saga.is_empty()
    }

    pub fn outbox_len(&self) -> usize {
        self.out_saga.len()
    }

    /// `step` is the saga's [`spotlight_step`](Instance::spotlight_step), kept in a
    /// column of its own for search.
    pub fn update_saga(&mut self, inst: &Instance, step: Option<String>) {
        let reason = inst.failure.as_ref().map(|f| f.reason.clone());
        if let Some(i) = self.saga_ids.iter().position(|id| *id == inst.id) {
            self.saga_status[i] = inst.status.as_str().to_owned();
            self.saga_state[i] = state_text(inst);
            self.saga_updated[i] = inst.updated_at;
            self.saga_step[i] = step;
            self.saga_reason[i] = reason;
            return;
        }
        self.saga_ids.push(inst.id);
        self.saga_status.push(inst.status.as_str().to_owned());
        self.saga_state.push(state_text(inst));
        self.saga_updated.push(inst.updated_at);
        self.saga_step.push(step);
        self.saga_reason.push(reason);
    }

    pub fn history(&mut self, saga: Uuid, h: &HistoryEntry) {
        self.hist_saga.push(saga);
        self.hist_at.push(h.at);
        self.hist_kind.push(as_text(&h.kind));
        self.hist_step.push(h.step.clone());
        self.hist_phase.push(h.phase.map(|p| p.as_str().to_owned()));
        self.hist_attempt.push(h.attempt.map(|a| a as i32));
        self.hist_command.push(h.command_id);
        self.hist_detail.push(h.detail.clone());
    }

    pub fn outbox(&mut self, saga: Uuid, r: Record) {
        self.out_saga.push(saga);
        self.out_topic.push(r.topic);
        self.out_key.push(r.key);
        self.out_headers.push(Json::Array(
            r.headers
                .into_iter()
                .map(|(k, v)| Json::Array(vec![Json::String(k), Json::String(v)]))
                .collect(),
        ));
        self.out_payload.push(r.payload);
    }

    pub fn schedule(&mut self, saga: Uuid, timer_key: String, due: DateTime<Utc>) {
        self.timer_saga.push(saga);
        self.timer_key.push(timer_key);
        self.timer_due.push(due);
    }

    pub fn cancel(&mut self, saga: Uuid, timer_key: String) {
        // A timer scheduled and cancelled within the same batch never needs to exist.
        if let Some(i) = self
            .timer_saga
            .iter()
            .zip(&self.timer_key)
            .position(|(s, k)| *s == saga && *k == timer_key)
        {
            self.timer_saga.remove(i);
            self.timer_key.remove(i);
            self.timer_due.remove(i);
        }
        self.cancel_saga.push(saga);
        self.cancel_key.push(timer_key);
    }

    pub async fn flush(self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        if !self.saga_ids.is_empty() {
            sqlx::query(
                "UPDATE sagas s SET status = u.status, state = u.state::jsonb, updated_at = u.updated_at, \
                 current_step = u.step, failure_reason = u.reason, revision = s.revision + 1 \
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[]) \
                 AS u(id, status, state, updated_at, step, reason) \
                 WHERE s.id = u.id",
            )
            .bind(&self.saga_ids)
            .bind(&self.saga_status)
            .bind(&self.saga_state)
            .bind(&self.saga_updated)
            .bind(&self.saga_step)
            .bind(&self.saga_reason)
            .execute(&mut **tx)
            .await?;
        }
        if !self.cancel_saga.is_empty() {
            sqlx::query(
                "DELETE FROM timers t USING UNNEST($1::uuid[], $2::text[]) AS c(saga_id, timer) \
                 WHERE t.saga_id = c.saga_id AND t.timer = c.timer",
            )
            .bind(&self.cancel_saga)
            .bind(&self.cancel_key)
            .execute(&mut **tx)
            .await?;
        }
        if !self.timer_saga.is_empty() {
            sqlx::query(
                "INSERT INTO timers (saga_id, timer, due_at) \
                 SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) \
                 ON CONFLICT (saga_id, timer) \
                 DO UPDATE SET due_at = EXCLUDED.due_at, claimed_until = NULL",
            )
            .bind(&self.timer_saga)
            .bind(&self.timer_key)
            .bind(&self.timer_due)
            .execute(&mut **tx)
            .await?;
        }
        if !self.hist_saga.is_empty() {
            sqlx::query(
                "INSERT INTO saga_history (saga_id, at, kind, step, phase, attempt, command_id, detail) \
                 SELECT saga_id, at, kind, step, phase, attempt, command_id, detail FROM \
                 UNNEST($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::int4[], $7::uuid[], $8::jsonb[]) \
                 WITH ORDINALITY AS h(saga_id, at, kind, step, phase, attempt, command_id, detail, n) ORDER BY n",
            )
            .bind(&self.hist_saga)
            .bind(&self.hist_at)
            .bind(&self.hist_kind)
            .bind(&self.hist_step)
            .bind(&self.hist_phase)
            .bind(&self.hist_attempt)
            .bind(&self.hist_command)
            .bind(&self.hist_detail)
            .execute(&mut **tx)
            .await?;
        }
        if !self.out_saga.is_empty() {
            sqlx::query(
                "INSERT INTO outbox (saga_id, topic, key, headers, payload) \
                 SELECT saga_id, topic, key, headers, payload FROM \
                 UNNEST($1::uuid[], $2::text[], $3::text[], $4::jsonb[], $5::bytea[]) \
                 WITH ORDINALITY AS o(saga_id, topic, key, headers, payload, n) ORDER BY n",
            )
            .bind(&self.out_saga)
            .bind(&self.out_topic)
            .bind(&self.out_key)
            .bind(&self.out_headers)
            .bind(&self.out_payload)
            .execute(&mut **tx)
            .await?;
        }
        self.notify(tx).await
    }

    /// Every notification of this batch in one statement, delivered at commit: the
    /// outbox relay's wake-up, the timer loops' (for a timer due soon, which they may
    /// sleep past) and the ids of the sagas that changed, for live streams.
    async fn notify(&self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        let mut channels: Vec<&str> = Vec::new();
        let mut payloads: Vec<String> = Vec::new();
        if !self.out_saga.is_empty() {
            channels.push(super::wake::OUTBOX_CHANNEL);
            payloads.push(self.origin.clone());
        }
        let soon = Utc::now() + super::wake::TIMER_NOTIFY_HORIZON;
        if self.timer_due.iter().any(|due| *due < soon) {
            channels.push(super::wake::TIMERS_CHANNEL);
            payloads.push(String::new());
        }
        for chunk in super::wake::saga_payloads(self.saga_ids.iter().chain(&self.hist_saga)) {
            channels.push(super::wake::SAGAS_CHANNEL);
            payloads.push(chunk);
        }
        if channels.is_empty() {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify(c, p) FROM UNNEST($1::text[], $2::text[]) AS n(c, p)")
            .bind(&channels)
            .bind(&payloads)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}
