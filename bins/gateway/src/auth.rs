//! Authentication and scopes: every proxied request needs
//! `Authorization: Bearer <JWT>` verified against the security service's
//! keys ([`KeyStore`]): signature with the algorithm of the key named by
//! `kid` (so `alg: none` and algorithm confusion such as HS256 signed with
//! a public key are refused), `exp`, `nbf`, `iss`, `aud`. Scopes come from
//! the `scope` claim (space separated). Without fresh keys the request
//! fails closed (503 `SECURITY_SERVICE_UNAVAILABLE`) before its token is
//! even read.
//!
//! Every token needs a `sub` (RFC 9068 §2.2) that is a valid
//! [`store_domain::Actor`]: the subject owns its idempotency keys and its
//! queued writes, and is forwarded upstream as the actor of its changes.
//! Responses to authenticated requests carry the [`Authenticated`]
//! extension, so that the limit before authentication charges only what
//! failed before a principal was known.

use std::{collections::HashSet, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use jsonwebtoken::{Validation, errors::ErrorKind};

use crate::{
    jwks::{KeyError, KeyStore},
    problem::{Code, GatewayError},
    routing::MatchedRoute,
    state::Gateway,
};

/// The authenticated caller (request extension, as `Arc<Principal>`).
/// Holds no token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The `sub` claim (never empty).
    pub sub: Arc<str>,
    /// The subject as the value of [`store_domain::ACTOR_HEADER`].
    pub actor_header: HeaderValue,
    /// The granted scopes.
    pub scopes: HashSet<String>,
}

impl Principal {
    /// The principal of subject `sub` with `scopes`, or `None` when `sub`
    /// is not a valid actor (empty, too long, control characters).
    pub fn new(sub: &str, scopes: HashSet<String>) -> Option<Self> {
        let actor = store_domain::Actor::new(sub).ok()?;
        let actor_header = HeaderValue::from_str(&actor.to_header_value()).ok()?;
        Some(Self {
            sub: sub.into(),
            actor_header,
            scopes,
        })
    }
}

/// On a response: the request was authenticated (whatever came after).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Authenticated;

/// Why a request was not authenticated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("no bearer token")]
    Missing,
    /// The token does not verify (the reason is a fixed text, never input).
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// The token's `exp` is past.
    #[error("the token has expired")]
    Expired,
    /// No fresh signing keys: fail closed (retryable).
    #[error("security service unavailable")]
    Unavailable {
        /// When to try again.
        retry_after: Duration,
    },
}

impl AuthError {
    /// The `reason` label of `gateway_auth_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid(reason) => reason,
            Self::Expired => "expired",
            Self::Unavailable { .. } => "security_unavailable",
        }
    }

    /// Whether retrying the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// The response: 401 with `WWW-Authenticate`, or the fail-closed 503.
    pub fn to_error(&self) -> GatewayError {
        match self {
            Self::Unavailable { retry_after } => {
                GatewayError::new(Code::SecurityServiceUnavailable).retry_after(*retry_after)
            }
            other => {
                let description = match other {
                    Self::Missing => "no bearer token",
                    Self::Expired => "the token has expired",
                    Self::Invalid(reason) => reason,
                    Self::Unavailable { .. } => "",
                };
                let challenge = format!(
                    "Bearer realm=\"gateway\", error=\"invalid_token\", error_description=\"{description}\""
                );
                GatewayError::new(Code::Unauthorized).header(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_str(&challenge)
                        .unwrap_or(HeaderValue::from_static("Bearer realm=\"gateway\"")),
                )
            }
        }
    }
}

/// The claims the gateway reads (the rest are checked by `jsonwebtoken`).
#[derive(serde::Deserialize)]
struct Claims {
    /// Expiry (seconds since the epoch; required and checked by
    /// `jsonwebtoken`, kept for the cache).
    exp: u64,
    /// Not before, if any.
    #[serde(default)]
    nbf: Option<u64>,
    /// The subject.
    #[serde(default)]
    sub: Option<String>,
    /// Space-separated scopes.
    #[serde(default)]
    scope: Option<String>,
}

