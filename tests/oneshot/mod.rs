//! Shared by the handler tests: the router over a fresh database with `sagas/`
//! loaded, driven with `Router::oneshot`. Every error response is checked to be
//! problem+json with a matching `status`.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use crate::support::{TestDb, repo_path};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, header};
use sagaflow::api::{self, AppState, Health};
use sagaflow::config::{ApiSettings, Scope, TokenSettings};
use sagaflow::definition;
use sagaflow::runtime::registry::Registry;
use sagaflow::runtime::transition::{Applier, TransitionSettings};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

pub struct App {
    pub router: Router,
    pub db: TestDb,
}

pub fn token(name: &str, secret: &str, scopes: &[Scope]) -> TokenSettings {
    let sha256 = Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    TokenSettings {
        name: name.into(),
        sha256,
        scopes: scopes.to_vec(),
    }
}

/// An applier over `db`, with the definitions in `sagas/` loaded and persisted.
pub async fn applier(db: &TestDb) -> Applier {
    let store = db.store().await;
    let (defs, diags) = definition::load_dir(&repo_path("sagas"));
    assert!(diags.is_empty(), "{diags:?}");
    let registry = Arc::new(Registry::new(defs));
    registry.persist(&store).await.unwrap();
    Applier {
        store,
        registry,
        settings: Arc::new(TransitionSettings {
            lifecycle_topic: None,
            source: "/test".into(),
            reply_keys: Arc::new(
                sagaflow::messaging::reply_token::ReplyKeys::new(
                    vec![sagaflow::messaging::reply_token::ReplyKeys::random_key()],
                    true,
                )
                .expect("a random key is long enough"),
            ),
            lifecycle_input: false,
            lifecycle_steps: true,
        }),
    }
}

pub async fn app_with(settings: ApiSettings) -> App {
    let db = TestDb::new().await;
    let applier = applier(&db).await;
    let router = api::router(AppState::new(
        applier,
        Arc::new(Health::default()),
        settings,
    ));
    App { router, db }
}

pub async fn app() -> App {
    app_with(ApiSettings::default()).await
}

pub struct Reply {
    pub status: u16,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl App {
    pub async fn send(&self, req: Request<Body>) -> Reply {
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status >= 400 {
            let ctype = headers.get(header::CONTENT_TYPE).unwrap().to_str().unwrap();
            assert_eq!(ctype, "application/problem+json", "{status} {text}");
            assert_eq!(body["status"], status, "{text}");
        }
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<Value>,
        auth: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = auth {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    pub async fn start(&self, def: &str, input: Value) -> Reply {
        self.call(
            "POST",
            &format!("/v1/sagas/{def}"),
            Some(json!({ "input": input })),
            None,
        )
        .await
    }
}

pub fn order(id: &str) -> Value {
    json!({"order_id": id, "customer_id": "c-1", "amount": 10, "currency": "EUR",
           "items": [{"sku": "A", "quantity": 1}]})
}
