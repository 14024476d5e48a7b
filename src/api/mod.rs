//! The HTTP API. Handlers talk to the runtime (`Applier`) and the store, never to Kafka.

pub mod problem;
mod sagas;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::runtime::transition::Applier;

/// Liveness of the background tasks, for `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    pub consumer: Arc<AtomicBool>,
    pub relay: Arc<AtomicBool>,
    pub timers: Arc<AtomicBool>,
}

#[derive(Debug, Clone)]
pub struct AppState {
    pub applier: Applier,
    pub health: Arc<Health>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        // One parameter name per position (a router rule): `{id}` is the definition name for POST.
        .route("/v1/sagas/{id}", post(sagas::start).get(sagas::get))
        .route("/v1/sagas/{id}/abort", post(sagas::abort))
        .route("/v1/sagas/{id}/retry", post(sagas::retry))
        .with_state(state)
}

async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let database = state.applier.store.ping().await.is_ok();
    let consumer = state.health.consumer.load(Ordering::Relaxed);
    let relay = state.health.relay.load(Ordering::Relaxed);
    let timers = state.health.timers.load(Ordering::Relaxed);
    let ready = database && consumer && relay && timers;
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": {"database": database, "kafka_consumer": consumer, "outbox_relay": relay, "timers": timers,
                   "definitions": state.applier.registry.all_current().len()},
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}
