//! Dead letters kept in PostgreSQL: recorded by the consumer, listed, redriven and
//! discarded by operators. A redrive puts the original message in the outbox, in the
//! same transaction that marks it redriven, so the relay publishes it exactly as any
//! other message and a dead letter is redriven at most once.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::StoreError;

/// A message as it was consumed, and why it could not be applied.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub kind: String,
    pub reason: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub payload: Vec<u8>,
    pub saga_id: Option<Uuid>,
}

#[derive(Debug, Clone)]
pub struct DeadLetterRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub reason: String,
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub key: String,
    pub headers: Json,
    pub payload: Vec<u8>,
    pub redrivable: bool,
    pub saga_id: Option<Uuid>,
    pub status: String,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
}

/// Text PostgreSQL can store, and whether it is exactly the original bytes.
fn storable(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.contains('\0') => (s.to_owned(), true),
        _ => (
            String::from_utf8_lossy(bytes).replace('\0', "\u{fffd}"),
            false,
        ),
    }
}

/// Records a dead letter; a second record of the same source offset is a no-op.
pub async fn record_dead_letter(pool: &PgPool, d: &NewDeadLetter) -> Result<(), StoreError> {
    let (key, mut exact) = storable(&d.key);
    let mut headers = Vec::with_capacity(d.headers.len());
    for (name, value) in &d.headers {
        let (name, n) = storable(name.as_bytes());
        let (value, v) = storable(value);
        exact &= n && v;
        headers.push(Json::Array(vec![Json::String(name), Json::String(value)]));
    }
    let text = |s: &str| storable(s.as_bytes()).0;
    sqlx::query(
        "INSERT INTO dead_letters (kind, reason, source_topic, source_partition, source_offset, message_key, \
         headers, payload, redrivable, saga_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING",
    )
    .bind(text(&d.kind))
    .bind(text(&d.reason))
    .bind(text(&d.topic))
    .bind(d.partition)
    .bind(d.offset)
    .bind(key)
    .bind(Json::Array(headers))
    .bind(&d.payload)
    .bind(exact)
    .bind(d.saga_id)
    .execute(pool)
    .await?;
    Ok(())
}

const COLUMNS: &str = "SELECT id, at, kind, reason, source_topic, source_partition, source_offset, \
    message_key, headers, payload, redrivable, saga_id, status, resolved_at, resolved_by, resolution FROM dead_letters";

fn row(r: sqlx::postgres::PgRow) -> DeadLetterRow {
    DeadLetterRow {
        id: r.get("id"),
        at: r.get("at"),
        kind: r.get("kind"),
        reason: r.get("reason"),
        source_topic: r.get("source_topic"),
        source_partition: r.get("source_partition"),
        source_offset: r.get("source_offset"),
        key: r.get("message_key"),
        headers: r.get("headers"),
        payload: r.get("payload"),
        redrivable: r.get("redrivable"),
        saga_id: r.get("saga_id"),
        status: r.get("status"),
        resolved_at: r.get("resolved_at"),
        resolved_by: r.get("resolved_by"),
        resolution: r.get("resolution"),
    }
}

/// Which dead letters to list or act on; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub source_topic: Option<String>,
    pub saga_id: Option<Uuid>,
    /// Only ids below this (newest first paging).
    pub before_id: Option<i64>,
}

/// Newest first (served by `dead_letters_status` with a status, else the primary key).
pub async fn list_dead_letters(
    pool: &PgPool,
    f: &DeadLetterFilter,
    limit: i64,
) -> Result<Vec<DeadLetterRow>, StoreError> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(COLUMNS);
    q.push(" WHERE true");
    if let Some(v) = &f.status {
        q.push(" AND status = ").push_bind(v.clone());
    }
    if let Some(v) = &f.kind {
        q.push(" AND kind = ").push_bind(v.clone());
    }
    if let Some(v) = &f.source_topic {
        q.push(" AND source_topic = ").push_bind(v.clone());
    }
    if let Some(v) = f.saga_id {
        q.push(" AND saga_id = ").push_bind(v);
    }
    if let Some(v) = f.before_id {
        q.push(" AND id < ").push_bind(v);
    }
    q.push(" ORDER BY id DESC LIMIT ").push_bind(limit);
    Ok(q.build()
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(row)
        .collect())
}

