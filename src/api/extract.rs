//! Extractors whose rejections are problems in our words: a body, query or path the
//! handler cannot read gets one of the kinds in [`Kind`], and a `detail` that names
//! the parameter or field and says what is expected.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request, State};
use axum::http::Method;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value as Json;
use utoipa::IntoParams;
use utoipa::openapi::path::ParameterIn;

use super::problem::{Kind, Problem};
use crate::definition::closest;

/// `Json<T>`: 400 for JSON syntax, 415 for another content type, 422 for a body of
/// the wrong shape, 413 for one over the limit.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request<Body>, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(json_rejection(&e).into_response()),
        }
    }
}

/// What axum says after its own prefix (serde's message, with line and column).
fn inner_message(text: &str) -> &str {
    text.split_once(": ").map_or(text, |(_, rest)| rest)
}

fn json_rejection(e: &JsonRejection) -> Problem {
    let text = e.body_text();
    match e {
        JsonRejection::JsonSyntaxError(_) => Problem::of(Kind::BadRequest).detail(format!(
            "the body is not valid JSON: {}",
            inner_message(&text)
        )),
        JsonRejection::JsonDataError(_) => Problem::of(Kind::InvalidBody).detail(format!(
            "the body does not have the expected fields: {}",
            inner_message(&text)
        )),
        JsonRejection::MissingJsonContentType(_) => Problem::of(Kind::UnsupportedMediaType)
            .detail("the body must be sent with `Content-Type: application/json`"),
        _ if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::of(Kind::TooLarge).detail("the request body is larger than api.max_body_bytes")
        }
        _ => Problem::of(Kind::BadRequest).detail(format!("the body cannot be read: {text}")),
    }
}

/// `Query<T>` that refuses what it does not know: an unknown parameter is a 400
/// `unknown-parameter` naming the likely one, a repeated one or a value of the wrong
/// kind a 400 `bad-request` naming the parameter. The parameters and their limits come
/// from `T`'s `IntoParams`, the same source as the OpenAPI document.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + IntoParams, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        parse_query::<T>(query)
            .map(ApiQuery)
            .map_err(IntoResponse::into_response)
    }
}

/// A documented query parameter: its name and its JSON Schema.
struct Declared {
    name: String,
    schema: Json,
}

fn declared<T: IntoParams>() -> Vec<Declared> {
    T::into_params(|| Some(ParameterIn::Query))
        .into_iter()
        .map(|p| Declared {
            schema: serde_json::to_value(&p.schema).unwrap_or_default(),
            name: p.name,
        })
        .collect()
}

pub(super) fn parse_query<T: DeserializeOwned + IntoParams>(query: &str) -> Result<T, Problem> {
    let declared = declared::<T>();
    let mut seen = HashSet::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let Some(param) = declared.iter().find(|d| d.name == name) else {
            let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
            return Err(unknown_parameter(&name, &names));
        };
        if !seen.insert(name.clone()) {
            return Err(Problem::bad_request(format!(
                "query parameter `{name}` is given more than once"
            )));
        }
        if let Some(why) = value_problem(&param.schema, &value) {
            return Err(Problem::bad_request(format!(
                "query parameter `{name}` {why}, not `{value}`"
            )));
        }
        // Each parameter alone, so an error names the one that caused it.
        let one = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(&name, &value)
            .finish();
        if let Err(e) = from_query::<T>(&one) {
            return Err(Problem::bad_request(format!(
                "query parameter `{name}` = `{value}` cannot be read: {}",
                inner_message(&e)
            )));
        }
    }
    from_query::<T>(query).map_err(|e| Problem::bad_request(format!("query: {e}")))
}

fn from_query<T: DeserializeOwned>(query: &str) -> Result<T, String> {
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| e.to_string())?;
    axum::extract::Query::<T>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| e.body_text())
}

fn unknown_parameter(name: &str, names: &[&str]) -> Problem {
    let takes = if names.is_empty() {
        "this endpoint takes no query parameters".to_owned()
    } else {
        format!("this endpoint takes {}", names.join(", "))
    };
    let hint = closest(name, names)
        .map(|near| format!("did you mean `{near}`? "))
        .unwrap_or_default();
    Problem::of(Kind::UnknownParameter)
        .detail(format!("unknown query parameter `{name}`; {hint}{takes}"))
}

/// Why `value` breaks the parameter's schema, in words, for the kinds of schema our
/// parameters use (integers with bounds, booleans, UUIDs, RFC 3339 times, lengths).
fn value_problem(schema: &Json, value: &str) -> Option<String> {
    let types: Vec<&str> = match &schema["type"] {
        Json::String(t) => vec![t.as_str()],
        Json::Array(ts) => ts.iter().filter_map(Json::as_str).collect(),
        _ => Vec::new(),
    };
    let bound = |key: &str| schema[key].as_f64();
    if types.contains(&"integer") {
        let (min, max) = (bound("minimum"), bound("maximum"));
        let range = match (min, max) {
            (Some(lo), Some(hi)) => format!(" from {lo} to {hi}"),
            (Some(lo), None) => format!(" of at least {lo}"),
            (None, Some(hi)) => format!(" of at most {hi}"),
            (None, None) => String::new(),
        };
        let ok = value.parse::<i64>().ok().is_some_and(|n| {
            let n = n as f64;
            min.is_none_or(|lo| n >= lo) && max.is_none_or(|hi| n <= hi)
        });
        return (!ok).then(|| format!("must be a whole number{range}"));
    }
    if types.contains(&"boolean") {
        return (!matches!(value, "true" | "false")).then(|| "must be `true` or `false`".into());
    }
    match schema["format"].as_str() {
        Some("uuid") if uuid::Uuid::parse_str(value).is_err() => {
            return Some("must be a UUID".into());
        }
        Some("date-time") if chrono::DateTime::parse_from_rfc3339(value).is_err() => {
            return Some(
                "must be an RFC 3339 time such as 2026-01-31T00:00:00Z (write `+` as %2B)".into(),
            );
        }
        _ => {}
    }
    let chars = value.chars().count() as u64;
    if let Some(max) = schema["maxLength"].as_u64()
        && chars > max
    {
        return Some(format!("must have at most {max} characters"));
    }
    if let Some(min) = schema["minLength"].as_u64()
        && chars < min
    {
        return Some(format!("must have at least {min} characters"));
    }
    None
}

