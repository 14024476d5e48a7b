//! RFC 9457 problem details: the body of every error response, including the ones
//! axum and tower-http produce themselves (rewritten by [`problem_bodies`]).

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "https://sagaflow.dev/problems/not-allowed",
    "title": "Not allowed now",
    "status": 409,
    "detail": "abort is not allowed now: the saga has completed; use …"
}))]
pub struct Problem {
    /// URI naming the kind of problem; stable, use it to branch on.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Every place a saga input breaks the definition's schema (422 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// One schema violation: a JSON pointer into the input and what is wrong there.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"path": "/amount", "message": "-1 is less than the minimum of 0"}))]
pub struct FieldError {
    /// JSON pointer (`""` is the whole input).
    pub path: String,
    pub message: String,
}

/// Every kind of problem the API answers with. Each has one type URI, one status and
/// one title; what differs between two answers of one kind is in `detail` and
/// `errors`. docs/api.md lists the same catalogue, and `tests/api_consistency.rs`
/// checks the two agree and that each endpoint answers bad input with these kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A path, query, header or body that cannot be read (syntax).
    BadRequest,
    /// A query parameter the endpoint does not take.
    UnknownParameter,
    Unauthorized,
    /// The token lacks the operation's scope.
    Forbidden,
    /// A browser sent a write from another site.
    CrossOrigin,
    /// A browser used a host name the API does not serve while running without tokens.
    HostNotAllowed,
    NotFound,
    MethodNotAllowed,
    Timeout,
    /// An idempotency key reused with a different input.
    IdempotencyConflict,
    /// An action the saga's (or message's) state does not allow.
    NotAllowed,
    /// A reload that only a restart can apply.
    RestartNeeded,
    /// A request body or saga input over its limit.
    TooLarge,
    UnsupportedMediaType,
    /// A well-formed body with a wrong shape or value.
    InvalidBody,
    /// A saga input that breaks the definition's JSON Schema or cannot be stored.
    InvalidInput,
    /// A reload whose definitions do not validate.
    InvalidDefinitions,
    Internal,
    Unavailable,
}

impl Kind {
    pub const ALL: [Kind; 19] = [
        Kind::BadRequest,
        Kind::UnknownParameter,
        Kind::Unauthorized,
        Kind::Forbidden,
        Kind::CrossOrigin,
        Kind::HostNotAllowed,
        Kind::NotFound,
        Kind::MethodNotAllowed,
        Kind::Timeout,
        Kind::IdempotencyConflict,
        Kind::NotAllowed,
        Kind::RestartNeeded,
        Kind::TooLarge,
        Kind::UnsupportedMediaType,
        Kind::InvalidBody,
        Kind::InvalidInput,
        Kind::InvalidDefinitions,
        Kind::Internal,
        Kind::Unavailable,
    ];

    /// (slug, status, title).
    const fn parts(self) -> (&'static str, StatusCode, &'static str) {
        match self {
            Kind::BadRequest => ("bad-request", StatusCode::BAD_REQUEST, "Bad request"),
            Kind::UnknownParameter => (
                "unknown-parameter",
                StatusCode::BAD_REQUEST,
                "Unknown query parameter",
            ),
            Kind::Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED, "Unauthorized"),
            Kind::Forbidden => ("forbidden", StatusCode::FORBIDDEN, "Forbidden"),
            Kind::CrossOrigin => (
                "cross-origin",
                StatusCode::FORBIDDEN,
                "Cross-origin request refused",
            ),
            Kind::HostNotAllowed => (
                "host-not-allowed",
                StatusCode::FORBIDDEN,
                "Host not allowed",
            ),
            Kind::NotFound => ("not-found", StatusCode::NOT_FOUND, "Not found"),
            Kind::MethodNotAllowed => (
                "method-not-allowed",
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
            ),
            Kind::Timeout => ("timeout", StatusCode::REQUEST_TIMEOUT, "Request timed out"),
            Kind::IdempotencyConflict => (
                "idempotency-conflict",
                StatusCode::CONFLICT,
                "Idempotency key reused",
            ),
            Kind::NotAllowed => ("not-allowed", StatusCode::CONFLICT, "Not allowed now"),
            Kind::RestartNeeded => ("restart-needed", StatusCode::CONFLICT, "Restart needed"),
            Kind::TooLarge => ("too-large", StatusCode::PAYLOAD_TOO_LARGE, "Too large"),
            Kind::UnsupportedMediaType => (
                "unsupported-media-type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported media type",
            ),
            Kind::InvalidBody => (
                "invalid-body",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid request body",
            ),
            Kind::InvalidInput => (
                "invalid-input",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid saga input",
            ),
            Kind::InvalidDefinitions => (
                "invalid-definitions",
                StatusCode::UNPROCESSABLE_ENTITY,
                "Definitions not reloaded",
            ),
            Kind::Internal => (
                "internal",
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
            ),
            Kind::Unavailable => (
                "unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "Service unavailable",
            ),
        }
    }

    pub const fn slug(self) -> &'static str {
        self.parts().0
    }

    pub const fn status(self) -> StatusCode {
        self.parts().1
    }

    pub const fn title(self) -> &'static str {
        self.parts().2
    }

    pub fn uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }

    /// The kind for an error status that carries nothing more specific (the
    /// framework's own answers).
    fn for_status(status: StatusCode) -> Kind {
        match status {
            StatusCode::UNAUTHORIZED => Kind::Unauthorized,
            StatusCode::FORBIDDEN => Kind::Forbidden,
            StatusCode::NOT_FOUND => Kind::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Kind::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => Kind::Timeout,
            StatusCode::PAYLOAD_TOO_LARGE => Kind::TooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Kind::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => Kind::InvalidBody,
            StatusCode::SERVICE_UNAVAILABLE => Kind::Unavailable,
            s if s.is_server_error() => Kind::Internal,
            _ => Kind::BadRequest,
        }
    }
}

