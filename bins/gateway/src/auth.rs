//! Authentication and scopes: every proxied request needs
//! `Authorization: Bearer <JWT>`, verified by [`jwt_verify`] against the
//! security service's keys: signature with the algorithm of the key named
//! by `kid` (so `alg: none` and algorithm confusion such as HS256 signed
//! with a public key are refused), `exp`, `nbf`, `iss`, `aud`. Scopes come
//! from the `scope` claim (space separated). Without fresh keys the request
//! fails closed (503 `SECURITY_SERVICE_UNAVAILABLE`) before its token is
//! even read. The key store's events become the fail-closed alert and the
//! `gateway_jwks_fetches_total` count ([`observer`]).
//!
//! Every token needs a `sub` (RFC 9068 §2.2) that is a valid
//! [`store_domain::Actor`]: the subject owns its idempotency keys and its
//! queued writes, and is forwarded upstream as the actor of its changes.
//! Responses to authenticated requests carry the [`Authenticated`]
//! extension, so that the limit before authentication charges only what
//! failed before a principal was known.

use std::sync::Arc;

use axum::{
    extract::{FromRef, Request, State},
    http::{HeaderMap, HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use jwt_verify::Event;

use crate::{
    alerts::{Alert, Alerts},
    principal::{AuthError, Authenticated, Principal, Verifier},
    problem::{Code, GatewayError},
    routes::{MatchedRoute, Route},
    state::Gateway,
};

/// What the authentication layer reads: the verifier (with its key store).
#[derive(Clone, Debug)]
pub struct Authenticating(pub Arc<Verifier>);

impl FromRef<Arc<Gateway>> for Authenticating {
    fn from_ref(gateway: &Arc<Gateway>) -> Self {
        Self(Arc::clone(&gateway.verifier))
    }
}

/// The key store's observer: no usable keys raises
/// [`Alert::SecurityFailClosed`], a successful fetch resolves it; fetches
/// are counted in `gateway_jwks_fetches_total{outcome}`.
pub fn observer(alerts: Alerts) -> impl Fn(&Event<'_>) + Send + Sync + 'static {
    move |event| match event {
        Event::KeysUnavailable => {
            alerts.raise(&Alert::SecurityFailClosed);
        }
        Event::KeysRefreshed { .. } => {
            metrics::counter!("gateway_jwks_fetches_total", "outcome" => "success").increment(1);
            alerts.resolve(&Alert::SecurityFailClosed);
        }
        Event::FetchFailed { .. } => {
            metrics::counter!("gateway_jwks_fetches_total", "outcome" => "failure").increment(1);
        }
        _ => {}
    }
}

/// The response to a refusal: 401 with `WWW-Authenticate`, or the
/// fail-closed 503 with `Retry-After`.
pub fn refusal(error: &AuthError) -> GatewayError {
    if let AuthError::Unavailable { retry_after } = error {
        return GatewayError::new(Code::SecurityServiceUnavailable).retry_after(*retry_after);
    }
    let challenge = format!(
        "Bearer realm=\"gateway\", error=\"invalid_token\", error_description=\"{}\"",
        error.description()
    );
    GatewayError::new(Code::Unauthorized).header(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_str(&challenge)
            .unwrap_or(HeaderValue::from_static("Bearer realm=\"gateway\"")),
    )
}

/// Authenticates the request with `headers`: its principal, or the
/// refusal to answer with (401, or the fail-closed 503), counted and
/// logged.
pub async fn authenticate(
    verifier: &Verifier,
    headers: &HeaderMap,
) -> Result<Arc<Principal>, Response> {
    verifier
        .authenticate(
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
        )
        .await
        .map_err(|error| {
            metrics::counter!("gateway_auth_failures_total", "reason" => error.reason())
                .increment(1);
            if error.is_retryable() {
                tracing::warn!("request denied: security service unavailable (fail closed)");
            } else {
                tracing::info!(reason = error.reason(), "request not authenticated");
            }
            refusal(&error).into_response()
        })
}

/// The layer: authenticates, checks the route's scopes for the method and
/// path (403 `insufficient_scope`), and puts the [`Principal`] on the
/// request.
pub async fn layer(
    State(Authenticating(verifier)): State<Authenticating>,
    request: Request,
    next: Next,
) -> Response {
    let Some(MatchedRoute(route)) = request.extensions().get::<MatchedRoute>().cloned() else {
        return next.run(request).await;
    };
    let principal = match authenticate(&verifier, request.headers()).await {
        Ok(principal) => principal,
        Err(refused) => return refused,
    };
    let mut response = authorized(&route, principal, request, next).await;
    response.extensions_mut().insert(Authenticated);
    response
}

/// Checks the scopes `principal` needs on `route`, then runs the rest.
async fn authorized(
    route: &Route,
    principal: Arc<Principal>,
    mut request: Request,
    next: Next,
) -> Response {
    let required = route
        .required_scopes(request.method(), request.uri().path())
        .unwrap_or_default();
    if !principal.scopes.contains_all(required) {
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
    use std::time::Duration;

    use super::*;

    #[test]
    fn challenges() {
        let expired = refusal(&AuthError::Expired).to_response("r", "/p");
        assert_eq!(expired.status(), 401);
        assert_eq!(
            expired.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"gateway\", error=\"invalid_token\", error_description=\"the token has expired\""
        );
        let closed = refusal(&AuthError::Unavailable {
            retry_after: Duration::from_secs(5),
        })
        .to_response("r", "/p");
        assert_eq!(closed.status(), 503);
        assert_eq!(closed.headers()[header::RETRY_AFTER], "5");
    }
}
