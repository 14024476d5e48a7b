//! Saga definitions: what is loaded, which versions still run, graphs, validation.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::extract::ApiPath;
use super::model::{DefinitionDetail, DefinitionSummary, Graph, ValidationReport, VersionInUse};
use super::problem::{Kind, Problem, internal};
use crate::definition::graph::Mark;
use crate::definition::{self, Definition, ParseLimits};
use crate::runtime::reload::{ReloadError, ReloadReport};
use crate::store;

/// Stack of a validation thread. Parsing recurses once per level of YAML nesting; at
/// `ParseLimits::API.max_depth` a debug build needs well under 2 MiB (tested in
/// definition::load), so this leaves a wide margin for the schema compiler too.
const VALIDATE_STACK: usize = 16 * 1024 * 1024;

/// Media type of Mermaid source (as used by GitLab and mermaid.js tooling).
pub const MERMAID: &str = "text/vnd.mermaid";
/// Media type of the chart drawn on the server (definition::svg).
pub const SVG: &str = "image/svg+xml";
/// The SVG is a document of its own: if it is opened directly rather than through an
/// `<img>`, nothing in it may load or run, and inline styling is all it may use.
const SVG_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

fn summary(def: &Definition) -> DefinitionSummary {
    DefinitionSummary {
        name: def.name.clone(),
        description: def.description.clone(),
        version: def.version.clone(),
        file: def.file.clone(),
        steps: def.steps.iter().map(|s| s.name.clone()).collect(),
        pivot: def
            .pivot
            .and_then(|p| def.steps.get(p))
            .map(|s| s.name.clone()),
    }
}

/// List the current saga definitions (from the `sagas/` directory).
#[utoipa::path(
    get, path = "/v1/definitions", tag = "definitions", operation_id = "list_definitions",
    responses((status = 200, description = "Current definitions, by name", body = Vec<DefinitionSummary>)),
    security(("bearer" = ["read"]))
)]
pub async fn list(State(state): State<AppState>) -> Response {
    let defs: Vec<DefinitionSummary> = state
        .applier
        .registry
        .all_current()
        .iter()
        .map(|d| summary(d))
        .collect();
    axum::Json(defs).into_response()
}

