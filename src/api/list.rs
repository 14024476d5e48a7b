//! `GET /v1/sagas`: filters and keyset pagination.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::AppState;
use super::extract::ApiQuery;
use super::model::{ListParams, SagaPage, SagaSummary, Status};
use super::problem::{Problem, internal};
use super::search::{Search, status_counts};
use crate::messaging::reply_token::ReplyKeys;
use crate::store::{self, SagaFilter};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// The cursor is the list position `(created_at µs, id)` of the last row served and a
/// tag binding it to this service's keys and to the query's filters, base64url-encoded
/// so clients treat it as opaque. A cursor that was not made here, or for another
/// query, is refused rather than silently giving a wrong page.
pub fn encode_cursor(keys: &ReplyKeys, query: &str, created_at: DateTime<Utc>, id: Uuid) -> String {
    let position = format!("{}:{id}", created_at.timestamp_micros());
    let tag = URL_SAFE_NO_PAD.encode(keys.tag(CURSOR, &format!("{query}|{position}")));
    URL_SAFE_NO_PAD.encode(format!("{position}:{tag}"))
}

pub fn decode_cursor(keys: &ReplyKeys, query: &str, cursor: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (position, tag) = text.rsplit_once(':')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    if !keys.check_tag(CURSOR, &format!("{query}|{position}"), &tag) {
        return None;
    }
    let (micros, id) = position.split_once(':')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        id.parse().ok()?,
    ))
}

const CURSOR: &str = "list-cursor";

/// List sagas, newest first.
///
/// Filters combine with AND; time bounds are exclusive. Each is served by an index
/// (docs/benchmarks.md, "List filters at 1,000,000 sagas"). Ordering is by creation
/// time then id (descending), so pages are stable while new sagas arrive: follow
/// `next_cursor` until it is `null`.
#[utoipa::path(
    get, path = "/v1/sagas", tag = "sagas", operation_id = "list_sagas",
    params(ListParams),
    responses(
        (status = 200, description = "One page of sagas", body = SagaPage),
        (status = 400, description = "Invalid filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn list(State(state): State<AppState>, ApiQuery(p): ApiQuery<ListParams>) -> Response {
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Problem::bad_request(format!("limit must be between 1 and {MAX_LIMIT}"))
            .into_response();
    }
    let search = Search::of_list(&p);
    let mut filter = match search.filter() {
        Ok(Some(f)) => f,
        // PostgreSQL text cannot hold U+0000, so no saga can match such a filter.
        Ok(None) => {
            return axum::Json(SagaPage {
                items: Vec::new(),
                next_cursor: None,
                counts: None,
            })
            .into_response();
        }
        Err(e) => return Problem::bad_request(e).into_response(),
    };
    let keys = state.applier.settings.reply_keys.clone();
    let query = search.fingerprint();
    // An empty cursor is the first page (clients may send `cursor=` unconditionally).
    filter.after = match p
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| decode_cursor(&keys, &query, c))
    {
        None => None,
        Some(Some(a)) => Some(a),
        Some(None) => {
            return Problem::bad_request("cursor is not one this API returned").into_response();
        }
    };
    let counts = if p.with_counts == Some(true) {
        let all = SagaFilter {
            after: None,
            ..filter.clone()
        };
        match status_counts(&state, &all).await {
            Ok(c) => Some(c),
            Err(e) => return internal(&e),
        }
    } else {
        None
    };
    // One extra row tells whether another page exists.
    let mut rows =
        match store::list_sagas(&state.applier.store.pool, &filter, i64::from(limit) + 1).await {
            Ok(r) => r,
            Err(e) => return internal(&e),
        };
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = more
        .then(|| {
            rows.last()
                .map(|r| encode_cursor(&keys, &query, r.created_at, r.id))
        })
        .flatten();
    let items = rows
        .into_iter()
        .map(|r| SagaSummary {
            id: r.id,
            status: serde_json::from_value(serde_json::Value::String(r.status))
                .unwrap_or(Status::Failed),
            definition: r.definition,
            version: r.version,
            key: r.key,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
        .collect();
    axum::Json(SagaPage {
        items,
        next_cursor,
        counts,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let keys = ReplyKeys::new(vec![ReplyKeys::random_key()], true).expect("long enough");
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("valid");
        let id = Uuid::now_v7();
        let cursor = encode_cursor(&keys, "q", at, id);
        assert_eq!(decode_cursor(&keys, "q", &cursor), Some((at, id)));
        assert_eq!(decode_cursor(&keys, "another query", &cursor), None);
        assert_eq!(decode_cursor(&keys, "q", "not a cursor"), None);
        assert_eq!(
            decode_cursor(&keys, "q", &URL_SAFE_NO_PAD.encode("1:2")),
            None
        );
        // The position without this service's tag: what an unauthenticated cursor was.
        let forged = URL_SAFE_NO_PAD.encode(format!("{}:{id}", at.timestamp_micros()));
        assert_eq!(decode_cursor(&keys, "q", &forged), None);
        let other = ReplyKeys::new(vec![ReplyKeys::random_key()], true).expect("long enough");
        assert_eq!(decode_cursor(&other, "q", &cursor), None);
    }
}
