//! Dead letters an operator can act on: list, inspect, redrive after a fix, discard.
//! Each action is recorded on the dead letter (who, when, why).

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::AppState;
use super::auth::Caller;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::model::{
    DeadLetterAction, DeadLetterDetail, DeadLetterPage, DeadLetterParams, DeadLetterSummary,
    DiscardBody, ParkedMessage, ParkedPage, ParkedParams,
};
use super::operator::{invalid, optional_body, reason_problem, storable};
use super::problem::{Kind, Problem, internal};
use super::sagas::json;
use crate::store::{self, DeadLetterFilter, DeadLetterRow, Resolved};

const TOKEN_HEADER: &str = "ce_sagatoken";

/// Headers as shown: a reply token is a credential (with it, anyone who may write the
/// reply topic can answer the command), so its value is never shown, even to admins.
fn shown_headers(headers: &serde_json::Value) -> serde_json::Value {
    let masked = headers
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|h| match h[0].as_str() {
            Some(name) if name.eq_ignore_ascii_case(TOKEN_HEADER) => {
                serde_json::json!([name, "***"])
            }
            _ => h.clone(),
        })
        .collect();
    serde_json::Value::Array(masked)
}

fn summary(d: &DeadLetterRow) -> DeadLetterSummary {
    DeadLetterSummary {
        id: d.id,
        at: d.at,
        kind: d.kind.clone(),
        reason: d.reason.clone(),
        source_topic: d.source_topic.clone(),
        source_partition: d.source_partition,
        source_offset: d.source_offset,
        saga_id: d.saga_id,
        status: d.status.clone(),
    }
}

/// List dead letters, newest first.
#[utoipa::path(
    get, path = "/v1/dead-letters", tag = "operator", operation_id = "list_dead_letters",
    params(DeadLetterParams),
    responses(
        (status = 200, description = "One page", body = DeadLetterPage),
        (status = 400, description = "Invalid filter or limit", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<DeadLetterParams>,
) -> Response {
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Problem::bad_request("limit must be between 1 and 500").into_response();
    }
    let texts = [&p.status, &p.kind, &p.source_topic];
    if texts
        .iter()
        .any(|t| t.as_ref().is_some_and(|t| t.len() > 256))
    {
        return Problem::bad_request("filters are text of at most 256 bytes").into_response();
    }
    // PostgreSQL text cannot hold U+0000, so nothing can match such a filter.
    if texts
        .iter()
        .any(|t| t.as_ref().is_some_and(|t| t.contains('\0')))
    {
        let empty = DeadLetterPage {
            items: Vec::new(),
            next_before: None,
        };
        return json(StatusCode::OK, &empty);
    }
    let filter = DeadLetterFilter {
        status: p.status,
        kind: p.kind,
        source_topic: p.source_topic,
        saga_id: p.saga_id,
        before_id: p.before,
    };
    let pool = &state.applier.store.pool;
    let mut rows = match store::list_dead_letters(pool, &filter, i64::from(limit) + 1).await {
        Ok(r) => r,
        Err(e) => return internal(&e),
    };
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_before = more.then(|| rows.last().map(|r| r.id)).flatten();
    json(
        StatusCode::OK,
        &DeadLetterPage {
            items: rows.iter().map(summary).collect(),
            next_before,
        },
    )
}

/// One dead letter with its key, headers and payload.
#[utoipa::path(
    get, path = "/v1/dead-letters/{id}", tag = "operator", operation_id = "get_dead_letter",
    params(("id" = i64, Path, description = "Dead letter id")),
    responses(
        (status = 200, description = "The dead letter", body = DeadLetterDetail),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<i64>) -> Response {
    match store::get_dead_letter(&state.applier.store.pool, id).await {
        Ok(Some(d)) => {
            let (payload, payload_base64) = match std::str::from_utf8(&d.payload) {
                Ok(text) => (Some(text.to_owned()), None),
                Err(_) => (None, Some(STANDARD.encode(&d.payload))),
            };
            json(
                StatusCode::OK,
                &DeadLetterDetail {
                    summary: summary(&d),
                    key: d.key,
                    headers: shown_headers(&d.headers),
                    payload,
                    payload_base64,
                    redrivable: d.redrivable,
                    resolved_at: d.resolved_at,
                    resolved_by: d.resolved_by,
                    resolution: d.resolution,
                },
            )
        }
        Ok(None) => Problem::not_found(&format!("no dead letter {id}")).into_response(),
        Err(e) => internal(&e),
    }
}

