//! Read-only queries behind the API's lists.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
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
    /// The step the saga is at (`sagas.current_step`: where it stopped, or the first in flight).
    pub step: Option<String>,
    /// Text anywhere in the failure reason, case-insensitive.
    pub failure: Option<String>,
    pub key_prefix: Option<String>,
    /// The input contains this JSON (`{"customer": {"id": "c-1"}}` for
    /// `/customer/id` = `"c-1"`).
    pub input_contains: Option<serde_json::Value>,
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
/// keyset pagination neither skips nor repeats rows while new sagas arrive. The SQL
/// names only the filters in use, so each combination is its own statement with its
/// own plan: one statement with `($1 IS NULL OR …)` for every filter would get one
/// generic plan that fits none of them (see migrations/0007 for the indexes).
pub async fn list_sagas(
    pool: &PgPool,
    f: &SagaFilter,
    limit: i64,
) -> Result<Vec<SagaListRow>, StoreError> {
    let rows = list_query(f, limit).build().fetch_all(pool).await?;
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

/// The list query for `f`, with its parameters bound (also used by the plan tests).
pub fn list_query(f: &SagaFilter, limit: i64) -> QueryBuilder<'static, Postgres> {
    let mut q = QueryBuilder::new(
        "SELECT id, definition, version, status, business_key, created_at, updated_at FROM sagas WHERE true",
    );
    push_filters(&mut q, f);
    q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    q
}

fn push_filters(q: &mut QueryBuilder<'static, Postgres>, f: &SagaFilter) {
    if let Some(v) = &f.definition {
        q.push(" AND definition = ").push_bind(v.clone());
    }
    if let Some(v) = &f.status {
        q.push(" AND status = ").push_bind(v.clone());
    }
    if let Some(v) = &f.key {
        q.push(" AND business_key = ").push_bind(v.clone());
    }
    if let Some(v) = &f.step {
        q.push(" AND current_step = ").push_bind(v.clone());
    }
    if let Some(v) = &f.failure {
        q.push(" AND failure_reason ILIKE ")
            .push_bind(format!("%{}%", like_escape(v)));
    }
    if let Some(v) = &f.key_prefix {
        // `text_pattern_ops` serves LIKE 'prefix%' whatever the database's collation.
        q.push(" AND business_key LIKE ")
            .push_bind(format!("{}%", like_escape(v)));
    }
    if let Some(v) = &f.input_contains {
        q.push(" AND id IN (SELECT saga_id FROM saga_inputs WHERE input @> ")
            .push_bind(v.clone())
            .push(")");
    }
    let times = [
        (" AND created_at > ", f.created_after),
        (" AND created_at < ", f.created_before),
        (" AND updated_at > ", f.updated_after),
        (" AND updated_at < ", f.updated_before),
    ];
    for (clause, t) in times {
        if let Some(t) = t {
            q.push(clause).push_bind(t);
        }
    }
    if let Some((at, id)) = f.after {
        q.push(" AND (created_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
}

/// `%`, `_` and `\` taken literally in a LIKE pattern (`\` is the default escape).
fn like_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Matching sagas by status, counting no further than `cap` rows in all.
pub async fn count_by_status_where(
    pool: &PgPool,
    f: &SagaFilter,
    cap: i64,
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut q =
        QueryBuilder::new("SELECT status, count(*) FROM (SELECT status FROM sagas WHERE true");
    push_filters(&mut q, f);
    q.push(" LIMIT ")
        .push_bind(cap)
        .push(") AS matched GROUP BY status ORDER BY status");
    let rows = q.build().fetch_all(pool).await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// How many sagas match `f`, counting no further than `cap` (a count over millions of
/// rows would be a scan of them all).
pub async fn count_sagas(pool: &PgPool, f: &SagaFilter, cap: i64) -> Result<i64, StoreError> {
    let mut q = QueryBuilder::new("SELECT count(*) FROM (SELECT 1 FROM sagas WHERE true");
    push_filters(&mut q, f);
    q.push(" LIMIT ").push_bind(cap).push(") AS matched");
    Ok(q.build().fetch_one(pool).await?.get(0))
}

/// Versions of `name` that unfinished sagas run on: (version, count, first seen).
pub async fn versions_of(
    pool: &PgPool,
    name: &str,
) -> Result<Vec<(String, i64, DateTime<Utc>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT s.version, count(*) AS n, min(d.first_seen) AS first_seen \
         FROM sagas s JOIN definition_snapshots d ON d.name = s.definition AND d.version = s.version \
         WHERE s.definition = $1 AND s.status NOT IN ('completed', 'compensated', 'terminated') \
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
