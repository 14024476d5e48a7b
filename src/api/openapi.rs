//! The OpenAPI document. Paths come from the handlers' `#[utoipa::path]` attributes
//! via `utoipa_axum::routes!`, so the router and the spec cannot drift apart; this
//! module adds what is common to every operation (security scheme, 401/403/413).

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Doc, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::problem::{FieldError, PROBLEM_JSON, Problem};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "sagaflow",
        description = "Start, find, inspect and repair sagas. Errors are RFC 9457 \
                       `application/problem+json`. See docs/api.md for examples.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(Problem, FieldError)),
    tags(
        (name = "sagas", description = "Start, list and inspect sagas"),
        (name = "operator", description = "Repair sagas: abort and retry (admin scope)"),
        (name = "definitions", description = "Saga definitions"),
        (name = "health", description = "Probes (open unless api.auth.protect_health)"),
    )
)]
pub struct ApiDoc;

/// Applied after the routes are collected (a `modifiers(..)` on the derive would run
/// before any path exists).
#[derive(Debug)]
pub struct Common;

fn problem(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build(),
    )
}

impl Modify for Common {
    fn modify(&self, doc: &mut Doc) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token whose SHA-256 is listed in api.auth.tokens, with the scope \
                         the operation names (read, write or admin)",
                    ))
                    .build(),
            ),
        );
        for item in doc.paths.paths.values_mut() {
            let ops: [&mut Option<Operation>; 4] = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                let json_write = is_json_write(op);
                let responses = &mut op.responses.responses;
                // Any request can time out or fail inside.
                responses.entry("408".into()).or_insert_with(|| {
                    problem("The request took longer than api.request_timeout_ms")
                });
                responses
                    .entry("500".into())
                    .or_insert_with(|| problem("Internal error; the server log has the cause"));
                // Every operation refuses query parameters it does not take.
                responses.entry("400".into()).or_insert_with(|| {
                    problem("An unknown query parameter, or a malformed query value or body")
                });
                if op.security.is_some() {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| problem("Missing or invalid bearer token"));
                    responses
                        .entry("403".into())
                        .or_insert_with(|| problem("The token lacks the scope"));
                }
                if op.request_body.is_some() {
                    responses
                        .entry("413".into())
                        .or_insert_with(|| problem("Request body too large"));
                    responses
                        .entry("400".into())
                        .or_insert_with(|| problem("Malformed body"));
                }
                if json_write {
                    responses
                        .entry("415".into())
                        .or_insert_with(|| problem("The body is not `application/json`"));
                    responses
                        .entry("403".into())
                        .or_insert_with(|| problem("A browser sent the request from another site"));
                }
            }
        }
    }
}

/// Writes other than validation take JSON only (api::hardening::guard_writes).
fn is_json_write(op: &Operation) -> bool {
    op.operation_id.as_deref() != Some("validate_definition") && op.request_body.is_some()
        || matches!(
            op.operation_id.as_deref(),
            Some("retry_saga" | "reload_definitions")
        )
}

/// The document as YAML (what `openapi/openapi.yaml` holds).
pub fn yaml(doc: &Doc) -> String {
    // Through serde_json::Value so map keys are emitted in a stable, sorted order.
    let value = serde_json::to_value(doc).unwrap_or_default();
    serde_saphyr::to_string(&value).unwrap_or_default()
}
