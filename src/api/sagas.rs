//! Starting, reading and repairing sagas.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::model::{AbortBody, ActionResult, SagaDetail, StartBody, Started, Status};
use super::problem::{ApiJson, ApiPath, FieldError, Problem, internal};
use crate::engine::{Event, Rejection};
use crate::runtime::transition::{Applied, Item, StartOutcome, StartRequest};
use crate::store;

use crate::runtime::intake::{MAX_KEY_LEN, nul_path};

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
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
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 256, pattern = r"^[\x20-\x7E]+$",
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
        Some(Ok(k)) => Some(k.to_owned()),
        Some(Err(_)) => {
            return Problem::bad_request("Idempotency-Key must be ASCII").into_response();
        }
        None => body.key,
    };
    if key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > MAX_KEY_LEN)
    {
        return Problem::bad_request(format!("the key must have 1 to {MAX_KEY_LEN} bytes"))
            .into_response();
    }
    let nul = |path: String| {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
            "Input cannot be stored",
        )
        .errors(vec![FieldError {
            path,
            message: "text cannot contain U+0000".into(),
        }])
        .into_response()
    };
    if key.as_ref().is_some_and(|k| k.contains('\0')) {
        return nul("/key".into());
    }
    if let Some(path) = nul_path(&body.input) {
        return nul(format!("/input{path}"));
    }
    let size = serde_json::to_vec(&body.input)
        .map(|v| v.len())
        .unwrap_or(0);
    if size > state.settings.max_input_bytes {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "input-too-large",
            "Input too large",
        )
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
    let (id, created, status) = match state.applier.start(req).await {
        Ok(StartOutcome::Created(id, status)) => (id, true, Some(status.into())),
        Ok(StartOutcome::Existing(id)) => (id, false, None),
        Ok(StartOutcome::Conflict(id)) => {
            return Problem::new(
                StatusCode::CONFLICT,
                "idempotency-conflict",
                "Idempotency key reused",
            )
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
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-input",
                "Input does not match the saga's schema",
            )
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
            return Problem::new(StatusCode::CONFLICT, "rejected", "Rejected")
                .detail(r.to_string())
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

/// Inspect a saga: state, steps and the full timeline.
#[utoipa::path(
    get, path = "/v1/sagas/{saga}", tag = "sagas", operation_id = "get_saga",
    params(("saga" = Uuid, Path, description = "Saga id")),
    responses(
        (status = 200, description = "The saga", body = SagaDetail),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn get(State(state): State<AppState>, ApiPath(id): ApiPath<String>) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return Problem::not_found(&format!("no saga {id} (saga ids are UUIDs)")).into_response();
    };
    let pool = &state.applier.store.pool;
    let row = match store::get_saga(pool, id).await {
        Ok(Some(row)) => row,
        Ok(None) => return Problem::not_found(&format!("no saga {id}")).into_response(),
        Err(e) => return internal(&e),
    };
    let history = match store::history(pool, id).await {
        Ok(h) => h,
        Err(e) => return internal(&e),
    };
    let inst = row.instance;
    let def = match state
        .applier
        .registry
        .version(&state.applier.store, &inst.definition, &inst.version)
        .await
    {
        Ok(def) => def,
        Err(e) => return internal(&e),
    };
    let names = def.steps.iter().map(|s| s.name.clone()).collect();
    let current = inst.current_steps(&def);
    json(
        StatusCode::OK,
        &SagaDetail::new(inst, row.revision, names, current, history),
    )
}

/// Abort: compensate now.
///
/// Allowed while running forward before the pivot (and while the pivot is not in
/// flight); a no-op when already compensating or compensated; refused (409, saying
/// why) once completed, past the pivot, or when a compensation failed (use retry).
/// Recorded in the timeline with the token's name as actor.
#[utoipa::path(
    post, path = "/v1/sagas/{saga}/abort", tag = "operator", operation_id = "abort_saga",
    params(("saga" = Uuid, Path, description = "Saga id")),
    request_body(content = Option<AbortBody>, description = "Optional; the reason is kept in the timeline"),
    responses(
        (status = 200, description = "Aborted (or already rolling back)", body = ActionResult),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not allowed in the saga's state; `detail` says why", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn abort(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<Uuid>,
    body: Bytes,
) -> Response {
    // The body is optional (absent, empty or `null`), so it is read by hand rather
    // than with a JSON extractor.
    let body: AbortBody = if body.iter().all(u8::is_ascii_whitespace) {
        AbortBody::default()
    } else {
        match serde_json::from_slice::<Option<AbortBody>>(&body) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => return Problem::bad_request(format!("invalid body: {e}")).into_response(),
        }
    };
    let event = Event::Abort {
        reason: body.reason,
        actor: caller.name,
    };
    operate(&state, id, event).await
}

/// Retry: redrive from the failure point.
///
/// Allowed when the saga is `failed`: a forward step after the pivot exhausted its
/// retries, or compensations are exhausted. Each retry starts a fresh retry budget.
/// Recorded in the timeline with the token's name as actor.
#[utoipa::path(
    post, path = "/v1/sagas/{saga}/retry", tag = "operator", operation_id = "retry_saga",
    params(("saga" = Uuid, Path, description = "Saga id")),
    responses(
        (status = 200, description = "Redriven", body = ActionResult),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing to retry; `detail` says why", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<Uuid>,
) -> Response {
    operate(&state, id, Event::Retry { actor: caller.name }).await
}

async fn operate(state: &AppState, id: Uuid, event: Event) -> Response {
    let item = Item {
        saga_id: id,
        event,
        message_id: None,
        timer: None,
    };
    let committed = state
        .applier
        .apply_reporting(std::slice::from_ref(&item), &[None], false)
        .await;
    // Answered from what the transaction committed, never from a read after it.
    match committed.map(|mut c| (c.applied.pop(), c.statuses.remove(&id))) {
        Ok((Some(Applied::Changed | Applied::Unchanged), Some(status))) => json(
            StatusCode::OK,
            &ActionResult {
                id,
                status: status.into(),
            },
        ),
        Ok((Some(Applied::UnknownSaga), _)) => {
            Problem::not_found(&format!("no saga {id}")).into_response()
        }
        Ok((Some(Applied::Rejected(Rejection::NotAllowed { action, reason })), _)) => Problem::new(
            StatusCode::CONFLICT,
            "not-allowed",
            &format!("{action} is not allowed now"),
        )
        .detail(reason)
        .into_response(),
        Ok(other) => {
            tracing::error!(?other, "unexpected operator outcome");
            Problem::internal().into_response()
        }
        Err(e) => internal(&e),
    }
}
