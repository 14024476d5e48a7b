//! Repairing one saga: abort, retry, resolve a step by hand, terminate. Each is an
//! engine event applied in one transaction and recorded in the timeline with the
//! token's name as actor. A refusal is a 409 whose `detail` names what works instead.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value as Json;
use uuid::Uuid;

use super::AppState;
use super::auth::Caller;
use super::extract::{ApiJson, ApiPath};
use super::model::{AbortBody, ActionResult, ResolveBody, ResolveOutcome, TerminateBody};
use super::problem::{FieldError, Kind, Problem, internal};
use super::sagas::json;
use crate::engine::{Event, Phase, Rejection, Resolution, SagaStatus};
use crate::runtime::transition::{Applied, ApplyError, Item};

/// Longest reason kept in a timeline entry.
pub const MAX_REASON_CHARS: usize = 1024;

pub(super) fn invalid(path: &str, message: &str) -> Response {
    Problem::of(Kind::InvalidBody)
        .detail(format!("{path}: {message}"))
        .errors(vec![FieldError {
            path: path.into(),
            message: message.into(),
        }])
        .into_response()
}

/// A reason is stored as given, bounded in length.
pub(super) fn reason_problem(reason: &str) -> Option<Response> {
    if reason.chars().count() > MAX_REASON_CHARS {
        return Some(invalid(
            "/reason",
            &format!("at most {MAX_REASON_CHARS} characters"),
        ));
    }
    None
}

/// A JSON body that may be absent, empty or `null` (read by hand: a JSON extractor
/// would refuse those).
pub(super) fn optional_body<T: Default + serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<T, Box<Response>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(body)
        .map(Option::unwrap_or_default)
        .map_err(|e| {
            // The same kinds as ApiJson: syntax is a 400, a wrong shape a 422.
            let problem = if e.is_data() {
                Problem::of(Kind::InvalidBody)
                    .detail(format!("the body does not have the expected fields: {e}"))
            } else {
                Problem::bad_request(format!("the body is not valid JSON: {e}"))
            };
            Box::new(problem.into_response())
        })
}

