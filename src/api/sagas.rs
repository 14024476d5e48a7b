//! Starting, reading and repairing sagas.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::model::{
    SagaDetail, StartBody, Started, Status, TIMELINE_IN_DETAIL, TimelinePage, TimelineParams,
};
use super::problem::{FieldError, Kind, Problem, internal};
use crate::runtime::transition::{StartOutcome, StartRequest};
use crate::store;

use crate::runtime::intake::{api_key_problem, nul_path};

pub(super) fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Start a saga.
///
/// The path segment is the *definition name* (same position as the saga id of
/// `GET /v1/sagas/{saga}`; see docs/api.md, "Paths"). Idempotent by key: the
/// `Idempotency-Key` header, or `key` in the body.
#[utoipa::path(
    post, path = "/v1/sagas/{saga}", tag = "sagas", operation_id = "start_saga",
    params(
        ("saga" = String, Path, description = "Name of the saga definition to start", example = "order-fulfilment"),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 256, pattern = r"^[\x21-\x7E]+$",
         description = "Business key: the same key returns the same saga"),
    ),
    request_body = StartBody,
    responses(
        (status = 201, description = "Started", body = Started,
         headers(("Location" = String, description = "URL of the new saga"))),
        (status = 200, description = "A saga with this key and input exists already", body = Started),
        (status = 400, description = "Malformed request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such definition", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Key reused with a different input", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or input too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Input breaks the definition's schema (`errors` lists every path)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["write"]))
)]
pub async fn start(
    State(state): State<AppState>,
    ApiPath(definition): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StartBody>,
) -> Response {
    let key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        Some(Ok(k)) => {
            if let Some(why) = api_key_problem(k) {
                return Problem::bad_request(format!("Idempotency-Key header: {why}"))
                    .into_response();
            }
            Some(k.to_owned())
        }
        Some(Err(_)) => {
            return Problem::bad_request(
                "Idempotency-Key header: the key may hold only visible ASCII characters (`!` to `~`)",
            )
            .into_response();
        }
        None => body.key,
    };
    if let Some(why) = key.as_deref().and_then(api_key_problem) {
        return Problem::of(Kind::InvalidBody)
            .detail("the business key breaks the key rule")
            .errors(vec![FieldError {
                path: "/key".into(),
                message: why,
            }])
            .into_response();
    }
    let nul = |path: String| {
        Problem::of(Kind::InvalidInput)
            .errors(vec![FieldError {
                path,
                message: "text cannot contain U+0000".into(),
            }])
            .into_response()
    };
    if let Some(path) = nul_path(&body.input) {
        return nul(format!("/input{path}"));
    }
    let size = serde_json::to_vec(&body.input)
        .map(|v| v.len())
        .unwrap_or(0);
    if size > state.settings.max_input_bytes {
        return Problem::of(Kind::TooLarge)
            .detail(format!(
                "the input has {size} bytes; at most {} are accepted",
                state.settings.max_input_bytes
            ))
            .into_response();
    }
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let req = StartRequest {
        definition: definition.clone(),
        input: body.input,
        key,
        id: None,
        traceparent,
    };
    // A new saga is answered from what its transaction committed: a read after the
    // commit could fail and turn a saga that exists into a 500.
    let started = match &state.starts {
        Some(queue) => queue.start(req, size).await,
        None => state.applier.start(req).await,
    };
    let (id, created, status) = match started {
        Ok(StartOutcome::Created(id, status)) => (id, true, Some(status.into())),
        Ok(StartOutcome::Existing(id)) => (id, false, None),
        Ok(StartOutcome::Conflict(id)) => {
            return Problem::of(Kind::IdempotencyConflict)
                .detail(format!(
                    "saga {id} was started with this key and a different input"
                ))
                .into_response();
        }
        Ok(StartOutcome::UnknownDefinition) => {
            return Problem::not_found(&format!("no saga definition named `{definition}`"))
                .into_response();
        }
        Ok(StartOutcome::InvalidInput(errors)) => {
            return Problem::of(Kind::InvalidInput)
                .errors(
                    errors
                        .into_iter()
                        .map(|e| FieldError {
                            path: e.path,
                            message: e.message,
                        })
                        .collect(),
                )
                .into_response();
        }
        Ok(StartOutcome::Rejected(r)) => {
            return Problem::of(Kind::NotAllowed)
                .detail(format!("the saga cannot start: {r}"))
                .into_response();
        }
        Err(e) => return internal(&e),
    };
    // An existing saga's status is read; if that fails, repeating the request with the
    // same key is safe and answers the same saga.
    let status = match status {
        Some(status) => status,
        None => match store::get_saga(&state.applier.store.pool, id).await {
            Ok(Some(row)) => row.instance.status.into(),
            Ok(None) => Status::Running,
            Err(e) => return internal(&e),
        },
    };
    let body = Started {
        id,
        status,
        created,
    };
    if !created {
        return json(StatusCode::OK, &body);
    }
    let mut res = json(StatusCode::CREATED, &body);
    if let Ok(v) = format!("/v1/sagas/{id}").parse() {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// Inspect a saga: state, steps and the latest timeline entries.
#[utoipa::path(
    get, path = "/v1/sagas/{saga}", tag = "sagas", operation_id = "get_saga",
    params(("saga" = Uuid, Path, description = "Saga id")),
    responses(
        (status = 200, description = "The saga", body = SagaDetail),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<Uuid>) -> Response {
    match detail(&state, id).await {
        Ok(Some(d)) => json(StatusCode::OK, &d),
        Ok(None) => Problem::not_found(&format!("no saga {id}")).into_response(),
        Err(e) => e,
    }
}

/// A saga as `GET /v1/sagas/{saga}` shows it (`None`: no such saga); `Err` is the
/// answer to give, the cause logged.
pub(super) async fn detail(state: &AppState, id: Uuid) -> Result<Option<SagaDetail>, Response> {
    let pool = &state.applier.store.pool;
    let row = match store::get_saga(pool, id).await {
        Ok(Some(row)) => row,
        Ok(None) => return Ok(None),
        Err(e) => return Err(internal(&e)),
    };
    let latest = store::HistoryPage::Latest;
    let history = store::history_page(pool, id, latest, TIMELINE_IN_DETAIL as i64)
        .await
        .map_err(|e| internal(&e))?;
    let inst = row.instance;
    let def = state
        .applier
        .registry
        .version(&state.applier.store, &inst.definition, &inst.version)
        .await
        .map_err(|e| internal(&e))?;
    let names = def.steps.iter().map(|s| s.name.clone()).collect();
    let current = inst.current_steps(&def);
    Ok(Some(SagaDetail::new(
        inst,
        row.revision,
        names,
        current,
        history,
        row.trace_context.as_deref(),
    )))
}

/// Page through a saga's timeline, oldest first.
#[utoipa::path(
    get, path = "/v1/sagas/{saga}/timeline", tag = "sagas", operation_id = "get_timeline",
    params(("saga" = Uuid, Path, description = "Saga id"), TimelineParams),
    responses(
        (status = 200, description = "One page of the timeline", body = TimelinePage),
        (status = 400, description = "Invalid `after` or `limit`", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn timeline(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(p): ApiQuery<TimelineParams>,
) -> Response {
    let limit = p.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Problem::bad_request("limit must be between 1 and 1000").into_response();
    }
    let after = p.after.unwrap_or(0);
    if after < 0 {
        return Problem::bad_request("after must be 0 or more").into_response();
    }
    let pool = &state.applier.store.pool;
    match store::get_saga(pool, id).await {
        Ok(Some(_)) => {}
        Ok(None) => return Problem::not_found(&format!("no saga {id}")).into_response(),
        Err(e) => return internal(&e),
    }
    // One extra row tells whether another page exists.
    let page = store::HistoryPage::After(after);
    let mut rows = match store::history_page(pool, id, page, i64::from(limit) + 1).await {
        Ok(rows) => rows,
        Err(e) => return internal(&e),
    };
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_after = more.then(|| rows.last().map(|r| r.seq)).flatten();
    json(
        StatusCode::OK,
        &TimelinePage {
            items: rows.into_iter().map(Into::into).collect(),
            next_after,
        },
    )
}
