//! One consistent API: every endpoint of the OpenAPI document is sent every kind of bad
//! input that applies to it (an unknown query parameter, a query value of the wrong
//! kind, a malformed path id, a body that is not JSON, of the wrong shape, of another
//! content type, or too large, and a method the path does not take). Each answer must
//! be a problem of the kind docs/api.md names for it, with the catalogue's status and
//! title, and a status the operation documents. docs/api.md's table of problem types
//! must list exactly the code's catalogue.
#![allow(clippy::unwrap_used)]

mod oneshot;
mod support;

use axum::body::Body;
use axum::http::{Request, header};
use oneshot::*;
use sagaflow::api::problem::{Kind, PROBLEM_BASE};
use serde_json::Value;

/// The code's catalogue: (slug, status, title).
fn catalogue() -> Vec<(String, u16, String)> {
    Kind::ALL
        .iter()
        .map(|k| {
            (
                k.slug().to_owned(),
                k.status().as_u16(),
                k.title().to_owned(),
            )
        })
        .collect()
}

/// The table between the `problem-types` markers of docs/api.md.
fn documented_types() -> Vec<(String, u16, String)> {
    let text = std::fs::read_to_string(support::repo_path("docs/api.md")).unwrap();
    let table = text
        .split("<!-- problem-types:begin -->")
        .nth(1)
        .and_then(|t| t.split("<!-- problem-types:end -->").next())
        .expect("docs/api.md has the problem-types markers");
    table
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (
                cells[1].trim_matches('`').to_owned(),
                cells[2].parse().unwrap(),
                cells[3].to_owned(),
            )
        })
        .collect()
}

#[test]
fn docs_list_exactly_the_problem_types_of_the_code() {
    assert_eq!(documented_types(), catalogue());
    let slugs: std::collections::HashSet<_> = catalogue().into_iter().map(|c| c.0).collect();
    assert_eq!(slugs.len(), Kind::ALL.len(), "one slug per kind");
}

/// A request to send and the problem type it must get.
struct Case {
    what: String,
    method: String,
    uri: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    expect: &'static str,
}

/// A value for a path parameter that names something plausible.
fn good_value(name: &str, method: &str, path: &str) -> String {
    match name {
        "saga" if method == "post" && path == "/v1/sagas/{saga}" => "order-fulfilment".into(),
        "saga" => uuid::Uuid::now_v7().to_string(),
        "step" => "reserve_stock".into(),
        "name" => "order-fulfilment".into(),
        "version" => "0".repeat(64),
        "id" => "1".into(),
        "action" => "abort".into(),
        other => panic!("no value for path parameter `{other}`: add one"),
    }
}

fn schema_kind(schema: &Value) -> (&str, &str) {
    let ty = match &schema["type"] {
        Value::String(t) => t.as_str(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or(""),
        _ => "",
    };
    (ty, schema["format"].as_str().unwrap_or(""))
}

/// A value of the wrong kind for a schema we can break, if we can.
fn wrong_value(schema: &Value) -> Option<&'static str> {
    match schema_kind(schema) {
        ("integer", _) => Some("lots"),
        ("boolean", _) => Some("maybe"),
        (_, "uuid") => Some("42"),
        (_, "date-time") => Some("yesterday"),
        _ => None,
    }
}

