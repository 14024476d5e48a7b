//! Probes: `/healthz` says the process is alive, `/readyz` that it can do its work.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::model::{Alive, Readiness};
use crate::runtime::supervise::{Heartbeat, STALE_AFTER};

/// Liveness: the process answers.
#[utoipa::path(
    get, path = "/healthz", tag = "health", operation_id = "healthz",
    responses((status = 200, description = "Alive", body = Alive)),
    security((), ("bearer" = ["read"]))
)]
pub async fn healthz() -> Response {
    axum::Json(Alive {
        status: "ok".into(),
    })
    .into_response()
}

/// Readiness: PostgreSQL answers, the consumer, relay and timer loops beat and their
/// last rounds succeeded, and
/// definitions are loaded.
#[utoipa::path(
    get, path = "/readyz", tag = "health", operation_id = "readyz",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready; the checks say what is missing", body = Readiness),
    ),
    security((), ("bearer" = ["read"]))
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let database = state.applier.store.ping().await.is_ok();
    // Each loop beats every few seconds: a stuck loop goes stale as a failed one does.
    let beating = |h: &Heartbeat| h.is_healthy(STALE_AFTER);
    let consumer = beating(&state.health.consumer);
    let relay = beating(&state.health.relay);
    let timers = beating(&state.health.timers);
    let definitions = state.applier.registry.all_current().len();
    // Definitions are loaded (and invalid ones refused) before the server starts.
    let ready = database && consumer && relay && timers;
    let body = Readiness {
        status: if ready { "ready" } else { "not ready" }.into(),
        database,
        kafka_consumer: consumer,
        outbox_relay: relay,
        timers,
        definitions,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
