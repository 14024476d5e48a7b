//! Browser-facing hardening (see src/api/hardening.rs): security headers on every
//! answer, JSON-only writes, cross-site writes refused, cursors that only this service
//! can make.
#![allow(clippy::unwrap_used)]

mod oneshot;
mod support;

use axum::body::Body;
use axum::http::{Request, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use oneshot::*;
use serde_json::json;

#[tokio::test]
async fn every_answer_carries_security_headers() {
    let app = app().await;
    for path in ["/v1/sagas", "/healthz", "/nope", "/docs/", "/openapi.json"] {
        let r = app.call("GET", path, None, None).await;
        for h in [
            "content-security-policy",
            "x-content-type-options",
            "x-frame-options",
            "referrer-policy",
        ] {
            assert!(r.headers.contains_key(h), "{path} lacks {h}");
        }
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        assert_eq!(r.headers["x-frame-options"], "DENY");
    }
    let api = app.call("GET", "/v1/sagas", None, None).await;
    assert!(
        api.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
}

#[tokio::test]
async fn writes_take_json_bodies_only() {
    let app = app().await;
    let id = uuid::Uuid::now_v7();
    // The review's probe: a `text/plain` abort, which a cross-site form can send.
    let form = Request::post(format!("/v1/sagas/{id}/abort"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("{\"reason\": \"csrf\"}"))
        .unwrap();
    assert_eq!(app.send(form).await.status, 415);
    let urlencoded = Request::post("/v1/sagas/order-fulfilment")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("input=1"))
        .unwrap();
    assert_eq!(app.send(urlencoded).await.status, 415);
    // A body without a content type is refused too; no body at all is fine.
    let untyped = Request::post(format!("/v1/sagas/{id}/abort"))
        .header(header::CONTENT_LENGTH, "2")
        .body(Body::from("{}"))
        .unwrap();
    assert_eq!(app.send(untyped).await.status, 415);
    let bodiless = app
        .call("POST", &format!("/v1/sagas/{id}/abort"), None, None)
        .await;
    assert_eq!(bodiless.status, 404, "{}", bodiless.text);
    let json = app
        .call(
            "POST",
            &format!("/v1/sagas/{id}/abort"),
            Some(json!({"reason": "ok"})),
            None,
        )
        .await;
    assert_eq!(json.status, 404, "{}", json.text);
}

#[tokio::test]
async fn writes_a_browser_sends_from_another_site_are_refused() {
    let app = app().await;
    let id = uuid::Uuid::now_v7();
    let from_elsewhere = |name: &'static str, value: &'static str| {
        Request::post(format!("/v1/sagas/{id}/retry"))
            .header(header::HOST, "10.0.0.7:8080")
            .header(name, value)
            .body(Body::empty())
            .unwrap()
    };
    let r = app
        .send(from_elsewhere("origin", "https://evil.example"))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = app
        .send(from_elsewhere("sec-fetch-site", "cross-site"))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    // The same site's own pages (the docs, a console) may write.
    let r = app
        .send(from_elsewhere("origin", "http://10.0.0.7:8080"))
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
}

/// DNS rebinding: a page on evil.example rebinds its name to this service's address;
/// its requests are then same-origin, but carry its name as the host.
#[tokio::test]
async fn browsers_reach_an_open_api_only_by_address_or_allowed_name() {
    let app = app().await;
    let rebound = |host: &'static str| {
        Request::get("/v1/sagas")
            .header(header::HOST, host)
            .header("origin", format!("http://{host}"))
            .header("sec-fetch-site", "same-origin")
            .body(Body::empty())
            .unwrap()
    };
    let r = app.send(rebound("evil.example:8080")).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = app.send(rebound("127.0.0.1:8080")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    // Programs are not browsers: no Origin, no Sec-Fetch-Site.
    let program = Request::get("/v1/sagas")
        .header(header::HOST, "sagaflow.internal:8080")
        .body(Body::empty())
        .unwrap();
    assert_eq!(app.send(program).await.status, 200);
    // With tokens, a page has none to send: the host is not checked.
    let mut settings = sagaflow::config::ApiSettings::default();
    settings.auth.enabled = true;
    settings.auth.tokens = vec![token(
        "reader",
        "r-secret",
        &[sagaflow::config::Scope::Read],
    )];
    let app = app_with(settings).await;
    let r = app.send(rebound("evil.example:8080")).await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[tokio::test]
async fn only_cursors_this_service_made_for_this_query_are_accepted() {
    let app = app().await;
    for n in 0..3 {
        let r = app
            .start(
                "order-fulfilment",
                json!({"order_id": format!("o-{n}"), "customer_id": "c", "amount": 1,
                       "currency": "EUR", "items": [{"sku": "A", "quantity": 1}]}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let first = app.call("GET", "/v1/sagas?limit=1", None, None).await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let next = app
        .call(
            "GET",
            &format!("/v1/sagas?limit=1&cursor={cursor}"),
            None,
            None,
        )
        .await;
    assert_eq!(next.status, 200, "{}", next.text);
    // The same cursor for another query.
    let other = app
        .call(
            "GET",
            &format!("/v1/sagas?limit=1&definition=trip-booking&cursor={cursor}"),
            None,
            None,
        )
        .await;
    assert_eq!(other.status, 400, "{}", other.text);
    // A position written by hand, as the old unauthenticated cursors were.
    let decoded = String::from_utf8(URL_SAFE_NO_PAD.decode(&cursor).unwrap()).unwrap();
    let position = decoded.rsplit_once(':').unwrap().0;
    let forged = URL_SAFE_NO_PAD.encode(position);
    let r = app
        .call(
            "GET",
            &format!("/v1/sagas?limit=1&cursor={forged}"),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
}

/// Swagger UI would send the document to validator.swagger.io for a badge when it is
/// not served from localhost: the page's config turns that off.
#[tokio::test]
async fn swagger_ui_asks_no_outside_validator() {
    let app = app().await;
    let init = app
        .call("GET", "/docs/swagger-initializer.js", None, None)
        .await;
    assert_eq!(init.status, 200);
    assert!(
        init.text.contains("\"validatorUrl\": \"none\"")
            || init.text.contains("\"validatorUrl\":\"none\""),
        "{}",
        init.text
    );
}
