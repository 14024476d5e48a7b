//! Pinned versions stay visible: the YAML and the chart of any definition version a
//! saga ran on (kept in `definition_snapshots`, even after its file was removed), and
//! the chart of one saga with each step coloured by what it did.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::AppState;
use super::definitions::graph_response;
use super::extract::ApiPath;
use super::model::{DefinitionVersion, Graph};
use super::problem::{Problem, internal};
use crate::definition::graph::Mark;
use crate::engine::{Instance, StepStatus};
use crate::runtime::registry::RegistryError;
use crate::store;

/// One stored version of a definition: its YAML source as it was loaded.
#[utoipa::path(
    get, path = "/v1/definitions/{name}/versions/{version}", tag = "definitions", operation_id = "get_definition_version",
    params(
        ("name" = String, Path, description = "Definition name", example = "order-fulfilment"),
        ("version" = String, Path, description = "Content hash (a saga's `version`)"),
    ),
    responses(
        (status = 200, description = "The version", body = DefinitionVersion),
        (status = 404, description = "No such version", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn version(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> Response {
    let not_found = || {
        Problem::not_found(&format!(
            "no version {version} of a definition named `{name}`"
        ))
        .into_response()
    };
    if name.contains('\0') || version.contains('\0') {
        return not_found();
    }
    match store::load_snapshot(&state.applier.store.pool, &name, &version).await {
        Ok(Some((source, file))) => {
            let current = state
                .applier
                .registry
                .current(&name)
                .is_some_and(|d| d.version == version);
            axum::Json(DefinitionVersion {
                name: name.clone(),
                version: version.clone(),
                file,
                current,
                source,
            })
            .into_response()
        }
        Ok(None) => not_found(),
        Err(e) => internal(&e),
    }
}

/// The chart of one stored version of a definition.
#[utoipa::path(
    get, path = "/v1/definitions/{name}/versions/{version}/graph", tag = "definitions", operation_id = "definition_version_graph",
    params(
        ("name" = String, Path, description = "Definition name", example = "order-fulfilment"),
        ("version" = String, Path, description = "Content hash (a saga's `version`)"),
    ),
    responses(
        (status = 200, description = "The flowchart",
         content((String = "text/vnd.mermaid"), (Graph = "application/json"), (String = "image/svg+xml"))),
        (status = 404, description = "No such version", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn version_graph(
    State(state): State<AppState>,
    ApiPath((name, version)): ApiPath<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if name.contains('\0') || version.contains('\0') {
        return Problem::not_found("no such version").into_response();
    }
    let registry = &state.applier.registry;
    match registry
        .version(&state.applier.store, &name, &version)
        .await
    {
        Ok(def) => graph_response(&headers, &def, None),
        Err(RegistryError::MissingSnapshot { .. }) => Problem::not_found(&format!(
            "no version {version} of a definition named `{name}`"
        ))
        .into_response(),
        Err(e) => internal(&e),
    }
}

/// What each step of a saga did, as chart classes.
fn marks(inst: &Instance) -> Vec<Mark> {
    let forward = |s: StepStatus| match s {
        StepStatus::Pending => None,
        StepStatus::Skipped => Some("skipped"),
        StepStatus::Running | StepStatus::WaitingRetry => Some("current"),
        StepStatus::Succeeded => Some("succeeded"),
        StepStatus::Failed => Some("failed"),
        StepStatus::TimedOut => Some("unknown"),
    };
    let backward = |s: StepStatus| match s {
        StepStatus::Pending | StepStatus::Skipped => None,
        StepStatus::Running | StepStatus::WaitingRetry => Some("current"),
        StepStatus::Succeeded => Some("compensated"),
        StepStatus::Failed | StepStatus::TimedOut => Some("failed"),
    };
    inst.steps
        .iter()
        .map(|s| Mark {
            command: forward(s.forward.status),
            compensation: backward(s.compensation.status),
        })
        .collect()
}

/// The chart of one saga's definition version, each step coloured by what it did:
/// succeeded, failed, unknown (timed out), current, skipped; compensations
/// compensated, failed or current. As SVG, each node also names its state.
#[utoipa::path(
    get, path = "/v1/sagas/{saga}/graph", tag = "sagas", operation_id = "saga_graph",
    params(("saga" = Uuid, Path, description = "Saga id")),
    responses(
        (status = 200, description = "The flowchart",
         content((String = "text/vnd.mermaid"), (Graph = "application/json"), (String = "image/svg+xml"))),
        (status = 404, description = "No such saga", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn saga_graph(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Response {
    let inst = match store::get_saga(&state.applier.store.pool, id).await {
        Ok(Some(row)) => row.instance,
        Ok(None) => return Problem::not_found(&format!("no saga {id}")).into_response(),
        Err(e) => return internal(&e),
    };
    let registry = &state.applier.registry;
    match registry
        .version(&state.applier.store, &inst.definition, &inst.version)
        .await
    {
        Ok(def) => graph_response(&headers, &def, Some(&marks(&inst))),
        Err(e) => internal(&e),
    }
}
