//! The participant contract of the loaded definitions, as AsyncAPI.

use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::contract;

/// The AsyncAPI 3.0 document of the participant contract: every command, compensation,
/// reply, trigger, lifecycle and dead-letter message of the current definitions, with
/// headers, payload schemas and correlation.
#[utoipa::path(
    get, path = "/v1/asyncapi", tag = "definitions", operation_id = "get_asyncapi",
    responses((status = 200, description = "The AsyncAPI 3.0 document (JSON)", body = serde_json::Value)),
    security(("bearer" = ["read"]))
)]
pub async fn asyncapi(State(state): State<AppState>) -> Response {
    let defs = state.applier.registry.all_current();
    let defs: Vec<&crate::definition::Definition> = defs.iter().map(AsRef::as_ref).collect();
    axum::Json(contract::document(&defs, &state.contract_topics)).into_response()
}
