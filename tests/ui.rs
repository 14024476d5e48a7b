//! The console's files as served: a page, a script and a style sheet under a CSP that
//! allows nothing from elsewhere, calling only endpoints the API documents. (Its
//! behaviour in a real browser is the subject of the console issue's browser tests.)
#![allow(clippy::unwrap_used)]

mod oneshot;
mod support;

use oneshot::*;

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy() {
    let app = app().await;
    let page = app.call("GET", "/ui/", None, None).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text
            .contains("<script type=\"module\" src=\"/ui/app.js\">")
    );
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe"), "{csp}");
    for (path, ctype) in [
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = app.call("GET", path, None, None).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(ctype),
            "{path}"
        );
    }
    let config = app.call("GET", "/ui/config.json", None, None).await;
    assert_eq!(config.body, serde_json::json!({"trace_url": ""}));
    let bare = app.call("GET", "/ui", None, None).await;
    assert_eq!(
        (bare.status, bare.headers["location"].to_str().unwrap()),
        (308, "/ui/")
    );
}

#[tokio::test]
async fn the_trace_link_template_comes_from_the_settings() {
    let template = "http://localhost:16686/trace/{trace_id}";
    let app = app_with(sagaflow::config::ApiSettings {
        trace_url: template.into(),
        ..Default::default()
    })
    .await;
    let config = app.call("GET", "/ui/config.json", None, None).await;
    assert_eq!(config.body["trace_url"], template);
}

#[test]
fn the_console_loads_nothing_from_elsewhere_and_calls_documented_endpoints() {
    let dir = support::repo_path("ui");
    let doc = serde_json::to_value(sagaflow::api::openapi_doc()).unwrap();
    let paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let url = regex::Regex::new(r"(https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]").unwrap();
    let call = regex::Regex::new(r#"[`"](/v1/[^`"?]*)"#).unwrap();
    let value = regex::Regex::new(r"\$\{[^}]*\}").unwrap();
    let param = regex::Regex::new(r"\{[^}]*\}").unwrap();
    let mut checked = 0;
    for file in ["index.html", "app.js", "app.css"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(
            !url.is_match(&text),
            "{file} refers to another origin: {:?}",
            url.find(&text)
        );
        for c in call.captures_iter(&text) {
            // `${…}` is a value: it matches any one path parameter.
            let used = value.replace_all(&c[1], "{}");
            let used = used.trim_end_matches('/');
            let known = paths.iter().any(|p| {
                let shape = param.replace_all(p, "{}");
                shape == used || shape.starts_with(&format!("{used}/"))
            });
            assert!(
                known,
                "{file} calls {used}, which the OpenAPI document does not describe"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} API calls found");
}