/// The most tokens the verification cache holds (it is emptied when full).
const CACHE_CAPACITY: usize = 10_000;

/// A token that verified: who it is, and the checks a cache hit repeats.
struct Verified {
    /// The caller.
    principal: Arc<Principal>,
    /// When the key set that verified it was fetched: a hit counts only
    /// while that same key set is current.
    keys_fetched_at: tokio::time::Instant,
    /// `exp`.
    exp: u64,
    /// `nbf`.
    nbf: Option<u64>,
}

/// Verified tokens by their exact text, so a signature is checked once per
/// token and key set, not once per request. A token that differs in any
/// byte is a miss; `exp`/`nbf` are checked again on every hit.
#[derive(Default)]
struct VerifiedCache(std::sync::RwLock<std::collections::HashMap<Box<str>, Arc<Verified>>>);

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.0.read().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("VerifiedCache")
            .field("entries", &len)
            .finish()
    }
}

/// Seconds since the epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies tokens.
#[derive(Clone, Debug)]
pub struct Verifier {
    /// Tokens already verified.
    cache: Arc<VerifiedCache>,
    /// The keys.
    keys: KeyStore,
    /// The expected `iss`.
    issuer: String,
    /// The accepted `aud`s.
    audiences: Vec<String>,
    /// Clock skew on `exp`/`nbf`.
    leeway: Duration,
}

impl Verifier {
    /// A verifier with `keys`.
    pub fn new(keys: KeyStore, issuer: String, audiences: Vec<String>, leeway: Duration) -> Self {
        Self {
            cache: Arc::default(),
            keys,
            issuer,
            audiences,
            leeway,
        }
    }

