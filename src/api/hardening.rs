//! Browser-facing hardening. The API is for programs, but operators reach it from a
//! browser too (/docs and the console at /ui), so a page on another site must not be able
//! to make their browser act on the API, frame it, or have a response sniffed as HTML.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::problem::{Kind, Problem};

/// Nothing may load, run or frame: every answer is JSON or text.
const API_CSP: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";
/// The Swagger UI is served from here and needs its own scripts, styles and images.
const DOCS_CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
     script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The console (/ui): its own script and style only, talking to this API alone; no
/// inline code, so an injected string cannot run.
const UI_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Adds security headers to every response, errors included.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let csp = if path.starts_with("/docs") {
        DOCS_CSP
    } else if path == "/ui" || path.starts_with("/ui/") {
        UI_CSP
    } else {
        API_CSP
    };
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    // A handler that serves a document of its own (the SVG chart) sets the policy for
    // it; everything else gets the one for its path.
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(csp));
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

/// What the browser guard needs to know.
#[derive(Debug, Clone)]
pub struct BrowserPolicy {
    /// The API runs without tokens: browsers are then checked for DNS rebinding.
    pub open: bool,
    pub allowed_hosts: Vec<String>,
}

/// With access control off, refuses a browser request whose `Host` is a name that is
/// not allowed: a page can rebind its own name to this service's address and then
/// read and write the API as if same-origin, but it cannot make its requests carry
/// an IP address or `localhost` as their host. Programs (no `Origin`, no
/// `Sec-Fetch-Site`) are not affected; with tokens, a page has none to send.
pub async fn guard_hosts(
    axum::extract::State(policy): axum::extract::State<std::sync::Arc<BrowserPolicy>>,
    req: Request,
    next: Next,
) -> Response {
    let h = req.headers();
    let from_browser = h.contains_key("origin") || h.contains_key("sec-fetch-site");
    if policy.open && from_browser {
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !host_allowed(host, &policy.allowed_hosts) {
            return Problem::of(Kind::HostNotAllowed)
                .detail(format!(
                    "browsers may reach this API without a token only by IP address, as localhost, or by a name in api.allowed_hosts; `{host}` is none of these"
                ))
                .into_response();
        }
    }
    next.run(req).await
}

fn host_allowed(host: &str, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
        return true;
    }
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !n.ends_with(':') => n,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Refuses writes a browser was made to send from another site, and write bodies that
/// are not JSON. Programs (curl, SDKs) send neither `Sec-Fetch-Site` nor `Origin` and
/// are unaffected. Cross-site forms can only send form or text bodies, and scripts on
/// other origins cannot send JSON without a CORS preflight, which this API never grants.
pub async fn guard_writes(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(why) = cross_site(req.headers()) {
            return Problem::of(Kind::CrossOrigin).detail(why).into_response();
        }
        // Validation takes YAML and changes nothing.
        if req.uri().path() != "/v1/definitions/validate" && !json_or_empty(req.headers()) {
            return Problem::of(Kind::UnsupportedMediaType)
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
    let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    // Behind a proxy that rewrites `Host`, the name the browser used is forwarded.
    let hosts = [text("host"), text("x-forwarded-host")];
    let same = hosts
        .iter()
        .flatten()
        .any(|h| h.eq_ignore_ascii_case(origin_host));
    let host = text("host").unwrap_or_default();
    (!same).then(|| format!("origin `{origin}` is not this API's host `{host}`"))
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
    fn rebinding_names_are_not_allowed_hosts() {
        let none: Vec<String> = Vec::new();
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "10.0.0.7",
            "LOCALHOST",
        ] {
            assert!(host_allowed(ok, &none), "{ok}");
        }
        for bad in ["evil.example:8080", "evil.example", "sagaflow"] {
            assert!(!host_allowed(bad, &none), "{bad}");
        }
        assert!(host_allowed("sagaflow:8080", &["sagaflow:8080".to_owned()]));
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