/// Redrive: send the original message to its source topic again, once.
///
/// For after a fix (a definition loaded, a saga repaired): the message goes through
/// the outbox and is read back like any other, so its outcome is in the saga's
/// timeline, and a message that fails again is dead-lettered again as a new entry.
#[utoipa::path(
    post, path = "/v1/dead-letters/{id}/redrive", tag = "operator", operation_id = "redrive_dead_letter",
    params(("id" = i64, Path, description = "Dead letter id")),
    request_body(content = Option<DeadLetterAction>, description = "Optional; the reason is kept"),
    responses(
        (status = 200, description = "Queued for publishing", body = DeadLetterSummary),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Redriven or discarded already, or not kept exactly", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Reason too long or not storable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn redrive(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
    body: axum::body::Bytes,
) -> Response {
    let reason = match optional_reason(&body) {
        Ok(r) => r,
        Err(res) => return *res,
    };
    let pool = &state.applier.store.pool;
    let outcome = store::redrive_dead_letter(pool, id, &caller.name, &storable(&reason)).await;
    if matches!(outcome, Ok(Resolved::Done)) {
        // The redriven message waits in the outbox: this replica's relay takes it now.
        state.applier.store.outbox_written();
    }
    answer(&state, id, outcome).await
}

/// Discard: close a dead letter that needs no redrive, with a reason.
#[utoipa::path(
    post, path = "/v1/dead-letters/{id}/discard", tag = "operator", operation_id = "discard_dead_letter",
    params(("id" = i64, Path, description = "Dead letter id")),
    request_body = DiscardBody,
    responses(
        (status = 200, description = "Discarded", body = DeadLetterSummary),
        (status = 404, description = "No such dead letter", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Redriven or discarded already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason, or one too long or not storable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn discard(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<DiscardBody>,
) -> Response {
    if body.reason.trim().is_empty() {
        return invalid("/reason", "say why the message is discarded");
    }
    if let Some(res) = reason_problem(&body.reason) {
        return res;
    }
    let pool = &state.applier.store.pool;
    let outcome = store::discard_dead_letter(pool, id, &caller.name, &storable(&body.reason)).await;
    answer(&state, id, outcome).await
}

fn optional_reason(body: &[u8]) -> Result<String, Box<Response>> {
    let reason = optional_body::<DeadLetterAction>(body)?.reason;
    match reason_problem(&reason) {
        Some(res) => Err(Box::new(res)),
        None => Ok(reason),
    }
}

async fn answer(
    state: &AppState,
    id: i64,
    outcome: Result<Resolved, store::StoreError>,
) -> Response {
    let conflict = |detail: String| Problem::of(Kind::NotAllowed).detail(detail).into_response();
    match outcome {
        Ok(Resolved::Done) => match store::get_dead_letter(&state.applier.store.pool, id).await {
            Ok(Some(d)) => json(StatusCode::OK, &summary(&d)),
            Ok(None) => Problem::not_found(&format!("no dead letter {id}")).into_response(),
            Err(e) => internal(&e),
        },
        Ok(Resolved::NotFound) => {
            Problem::not_found(&format!("no dead letter {id}")).into_response()
        }
        Ok(Resolved::NotOpen(status)) => conflict(format!("dead letter {id} is {status} already")),
        Ok(Resolved::NotRedrivable) => conflict(format!(
            "dead letter {id} held bytes that could not be kept exactly (U+0000 or invalid UTF-8); discard it"
        )),
        Err(e) => internal(&e),
    }
}

/// Commands and lifecycle events the broker refused for good, newest first.
#[utoipa::path(
    get, path = "/v1/parked-messages", tag = "operator", operation_id = "list_parked_messages",
    params(ParkedParams),
    responses(
        (status = 200, description = "One page", body = ParkedPage),
        (status = 400, description = "Invalid limit", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn parked(
    State(state): State<AppState>,
    ApiQuery(p): ApiQuery<ParkedParams>,
) -> Response {
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Problem::bad_request("limit must be between 1 and 500").into_response();
    }
    let pool = &state.applier.store.pool;
    let mut rows = match store::list_parked(pool, p.before, i64::from(limit) + 1).await {
        Ok(r) => r,
        Err(e) => return internal(&e),
    };
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_before = more.then(|| rows.last().map(|r| r.id)).flatten();
    let items = rows
        .into_iter()
        .map(|r| ParkedMessage {
            id: r.id,
            saga_id: r.saga_id,
            topic: r.topic,
            key: r.key,
            headers: shown_headers(&r.headers),
            payload_bytes: r.payload_bytes,
            created_at: r.created_at,
            parked_at: r.parked_at,
            reason: r.reason,
        })
        .collect();
    json(StatusCode::OK, &ParkedPage { items, next_before })
}

/// Put a parked message back in the outbox, once its cause is fixed.
///
/// Check the saga's timeline first: a command for an attempt that has since been
/// retried, or for a saga that rolled back, must not be sent late (discard it instead).
#[utoipa::path(
    post, path = "/v1/parked-messages/{id}/requeue", tag = "operator", operation_id = "requeue_parked_message",
    params(("id" = i64, Path, description = "Parked message id")),
    request_body = DeadLetterAction,
    responses(
        (status = 204, description = "Back in the outbox; noted in the saga's timeline"),
        (status = 404, description = "No such parked message", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Reason too long or not storable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn requeue(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<DeadLetterAction>,
) -> Response {
    settle_parked(&state, &caller, id, true, &body.reason).await
}

/// Drop a parked message for good, with a reason.
#[utoipa::path(
    post, path = "/v1/parked-messages/{id}/discard", tag = "operator", operation_id = "discard_parked_message",
    params(("id" = i64, Path, description = "Parked message id")),
    request_body = DiscardBody,
    responses(
        (status = 204, description = "Dropped; noted in the saga's timeline"),
        (status = 404, description = "No such parked message", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason, or one too long or not storable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn discard_parked(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<DiscardBody>,
) -> Response {
    if body.reason.trim().is_empty() {
        return invalid("/reason", "say why the message is dropped");
    }
    settle_parked(&state, &caller, id, false, &body.reason).await
}

async fn settle_parked(
    state: &AppState,
    caller: &Caller,
    id: i64,
    requeue: bool,
    reason: &str,
) -> Response {
    if let Some(res) = reason_problem(reason) {
        return res;
    }
    let pool = &state.applier.store.pool;
    match store::settle_parked(pool, id, requeue, &caller.name, &storable(reason)).await {
        Ok(Resolved::Done) => {
            if requeue {
                state.applier.store.outbox_written();
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(_) => Problem::not_found(&format!("no parked message {id}")).into_response(),
        Err(e) => internal(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_tokens_are_never_shown() {
        let stored = serde_json::json!([
            ["ce_type", "x.done"],
            ["ce_sagatoken", "c2VjcmV0"],
            ["CE_SAGATOKEN", "c2VjcmV0"]
        ]);
        let shown = shown_headers(&stored);
        assert_eq!(
            shown,
            serde_json::json!([
                ["ce_type", "x.done"],
                ["ce_sagatoken", "***"],
                ["CE_SAGATOKEN", "***"]
            ])
        );
    }
}