/// One definition: its current version and every version unfinished sagas run on.
#[utoipa::path(
    get, path = "/v1/definitions/{name}", tag = "definitions", operation_id = "get_definition",
    params(("name" = String, Path, description = "Definition name", example = "order-fulfilment")),
    responses(
        (status = 200, description = "The definition", body = DefinitionDetail),
        (status = 404, description = "Neither loaded nor used by an unfinished saga", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn get(State(state): State<AppState>, ApiPath(name): ApiPath<String>) -> Response {
    // PostgreSQL text cannot hold U+0000: no definition has such a name.
    if name.contains('\0') {
        return Problem::not_found(&format!("no saga definition named `{name}`")).into_response();
    }
    let current = state.applier.registry.current(&name);
    let versions = match store::versions_of(&state.applier.store.pool, &name).await {
        Ok(v) => v,
        Err(e) => return internal(&e),
    };
    if current.is_none() && versions.is_empty() {
        return Problem::not_found(&format!("no saga definition named `{name}`")).into_response();
    }
    let current_version = current.as_ref().map(|d| d.version.clone());
    axum::Json(DefinitionDetail {
        name,
        input_schema: current
            .as_ref()
            .and_then(|d| d.input_schema.as_ref().map(|s| s.schema.clone()))
            .unwrap_or_default(),
        current: current.as_deref().map(summary),
        versions_in_use: versions
            .into_iter()
            .map(|(version, n, first_seen)| VersionInUse {
                current: current_version.as_deref() == Some(version.as_str()),
                version,
                unfinished_sagas: n,
                first_seen,
            })
            .collect(),
    })
    .into_response()
}

/// A flowchart of the current version: forward path, groups, pivot, compensations.
/// `text/vnd.mermaid` by default; JSON or an SVG picture when `Accept` asks for it.
#[utoipa::path(
    get, path = "/v1/definitions/{name}/graph", tag = "definitions", operation_id = "definition_graph",
    params(("name" = String, Path, description = "Definition name", example = "order-fulfilment")),
    responses(
        (status = 200, description = "The flowchart",
         content((String = "text/vnd.mermaid"), (Graph = "application/json"), (String = "image/svg+xml"))),
        (status = 404, description = "No such definition", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn graph(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    headers: HeaderMap,
) -> Response {
    let Some(def) = state.applier.registry.current(&name) else {
        return Problem::not_found(&format!("no saga definition named `{name}`")).into_response();
    };
    graph_response(&headers, &def, None)
}

/// The chart of `def` (with `marks`, one saga's) in the form `Accept` prefers: an SVG
/// picture, `{"mermaid": …}`, or Mermaid text, which is also the default.
pub(super) fn graph_response(
    headers: &HeaderMap,
    def: &Definition,
    marks: Option<&[Mark]>,
) -> Response {
    let mermaid = || match marks {
        Some(marks) => definition::graph::mermaid_marked(def, marks),
        None => definition::graph::mermaid(def),
    };
    let format = negotiate(headers);
    let mut res = match format {
        GraphFormat::Json => axum::Json(Graph { mermaid: mermaid() }).into_response(),
        GraphFormat::Svg => (StatusCode::OK, definition::svg::svg(def, marks)).into_response(),
        GraphFormat::Mermaid => (StatusCode::OK, mermaid()).into_response(),
    };
    let h = res.headers_mut();
    // The same URL answers in three forms: caches must key on `Accept`.
    h.insert(header::VARY, HeaderValue::from_static("accept"));
    match format {
        GraphFormat::Json => {}
        GraphFormat::Mermaid => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(MERMAID));
        }
        GraphFormat::Svg => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SVG));
            // The security-headers layer keeps a policy the handler set.
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(SVG_CSP),
            );
        }
    }
    res
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GraphFormat {
    Svg,
    Json,
    Mermaid,
}

/// The form `Accept` names with the highest quality; on a tie the first of SVG, JSON,
/// Mermaid. Wildcards other than `image/*` choose nothing, so `*/*` gets Mermaid.
fn negotiate(headers: &HeaderMap) -> GraphFormat {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let quality = |wanted: &[&str]| -> f32 {
        accept
            .split(',')
            .filter_map(|range| {
                let mut parts = range.split(';');
                let media = parts.next()?.trim();
                wanted
                    .iter()
                    .any(|w| media.eq_ignore_ascii_case(w))
                    .then(|| {
                        parts
                            .filter_map(|p| p.trim().strip_prefix("q="))
                            .find_map(|q| q.trim().parse::<f32>().ok())
                            .unwrap_or(1.0)
                    })
            })
            .fold(0.0, f32::max)
    };
    [
        (GraphFormat::Svg, quality(&[SVG, "image/*"])),
        (GraphFormat::Json, quality(&["application/json"])),
        (GraphFormat::Mermaid, quality(&[MERMAID])),
    ]
    .into_iter()
    .filter(|(_, q)| *q > 0.0)
    // `max_by` keeps the last of equals: reversed, that is the first in the list.
    .rev()
    .max_by(|a, b| a.1.total_cmp(&b.1))
    .map_or(GraphFormat::Mermaid, |(f, _)| f)
}

