//! Bearer tokens with scopes. Tokens are configured as SHA-256 hashes: the presented
//! token is hashed and compared with every configured hash in constant time, so
//! neither the config nor the timing of a refusal gives a token away. Tokens are never
//! logged; the token's *name* is, and it is the actor recorded for operator actions.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::problem::{Kind, Problem};
use crate::config::{AuthSettings, Scope};

/// Who made the request: a token's name, or `anonymous` when auth is off.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
}

#[derive(Debug)]
struct Token {
    name: String,
    hash: [u8; 32],
    scopes: Vec<Scope>,
}

#[derive(Debug)]
pub struct Auth {
    enabled: bool,
    protect_health: bool,
    tokens: Vec<Token>,
    routes: HashMap<(Method, String), Need>,
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Auth {
    pub fn new(settings: &AuthSettings, doc: &utoipa::openapi::OpenApi) -> Auth {
        Auth {
            routes: route_needs(doc),
            enabled: settings.enabled,
            protect_health: settings.protect_health,
            // Settings::check has verified the hashes; a bad one could never match anyway.
            tokens: settings
                .tokens
                .iter()
                .filter_map(|t| {
                    Some(Token {
                        name: t.name.clone(),
                        hash: decode_hex(&t.sha256)?,
                        scopes: t.scopes.clone(),
                    })
                })
                .collect(),
        }
    }

    pub fn disabled() -> Auth {
        Auth {
            enabled: false,
            protect_health: false,
            tokens: Vec::new(),
            routes: HashMap::new(),
        }
    }

    /// The configured token matching `presented`. Every configured hash is compared
    /// (no early exit) so the time taken does not depend on which one matched.
    fn lookup(&self, presented: &str) -> Option<&Token> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = 0u32;
        for (i, t) in self.tokens.iter().enumerate() {
            let hit = t.hash.ct_eq(&hash);
            // `i + 1` so 0 means "none"; conditional_assign keeps the loop branch-free.
            found.conditional_assign(&(i as u32 + 1), hit);
        }
        (found as usize)
            .checked_sub(1)
            .and_then(|i| self.tokens.get(i))
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// No token (the OpenAPI document and its viewer).
    Open,
    /// A probe: open unless `api.auth.protect_health`, then a `health` (or `read`) token.
    Probe,
    Scope(Scope),
    /// A documented operation that declares no scope: refused, whatever the token.
    Undeclared,
}

/// Each documented operation's need, read from its `security` in the OpenAPI
/// document: the scope is declared once, with the route, and a route that declares
/// none is refused rather than falling back to some default.
pub fn route_needs(doc: &utoipa::openapi::OpenApi) -> HashMap<(Method, String), Need> {
    let mut needs = HashMap::new();
    let paths = serde_json::to_value(doc).unwrap_or_default();
    let Some(paths) = paths.get("paths").and_then(|p| p.as_object()) else {
        return needs;
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, op) in item {
            let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                continue;
            };
            needs.insert((method, path.clone()), declared_need(op));
        }
    }
    needs
}

fn declared_need(op: &serde_json::Value) -> Need {
    let Some(requirements) = op.get("security").and_then(|s| s.as_array()) else {
        return Need::Undeclared;
    };
    // `security((), ("bearer" = [..]))`: a token is optional, which is what probes are.
    if requirements
        .iter()
        .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
    {
        return Need::Probe;
    }
    requirements
        .iter()
        .filter_map(|r| r.get("bearer")?.as_array()?.first()?.as_str())
        .find_map(|s| serde_json::from_value::<Scope>(serde_json::json!(s)).ok())
        .map_or(Need::Undeclared, Need::Scope)
}

impl Auth {
    /// The need of a request to `path` (a route template when one matched).
    pub fn need(&self, method: &Method, path: &str) -> Need {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        if let Some(need) = self.routes.get(&(method.clone(), path.to_owned())) {
            return *need;
        }
        match path {
            "/openapi.json" => Need::Open,
            p if p == "/docs" || p.starts_with("/docs/") => Need::Open,
            // The console's page and code hold no data; it calls the API with a token.
            p if p == "/ui" || p.starts_with("/ui/") => Need::Open,
            "/metrics" => Need::Probe,
            // Unknown routes need a token too, so they reveal nothing.
            _ => Need::Scope(Scope::Read),
        }
    }
}