/// Where problem type URIs start.
pub const PROBLEM_BASE: &str = "https://sagaflow.dev/problems/";

impl Problem {
    pub fn of(kind: Kind) -> Problem {
        Problem {
            kind: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status().as_u16(),
            detail: None,
            errors: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Problem {
        self.detail = Some(detail.into());
        self
    }

    pub fn errors(mut self, errors: Vec<FieldError>) -> Problem {
        self.errors = Some(errors);
        self
    }

    pub fn not_found(what: &str) -> Problem {
        Problem::of(Kind::NotFound).detail(what)
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::of(Kind::BadRequest).detail(detail)
    }

    /// Clients learn nothing internal; the cause is logged where this is built.
    pub fn internal() -> Problem {
        Problem::of(Kind::Internal)
            .detail("the request could not be completed; the server log has the cause")
    }

    /// The problem for an error status the framework produced. The status is kept
    /// (a 5xx other than 503 is `internal` with its own status).
    pub fn for_status(status: StatusCode) -> Problem {
        let kind = Kind::for_status(status);
        let problem = if kind == Kind::Internal {
            Problem::internal()
        } else {
            Problem::of(kind)
        };
        Problem {
            status: status.as_u16(),
            ..problem
        }
    }
}

/// Logs an error with its whole cause chain and answers a generic 500.
pub fn internal(e: &(dyn std::error::Error + 'static)) -> Response {
    let mut chain = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    tracing::error!(error = %chain, "request failed");
    Problem::internal().into_response()
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut res = (status, body).into_response();
        res.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        res
    }
}

/// Middleware: any error response that is not problem+json yet (405 from the router,
/// 408 from the timeout layer, 413 from the body limit, …) becomes one. Client errors
/// keep axum's short plain-text explanation as `detail`; server errors say nothing.
pub async fn problem_bodies(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return res;
    }
    let (parts, body) = res.into_parts();
    let mut problem = Problem::for_status(status);
    if let Some(detail) = framework_detail(status, &method, &parts.headers) {
        problem = problem.detail(detail);
    } else if status.is_client_error() {
        let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
        let text = String::from_utf8_lossy(&text).trim().to_owned();
        if !text.is_empty() {
            problem = problem.detail(text);
        }
    }
    let mut out = problem.into_response();
    // Keep headers that matter to the client (Allow, WWW-Authenticate, …).
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// Our words for the errors axum and tower-http answer on their own.
fn framework_detail(
    status: StatusCode,
    method: &Method,
    headers: &axum::http::HeaderMap,
) -> Option<String> {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = headers
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            Some(format!(
                "this path does not take {method}; it takes {allow}"
            ))
        }
        StatusCode::REQUEST_TIMEOUT => {
            Some("the request took longer than api.request_timeout_ms".into())
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            Some("the request body is larger than api.max_body_bytes".into())
        }
        _ => None,
    }
}

/// The fallback for unknown paths.
pub async fn no_route() -> Response {
    Problem::not_found("no such resource; /docs lists the API").into_response()
}
