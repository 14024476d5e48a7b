//! A small client of sagaflow's REST API for the operator CLI. Errors keep the
//! problem+json body the API answered, so the CLI can show its `detail` and pick an
//! exit code from its status.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value as Json;

/// What went wrong talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the API at {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with an error; `problem` is its problem+json body (or the text).
    #[error("{status}: {}", problem_text(.problem))]
    Api { status: StatusCode, problem: Json },
    #[error("the API answered something that is not JSON: {0}")]
    NotJson(String),
    #[error("invalid API URL `{0}`")]
    BadUrl(String),
}

fn problem_text(problem: &Json) -> String {
    let title = problem["title"].as_str().unwrap_or_default();
    match problem["detail"].as_str() {
        Some(detail) if !title.is_empty() => format!("{title}: {detail}"),
        Some(detail) => detail.to_owned(),
        None if !title.is_empty() => title.to_owned(),
        None => problem.to_string(),
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: url::Url,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    // Without the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Result<Client, ClientError> {
        let mut base = url::Url::parse(base).map_err(|_| ClientError::BadUrl(base.to_owned()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::BadUrl(base.to_string()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            // A redirect would turn a POST into a GET and report success for it.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sagaflow-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| ClientError::Unreachable {
                url: base.to_string(),
                source,
            })?;
        Ok(Client { http, base, token })
    }

    /// `path` is relative to the base URL (no leading slash): `v1/sagas`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Json>,
    ) -> Result<Json, ClientError> {
        let url = self
            .base
            .join(path)
            .map_err(|_| ClientError::BadUrl(path.to_owned()))?;
        let mut req = self.http.request(method, url.clone()).query(query);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let unreachable = |source| ClientError::Unreachable {
            url: url.to_string(),
            source,
        };
        let res = req.send().await.map_err(unreachable)?;
        let status = res.status();
        let text = res.text().await.map_err(unreachable)?;
        let json: Option<Json> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            let problem = json.unwrap_or_else(|| serde_json::json!({ "title": text.trim() }));
            return Err(ClientError::Api { status, problem });
        }
        if status == StatusCode::NO_CONTENT {
            return Ok(Json::Null);
        }
        json.ok_or(ClientError::NotJson(text.chars().take(200).collect()))
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Json, ClientError> {
        self.call(Method::GET, path, query, None).await
    }

    pub async fn post(&self, path: &str, body: Option<&Json>) -> Result<Json, ClientError> {
        self.call(Method::POST, path, &[], body).await
    }
}

/// Exit codes a script can rely on (docs/operations.md, "Operator CLI").
pub mod exit {
    /// The API refused the action in the saga's state (409) or the request (400, 422).
    pub const REFUSED: u8 = 1;
    /// Bad command line or configuration.
    pub const USAGE: u8 = 2;
    /// No such saga, step or definition (404).
    pub const NOT_FOUND: u8 = 3;
    /// Missing, invalid or insufficient token (401, 403).
    pub const DENIED: u8 = 4;
    /// The API could not be reached, or failed (5xx).
    pub const UNAVAILABLE: u8 = 5;
    /// A bulk action was refused for some of the sagas it matched.
    pub const PARTIAL: u8 = 6;
}

impl ClientError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } | ClientError::NotJson(_) => exit::UNAVAILABLE,
            ClientError::BadUrl(_) => exit::USAGE,
            ClientError::Api { status, .. } => match status.as_u16() {
                404 => exit::NOT_FOUND,
                401 | 403 => exit::DENIED,
                400..=499 => exit::REFUSED,
                _ => exit::UNAVAILABLE,
            },
        }
    }
}