fn refuse(status: StatusCode, challenge: &str, problem: Problem) -> Response {
    let mut res = problem.into_response();
    debug_assert_eq!(res.status(), status);
    if let Ok(v) = HeaderValue::from_str(challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// Middleware: authenticates, checks the scope, and leaves a [`Caller`] for handlers.
pub async fn require(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    if !auth.enabled {
        req.extensions_mut().insert(Caller {
            name: "anonymous".into(),
        });
        return next.run(req).await;
    }
    // Unknown routes have no matched path: they need a token too, so they reveal nothing.
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let scope = match auth.need(req.method(), &path) {
        Need::Open => return next.run(req).await,
        Need::Probe if !auth.protect_health => return next.run(req).await,
        Need::Probe => Scope::Health,
        Need::Scope(scope) => scope,
        Need::Undeclared => {
            tracing::error!(%path, "a documented route declares no scope; refused");
            return Problem::of(Kind::Forbidden)
                .detail("this route declares no scope")
                .into_response();
        }
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(presented) = presented else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"sagaflow\"",
            Problem::of(Kind::Unauthorized).detail("send `Authorization: Bearer <token>`"),
        );
    };
    let Some(token) = auth.lookup(presented) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"sagaflow\", error=\"invalid_token\"",
            Problem::of(Kind::Unauthorized).detail("the bearer token is not valid"),
        );
    };
    // A `read` token may also probe; a `health` token may do nothing else.
    let allowed = token.scopes.contains(&scope)
        || (scope == Scope::Health && token.scopes.contains(&Scope::Read));
    if !allowed {
        tracing::info!(token = %token.name, scope = scope.as_str(), %path, "token lacks scope");
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "Bearer realm=\"sagaflow\", error=\"insufficient_scope\", scope=\"{}\"",
                scope.as_str()
            ),
            Problem::of(Kind::Forbidden).detail(format!(
                "token `{}` lacks the `{}` scope",
                token.name,
                scope.as_str()
            )),
        );
    }
    req.extensions_mut().insert(Caller {
        name: token.name.clone(),
    });
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenSettings;

    fn hex(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn lookup_finds_each_of_several_tokens_and_nothing_else() {
        let auth = Auth::new(
            &AuthSettings {
                enabled: true,
                allow_unauthenticated: false,
                protect_health: false,
                tokens: vec![
                    TokenSettings {
                        name: "old".into(),
                        sha256: hex("s1"),
                        scopes: vec![Scope::Read],
                    },
                    TokenSettings {
                        name: "new".into(),
                        sha256: hex("s2"),
                        scopes: vec![Scope::Read],
                    },
                ],
            },
            &crate::api::openapi_doc(),
        );
        assert_eq!(auth.lookup("s1").map(|t| t.name.as_str()), Some("old"));
        assert_eq!(auth.lookup("s2").map(|t| t.name.as_str()), Some("new"));
        assert!(auth.lookup("s3").is_none());
        assert!(auth.lookup("").is_none());
    }
}

#[cfg(test)]
mod needs {
    use super::*;

    #[test]
    fn every_documented_operation_declares_its_scope() {
        let needs = route_needs(&crate::api::openapi_doc());
        assert!(needs.len() >= 13, "{needs:?}");
        for ((method, path), need) in &needs {
            assert_ne!(*need, Need::Undeclared, "{method} {path} declares no scope");
            if method != Method::GET && !path.ends_with("/validate") {
                assert!(
                    matches!(need, Need::Scope(Scope::Write | Scope::Admin)),
                    "{method} {path} changes state with {need:?}"
                );
            }
        }
        let admin = needs.get(&(Method::POST, "/v1/sagas/{saga}/terminate".into()));
        assert_eq!(admin, Some(&Need::Scope(Scope::Admin)));
        let probe = needs.get(&(Method::GET, "/readyz".into()));
        assert_eq!(probe, Some(&Need::Probe));
    }

    #[test]
    fn an_operation_without_security_is_refused_not_defaulted() {
        assert_eq!(
            declared_need(&serde_json::json!({"operationId": "x"})),
            Need::Undeclared
        );
        assert_eq!(
            declared_need(&serde_json::json!({"security": [{"bearer": ["nonsense"]}]})),
            Need::Undeclared
        );
        assert_eq!(
            declared_need(&serde_json::json!({"security": [{"bearer": ["admin"]}]})),
            Need::Scope(Scope::Admin)
        );
    }
}
