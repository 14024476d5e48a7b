//! Browser-facing hardening. The API is for programs, but operators reach it from a
//! browser too (/docs, and soon a console), so a page on another site must not be able
//! to make their browser act on the API, frame it, or have a response sniffed as HTML.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;

/// Nothing may load, run or frame: every answer is JSON or text.
const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// The Swagger UI is served from here and needs its own scripts, styles and images.
const DOCS_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
     script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Adds security headers to every response, errors included.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let docs = req.uri().path().starts_with("/docs");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let csp = if docs { DOCS_CSP } else { API_CSP };
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    res
}

/// Refuses writes a browser was made to send from another site, and write bodies that
/// are not JSON. Programs (curl, SDKs) send neither `Sec-Fetch-Site` nor `Origin` and
/// are unaffected. Cross-site forms can only send form or text bodies, and scripts on
/// other origins cannot send JSON without a CORS preflight, which this API never grants.
pub async fn guard_writes(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(why) = cross_site(req.headers()) {
            return Problem::new(
                StatusCode::FORBIDDEN,
                "cross-origin",
                "Cross-origin request refused",
            )
            .detail(why)
            .into_response();
        }
        // Validation takes YAML and changes nothing.
        if req.uri().path() != "/v1/definitions/validate" && !json_or_empty(req.headers()) {
            return Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            )
            .detail("write requests take `Content-Type: application/json` bodies (or no body)")
            .into_response();
        }
    }
    next.run(req).await
}

/// Why the request looks like one a browser sent for another site, if it does.
fn cross_site(headers: &HeaderMap) -> Option<String> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return Some(format!(
            "the browser says the request came from a {site} page"
        ));
    }
    let origin = text("origin")?;
    let host = text("host").unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    (origin_host != host).then(|| format!("origin `{origin}` is not this API's host `{host}`"))
}

/// A JSON content type, or no content type and no body.
fn json_or_empty(headers: &HeaderMap) -> bool {
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        Some(ct) => {
            let essence = ct
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        }
        None => {
            let length = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            length.unwrap_or(0) == 0 && !headers.contains_key(header::TRANSFER_ENCODING)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        assert!(cross_site(&headers(&[])).is_none());
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])).is_some());
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-origin")])).is_none());
        let same = headers(&[("origin", "http://api:8080"), ("host", "api:8080")]);
        assert!(cross_site(&same).is_none());
        let other = headers(&[("origin", "https://evil.example"), ("host", "api:8080")]);
        assert!(cross_site(&other).is_some());
    }

    #[test]
    fn only_json_bodies_pass() {
        assert!(json_or_empty(&headers(&[])));
        assert!(json_or_empty(&headers(&[(
            "content-type",
            "application/json; charset=utf-8"
        )])));
        assert!(json_or_empty(&headers(&[(
            "content-type",
            "application/merge-patch+json"
        )])));
        assert!(!json_or_empty(&headers(&[("content-type", "text/plain")])));
        assert!(!json_or_empty(&headers(&[(
            "content-type",
            "application/x-www-form-urlencoded"
        )])));
        assert!(!json_or_empty(&headers(&[("content-length", "12")])));
    }
}
