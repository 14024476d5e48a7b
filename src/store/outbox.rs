//! The outbox as the relay sees it: one shard's oldest rows, read and removed inside
//! the transaction that holds the shard's lock (see `messaging/relay.rs`).

use serde_json::Value as Json;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::StoreError;

/// Shards of the outbox: the modulus in `migrations/0011_outbox_shards.sql`.
pub const OUTBOX_SHARDS: i16 = 16;

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub saga_id: Uuid,
    pub topic: String,
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

/// Which shards a batch took, and which it found holding rows under another holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLocks {
    pub locked: Vec<i16>,
    pub held: Vec<i16>,
}

/// Takes, for the caller's transaction, those of `shards` that have rows and that no
/// other transaction holds. None if a relay of a version before sharding publishes: it holds the old single lock, which conflicts with the shared
/// hold taken here, so two relays never publish one saga.
///
/// The transaction also gets an idle timeout: it waits for the broker between
/// statements, and if its replica vanishes without closing the connection (a host or
/// network failure), PostgreSQL ends it after `idle_timeout` and frees the
/// shards, rather than after TCP keepalives notice (two hours by default). And it
/// commits without waiting for the WAL flush: losing that commit in a crash only
/// publishes its rows again (duplicates, which participants dedupe), never skips one.
pub async fn lock_outbox_shards(
    conn: &mut PgConnection,
    shards: &[i16],
    idle_timeout: std::time::Duration,
) -> Result<ShardLocks, StoreError> {
    let old_relay_absent: bool = sqlx::query_scalar(
        "SELECT set_config('idle_in_transaction_session_timeout', $1, true) <> '' \
            AND set_config('synchronous_commit', 'off', true) <> '' \
            AND pg_try_advisory_xact_lock_shared($2)",
    )
    .bind(format!("{}s", idle_timeout.as_secs()))
    .bind(LEGACY_RELAY_LOCK)
    .fetch_one(&mut *conn)
    .await?;
    if !old_relay_absent {
        return Ok(ShardLocks {
            locked: Vec::new(),
            held: shards.to_vec(),
        });
    }
    // Which shards have rows is settled first (a materialised CTE), so the lock is
    // tried only on those, once each.
    let tried: Vec<(i16, bool)> = sqlx::query_as(
        "WITH waiting AS MATERIALIZED ( \
             SELECT s FROM UNNEST($1::smallint[]) AS s \
             WHERE EXISTS (SELECT 1 FROM outbox WHERE shard = s)) \
         SELECT s, pg_try_advisory_xact_lock($2, s::int) FROM waiting ORDER BY s",
    )
    .bind(shards)
    .bind(SHARD_LOCKS)
    .fetch_all(conn)
    .await?;
    let (locked, held): (Vec<_>, Vec<_>) = tried.into_iter().partition(|(_, got)| *got);
    Ok(ShardLocks {
        locked: locked.into_iter().map(|(s, _)| s).collect(),
        held: held.into_iter().map(|(s, _)| s).collect(),
    })
}

/// The advisory lock (a bigint key) a single relay held before the outbox had shards.
pub const LEGACY_RELAY_LOCK: i64 = 0x5a6a_f10e;
/// First key of the shards' advisory locks (two-int keys, a space apart from bigints).
const SHARD_LOCKS: i32 = 0x5a6a_f10e;

/// Which of `shards` have rows now.
pub async fn outbox_shards_with_rows(
    pool: &PgPool,
    shards: &[i16],
) -> Result<Vec<i16>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT s FROM UNNEST($1::smallint[]) AS s \
         WHERE EXISTS (SELECT 1 FROM outbox WHERE shard = s) ORDER BY s",
    )
    .bind(shards)
    .fetch_all(pool)
    .await?)
}

/// The oldest `limit` rows of `shards`, in id order.
pub async fn outbox_batch(
    conn: &mut PgConnection,
    shards: &[i16],
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, saga_id, topic, key, headers, payload FROM outbox \
         WHERE shard = ANY($1) ORDER BY id LIMIT $2",
    )
    .bind(shards)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let headers: Json = r.get("headers");
            OutboxRow {
                id: r.get("id"),
                saga_id: r.get("saga_id"),
                topic: r.get("topic"),
                key: r.get("key"),
                headers: header_pairs(&headers),
                payload: r.get("payload"),
            }
        })
        .collect())
}

/// Headers are stored as a JSON array of `[name, value]` pairs.
fn header_pairs(headers: &Json) -> Vec<(String, String)> {
    let Some(pairs) = headers.as_array() else {
        return Vec::new();
    };
    pairs
        .iter()
        .filter_map(|p| {
            Some((
                p.get(0)?.as_str()?.to_owned(),
                p.get(1)?.as_str()?.to_owned(),
            ))
        })
        .collect()
}

pub async fn outbox_delete(conn: &mut PgConnection, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves an outbox row the broker refuses for good into `outbox_parked` with `reason`,
/// and notes it in its saga's timeline (`message_parked`).
pub async fn park_outbox_row(
    conn: &mut PgConnection,
    id: i64,
    reason: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "WITH moved AS (DELETE FROM outbox WHERE id = $1 RETURNING *), \
         parked AS ( \
             INSERT INTO outbox_parked (id, saga_id, topic, key, headers, payload, created_at, reason) \
             SELECT id, saga_id, topic, key, headers, payload, created_at, $2 FROM moved \
             RETURNING saga_id, topic, headers) \
         INSERT INTO saga_history (saga_id, at, kind, detail) \
         SELECT p.saga_id, now(), 'message_parked', \
                jsonb_build_object('topic', p.topic, 'reason', $2::text, 'outbox_id', $1::bigint) \
         FROM parked p WHERE EXISTS (SELECT 1 FROM sagas s WHERE s.id = p.saga_id)",
    )
    .bind(id)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    // The saga's timeline changed (`message_parked`): live streams show it.
    sqlx::query("SELECT pg_notify($1, saga_id::text) FROM outbox_parked WHERE id = $2")
        .bind(super::wake::SAGAS_CHANNEL)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_as_pairs_and_anything_else_is_skipped() {
        let stored = serde_json::json!([["ce_id", "1"], ["bad"], [1, "x"], ["ce_type", "t"]]);
        assert_eq!(
            header_pairs(&stored),
            vec![("ce_id".into(), "1".into()), ("ce_type".into(), "t".into())]
        );
        assert!(header_pairs(&serde_json::json!({})).is_empty());
    }
}
