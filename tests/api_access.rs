//! Handler tests for definitions and access control (see tests/oneshot).
#![allow(clippy::unwrap_used)]

mod oneshot;
mod support;

use axum::body::Body;
use axum::http::{Request, header};
use oneshot::*;
use sagaflow::config::{ApiSettings, Scope};
use serde_json::{Value, json};
use support::repo_path;

#[tokio::test]
async fn definitions_graphs_and_validation() {
    let app = app().await;
    let list = app.call("GET", "/v1/definitions", None, None).await;
    let names: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"order-fulfilment"), "{names:?}");

    app.start("order-fulfilment", order("o-1")).await;
    let d = app
        .call("GET", "/v1/definitions/order-fulfilment", None, None)
        .await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.body["versions_in_use"][0]["unfinished_sagas"], 1);
    assert_eq!(d.body["versions_in_use"][0]["current"], true);
    assert_eq!(
        app.call("GET", "/v1/definitions/nope", None, None)
            .await
            .status,
        404
    );

    let g = app
        .call("GET", "/v1/definitions/order-fulfilment/graph", None, None)
        .await;
    assert_eq!(g.headers[header::CONTENT_TYPE], "text/vnd.mermaid");
    assert!(g.text.starts_with("flowchart"), "{}", g.text);
    let req = Request::get("/v1/definitions/order-fulfilment/graph")
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.send(req).await.body["mermaid"].as_str(),
        Some(g.text.as_str())
    );

    let validate = |yaml: String| {
        Request::post("/v1/definitions/validate")
            .header(header::CONTENT_TYPE, "application/yaml")
            .body(Body::from(yaml))
            .unwrap()
    };
    let good = std::fs::read_to_string(repo_path("sagas/order-fulfilment.yaml")).unwrap();
    let r = app.send(validate(good)).await;
    assert_eq!(r.body, json!({"valid": true, "errors": [], "warnings": []}));
    let bad = std::fs::read_to_string(repo_path("tests/fixtures/invalid/multiple-problems.yaml"))
        .unwrap();
    let r = app.send(validate(bad)).await;
    assert_eq!(r.body["valid"], false);
    let e = &r.body["errors"][0];
    assert!(
        e["line"].is_u64() && e["column"].is_u64() && e["message"].is_string(),
        "{e}"
    );
}

#[tokio::test]
async fn tokens_scopes_401_and_403() {
    let mut settings = ApiSettings::default();
    settings.auth.enabled = true;
    settings.auth.tokens = vec![
        token("reader", "r-secret", &[Scope::Read]),
        token("starter", "w-secret", &[Scope::Write]),
        token("oncall", "a-secret", &[Scope::Read, Scope::Admin]),
        token("probes", "h-secret", &[Scope::Health]),
    ];
    let app = app_with(settings.clone()).await;
    let r = app.call("GET", "/v1/sagas", None, None).await;
    assert_eq!(r.status, 401);
    assert!(
        r.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let r = app.call("GET", "/v1/sagas", None, Some("wrong")).await;
    assert_eq!(r.status, 401);
    assert!(!r.text.contains("wrong"));
    assert_eq!(
        app.call("GET", "/v1/sagas", None, Some("r-secret"))
            .await
            .status,
        200
    );
    let start = |t| {
        app.call(
            "POST",
            "/v1/sagas/order-fulfilment",
            Some(json!({"input": order("o-1")})),
            Some(t),
        )
    };
    let r = start("r-secret").await;
    assert_eq!(r.status, 403);
    assert!(
        r.headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );
    let r = start("w-secret").await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let abort = format!("/v1/sagas/{id}/abort");
    assert_eq!(
        app.call("POST", &abort, None, Some("w-secret"))
            .await
            .status,
        403
    );
    assert_eq!(
        app.call("POST", &abort, None, Some("a-secret"))
            .await
            .status,
        200
    );
    let saga = app
        .call("GET", &format!("/v1/sagas/{id}"), None, Some("a-secret"))
        .await;
    let actors: Vec<&Value> = saga.body["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "operator_abort")
        .map(|e| &e["detail"]["actor"])
        .collect();
    assert_eq!(actors, vec![&json!("oncall")]);

    // Probes, the spec and the docs are open; unknown routes are not.
    assert_eq!(app.call("GET", "/healthz", None, None).await.status, 200);
    assert_eq!(
        app.call("GET", "/openapi.json", None, None).await.status,
        200
    );
    assert_eq!(app.call("GET", "/docs/", None, None).await.status, 200);
    assert_eq!(app.call("GET", "/nope", None, None).await.status, 401);

    settings.auth.protect_health = true;
    let app = app_with(settings).await;
    assert_eq!(app.call("GET", "/healthz", None, None).await.status, 401);
    assert_eq!(
        app.call("GET", "/healthz", None, Some("r-secret"))
            .await
            .status,
        200
    );
    // A probe token opens the probes and the metrics, and nothing else.
    for path in ["/healthz", "/metrics"] {
        let r = app.call("GET", path, None, Some("h-secret")).await;
        assert_eq!(r.status, 200, "{path}");
    }
    assert_eq!(
        app.call("GET", "/v1/sagas", None, Some("h-secret"))
            .await
            .status,
        403
    );
}

/// Every operation of the OpenAPI document, called with no token and with tokens of
/// each single scope, answers as the scope it declares says: 401 without a token, 403
/// with a token lacking that scope, and neither with one holding it.
#[tokio::test]
async fn every_operation_answers_by_the_scope_its_document_declares() {
    let mut settings = ApiSettings::default();
    settings.auth.enabled = true;
    settings.auth.tokens = vec![
        token("reader", "read", &[Scope::Read]),
        token("starter", "write", &[Scope::Write]),
        token("oncall", "admin", &[Scope::Admin]),
    ];
    let app = app_with(settings).await;
    let doc = serde_json::to_value(sagaflow::api::openapi_doc()).unwrap();
    let saga = uuid::Uuid::new_v4().to_string();
    let mut checked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        let path = template
            .replace("{saga}", &saga)
            .replace("{name}", "order-fulfilment")
            .replace("{step}", "reserve_stock");
        for (method, op) in item.as_object().unwrap() {
            let security = op["security"]
                .as_array()
                .expect("every operation declares security");
            let optional = security.iter().any(|s| s.as_object().unwrap().is_empty());
            let scope = security
                .iter()
                .find_map(|s| s["bearer"][0].as_str())
                .unwrap();
            let body = op.get("requestBody").map(|_| json!({}));
            let method = method.to_uppercase();
            let call = |token: Option<&'static str>| app.call(&method, &path, body.clone(), token);
            let none = call(None).await.status;
            if optional {
                assert!(
                    ![401, 403].contains(&none),
                    "{method} {template}: probe gave {none}"
                );
                checked += 1;
                continue;
            }
            assert_eq!(none, 401, "{method} {template} without a token");
            for held in ["read", "write", "admin"] {
                let status = call(Some(held)).await.status;
                if held == scope {
                    assert!(
                        ![401, 403].contains(&status),
                        "{method} {template} with `{held}`: {status}"
                    );
                } else {
                    assert_eq!(
                        status, 403,
                        "{method} {template} declares `{scope}`, `{held}` passed"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 13, "only {checked} operations walked");
}