    /// The key store.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Authenticates the value of an `Authorization` header (fail closed
    /// first: without fresh keys nothing else is looked at).
    pub async fn authenticate(
        &self,
        authorization: Option<&HeaderValue>,
    ) -> Result<Arc<Principal>, AuthError> {
        let unavailable = |e: KeyError| match e {
            KeyError::Unavailable { retry_after } => AuthError::Unavailable { retry_after },
            KeyError::UnknownKid => AuthError::Invalid("unknown key id"),
        };
        let keys = self.keys.fresh().map_err(unavailable)?;
        let token = bearer(authorization).ok_or(AuthError::Missing)?;
        let hit = self
            .cache
            .0
            .read()
            .ok()
            .and_then(|cache| cache.get(token).cloned());
        if let Some(verified) = hit.filter(|v| v.keys_fetched_at == keys.fetched_at) {
            let (now, leeway) = (now_secs(), self.leeway.as_secs());
            if verified.exp < now.saturating_sub(leeway) {
                return Err(AuthError::Expired);
            }
            if verified.nbf.is_some_and(|nbf| nbf > now + leeway) {
                return Err(AuthError::Invalid("the token is not valid yet"));
            }
            return Ok(Arc::clone(&verified.principal));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::Invalid("malformed token or unsupported algorithm"))?;
        let kid = header
            .kid
            .as_deref()
            .ok_or(AuthError::Invalid("no key id"))?;
        let key = self.keys.key(kid).await.map_err(unavailable)?;
        if header.alg != key.algorithm {
            return Err(AuthError::Invalid("algorithm does not match the key"));
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway.as_secs();
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            AuthError::Invalid(match e.kind() {
                ErrorKind::ExpiredSignature => return AuthError::Expired,
                ErrorKind::ImmatureSignature => "the token is not valid yet",
                ErrorKind::InvalidIssuer => "wrong issuer",
                ErrorKind::InvalidAudience => "wrong audience",
                ErrorKind::InvalidSignature => "bad signature",
                ErrorKind::InvalidAlgorithm => "algorithm does not match the key",
                ErrorKind::MissingRequiredClaim(_) => "a required claim is missing",
                _ => "malformed token",
            })
        })?;
        let scopes = data
            .claims
            .scope
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let principal = Principal::new(data.claims.sub.as_deref().unwrap_or_default(), scopes)
            .map(Arc::new)
            .ok_or(AuthError::Invalid("no usable subject (sub)"))?;
        if let Ok(mut cache) = self.cache.0.write() {
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
            cache.insert(
                token.into(),
                Arc::new(Verified {
                    principal: Arc::clone(&principal),
                    keys_fetched_at: keys.fetched_at,
                    exp: data.claims.exp,
                    nbf: data.claims.nbf,
                }),
            );
        }
        Ok(principal)
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(value: Option<&HeaderValue>) -> Option<&str> {
    let value = value?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Authenticates the request with `headers`: its principal, or the
/// refusal to answer with (401, or the fail-closed 503), counted and
/// logged.
pub async fn authenticate(
    gateway: &Gateway,
    headers: &HeaderMap,
) -> Result<Arc<Principal>, Response> {
    gateway
        .verifier
        .authenticate(headers.get(header::AUTHORIZATION))
        .await
        .map_err(|error| {
            metrics::counter!("gateway_auth_failures_total", "reason" => error.reason())
                .increment(1);
            if error.is_retryable() {
                tracing::warn!("request denied: security service unavailable (fail closed)");
            } else {
                tracing::info!(reason = error.reason(), "request not authenticated");
            }
            error.to_error().into_response()
        })
}

/// The layer: authenticates, checks the route's scopes for the method and
/// path (403 `insufficient_scope`), and puts the [`Principal`] on the
/// request.
pub async fn layer(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let Some(MatchedRoute(route)) = request.extensions().get::<MatchedRoute>().cloned() else {
        return next.run(request).await;
    };
    let principal = match authenticate(&gateway, request.headers()).await {
        Ok(principal) => principal,
        Err(refused) => return refused,
    };
    let mut response = authorized(&route, principal, request, next).await;
    response.extensions_mut().insert(Authenticated);
    response
}

/// Checks the scopes `principal` needs on `route`, then runs the rest.
async fn authorized(
    route: &crate::routing::Route,
    principal: Arc<Principal>,
    mut request: Request,
    next: Next,
) -> Response {
    let required = route
        .required_scopes(request.method(), request.uri().path())
        .unwrap_or_default();
    if !required.iter().all(|s| principal.scopes.contains(s)) {
        metrics::counter!("gateway_auth_failures_total", "reason" => "insufficient_scope")
            .increment(1);
        let challenge = format!(
            "Bearer realm=\"gateway\", error=\"insufficient_scope\", scope=\"{}\"",
            required.join(" ")
        );
        return GatewayError::new(Code::InsufficientScope)
            .header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static(
                    "Bearer error=\"insufficient_scope\"",
                )),
            )
            .into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer(Some(&v("Bearer abc"))), Some("abc"));
        assert_eq!(bearer(Some(&v("bearer  abc "))), Some("abc"));
        assert_eq!(bearer(Some(&v("Basic abc"))), None);
        assert_eq!(bearer(Some(&v("Bearer"))), None);
        assert_eq!(bearer(Some(&v("Bearer "))), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn challenges() {
        let expired = AuthError::Expired.to_error().to_response("r", "/p");
        assert_eq!(expired.status(), 401);
        assert_eq!(
            expired.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"gateway\", error=\"invalid_token\", error_description=\"the token has expired\""
        );
        let closed = AuthError::Unavailable {
            retry_after: Duration::from_secs(5),
        }
        .to_error()
        .to_response("r", "/p");
        assert_eq!(closed.status(), 503);
        assert_eq!(closed.headers()[header::RETRY_AFTER], "5");
    }
}