fn cases_for(path: &str, method: &str, op: &Value, max_body: usize) -> Vec<Case> {
    let params: Vec<&Value> = op["parameters"].as_array().into_iter().flatten().collect();
    let path_params: Vec<&Value> = params
        .iter()
        .copied()
        .filter(|p| p["in"] == "path")
        .collect();
    let concrete = |bad: Option<&str>| {
        let mut uri = path.to_owned();
        for p in &path_params {
            let name = p["name"].as_str().unwrap();
            let value = if Some(name) == bad {
                "not-an-id".to_owned()
            } else {
                good_value(name, method, path)
            };
            uri = uri.replace(&format!("{{{name}}}"), &value);
        }
        uri
    };
    let uri = concrete(None);
    let case = |what: String, uri: String, ctype, body: &[u8], expect| Case {
        what,
        method: method.to_uppercase(),
        uri,
        content_type: ctype,
        body: body.to_vec(),
        expect,
    };
    let mut cases = vec![case(
        "an unknown query parameter".into(),
        format!("{uri}?bogus_parameter=1"),
        None,
        b"",
        "unknown-parameter",
    )];
    for p in params.iter().filter(|p| p["in"] == "query") {
        let name = p["name"].as_str().unwrap();
        if let Some(bad) = wrong_value(&p["schema"]) {
            cases.push(case(
                format!("query `{name}` = `{bad}`"),
                format!("{uri}?{name}={bad}"),
                None,
                b"",
                "bad-request",
            ));
        }
        cases.push(case(
            format!("query `{name}` twice"),
            format!("{uri}?{name}=1&{name}=2"),
            None,
            b"",
            "bad-request",
        ));
    }
    for p in &path_params {
        let (ty, format) = schema_kind(&p["schema"]);
        if ty == "integer" || format == "uuid" {
            let name = p["name"].as_str().unwrap();
            cases.push(case(
                format!("path `{name}` malformed"),
                concrete(Some(name)),
                None,
                b"",
                "not-found",
            ));
        }
    }
    let takes_json = op["requestBody"]["content"]
        .as_object()
        .is_some_and(|c| c.contains_key("application/json"));
    if takes_json {
        let json = Some("application/json");
        cases.push(case(
            "a body with a JSON syntax error".into(),
            uri.clone(),
            json,
            b"{,}",
            "bad-request",
        ));
        cases.push(case(
            "a body of the wrong shape".into(),
            uri.clone(),
            json,
            br#"{"bogus_field": 1}"#,
            "invalid-body",
        ));
        cases.push(case(
            "a body of another type".into(),
            uri.clone(),
            Some("text/plain"),
            b"{}",
            "unsupported-media-type",
        ));
        let big = format!("{{\"reason\": \"{}\"}}", "x".repeat(max_body));
        cases.push(case(
            "a body over the limit".into(),
            uri.clone(),
            json,
            big.as_bytes(),
            "too-large",
        ));
    }
    cases
}

fn request(case: &Case) -> Request<Body> {
    let mut req = Request::builder()
        .method(case.method.as_str())
        .uri(&case.uri);
    if let Some(ctype) = case.content_type {
        req = req.header(header::CONTENT_TYPE, ctype);
    }
    req.body(Body::from(case.body.clone())).unwrap()
}

fn check(reply: &Reply, expect: &str, documented: Option<&Value>, what: &str) {
    let (slug, status, title) = catalogue()
        .into_iter()
        .find(|c| c.0 == expect)
        .unwrap_or_else(|| panic!("{expect} is not in the catalogue"));
    assert_eq!(
        (
            reply.status,
            reply.body["type"].as_str().unwrap_or_default()
        ),
        (status, format!("{PROBLEM_BASE}{slug}").as_str()),
        "{what}: {}",
        reply.text
    );
    assert_eq!(reply.body["title"], title, "{what}");
    let detail = reply.body["detail"].as_str().unwrap_or_default();
    assert!(!detail.is_empty(), "{what}: a problem says what is wrong");
    for raw in [
        "Failed to deserialize",
        "Failed to parse",
        "Failed to buffer",
    ] {
        assert!(!detail.contains(raw), "{what}: not in our words: {detail}");
    }
    if let Some(responses) = documented {
        assert!(
            responses.get(status.to_string()).is_some(),
            "{what}: status {status} is not in the operation's OpenAPI responses"
        );
    }
}