/// The query parameters each documented operation takes, read from the OpenAPI
/// document, so that an endpoint without an [`ApiQuery`] refuses unknown parameters
/// too. Keyed by method and path template.
#[derive(Debug, Default)]
pub struct QueryParams(HashMap<(Method, String), Vec<String>>);

impl QueryParams {
    pub fn new(doc: &utoipa::openapi::OpenApi) -> QueryParams {
        let mut map = HashMap::new();
        let doc = serde_json::to_value(doc).unwrap_or_default();
        let Some(paths) = doc["paths"].as_object() else {
            return QueryParams(map);
        };
        for (path, item) in paths {
            for (method, op) in item.as_object().into_iter().flatten() {
                let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                    continue;
                };
                let names = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect();
                map.insert((method, path.clone()), names);
            }
        }
        QueryParams(map)
    }
}

/// Middleware: a query parameter the matched operation does not declare is a 400
/// `unknown-parameter` (routes outside the document, such as /docs, are left alone).
pub async fn refuse_unknown_parameters(
    State(params): State<Arc<QueryParams>>,
    req: Request,
    next: Next,
) -> Response {
    let (Some(query), Some(path)) = (req.uri().query(), req.extensions().get::<MatchedPath>())
    else {
        return next.run(req).await;
    };
    let Some(names) = params
        .0
        .get(&(req.method().clone(), path.as_str().to_owned()))
    else {
        return next.run(req).await;
    };
    let unknown = url::form_urlencoded::parse(query.as_bytes())
        .map(|(name, _)| name)
        .find(|name| !names.iter().any(|n| n == name));
    if let Some(name) = unknown {
        let declared: Vec<&str> = names.iter().map(String::as_str).collect();
        return unknown_parameter(&name, &declared).into_response();
    }
    next.run(req).await
}

/// `Path<T>`: a value that cannot be the parameter's type names nothing, so it is a
/// 404 like any other unknown id, with the same words on every endpoint.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(ApiPath(v)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => {
                Err(path_problem(e.kind()).into_response())
            }
            Err(e) => Err(Problem::bad_request(e.body_text()).into_response()),
        }
    }
}

fn path_problem(kind: &axum::extract::path::ErrorKind) -> Problem {
    use axum::extract::path::ErrorKind as K;
    let (key, value, expected) = match kind {
        K::ParseErrorAtKey {
            key,
            value,
            expected_type,
        } => (Some(key.as_str()), value.as_str(), *expected_type),
        K::DeserializeError { key, value, .. } => (Some(key.as_str()), value.as_str(), ""),
        K::ParseErrorAtIndex {
            value,
            expected_type,
            ..
        }
        | K::ParseError {
            value,
            expected_type,
        } => (None, value.as_str(), *expected_type),
        other => return Problem::bad_request(format!("the path cannot be read: {other}")),
    };
    let what = match (key, expected) {
        (Some("saga"), _) => "saga ids are UUIDs",
        (_, t) if t.contains("Uuid") => "ids here are UUIDs",
        (_, t) if t.starts_with('i') || t.starts_with('u') => "ids here are whole numbers",
        _ => "it cannot be read",
    };
    let noun = key.unwrap_or("resource");
    Problem::not_found(&format!("no {noun} `{value}` ({what})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, IntoParams)]
    #[into_params(parameter_in = Query)]
    #[allow(dead_code)]
    struct Params {
        #[param(minimum = 1, maximum = 500)]
        limit: Option<u32>,
        status: Option<String>,
        with_counts: Option<bool>,
        created_after: Option<chrono::DateTime<chrono::Utc>>,
        saga_id: Option<uuid::Uuid>,
    }

    fn detail(query: &str) -> (String, String) {
        let p = parse_query::<Params>(query).expect_err("refused");
        (p.kind, p.detail.unwrap_or_default())
    }

    #[test]
    fn unknown_parameters_are_named_with_the_likely_one() {
        let (kind, text) = detail("stauts=failed");
        assert!(kind.ends_with("/unknown-parameter"), "{kind}");
        assert!(text.contains("`stauts`; did you mean `status`?"), "{text}");
        assert!(text.contains("takes limit, status"), "{text}");
    }

    #[test]
    fn values_of_the_wrong_kind_name_their_parameter() {
        for (query, words) in [
            (
                "limit=-1",
                "`limit` must be a whole number from 1 to 500, not `-1`",
            ),
            ("limit=0", "from 1 to 500, not `0`"),
            ("limit=x", "whole number"),
            ("with_counts=yes", "`with_counts` must be `true` or `false`"),
            ("created_after=yesterday", "RFC 3339"),
            ("saga_id=42", "`saga_id` must be a UUID"),
            ("status=a&status=b", "`status` is given more than once"),
        ] {
            let (kind, text) = detail(query);
            assert!(kind.ends_with("/bad-request"), "{query}: {kind}");
            assert!(text.contains(words), "{query}: {text}");
        }
    }

    #[test]
    fn good_queries_pass() {
        let p = parse_query::<Params>("limit=5&status=failed&with_counts=true").expect("read");
        assert_eq!(p.limit, Some(5));
        assert!(parse_query::<Params>("").is_ok());
    }
}
