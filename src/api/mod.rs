//! The HTTP API. Handlers talk to the runtime (`Applier`) and the store, never to Kafka.
//!
//! Layers, outermost first: security headers → problem bodies for every error → panic
//! catcher → request timeout → cross-site and media-type guard for writes →
//! authentication → body size limit → routes.

pub mod auth;
mod bulk;
pub mod contract;
mod dead_letters;
mod definitions;
pub mod extract;
mod hardening;
mod health;
mod list;
pub mod live;
pub mod model;
pub mod openapi;
mod operator;
mod pinned;
pub mod problem;
mod sagas;
mod search;
pub mod server;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::ApiSettings;
use crate::runtime::supervise::Heartbeat;
use crate::runtime::transition::Applier;

/// Liveness of the background tasks, for `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    pub consumer: Arc<Heartbeat>,
    pub relay: Arc<Heartbeat>,
    pub timers: Arc<Heartbeat>,
}

#[derive(Debug, Clone)]
pub struct AppState {
    pub applier: Applier,
    pub health: Arc<Health>,
    /// Limits and access control (`api:` in the settings).
    pub settings: Arc<ApiSettings>,
    /// Slots for definition validations (`api.max_concurrent_validations`).
    pub validations: Arc<tokio::sync::Semaphore>,
    /// Reloads `sagas/` (absent where nothing can be reloaded, e.g. handler tests).
    pub reloader: Option<Arc<crate::runtime::reload::Reloader>>,
    /// The topics of the AsyncAPI document that are settings, not definitions.
    pub contract_topics: crate::contract::ContractTopics,
    /// Saga changes for the live streams (`/v1/streams/…`).
    pub live: live::LiveFeed,
    /// Group commit for starts (absent in handler tests: each start commits alone).
    pub starts: Option<crate::runtime::start_queue::StartQueue>,
}

impl AppState {
    pub fn new(applier: Applier, health: Arc<Health>, settings: ApiSettings) -> AppState {
        AppState {
            applier,
            health,
            validations: Arc::new(tokio::sync::Semaphore::new(
                settings.max_concurrent_validations.max(1),
            )),
            reloader: None,
            // Half the connections at most, so streams never starve the API.
            live: live::LiveFeed::new(
                settings.max_connections / 2,
                tokio_util::sync::CancellationToken::new(),
            ),
            settings: Arc::new(settings),
            starts: None,
            contract_topics: crate::contract::ContractTopics::of(
                &crate::config::KafkaSettings::default(),
            ),
        }
    }
}

/// The documented routes and the OpenAPI document describing exactly them.
pub fn documented() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(list::list))
        // One path, two meanings by method: see docs/api.md ("Paths") for why.
        .routes(routes!(sagas::start, sagas::get))
        .routes(routes!(sagas::timeline))
        .routes(routes!(live::sagas_stream))
        .routes(routes!(live::saga_stream))
        .routes(routes!(operator::abort))
        .routes(routes!(operator::retry))
        .routes(routes!(operator::terminate))
        .routes(routes!(operator::resolve))
        .routes(routes!(bulk::bulk))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::get))
        .routes(routes!(dead_letters::redrive))
        .routes(routes!(dead_letters::discard))
        .routes(routes!(dead_letters::parked))
        .routes(routes!(dead_letters::requeue))
        .routes(routes!(dead_letters::discard_parked))
        .routes(routes!(definitions::list))
        .routes(routes!(contract::asyncapi))
        .routes(routes!(definitions::validate))
        .routes(routes!(definitions::reload))
        .routes(routes!(definitions::get))
        .routes(routes!(definitions::graph))
        .routes(routes!(pinned::version))
        .routes(routes!(pinned::version_graph))
        .routes(routes!(pinned::saga_graph))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .split_for_parts();
    openapi::Common.modify(&mut doc);
    (router, doc)
}

/// The OpenAPI document (served at /openapi.json, committed as openapi/openapi.yaml).
pub fn openapi_doc() -> utoipa::openapi::OpenApi {
    documented().1
}

pub fn router(state: AppState) -> Router {
    let (routes, doc) = documented();
    let settings = state.settings.clone();
    let auth = Arc::new(auth::Auth::new(&settings.auth, &doc));
    let query_params = Arc::new(extract::QueryParams::new(&doc));
    routes
        // Server spans per route (named by the route template), continuing the caller's
        // traceparent; a route layer, so the routes below make no spans.
        .route_layer(axum::middleware::from_fn(crate::telemetry::http_middleware))
        // Open unless `api.auth.protect_health` (auth::Auth::required knows the path).
        .route(
            "/metrics",
            axum::routing::get(|| async {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    crate::telemetry::metrics::render(),
                )
            }),
        )
        .merge(ui::routes())
        // No validator badge: Swagger UI would send the document to an outside service.
        .merge(
            SwaggerUi::new("/docs")
                .url("/openapi.json", doc)
                .config(utoipa_swagger_ui::Config::default().validator_url("none")),
        )
        .fallback(problem::no_route)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            query_params,
            extract::refuse_unknown_parameters,
        ))
        .layer(axum::middleware::from_fn_with_state(auth, auth::require))
        .layer(axum::middleware::from_fn(hardening::guard_writes))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(hardening::BrowserPolicy {
                open: !settings.auth.enabled,
                allowed_hosts: settings.allowed_hosts.clone(),
            }),
            hardening::guard_hosts,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(settings.request_timeout_ms),
        ))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a request handler panicked");
            problem::Problem::internal().into_response()
        }))
        .layer(axum::middleware::from_fn(problem::problem_bodies))
        .layer(axum::middleware::from_fn(hardening::security_headers))
        .with_state(state)
}
