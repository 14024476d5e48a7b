//! RFC 9457 problem details: the body of every error response, including the ones
//! axum and tower-http produce themselves (rewritten by [`problem_bodies`]).

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "https://sagaflow.dev/problems/not-allowed",
    "title": "abort is not allowed now",
    "status": 409,
    "detail": "the saga has completed"
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

impl Problem {
    pub fn new(status: StatusCode, slug: &str, title: &str) -> Problem {
        Problem {
            kind: format!("https://sagaflow.dev/problems/{slug}"),
            title: title.to_owned(),
            status: status.as_u16(),
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
        Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found").detail(what)
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request").detail(detail)
    }

    /// Clients learn nothing internal; the cause is logged where this is built.
    pub fn internal() -> Problem {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        )
        .detail("the request could not be completed; the server log has the cause")
    }

    /// The generic problem for a status that carries no more specific one.
    pub fn for_status(status: StatusCode) -> Problem {
        if status.is_server_error() {
            return Problem {
                status: status.as_u16(),
                ..Problem::internal()
            };
        }
        let title = status.canonical_reason().unwrap_or("Error");
        let slug = title.to_ascii_lowercase().replace(' ', "-");
        Problem::new(status, &slug, title)
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
    if status.is_client_error() {
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

/// The fallback for unknown paths.
pub async fn no_route() -> Response {
    Problem::not_found("no such resource; /docs lists the API").into_response()
}

/// `Json<T>` whose rejections are problems (400 malformed, 415 wrong type, 422 wrong
/// shape, 413 too large).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request<Body>, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> Response {
    let status = e.status();
    let slug = match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
        StatusCode::PAYLOAD_TOO_LARGE => "too-large",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid-body",
        _ => "bad-request",
    };
    Problem::new(
        status,
        slug,
        status.canonical_reason().unwrap_or("Bad request"),
    )
    .detail(e.body_text())
    .into_response()
}

/// `Query<T>` answering 400 problems.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(Problem::bad_request(e.body_text()).into_response()),
        }
    }
}

/// `Path<T>` answering 400 (or 404 for a saga id that is not a UUID) problems.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            // A malformed id names no saga: 404, as for any other unknown id.
            Err(e @ PathRejection::FailedToDeserializePathParams(_)) => {
                Err(Problem::not_found(&e.body_text()).into_response())
            }
            Err(e) => Err(Problem::bad_request(e.body_text()).into_response()),
        }
    }
}
