//! Read-only queries behind the API's lists.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::StoreError;

/// Filters of a saga list; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct SagaFilter {
    pub definition: Option<String>,
    pub status: Option<String>,
    pub key: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub updated_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    /// Keyset position: only sagas strictly after it in the list order.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

#[derive(Debug, Clone)]
pub struct SagaListRow {
    pub id: Uuid,
    pub definition: String,
    pub version: String,
    pub status: String,
    pub key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Sagas newest first, ordered by `(created_at, id)` descending: a total order, so
/// keyset pagination neither skips nor repeats rows while new sagas arrive. Served by
/// the `sagas_created` and `sagas_definition_created` indexes.
pub async fn list_sagas(
    pool: &PgPool,
    f: &SagaFilter,
    limit: i64,
) -> Result<Vec<SagaListRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, definition, version, status, business_key, created_at, updated_at FROM sagas \
         WHERE ($1::text IS NULL OR definition = $1) \
           AND ($2::text IS NULL OR status = $2) \
           AND ($3::text IS NULL OR business_key = $3) \
           AND ($4::timestamptz IS NULL OR created_at > $4) \
           AND ($5::timestamptz IS NULL OR created_at < $5) \
           AND ($6::timestamptz IS NULL OR updated_at > $6) \
           AND ($7::timestamptz IS NULL OR updated_at < $7) \
           AND ($8::timestamptz IS NULL OR (created_at, id) < ($8, $9)) \
         ORDER BY created_at DESC, id DESC LIMIT $10",
    )
    .bind(&f.definition)
    .bind(&f.status)
    .bind(&f.key)
    .bind(f.created_after)
    .bind(f.created_before)
    .bind(f.updated_after)
    .bind(f.updated_before)
    .bind(f.after.map(|a| a.0))
    .bind(f.after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SagaListRow {
            id: r.get("id"),
            definition: r.get("definition"),
            version: r.get("version"),
            status: r.get("status"),
            key: r.get("business_key"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        })
        .collect())
}

/// Versions of `name` that unfinished sagas run on: (version, count, first seen).
pub async fn versions_of(
    pool: &PgPool,
    name: &str,
) -> Result<Vec<(String, i64, DateTime<Utc>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT s.version, count(*) AS n, min(d.first_seen) AS first_seen \
         FROM sagas s JOIN definition_snapshots d ON d.name = s.definition AND d.version = s.version \
         WHERE s.definition = $1 AND s.status NOT IN ('completed', 'compensated') \
         GROUP BY s.version ORDER BY min(d.first_seen) DESC, s.version",
    )
    .bind(name)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get("version"), r.get("n"), r.get("first_seen")))
        .collect())
}