pub async fn get_dead_letter(pool: &PgPool, id: i64) -> Result<Option<DeadLetterRow>, StoreError> {
    let r = sqlx::query(&format!("{COLUMNS} WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(r.map(row))
}

/// What became of a request to redrive or discard one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Done,
    NotFound,
    /// Redriven or discarded already (the status says which).
    NotOpen(String),
    /// Its bytes were not kept exactly, so sending it again would send something else.
    NotRedrivable,
}

/// Puts the original message back on its source topic (through the outbox) and marks
/// the dead letter redriven, in one transaction.
pub async fn redrive_dead_letter(
    pool: &PgPool,
    id: i64,
    actor: &str,
    reason: &str,
) -> Result<Resolved, StoreError> {
    let mut tx = pool.begin().await?;
    let r = sqlx::query(&format!("{COLUMNS} WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(d) = r.map(row) else {
        return Ok(Resolved::NotFound);
    };
    if d.status != "open" {
        return Ok(Resolved::NotOpen(d.status));
    }
    if !d.redrivable {
        return Ok(Resolved::NotRedrivable);
    }
    sqlx::query(
        "INSERT INTO outbox (saga_id, topic, key, headers, payload) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(d.saga_id.unwrap_or(Uuid::nil()))
    .bind(&d.source_topic)
    .bind(&d.key)
    .bind(&d.headers)
    .bind(&d.payload)
    .execute(&mut *tx)
    .await?;
    resolve(&mut tx, id, "redriven", actor, reason).await?;
    tx.commit().await?;
    Ok(Resolved::Done)
}

pub async fn discard_dead_letter(
    pool: &PgPool,
    id: i64,
    actor: &str,
    reason: &str,
) -> Result<Resolved, StoreError> {
    let mut tx = pool.begin().await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM dead_letters WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    match status.as_deref() {
        None => return Ok(Resolved::NotFound),
        Some("open") => {}
        Some(other) => return Ok(Resolved::NotOpen(other.to_owned())),
    }
    resolve(&mut tx, id, "discarded", actor, reason).await?;
    tx.commit().await?;
    Ok(Resolved::Done)
}

async fn resolve(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    id: i64,
    status: &str,
    actor: &str,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE dead_letters SET status = $2, resolved_at = now(), resolved_by = $3, resolution = $4 WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(actor)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Open dead letters (the gauge behind the dead-letter alert).
pub async fn count_open_dead_letters(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM dead_letters WHERE status = 'open'")
            .fetch_one(pool)
            .await?,
    )
}

/// An outbox row the broker refused for good (see `relay.rs`).
#[derive(Debug, Clone)]
pub struct ParkedRow {
    pub id: i64,
    pub saga_id: Uuid,
    pub topic: String,
    pub key: String,
    pub headers: Json,
    pub payload_bytes: i64,
    pub created_at: DateTime<Utc>,
    pub parked_at: DateTime<Utc>,
    pub reason: String,
}

/// Parked outbox rows, newest first.
pub async fn list_parked(
    pool: &PgPool,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<ParkedRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, saga_id, topic, key, headers, octet_length(payload)::bigint AS bytes, created_at, parked_at, reason \
         FROM outbox_parked WHERE id < $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(before_id.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ParkedRow {
            id: r.get("id"),
            saga_id: r.get("saga_id"),
            topic: r.get("topic"),
            key: r.get("key"),
            headers: r.get("headers"),
            payload_bytes: r.get("bytes"),
            created_at: r.get("created_at"),
            parked_at: r.get("parked_at"),
            reason: r.get("reason"),
        })
        .collect())
}

/// Moves a parked row back into the outbox (a new id: it goes behind newer rows) or
/// deletes it, and notes either in its saga's timeline with the actor and reason.
pub async fn settle_parked(
    pool: &PgPool,
    id: i64,
    requeue: bool,
    actor: &str,
    reason: &str,
) -> Result<Resolved, StoreError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query("DELETE FROM outbox_parked WHERE id = $1 RETURNING saga_id, topic, key, headers, payload, created_at")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Ok(Resolved::NotFound);
    };
    let saga_id: Uuid = row.get("saga_id");
    let topic: String = row.get("topic");
    // Under the saga's lock, as transitions write: timeline ids then follow commit
    // order, so paging the timeline by id skips nothing.
    sqlx::query("SELECT 1 FROM sagas WHERE id = $1 FOR UPDATE")
        .bind(saga_id)
        .execute(&mut *tx)
        .await?;
    if requeue {
        sqlx::query(
            "INSERT INTO outbox (saga_id, topic, key, headers, payload, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(saga_id)
        .bind(&topic)
        .bind(row.get::<String, _>("key"))
        .bind(row.get::<Json, _>("headers"))
        .bind(row.get::<Vec<u8>, _>("payload"))
        .bind(row.get::<DateTime<Utc>, _>("created_at"))
        .execute(&mut *tx)
        .await?;
    }
    let kind = if requeue {
        "message_requeued"
    } else {
        "message_discarded"
    };
    sqlx::query(
        "INSERT INTO saga_history (saga_id, at, kind, detail) SELECT $1, now(), $2, \
         jsonb_build_object('topic', $3::text, 'outbox_id', $4::bigint, 'actor', $5::text, 'reason', $6::text) \
         WHERE EXISTS (SELECT 1 FROM sagas WHERE id = $1)",
    )
    .bind(saga_id)
    .bind(kind)
    .bind(&topic)
    .bind(id)
    .bind(actor)
    .bind(reason)
    .execute(&mut *tx)
    .await?;
    // The saga's timeline changed: live streams show it.
    sqlx::query("SELECT pg_notify($1, $2::text)")
        .bind(super::wake::SAGAS_CHANNEL)
        .bind(saga_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Resolved::Done)
}
