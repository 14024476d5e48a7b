//! Reads and single-row writes.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::{StoreError, Tx};
use crate::definition::Definition;
use crate::engine::Instance;

pub async fn save_snapshot(pool: &PgPool, def: &Definition) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO definition_snapshots (name, version, source, file) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name, version) DO NOTHING",
    )
    .bind(&def.name)
    .bind(&def.version)
    .bind(&def.source)
    .bind(&def.file)
    .execute(pool)
    .await?;
    Ok(())
}

/// The YAML source and file name of one stored definition version.
pub async fn load_snapshot(
    pool: &PgPool,
    name: &str,
    version: &str,
) -> Result<Option<(String, String)>, StoreError> {
    let row = sqlx::query(
        "SELECT source, file FROM definition_snapshots WHERE name = $1 AND version = $2",
    )
    .bind(name)
    .bind(version)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| (r.get("source"), r.get("file"))))
}

/// Definition versions that sagas which are not finished still run on.
pub const VERSIONS_IN_USE: &str = "SELECT DISTINCT definition, version FROM sagas \
     WHERE status NOT IN ('completed', 'compensated', 'terminated')";

pub async fn versions_in_use(pool: &PgPool) -> Result<Vec<(String, String)>, StoreError> {
    let rows = sqlx::query(VERSIONS_IN_USE).fetch_all(pool).await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[derive(Debug, Clone)]
pub struct LockedSaga {
    pub instance: Instance,
    pub revision: i64,
    pub trace_context: Option<String>,
}

/// Locks the given sagas (in id order, so concurrent batches cannot deadlock) and
/// returns their state. With `skip_locked`, sagas another transaction holds are left out.
pub async fn lock_sagas(
    tx: &mut Tx<'_>,
    ids: &[Uuid],
    skip_locked: bool,
) -> Result<Vec<LockedSaga>, StoreError> {
    let sql = if skip_locked {
        "SELECT id, state::text AS state, revision, trace_context FROM sagas WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED"
    } else {
        "SELECT id, state::text AS state, revision, trace_context FROM sagas WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    };
    let rows = sqlx::query(sql).bind(ids).fetch_all(&mut **tx).await?;
    rows.into_iter()
        .map(|r| {
            let id: Uuid = r.get("id");
            // Parsed straight from text into the Instance, without a serde_json::Value in between.
            let state: &str = r.get("state");
            let instance = serde_json::from_str(state)
                .map_err(|source| StoreError::CorruptState { id, source })?;
            Ok(LockedSaga {
                instance,
                revision: r.get("revision"),
                trace_context: r.get("trace_context"),
            })
        })
        .collect()
}

/// Records message ids as processed; returns those seen for the first time.
pub async fn claim_inbox(
    tx: &mut Tx<'_>,
    ids: &[String],
    sagas: &[Option<Uuid>],
) -> Result<HashSet<String>, StoreError> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = sqlx::query(
        "INSERT INTO inbox (message_id, saga_id) SELECT * FROM UNNEST($1::text[], $2::uuid[]) \
         ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
    )
    .bind(ids)
    .bind(sagas)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Forgets message ids claimed in this transaction (for messages that were rejected).
pub async fn unclaim_inbox(tx: &mut Tx<'_>, ids: &[String]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM inbox WHERE message_id = ANY($1)")
        .bind(ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Timers that are due, oldest first. Not locked: the saga row lock taken when the
/// timer is applied is what serialises replicas (see `runtime::timers`).
/// Claims up to `limit` timers due at `now` until `lease_until`, skipping rows another
/// replica holds or has claimed: replicas share the due timers instead of contending
/// for the same ones. A claim only hides a row; the firing transaction deletes it.
pub async fn claim_due_timers(
    pool: &PgPool,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, String, DateTime<Utc>)>, StoreError> {
    let rows = sqlx::query(
        "UPDATE timers t SET claimed_until = $2 FROM \
           (SELECT saga_id, timer FROM timers \
            WHERE due_at <= $1 AND parked_reason IS NULL \
              AND (claimed_until IS NULL OR claimed_until < $1) \
            ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED) c \
         WHERE t.saga_id = c.saga_id AND t.timer = c.timer \
         RETURNING t.saga_id, t.timer, t.due_at",
    )
    .bind(now)
    .bind(lease_until)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// Gives claimed timers back (their saga was busy), so any replica may fire them now.
pub async fn release_timers(
    pool: &PgPool,
    sagas: &[Uuid],
    timers: &[String],
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE timers t SET claimed_until = NULL FROM UNNEST($1::uuid[], $2::text[]) AS c(saga_id, timer) \
         WHERE t.saga_id = c.saga_id AND t.timer = c.timer",
    )
    .bind(sagas)
    .bind(timers)
    .execute(pool)
    .await?;
    Ok(())
}

/// Parks a timer row that cannot be read: it stays, with its reason, for an operator.
pub async fn park_timer(
    pool: &PgPool,
    saga: Uuid,
    timer: &str,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE timers SET parked_reason = $3 WHERE saga_id = $1 AND timer = $2")
        .bind(saga)
        .bind(timer)
        .bind(reason)
        .execute(pool)
        .await?;
    Ok(())
}

/// Deletes timers that are about to fire; returns the ones that still existed.
pub async fn take_timers(
    tx: &mut Tx<'_>,
    sagas: &[Uuid],
    timers: &[String],
) -> Result<HashSet<(Uuid, String)>, StoreError> {
    let rows = sqlx::query(
        "DELETE FROM timers t USING UNNEST($1::uuid[], $2::text[]) AS c(saga_id, timer) \
         WHERE t.saga_id = c.saga_id AND t.timer = c.timer RETURNING t.saga_id, t.timer",
    )
    .bind(sagas)
    .bind(timers)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// When the next timer can fire: its due time, or when another replica's claim on it
/// lapses. Parked rows never fire.
pub async fn next_timer_due(pool: &PgPool) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT min(GREATEST(due_at, COALESCE(claimed_until, due_at))) FROM timers \
         WHERE parked_reason IS NULL",
    )
    .fetch_one(pool)
    .await?)
}

pub async fn outbox_backlog(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await?)
}

/// A saga as stored, for reading.
#[derive(Debug, Clone)]
pub struct SagaRow {
    pub instance: Instance,
    pub revision: i64,
    pub trace_context: Option<String>,
}

pub async fn get_saga(pool: &PgPool, id: Uuid) -> Result<Option<SagaRow>, StoreError> {
    let row = sqlx::query("SELECT state, revision, trace_context FROM sagas WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.map(|r| {
        let state: Json = r.get("state");
        Ok(SagaRow {
            instance: serde_json::from_value(state)
                .map_err(|source| StoreError::CorruptState { id, source })?,
            revision: r.get("revision"),
            trace_context: r.get("trace_context"),
        })
    })
    .transpose()
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryRow {
    /// Position in the saga's timeline (increasing; not contiguous).
    pub seq: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub step: Option<String>,
    pub phase: Option<String>,
    pub attempt: Option<i32>,
    pub command_id: Option<Uuid>,
    pub detail: Json,
}

pub async fn history(pool: &PgPool, id: Uuid) -> Result<Vec<HistoryRow>, StoreError> {
    history_page(pool, id, HistoryPage::After(0), i64::MAX).await
}

/// Which part of a timeline to read; rows always come back oldest first.
#[derive(Debug, Clone, Copy)]
pub enum HistoryPage {
    /// The first `limit` rows after position `seq`.
    After(i64),
    /// The last `limit` rows.
    Latest,
}

/// Up to `limit` rows of one saga's timeline (served by `saga_history_saga`).
pub async fn history_page(
    pool: &PgPool,
    id: Uuid,
    page: HistoryPage,
    limit: i64,
) -> Result<Vec<HistoryRow>, StoreError> {
    const COLUMNS: &str =
        "SELECT id, at, kind, step, phase, attempt, command_id, detail FROM saga_history";
    let query = match page {
        HistoryPage::After(_) => {
            format!("{COLUMNS} WHERE saga_id = $1 AND id > $2 ORDER BY id LIMIT $3")
        }
        HistoryPage::Latest => {
            format!("{COLUMNS} WHERE saga_id = $1 AND id > $2 ORDER BY id DESC LIMIT $3")
        }
    };
    let after = match page {
        HistoryPage::After(seq) => seq,
        HistoryPage::Latest => 0,
    };
    let rows = sqlx::query(&query)
        .bind(id)
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    let mut rows: Vec<HistoryRow> = rows
        .into_iter()
        .map(|r| HistoryRow {
            seq: r.get("id"),
            at: r.get("at"),
            kind: r.get("kind"),
            step: r.get("step"),
            phase: r.get("phase"),
            attempt: r.get("attempt"),
            command_id: r.get("command_id"),
            detail: r.get("detail"),
        })
        .collect();
    if matches!(page, HistoryPage::Latest) {
        rows.reverse();
    }
    Ok(rows)
}

/// Count of sagas by status (for tests, readiness and metrics).
pub async fn count_by_status(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query("SELECT status, count(*) FROM sagas GROUP BY status ORDER BY status")
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Sagas not in a terminal state, by status (reads the partial `sagas_unfinished`
/// index, unlike `count_by_status`, so it stays cheap however many sagas have finished).
pub const COUNT_UNFINISHED: &str = "SELECT status, count(*) FROM sagas \
     WHERE status NOT IN ('completed', 'compensated', 'terminated') GROUP BY status";

pub async fn count_unfinished(pool: &PgPool) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = sqlx::query(COUNT_UNFINISHED).fetch_all(pool).await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The reply-token key shared by every replica: `candidate` if no replica stored one
/// before, else the stored one (the first replica to start wins the insert).
pub async fn reply_key(pool: &PgPool, candidate: &[u8]) -> Result<Vec<u8>, StoreError> {
    sqlx::query("INSERT INTO reply_key (id, secret) VALUES (1, $1) ON CONFLICT (id) DO NOTHING")
        .bind(candidate)
        .execute(pool)
        .await?;
    let secret: Vec<u8> = sqlx::query_scalar("SELECT secret FROM reply_key WHERE id = 1")
        .fetch_one(pool)
        .await?;
    Ok(secret)
}

/// Deletes up to `limit` finished sagas last changed before `before`, oldest first;
/// their timelines and timers go with them (ON DELETE CASCADE).
/// `= ANY(ARRAY(…))` rather than `IN (…)`: the ids are fetched first and deleted by
/// primary key, where `IN` lets the planner join against the whole table.
pub const DELETE_FINISHED: &str = "DELETE FROM sagas WHERE id = ANY(ARRAY( \
     SELECT id FROM sagas WHERE status IN ('completed', 'compensated', 'terminated') AND updated_at < $1 \
     ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED))";

pub async fn delete_finished_sagas(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(DELETE_FINISHED)
        .bind(before)
        .bind(limit)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Deletes up to `limit` inbox rows received before `before`, oldest first.
pub async fn delete_inbox_before(
    pool: &PgPool,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM inbox WHERE message_id = ANY(ARRAY( \
         SELECT message_id FROM inbox WHERE received_at < $1 \
         ORDER BY received_at LIMIT $2 FOR UPDATE SKIP LOCKED))",
    )
    .bind(before)
    .bind(limit)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
