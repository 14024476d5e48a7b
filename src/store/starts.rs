//! New sagas, inserted together: one statement for every saga of a batch of starts
//! (with its input), and one more only when a business key was taken. A start batch
//! used to cost two statements per saga before its write batch.

use std::collections::{HashMap, HashSet};

use sqlx::Row;
use uuid::Uuid;

use super::{StoreError, Tx};
use crate::engine::Instance;

/// A saga to insert: its first state, and what its row keeps beside it.
#[derive(Debug)]
pub struct NewSaga<'a> {
    pub instance: &'a Instance,
    pub input_hash: &'a str,
    pub trace_context: Option<String>,
    /// The saga's spotlight step, kept in a column of its own for search.
    pub step: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    New,
    /// A saga with this business key already exists (started earlier, or earlier in
    /// the same batch).
    Existing {
        id: Uuid,
        input_hash: String,
    },
}

/// The rows in (definition, key) order, so two batches take the unique business-key
/// index in one order and never wait on each other in a cycle; a key given twice in one
/// call inserts the earlier row, and the other finds it.
const INSERT: &str = "\
WITH new AS ( \
    INSERT INTO sagas (id, definition, version, status, business_key, input_hash, state, \
        trace_context, created_at, updated_at, current_step, failure_reason) \
    SELECT id, definition, version, status, business_key, input_hash, state::jsonb, \
        trace_context, created_at, created_at, step, reason \
    FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
        $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::text[]) \
        WITH ORDINALITY AS s(id, definition, version, status, business_key, input_hash, state, \
            trace_context, created_at, step, reason, n) \
    ORDER BY definition, business_key, n \
    ON CONFLICT (definition, business_key) WHERE business_key IS NOT NULL DO NOTHING \
    RETURNING id), \
inputs AS ( \
    INSERT INTO saga_inputs (saga_id, input) \
    SELECT i.id, i.input FROM UNNEST($1::uuid[], $12::jsonb[]) AS i(id, input) \
    WHERE i.id IN (SELECT id FROM new)) \
SELECT id FROM new";

/// The sagas holding these business keys.
const HOLDERS: &str = "SELECT s.definition, s.business_key, s.id, s.input_hash FROM sagas s \
    JOIN UNNEST($1::text[], $2::text[]) AS k(definition, business_key) \
    ON s.definition = k.definition AND s.business_key = k.business_key";

/// Inserts `sagas`; for each, whether it is new or which saga holds its business key.
pub async fn insert_sagas(
    tx: &mut Tx<'_>,
    sagas: &[NewSaga<'_>],
) -> Result<Vec<Inserted>, StoreError> {
    if sagas.is_empty() {
        return Ok(Vec::new());
    }
    let inserted: HashSet<Uuid> = sqlx::query_scalar::<_, Uuid>(INSERT)
        .bind(column(sagas, |s| s.instance.id))
        .bind(column(sagas, |s| s.instance.definition.as_str()))
        .bind(column(sagas, |s| s.instance.version.as_str()))
        .bind(column(sagas, |s| s.instance.status.as_str()))
        .bind(column(sagas, |s| s.instance.key.as_deref()))
        .bind(column(sagas, |s| s.input_hash))
        .bind(column(sagas, |s| super::batch::state_text(s.instance)))
        .bind(column(sagas, |s| s.trace_context.as_deref()))
        .bind(column(sagas, |s| s.instance.created_at))
        .bind(column(sagas, |s| s.step.as_deref()))
        .bind(column(sagas, |s| {
            s.instance.failure.as_ref().map(|f| f.reason.as_str())
        }))
        .bind(column(sagas, |s| &s.instance.input))
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    let taken: Vec<&NewSaga> = sagas
        .iter()
        .filter(|s| !inserted.contains(&s.instance.id))
        .collect();
    let holders = if taken.is_empty() {
        HashMap::new()
    } else {
        key_holders(tx, &taken).await?
    };
    sagas
        .iter()
        .map(|s| {
            if inserted.contains(&s.instance.id) {
                return Ok(Inserted::New);
            }
            let key = (s.instance.definition.clone(), s.instance.key.clone());
            // Neither inserted nor held: its holder was deleted meanwhile (retention).
            let (id, input_hash) = holders
                .get(&key)
                .cloned()
                .ok_or(StoreError::Database(sqlx::Error::RowNotFound))?;
            Ok(Inserted::Existing { id, input_hash })
        })
        .collect()
}

/// One bound array: a field of each saga, borrowed where it can be.
fn column<'s, 'i, T>(sagas: &'s [NewSaga<'i>], field: impl Fn(&'s NewSaga<'i>) -> T) -> Vec<T> {
    sagas.iter().map(field).collect()
}

type Holders = HashMap<(String, Option<String>), (Uuid, String)>;

async fn key_holders(tx: &mut Tx<'_>, taken: &[&NewSaga<'_>]) -> Result<Holders, StoreError> {
    let definitions: Vec<&str> = taken
        .iter()
        .map(|s| s.instance.definition.as_str())
        .collect();
    let keys: Vec<Option<&str>> = taken.iter().map(|s| s.instance.key.as_deref()).collect();
    let rows = sqlx::query(HOLDERS)
        .bind(&definitions)
        .bind(&keys)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                (r.get("definition"), r.get("business_key")),
                (r.get("id"), r.get("input_hash")),
            )
        })
        .collect())
}
