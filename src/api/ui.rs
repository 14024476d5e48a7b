//! The web console: a page, a script and a style sheet, embedded in the binary and
//! served at /ui. It is written without a framework or a build step (plain ES
//! modules), so the files in `ui/` are what the browser runs, `cargo build` is all a
//! Rust contributor needs, and nothing is fetched from anywhere but this API
//! (docs/ui.md says why).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::AppState;

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

/// The console's routes (not in the OpenAPI document: they are pages, not API).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui/config.json", get(config))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

/// What the console needs from the settings: where to link a saga's trace.
async fn config(State(state): State<AppState>) -> Response {
    axum::Json(serde_json::json!({ "trace_url": state.settings.trace_url })).into_response()
}