/// Validate a definition (YAML body) without loading it: the same diagnostics as
/// `sagaflow validate --format json`, with file, line, column and a hint.
#[utoipa::path(
    post, path = "/v1/definitions/validate", tag = "definitions", operation_id = "validate_definition",
    // Any YAML document is a valid request (the answer says what is wrong with it), so
    // the body schema is "any value" rather than a string.
    request_body(content = serde_json::Value, content_type = "application/yaml",
                 example = "name: demo\nsteps: []\n"),
    responses(
        (status = 200, description = "The report (also for invalid definitions)", body = ValidationReport),
        (status = 400, description = "Body empty or not UTF-8", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["read"]))
)]
pub async fn validate(State(state): State<AppState>, body: Bytes) -> Response {
    if body.is_empty() {
        return Problem::bad_request("send the definition's YAML as the request body")
            .into_response();
    }
    let Ok(source) = String::from_utf8(body.to_vec()) else {
        return Problem::bad_request("the definition must be UTF-8 text").into_response();
    };
    // A slot first: waiting requests hold no thread, and the request timeout bounds the wait.
    let Ok(slot) = state.validations.clone().acquire_owned().await else {
        return Problem::internal().into_response();
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("validate".into())
        .stack_size(VALIDATE_STACK)
        .spawn(move || {
            let report =
                definition::parse_definition_within("definition.yaml", &source, &ParseLimits::API);
            drop(slot);
            let _ = tx.send(report);
        });
    if let Err(e) = spawned {
        return internal(&e);
    }
    let (errors, warnings) = match rx.await {
        Ok(Ok(def)) => (Vec::new(), def.warnings),
        Ok(Err(diags)) => (diags, Vec::new()),
        Err(_) => return Problem::internal().into_response(),
    };
    axum::Json(ValidationReport {
        valid: errors.is_empty(),
        errors,
        warnings,
    })
    .into_response()
}

/// Reload the definitions from `sagas/` on the replica that answers.
///
/// Everything is checked first; if any file is invalid, a topic would have two roles,
/// or the new set reads a topic this replica does not consume (that needs a restart),
/// nothing changes. Running sagas keep their pinned versions. Each replica reloads on
/// its own: send SIGHUP to every pod (or call this on each).
#[utoipa::path(
    post, path = "/v1/definitions/reload", tag = "definitions", operation_id = "reload_definitions",
    responses(
        (status = 200, description = "Reloaded: what changed", body = ReloadReport),
        (status = 409, description = "Topics to start or stop consuming: restart instead", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid definitions or topic conflicts; nothing changed (`detail` lists each)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "This process cannot reload", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = ["admin"]))
)]
pub async fn reload(State(state): State<AppState>) -> Response {
    let Some(reloader) = &state.reloader else {
        return Problem::of(Kind::Unavailable)
            .detail("this process has no definitions directory to reload")
            .into_response();
    };
    match reloader.reload().await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e @ (ReloadError::NewTopics(_) | ReloadError::DroppedTriggers(_))) => {
            Problem::of(Kind::RestartNeeded)
                .detail(e.to_string())
                .into_response()
        }
        Err(ReloadError::Store(e)) => internal(&e),
        Err(ReloadError::Interrupted) => Problem::internal().into_response(),
        Err(e) => Problem::of(Kind::InvalidDefinitions)
            .detail(e.to_string())
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> GraphFormat {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(value));
        negotiate(&h)
    }

    #[test]
    fn accept_chooses_svg_json_or_the_mermaid_default() {
        assert_eq!(negotiate(&HeaderMap::new()), GraphFormat::Mermaid);
        assert_eq!(accept("*/*"), GraphFormat::Mermaid);
        assert_eq!(accept("text/vnd.mermaid"), GraphFormat::Mermaid);
        assert_eq!(accept("application/json"), GraphFormat::Json);
        assert_eq!(accept("image/svg+xml"), GraphFormat::Svg);
        // What browsers send for an <img>.
        let img = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        assert_eq!(accept(img), GraphFormat::Svg);
        // A tie goes to the first of SVG, JSON, Mermaid; quality decides otherwise.
        assert_eq!(
            accept("text/vnd.mermaid, application/json, image/svg+xml"),
            GraphFormat::Svg
        );
        assert_eq!(
            accept("application/json, text/vnd.mermaid"),
            GraphFormat::Json
        );
        assert_eq!(
            accept("image/svg+xml;q=0.5, text/vnd.mermaid"),
            GraphFormat::Mermaid
        );
        assert_eq!(
            accept("image/svg+xml;q=0, application/json;q=0.1"),
            GraphFormat::Json
        );
    }
}
