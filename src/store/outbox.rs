//! The outbox as the relay sees it: one shard's oldest rows, read and removed inside
//! the transaction that holds the shard's lock (see `messaging/relay.rs`).

use serde_json::Value as Json;
use sqlx::{PgConnection, Row};
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

/// Takes `shard` for the caller's transaction if no other transaction has it, and no
/// relay of a version before sharding publishes (it holds the old single lock, which
/// conflicts with the shared hold taken here), so two relays never publish one saga.
pub async fn lock_outbox_shard(conn: &mut PgConnection, shard: i16) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock_shared($1) AND pg_try_advisory_xact_lock($2, $3)",
    )
    .bind(LEGACY_RELAY_LOCK)
    .bind(SHARD_LOCKS)
    .bind(i32::from(shard))
    .fetch_one(conn)
    .await?)
}

/// The advisory lock (a bigint key) a single relay held before the outbox had shards.
const LEGACY_RELAY_LOCK: i64 = 0x5a6a_f10e;
/// First key of the shards' advisory locks (two-int keys, a space apart from bigints).
const SHARD_LOCKS: i32 = 0x5a6a_f10e;

/// The oldest `limit` rows of `shard`, in id order.
pub async fn outbox_batch(
    conn: &mut PgConnection,
    shard: i16,
    limit: i64,
) -> Result<Vec<OutboxRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, saga_id, topic, key, headers, payload FROM outbox \
         WHERE shard = $1 ORDER BY id LIMIT $2",
    )
    .bind(shard)
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
