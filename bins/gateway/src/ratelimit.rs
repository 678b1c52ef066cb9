//! Rate limits: a token bucket per client (the token's `sub`) and per
//! route (`governor`'s GCRA, keyed), with the IETF `RateLimit-Policy` and
//! `RateLimit` fields of draft-ietf-httpapi-ratelimit-headers-10 on every
//! proxied response, and a 429 problem with `Retry-After` when the bucket
//! is empty.
//!
//! Before authentication, [`pre_auth_layer`] limits what fails before a
//! principal is known (a bad or missing token, an unknown route or method,
//! a malformed request) per client address ([`crate::client`]; IPv6 by its
//! /64): each such failure takes a token of the address's bucket
//! (`[pre_auth_limit]`); once it is empty the failure is answered 429, and
//! every request from the address is answered 429 at once, before any
//! work, until the bucket has a token again. Successful requests cost it
//! nothing.
//!
//! Every bucket tracks at most `max_clients` keys. When it is full, the
//! clients whose bucket is full again are forgotten (at most once a
//! second); if it is still full, every client takes from one shared
//! overflow bucket until there is room. No number of distinct clients
//! grows memory without bound; under such a flood, clients may be limited
//! together rather than each on its own.
//!
//! For a bucket of `burst` tokens refilled at `per_second`, the policy is
//! `"<route>";q=<burst>;w=<seconds to refill the whole bucket>` and the
//! current state `"<route>";r=<tokens left>;t=<seconds until full again>`
//! (`t` is the wait before the next request is allowed on a 429).

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderName, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    client::{self, ClientIp},
    limiter::{Bucket, ClientKey, Decision, PRE_AUTH},
    principal::{Authenticated, Principal},
    problem::{Code, GatewayError},
    routes::MatchedRoute,
    state::Gateway,
};

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Adds the `RateLimit-Policy` and `RateLimit` fields of `name`'s bucket
/// after `decision`.
fn add_fields(
    response: &mut Response,
    name: &str,
    policy: Option<&HeaderValue>,
    decision: Decision,
) {
    let headers = response.headers_mut();
    if let Some(policy) = policy {
        headers.insert(RATELIMIT_POLICY.clone(), policy.clone());
    }
    if let Ok(state) = HeaderValue::from_str(&Bucket::state_field(name, decision)) {
        headers.insert(RATELIMIT.clone(), state);
    }
}

/// The 429 answer of bucket `name`, to come back after `retry_after`.
fn limited(name: &'static str, retry_after: Duration) -> Response {
    metrics::counter!("gateway_rate_limited_total", "route" => name).increment(1);
    GatewayError::new(Code::RateLimited)
        .retry_after(retry_after)
        .into_response()
}

/// The layer (after authentication): takes a token for the client on the
/// matched route, answers 429 when there is none, and adds the fields.
pub async fn layer(request: Request, next: Next) -> Response {
    let Some(MatchedRoute(route)) = request.extensions().get::<MatchedRoute>().cloned() else {
        return next.run(request).await;
    };
    let client = match request.extensions().get::<Arc<Principal>>() {
        Some(principal) if !principal.sub.is_empty() => {
            ClientKey::Subject(Arc::clone(&principal.sub))
        }
        _ => request
            .extensions()
            .get::<ClientIp>()
            .map_or(ClientKey::Unknown, |c| ClientKey::address(c.ip)),
    };
    let decision = route.bucket.take(&client);
    let mut response = match decision {
        Decision::Allowed { .. } => next.run(request).await,
        Decision::Limited { retry_after } => {
            metrics::counter!("gateway_rate_limited_total", "route" => route.name.clone())
                .increment(1);
            GatewayError::new(Code::RateLimited)
                .retry_after(retry_after)
                .into_response()
        }
    };
    add_fields(
        &mut response,
        &route.name,
        route.policy_field.as_ref(),
        decision,
    );
    response
}

/// Whether `response` is a failure before a principal was known: a 4xx
/// that no authenticated request produced (an upstream's 404 for a known
/// principal is not one).
fn failed_before_auth(response: &Response) -> bool {
    let status = response.status();
    status.is_client_error()
        && status != StatusCode::TOO_MANY_REQUESTS
        && response.extensions().get::<Authenticated>().is_none()
}

/// The layer (outside routing and authentication): resolves the client
/// ([`ClientIp`], put on the request), refuses a blocked address at once,
/// and charges each failure before authentication to its address.
pub async fn pre_auth_layer(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(peer) = request
        .extensions()
        .get::<ConnectInfo<crate::framing::ClientAddr>>()
        .map(|c| c.0.0.ip())
    else {
        // Not served from a socket (router tests): nothing to key on.
        return next.run(request).await;
    };
    let client = client::resolve(
        peer,
        request.headers(),
        &gateway.config.server.trusted_proxies,
    );
    request.extensions_mut().insert(client);
    let limiter = &gateway.pre_auth;
    let key = ClientKey::address(client.ip);
    if let Some(retry_after) = limiter.blocked(&key) {
        let mut response = limited(PRE_AUTH, retry_after);
        add_fields(
            &mut response,
            PRE_AUTH,
            limiter.policy_field.as_ref(),
            Decision::Limited { retry_after },
        );
        return response;
    }
    let mut response = next.run(request).await;
    if !failed_before_auth(&response) {
        return response;
    }
    let decision = limiter.fail(&key);
    if let Decision::Limited { retry_after } = decision {
        tracing::info!(client = %client.ip, "failures before authentication: limited");
        response = limited(PRE_AUTH, retry_after);
    }
    add_fields(
        &mut response,
        PRE_AUTH,
        limiter.policy_field.as_ref(),
        decision,
    );
    response
}
