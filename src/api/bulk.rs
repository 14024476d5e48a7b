//! `POST /v1/bulk/{action}`: abort, retry or terminate every saga a filter matches,
//! a bounded number per call. Each saga is its own transaction and gets its own
//! timeline entry, exactly as if it had been acted on alone.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::extract::{ApiJson, ApiPath};
use super::model::{BulkBody, BulkItem, BulkResult, RefusalCount};
use super::operator::{apply_one, invalid, reason_problem, storable};
use super::problem::{Problem, internal};
use super::sagas::json;
use super::search::{COUNT_CAP, Search};
use crate::engine::{Event, SagaStatus};
use crate::runtime::transition::Applied;
use crate::store;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
/// Sagas listed by a dry run.
const SAMPLE: i64 = 20;

/// Abort, retry or terminate every saga matching a filter.
///
/// Acts on at most `limit` sagas per call, newest first; call again while `more` is
/// true (sagas acted on usually leave the filter, e.g. `status=failed`). A dry run
/// changes nothing and returns the count and a sample. Refusals are per saga, with
/// the engine's reason, and summarised in `refusals`.
#[utoipa::path(
    post, path = "/v1/bulk/{action}", tag = "operator", operation_id = "bulk_action",
    params(("action" = String, Path, description = "abort, retry or terminate", example = "terminate")),
    request_body = BulkBody,
    responses(
        (status = 200, description = "What was done to each saga, and a summary", body = BulkResult),
        (status = 400, description = "Malformed body or filter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such action", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Body not applicable (limit, reason, filter)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn bulk(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(action): ApiPath<String>,
    ApiJson(body): ApiJson<BulkBody>,
) -> Response {
    if !matches!(action.as_str(), "abort" | "retry" | "terminate") {
        return Problem::not_found("bulk actions are abort, retry and terminate").into_response();
    }
    let limit = body.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return invalid("/limit", &format!("between 1 and {MAX_LIMIT}"));
    }
    if let Some(res) = reason_problem(&body.reason) {
        return res;
    }
    let search = Search::of_bulk(&body.filter);
    let filter = match search.filter() {
        Ok(Some(f)) => f,
        Ok(None) => return invalid("/filter", "text cannot contain U+0000"),
        Err(e) => return invalid("/filter", &e),
    };
    let pool = &state.applier.store.pool;
    let matched = match store::count_sagas(pool, &filter, COUNT_CAP).await {
        Ok(n) => n,
        Err(e) => return internal(&e),
    };
    let take = if body.dry_run {
        SAMPLE.min(i64::from(limit))
    } else {
        i64::from(limit)
    };
    let rows = match store::list_sagas(pool, &filter, take).await {
        Ok(r) => r,
        Err(e) => return internal(&e),
    };
    let mut result = BulkResult {
        action: action.clone(),
        dry_run: body.dry_run,
        matched,
        matched_capped: matched >= COUNT_CAP,
        applied: 0,
        unchanged: 0,
        refused: 0,
        refusals: Vec::new(),
        results: Vec::new(),
        more: matched > i64::from(limit),
    };
    if body.dry_run {
        result.results = rows
            .into_iter()
            .map(|r| BulkItem {
                id: r.id,
                outcome: "would_act".into(),
                status: serde_json::from_value(serde_json::Value::String(r.status)).ok(),
                detail: None,
            })
            .collect();
        return json(StatusCode::OK, &result);
    }
    let mut refusals: BTreeMap<String, u32> = BTreeMap::new();
    for row in rows {
        let reason = match body.reason.trim() {
            "" => "bulk action, no reason given".to_owned(),
            _ => storable(&body.reason),
        };
        let event = event(&action, &reason, &caller.name);
        let item = act(
            &state,
            row.id,
            event,
            body.filter.status.map(SagaStatus::from),
        )
        .await;
        match item.outcome.as_str() {
            "applied" => result.applied += 1,
            "unchanged" => result.unchanged += 1,
            _ => {
                result.refused += 1;
                *refusals
                    .entry(item.detail.clone().unwrap_or_default())
                    .or_default() += 1;
            }
        }
        result.results.push(item);
    }
    result.refusals = refusals
        .into_iter()
        .map(|(reason, count)| RefusalCount { reason, count })
        .collect();
    json(StatusCode::OK, &result)
}

fn event(action: &str, reason: &str, actor: &str) -> Event {
    let (reason, actor) = (reason.to_owned(), actor.to_owned());
    match action {
        "abort" => Event::Abort { reason, actor },
        "retry" => Event::Retry { actor },
        _ => Event::Terminate { reason, actor },
    }
}

async fn act(state: &AppState, id: Uuid, event: Event, only_if: Option<SagaStatus>) -> BulkItem {
    let item = |outcome: &str, status, detail| BulkItem {
        id,
        outcome: outcome.into(),
        status,
        detail,
    };
    match apply_one(state, id, event, only_if).await {
        Ok((Applied::Changed, status)) => item("applied", status.map(Into::into), None),
        Ok((Applied::Unchanged, status)) => item("unchanged", status.map(Into::into), None),
        Ok((Applied::Rejected(r), status)) => {
            item("refused", status.map(Into::into), Some(r.to_string()))
        }
        Ok((other, _)) => item("refused", None, Some(format!("{other:?}"))),
        Err(e) => {
            tracing::error!(error = %e, saga = %id, "bulk action failed on one saga");
            item(
                "failed",
                None,
                Some("internal error; see the service's logs".into()),
            )
        }
    }
}
