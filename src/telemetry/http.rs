//! A server span per HTTP request, continuing the caller's `traceparent`, so a saga
//! started over HTTP is a child of the request in the caller's trace.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::trace::{Status, TraceContextExt};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::propagation;

/// Mount with `router.route_layer(axum::middleware::from_fn(telemetry::http_middleware))`
/// (`route_layer` so the matched route template is known and 404s make no spans).
pub async fn http_middleware(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let method = req.method().as_str().to_owned();
    let span = tracing::info_span!(
        target: "sagaflow::http",
        "http request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = Empty,
        trace_id = Empty,
    );
    let caller = propagation::from_headers(
        req.headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))),
    );
    let _ = span.set_parent(
        caller
            .as_ref()
            .map(propagation::as_parent)
            .unwrap_or_default(),
    );
    let trace_id = span.context().span().span_context().trace_id();
    span.record("trace_id", tracing::field::display(trace_id));
    let res = next.run(req).instrument(span.clone()).await;
    let status = res.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.set_status(Status::error(status.to_string()));
    }
    res
}
