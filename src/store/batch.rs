//! Everything one transaction writes, flushed in one set-based statement (UNNEST)
//! whatever the number of sagas in it: this is what lets many transitions share one
//! commit, and one round trip.

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
}

fn as_text<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Json::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Where `(saga, key)` stands in a pair of parallel timer columns.
fn timer_position(sagas: &[Uuid], keys: &[String], saga: Uuid, key: &str) -> Option<usize> {
    sagas
        .iter()
        .zip(keys)
        .position(|(s, k)| *s == saga && k == key)
}

/// Straight to text: going through `serde_json::Value` first costs a second full
/// serialization and an allocation per field (it showed in profiles of the consumer).
pub(super) fn state_text(inst: &Instance) -> String {
    serde_json::to_string(inst).unwrap_or_else(|_| "null".to_owned())
}

impl WriteBatch {
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
        // The upsert replaces the row a cancel earlier in the batch would delete, and
        // one statement must not both delete and upsert a row (see `flush`).
        while let Some(i) = timer_position(&self.cancel_saga, &self.cancel_key, saga, &timer_key) {
            self.cancel_saga.remove(i);
            self.cancel_key.remove(i);
        }
        self.timer_saga.push(saga);
        self.timer_key.push(timer_key);
        self.timer_due.push(due);
    }

    pub fn cancel(&mut self, saga: Uuid, timer_key: String) {
        // A timer scheduled and cancelled within the same batch never needs to exist.
        if let Some(i) = timer_position(&self.timer_saga, &self.timer_key, saga, &timer_key) {
            self.timer_saga.remove(i);
            self.timer_key.remove(i);
            self.timer_due.remove(i);
        }
        self.cancel_saga.push(saga);
        self.cancel_key.push(timer_key);
    }

    /// Writes everything in one statement, one round trip whatever the batch holds:
    /// each table's rows are one data-modifying `WITH` clause (all of them run, to
    /// completion, on the same snapshot), and the notifications are the main query
    /// (delivered at commit). No two clauses touch the same row: the saga updates are
    /// one per saga, and `schedule` and `cancel` never leave a timer in both lists.
    pub async fn flush(self, tx: &mut Tx<'_>) -> Result<(), StoreError> {
        if self.is_empty() {
            return Ok(());
        }
        let (channels, payloads) = self.notifications();
        sqlx::query(FLUSH)
            .bind(&self.saga_ids)
            .bind(&self.saga_status)
            .bind(&self.saga_state)
            .bind(&self.saga_updated)
            .bind(&self.saga_step)
            .bind(&self.saga_reason)
            .bind(&self.cancel_saga)
            .bind(&self.cancel_key)
            .bind(&self.timer_saga)
            .bind(&self.timer_key)
            .bind(&self.timer_due)
            .bind(&self.hist_saga)
            .bind(&self.hist_at)
            .bind(&self.hist_kind)
            .bind(&self.hist_step)
            .bind(&self.hist_phase)
            .bind(&self.hist_attempt)
            .bind(&self.hist_command)
            .bind(&self.hist_detail)
            .bind(&self.out_saga)
            .bind(&self.out_topic)
            .bind(&self.out_key)
            .bind(&self.out_headers)
            .bind(&self.out_payload)
            .bind(&channels)
            .bind(&payloads)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// The notification delivered at this batch's commit: the timer loops' wake-up, for
    /// a timer due soon, which they may sleep past. Rare, so its cost to the commit (see
    /// `announce.rs`) is paid rarely; the rest is [`announcement`](Self::announcement).
    fn notifications(&self) -> (Vec<&'static str>, Vec<String>) {
        let soon = Utc::now() + super::wake::TIMER_NOTIFY_HORIZON;
        if self.timer_due.iter().any(|due| *due < soon) {
            (vec![super::wake::TIMERS_CHANNEL], vec![String::new()])
        } else {
            (Vec::new(), Vec::new())
        }
    }

    /// What this batch's commit announces to other processes (`Store::committed`):
    /// whether it wrote outbox rows, and the sagas it changed.
    pub fn announcement(&self) -> super::Announcement {
        let mut sagas: Vec<Uuid> = self
            .saga_ids
            .iter()
            .chain(&self.hist_saga)
            .copied()
            .collect();
        sagas.sort_unstable();
        sagas.dedup();
        super::Announcement {
            outbox: !self.out_saga.is_empty(),
            sagas,
        }
    }
}

/// The statement of [`WriteBatch::flush`].
const FLUSH: &str = "\
WITH sagas_updated AS ( \
    UPDATE sagas s SET status = u.status, state = u.state::jsonb, updated_at = u.updated_at, \
        current_step = u.step, failure_reason = u.reason, revision = s.revision + 1 \
    FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[]) \
        AS u(id, status, state, updated_at, step, reason) \
    WHERE s.id = u.id), \
timers_cancelled AS ( \
    DELETE FROM timers t USING UNNEST($7::uuid[], $8::text[]) AS c(saga_id, timer) \
    WHERE t.saga_id = c.saga_id AND t.timer = c.timer), \
timers_scheduled AS ( \
    INSERT INTO timers (saga_id, timer, due_at) \
    SELECT * FROM UNNEST($9::uuid[], $10::text[], $11::timestamptz[]) \
    ON CONFLICT (saga_id, timer) \
        DO UPDATE SET due_at = EXCLUDED.due_at, claimed_until = NULL, parked_reason = NULL), \
history_added AS ( \
    INSERT INTO saga_history (saga_id, at, kind, step, phase, attempt, command_id, detail) \
    SELECT saga_id, at, kind, step, phase, attempt, command_id, detail FROM \
    UNNEST($12::uuid[], $13::timestamptz[], $14::text[], $15::text[], $16::text[], $17::int4[], \
           $18::uuid[], $19::jsonb[]) \
    WITH ORDINALITY AS h(saga_id, at, kind, step, phase, attempt, command_id, detail, n) ORDER BY n), \
outbox_added AS ( \
    INSERT INTO outbox (saga_id, topic, key, headers, payload) \
    SELECT saga_id, topic, key, headers, payload FROM \
    UNNEST($20::uuid[], $21::text[], $22::text[], $23::jsonb[], $24::bytea[]) \
    WITH ORDINALITY AS o(saga_id, topic, key, headers, payload, n) ORDER BY n) \
SELECT pg_notify(c, p) FROM UNNEST($25::text[], $26::text[]) AS n(c, p)";