/// Text PostgreSQL can store: U+0000, which it cannot, becomes U+FFFD.
pub(super) fn storable(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// A JSON value PostgreSQL can store: U+0000 in any string or key becomes U+FFFD.
fn storable_json(v: Json) -> Json {
    match v {
        Json::String(s) => Json::String(storable(&s)),
        Json::Array(items) => Json::Array(items.into_iter().map(storable_json).collect()),
        Json::Object(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| (storable(&k), storable_json(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Abort: compensate now.
///
/// Allowed while running forward before the pivot, when the pivot is neither in flight
/// nor of unknown outcome; a no-op when already compensating or compensated. Otherwise
/// 409, and `detail` says why and which actions work (retry, resolve-step, terminate).
#[utoipa::path(
    post, path = "/v1/sagas/{saga}/abort", tag = "operator", operation_id = "abort_saga",
    params(("saga" = Uuid, Path, description = "Saga id")),
    request_body(content = Option<AbortBody>, description = "Optional; the reason is kept in the timeline"),
    responses(
        (status = 200, description = "Aborted (or already rolling back)", body = ActionResult),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not allowed in the saga's state; `detail` says why and what works", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Reason too long or not storable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn abort(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<Uuid>,
    body: Bytes,
) -> Response {
    let body: AbortBody = match optional_body(&body) {
        Ok(b) => b,
        Err(res) => return *res,
    };
    if let Some(res) = reason_problem(&body.reason) {
        return res;
    }
    let event = Event::Abort {
        reason: storable(&body.reason),
        actor: caller.name,
    };
    operate(&state, id, event).await
}

/// Retry: go again.
///
/// On a `failed` saga, redrives from where it stopped (the failed steps, or the failed
/// compensation) with fresh retry budgets. On a running or compensating saga, sends at
/// once every attempt that waits out a backoff. Otherwise 409, naming what works.
#[utoipa::path(
    post, path = "/v1/sagas/{saga}/retry", tag = "operator", operation_id = "retry_saga",
    params(("saga" = Uuid, Path, description = "Saga id")),
    responses(
        (status = 200, description = "Redriven, or the backoff skipped", body = ActionResult),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing to retry; `detail` says why and what works", body = Problem, content_type = "application/problem+json"),
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

/// Terminate: end the saga where it stands.
///
/// Any saga that is not finished, `failed` ones included. Nothing more is sent: timers
/// are cancelled and replies that still arrive are recorded only. The saga ends
/// `terminated`. The documented way out after the pivot, when the remaining work was
/// done (or undone) by hand.
#[utoipa::path(
    post, path = "/v1/sagas/{saga}/terminate", tag = "operator", operation_id = "terminate_saga",
    params(("saga" = Uuid, Path, description = "Saga id")),
    request_body = TerminateBody,
    responses(
        (status = 200, description = "Terminated", body = ActionResult),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The saga has finished already", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No reason, or one too long or not storable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn terminate(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<TerminateBody>,
) -> Response {
    if body.reason.trim().is_empty() {
        return invalid("/reason", "say why the saga is terminated");
    }
    if let Some(res) = reason_problem(&body.reason) {
        return res;
    }
    let event = Event::Terminate {
        reason: storable(&body.reason),
        actor: caller.name,
    };
    operate(&state, id, event).await
}

/// Resolve a step by hand: settle its command or compensation as its participant would.
///
/// Applies to an attempt in flight or waiting out a backoff, or to a step the saga
/// stopped on (timed out or failed). `succeeded` takes the payload as the reply;
/// `failed` is a failure that is not retried. The saga then goes on exactly as if the
/// participant had replied. Give `attempt` to make a repeated request harmless: it is
/// refused once that attempt is no longer current.
#[utoipa::path(
    post, path = "/v1/sagas/{saga}/steps/{step}/resolve", tag = "operator", operation_id = "resolve_step",
    params(
        ("saga" = Uuid, Path, description = "Saga id"),
        ("step" = String, Path, description = "Step name, as in the definition"),
    ),
    request_body = ResolveBody,
    responses(
        (status = 200, description = "Resolved; the saga went on", body = ActionResult),
        (status = 404, description = "No such saga, or no such step in its definition", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Nothing to resolve in that state; `detail` says why and what works", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Body not storable (reason, payload)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn resolve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ApiPath((id, step)): ApiPath<(Uuid, String)>,
    ApiJson(body): ApiJson<ResolveBody>,
) -> Response {
    if body.reason.trim().is_empty() {
        return invalid("/reason", "say why the step is resolved by hand");
    }
    if let Some(res) = reason_problem(&body.reason) {
        return res;
    }
    let payload = body.payload.map(storable_json);
    if let Some(payload) = &payload {
        let size = serde_json::to_vec(payload).map(|v| v.len()).unwrap_or(0);
        if size > state.settings.max_input_bytes {
            return invalid("/payload", "the payload is larger than api.max_input_bytes");
        }
    }
    let outcome = match body.outcome {
        ResolveOutcome::Succeeded => Resolution::Succeeded {
            payload: payload.unwrap_or(Json::Object(Default::default())),
        },
        // A failure's payload (what the participant said, if the operator has it) is
        // kept in the timeline.
        ResolveOutcome::Failed => Resolution::Failed { payload },
    };
    let event = Event::Resolve {
        step,
        phase: if body.compensation {
            Phase::Compensation
        } else {
            Phase::Command
        },
        attempt: body.attempt,
        outcome,
        reason: storable(&body.reason),
        actor: caller.name,
    };
    operate(&state, id, event).await
}

/// Applies one operator event to one saga in its own transaction: what happened, and
/// the status the transaction committed (never read again after the commit).
pub(super) async fn apply_one(
    state: &AppState,
    id: Uuid,
    event: Event,
    only_if: Option<SagaStatus>,
) -> Result<(Applied, Option<SagaStatus>), ApplyError> {
    let item = Item {
        saga_id: id,
        event,
        message_id: None,
        timer: None,
        only_if,
    };
    let mut committed = state
        .applier
        .apply_reporting(std::slice::from_ref(&item), &[None], false)
        .await?;
    let applied = committed.applied.pop().unwrap_or(Applied::UnknownSaga);
    Ok((applied, committed.statuses.remove(&id)))
}

async fn operate(state: &AppState, id: Uuid, event: Event) -> Response {
    // Answered from what the transaction committed, never from a read after it.
    match apply_one(state, id, event, None).await {
        Ok((Applied::Changed | Applied::Unchanged, Some(status))) => json(
            StatusCode::OK,
            &ActionResult {
                id,
                status: status.into(),
            },
        ),
        Ok((Applied::UnknownSaga, _)) => {
            Problem::not_found(&format!("no saga {id}")).into_response()
        }
        Ok((Applied::Rejected(Rejection::UnknownStep(step)), _)) => Problem::not_found(&format!(
            "saga {id} runs on a definition version without a step `{step}`"
        ))
        .into_response(),
        Ok((Applied::Rejected(Rejection::NotAllowed { action, reason }), _)) => {
            Problem::of(Kind::NotAllowed)
                .detail(format!("{action} is not allowed now: {reason}"))
                .into_response()
        }
        Ok(other) => {
            tracing::error!(?other, "unexpected operator outcome");
            Problem::internal().into_response()
        }
        Err(e) => internal(&e),
    }
}
