//! A server span per HTTP request, continuing the caller's `traceparent`, so a saga
//! started over HTTP is a child of the request in the caller's trace. Attributes follow
//! the OpenTelemetry HTTP server conventions (docs/observability.md lists them).

use axum::extract::{MatchedPath, Request};
use axum::http::{Version, header};
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;
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
        trace_id = Empty,
    );
    for kv in connection_attrs(&req) {
        span.set_attribute(kv.key, kv.value);
    }
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
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.set_attribute("error.type", status.as_str().to_owned());
        span.set_status(Status::error(status.to_string()));
    }
    res
}

/// `url.scheme`, `server.address`, `server.port` and `network.protocol.version`. The
/// server speaks plain HTTP; its name and port are what the client addressed (the
/// HTTP/2 authority or the `Host` header), as the conventions ask. Forwarding headers
/// are not trusted.
fn connection_attrs(req: &Request) -> Vec<KeyValue> {
    let scheme = req.uri().scheme_str().unwrap_or("http").to_owned();
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok());
    let mut attrs = vec![KeyValue::new("url.scheme", scheme.clone())];
    if let Some((host, port)) = authority.and_then(split_authority) {
        let default = if scheme == "https" { 443 } else { 80 };
        attrs.push(KeyValue::new("server.address", host.to_owned()));
        attrs.push(KeyValue::new(
            "server.port",
            i64::from(port.unwrap_or(default)),
        ));
    }
    let version = match req.version() {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => return attrs,
    };
    attrs.push(KeyValue::new("network.protocol.version", version));
    attrs
}

/// `host[:port]` or `[v6]:port` into the host (without brackets) and the port.
pub(crate) fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::split_authority;

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(
            split_authority("127.0.0.1:8080"),
            Some(("127.0.0.1", Some(8080)))
        );
        assert_eq!(split_authority("example.com"), Some(("example.com", None)));
        assert_eq!(split_authority("[::1]:9092"), Some(("::1", Some(9092))));
        assert_eq!(split_authority("[::1]"), Some(("::1", None)));
        assert_eq!(split_authority("host:nope"), None);
        assert_eq!(split_authority(""), None);
    }
}