#[tokio::test]
async fn every_endpoint_answers_bad_input_with_its_documented_problem() {
    let app = app().await;
    let max_body = sagaflow::config::ApiSettings::default().max_body_bytes;
    let doc = serde_json::to_value(sagaflow::api::openapi_doc()).unwrap();
    let mut sent = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let item = item.as_object().unwrap();
        for (method, op) in item {
            for case in cases_for(path, method, op, max_body) {
                let what = format!("{} {} with {}", case.method, path, case.what);
                let reply = app.send(request(&case)).await;
                check(&reply, case.expect, Some(&op["responses"]), &what);
                sent += 1;
            }
        }
        // A method the path does not take.
        let other = ["put", "patch", "delete"]
            .into_iter()
            .find(|m| !item.contains_key(*m))
            .unwrap();
        let op = item.values().next().unwrap();
        let uri = cases_for(path, item.keys().next().unwrap(), op, max_body)[0]
            .uri
            .replace("?bogus_parameter=1", "");
        let req = Request::builder()
            .method(other.to_uppercase().as_str())
            .uri(&uri)
            .body(Body::empty())
            .unwrap();
        let reply = app.send(req).await;
        check(
            &reply,
            "method-not-allowed",
            None,
            &format!("{other} {path}"),
        );
        assert!(reply.headers.contains_key(header::ALLOW), "{path}");
    }
    assert!(sent > 60, "only {sent} cases: is the document empty?");
}

#[tokio::test]
async fn the_framework_answers_in_our_words_too() {
    let app = app().await;
    let r = app.call("GET", "/no/such/route", None, None).await;
    check(&r, "not-found", None, "unknown route");
    let r = app.call("GET", "/v1/sagas?limit=-1", None, None).await;
    check(&r, "bad-request", None, "limit=-1");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("`limit` must be a whole number from 1 to 500, not `-1`"),
        "{}",
        r.text
    );
    let r = app.call("GET", "/v1/sagas?stauts=failed", None, None).await;
    check(&r, "unknown-parameter", None, "stauts");
    assert!(r.text.contains("did you mean `status`?"), "{}", r.text);
    // One wording for a malformed saga id, whatever the endpoint.
    let get = app.call("GET", "/v1/sagas/nope", None, None).await;
    let abort = app.call("POST", "/v1/sagas/nope/abort", None, None).await;
    assert_eq!(get.body["detail"], abort.body["detail"]);
    assert_eq!(get.body["detail"], "no saga `nope` (saga ids are UUIDs)");
}

#[tokio::test]
async fn idempotency_compares_inputs_as_json_values_and_keys_follow_the_rule() {
    let app = app().await;
    let start = |body: &'static str, key: Option<&'static str>| {
        let mut req = Request::post("/v1/sagas/order-fulfilment")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        req.body(Body::from(body)).unwrap()
    };
    let first = app
        .send(start(
            r#"{"key": "ord-1", "input": {"order_id": "o-1", "customer_id": "c-1", "amount": 1, "currency": "EUR", "items": [{"sku": "A", "quantity": 2}]}}"#,
            None,
        ))
        .await;
    assert_eq!(first.status, 201, "{}", first.text);
    // The same input written another way: keys reordered, 1.0 for 1, 2e0 for 2.
    let again = app
        .send(start(
            r#"{"input": {"items": [{"quantity": 2e0, "sku": "A"}], "currency": "EUR", "amount": 1.0, "customer_id": "c-1", "order_id": "o-1"}, "key": "ord-1"}"#,
            None,
        ))
        .await;
    assert_eq!((again.status, &again.body["id"]), (200, &first.body["id"]));
    let changed = app
        .send(start(
            r#"{"key": "ord-1", "input": {"order_id": "o-1", "customer_id": "c-1", "amount": 1.5, "currency": "EUR", "items": [{"sku": "A", "quantity": 2}]}}"#,
            None,
        ))
        .await;
    check(&changed, "idempotency-conflict", None, "changed input");

    let input = r#"{"input": {"order_id": "o-2", "customer_id": "c-1", "amount": 1, "currency": "EUR", "items": [{"sku": "A", "quantity": 1}]}}"#;
    let r = app.send(start(input, Some("a b"))).await;
    check(&r, "bad-request", None, "a header key with a space");
    assert!(r.text.contains("a space"), "{}", r.text);
    for body in [
        r#"{"key": "a b", "input": {}}"#,
        r#"{"key": "clé-ü", "input": {}}"#,
        r#"{"key": "", "input": {}}"#,
    ] {
        let r = app.send(start(body, None)).await;
        check(&r, "invalid-body", None, body);
        assert_eq!(r.body["errors"][0]["path"], "/key", "{}", r.text);
    }
}
