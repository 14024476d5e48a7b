//! Bearer tokens with scopes. Tokens are configured as SHA-256 hashes: the presented
//! token is hashed and compared with every configured hash in constant time, so
//! neither the config nor the timing of a refusal gives a token away. Tokens are never
//! logged; the token's *name* is, and it is the actor recorded for operator actions.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::problem::Problem;
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
    pub fn new(settings: &AuthSettings) -> Auth {
        Auth {
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

    /// The scope a request needs, or `None` for open endpoints.
    fn required(&self, method: &Method, path: &str) -> Option<Scope> {
        match path {
            "/openapi.json" => return None,
            "/healthz" | "/readyz" | "/metrics" => {
                return self.protect_health.then_some(Scope::Health);
            }
            p if p == "/docs" || p.starts_with("/docs/") => return None,
            _ => {}
        }
        if method == Method::GET || method == Method::HEAD {
            return Some(Scope::Read);
        }
        Some(match path {
            "/v1/sagas/{saga}" => Scope::Write,
            "/v1/sagas/{saga}/abort" | "/v1/sagas/{saga}/retry" => Scope::Admin,
            // Validation changes nothing: CI jobs holding only `read` may use it.
            _ => Scope::Read,
        })
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
    let Some(scope) = auth.required(req.method(), &path) else {
        return next.run(req).await;
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
            Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
                .detail("send `Authorization: Bearer <token>`"),
        );
    };
    let Some(token) = auth.lookup(presented) else {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "Bearer realm=\"sagaflow\", error=\"invalid_token\"",
            Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
                .detail("the bearer token is not valid"),
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
            Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden").detail(format!(
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
        let auth = Auth::new(&AuthSettings {
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
        });
        assert_eq!(auth.lookup("s1").map(|t| t.name.as_str()), Some("old"));
        assert_eq!(auth.lookup("s2").map(|t| t.name.as_str()), Some("new"));
        assert!(auth.lookup("s3").is_none());
        assert!(auth.lookup("").is_none());
    }
}
