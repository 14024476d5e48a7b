//! Starting, reading and repairing sagas.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value as Json_, json};
use uuid::Uuid;

use super::AppState;
use super::problem::Problem;
use crate::engine::{Event, Rejection};
use crate::runtime::transition::{Applied, Item, StartOutcome, StartRequest};
use crate::store;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    #[serde(default)]
    pub input: Json_,
    pub key: Option<String>,
}

fn internal(e: impl std::error::Error) -> Response {
    tracing::error!(error = %e, source = ?e.source(), "request failed");
    Problem::internal().into_response()
}

pub async fn start(
    State(state): State<AppState>,
    Path(definition): Path<String>,
    headers: HeaderMap,
    Json(body): Json<StartBody>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(body.key);
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
    match state.applier.start(req).await {
        Ok(StartOutcome::Created(id)) => {
            let mut res = (
                StatusCode::CREATED,
                Json(json!({"id": id, "status": "running"})),
            )
                .into_response();
            if let Ok(v) = format!("/v1/sagas/{id}").parse() {
                res.headers_mut().insert(header::LOCATION, v);
            }
            res
        }
        Ok(StartOutcome::Existing(id)) => (StatusCode::OK, Json(json!({"id": id}))).into_response(),
        Ok(StartOutcome::Conflict(id)) => Problem::new(
            StatusCode::CONFLICT,
            "idempotency-conflict",
            "Idempotency key reused",
        )
        .detail(format!(
            "saga {id} was started with this key and a different input"
        ))
        .into_response(),
        Ok(StartOutcome::UnknownDefinition) => {
            Problem::not_found(&format!("no saga definition named `{definition}`")).into_response()
        }
        Ok(StartOutcome::InvalidInput(errors)) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
            "Input does not match the saga's schema",
        )
        .errors(json!(errors))
        .into_response(),
        Ok(StartOutcome::Rejected(r)) => Problem::new(StatusCode::CONFLICT, "rejected", "Rejected")
            .detail(r.to_string())
            .into_response(),
        Err(e) => internal(e),
    }
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return Problem::not_found(&format!("no saga {id} (saga ids are UUIDs)")).into_response();
    };
    let pool = &state.applier.store.pool;
    let row = match store::get_saga(pool, id).await {
        Ok(Some(row)) => row,
        Ok(None) => return Problem::not_found(&format!("no saga {id}")).into_response(),
        Err(e) => return internal(e),
    };
    let history = match store::history(pool, id).await {
        Ok(h) => h,
        Err(e) => return internal(e),
    };
    let inst = &row.instance;
    Json(json!({
        "id": inst.id,
        "definition": inst.definition,
        "version": inst.version,
        "status": inst.status,
        "key": inst.key,
        "input": inst.input,
        "output": inst.output,
        "failure": inst.failure,
        "steps": inst.steps,
        "revision": row.revision,
        "created_at": inst.created_at,
        "updated_at": inst.updated_at,
        "timeline": history,
    }))
    .into_response()
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AbortBody {
    #[serde(default)]
    pub reason: String,
}

pub async fn abort(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    body: Option<Json<AbortBody>>,
) -> Response {
    let reason = body.map(|b| b.0.reason).unwrap_or_default();
    operate(
        &state,
        id,
        Event::Abort {
            reason,
            actor: "api".into(),
        },
    )
    .await
}

pub async fn retry(State(state): State<AppState>, Path(id): Path<Uuid>) -> Response {
    operate(
        &state,
        id,
        Event::Retry {
            actor: "api".into(),
        },
    )
    .await
}

async fn operate(state: &AppState, id: Uuid, event: Event) -> Response {
    let item = Item {
        saga_id: id,
        event,
        message_id: None,
        timer: None,
    };
    match state
        .applier
        .apply_batch(vec![item], false)
        .await
        .map(|mut r| r.pop())
    {
        Ok(Some(Applied::Changed | Applied::Unchanged)) => {
            match store::get_saga(&state.applier.store.pool, id).await {
                Ok(Some(row)) => {
                    Json(json!({"id": id, "status": row.instance.status})).into_response()
                }
                Ok(None) => Problem::not_found(&format!("no saga {id}")).into_response(),
                Err(e) => internal(e),
            }
        }
        Ok(Some(Applied::UnknownSaga)) => {
            Problem::not_found(&format!("no saga {id}")).into_response()
        }
        Ok(Some(Applied::Rejected(Rejection::NotAllowed { action, reason }))) => Problem::new(
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
        Err(e) => internal(e),
    }
}
