//! Rate limits: a token bucket per client (the token's `sub`, else the
//! client IP) and per route (`governor`'s GCRA, keyed), with the IETF
//! `RateLimit-Policy` and `RateLimit` fields of
//! draft-ietf-httpapi-ratelimit-headers-10 on every proxied response, and a
//! 429 problem with `Retry-After` when the bucket is empty.
//!
//! For a bucket of `burst` tokens refilled at `per_second`, the policy is
//! `"<route>";q=<burst>;w=<seconds to refill the whole bucket>` and the
//! current state `"<route>";r=<tokens left>;t=<seconds until full again>`
//! (`t` is the wait before the next request is allowed on a 429).

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use axum::{
    extract::{ConnectInfo, Request},
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};

use crate::{
    auth::Principal,
    config::RateLimitConfig,
    problem::{Code, GatewayError},
    routing::MatchedRoute,
};

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whose bucket: the token's subject, else the client's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The `sub` claim.
    Subject(Arc<str>),
    /// The client IP.
    Address(std::net::IpAddr),
    /// Neither known.
    Unknown,
}

type Limiter = RateLimiter<
    ClientKey,
    DefaultKeyedStateStore<ClientKey>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// One route's buckets, one per client.
#[derive(Clone)]
pub struct Bucket {
    /// The keyed limiter.
    limiter: Arc<Limiter>,
    /// The configuration (for the header fields).
    config: RateLimitConfig,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The outcome of taking a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; this many tokens are left, the bucket is full again after
    /// `full_in`.
    Allowed {
        /// Tokens left.
        remaining: u32,
        /// Until the bucket is full again.
        full_in: Duration,
    },
    /// Refused; the next token comes after `retry_after`.
    Limited {
        /// The wait.
        retry_after: Duration,
    },
}

impl Bucket {
    /// Buckets of `config` (values checked by the configuration).
    pub fn new(config: RateLimitConfig) -> Self {
        let per_second = config.per_second.max(1);
        let burst = NonZeroU32::new(config.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_secs_f64(1.0 / f64::from(per_second)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            limiter: Arc::new(RateLimiter::keyed(quota).with_middleware()),
            config,
        }
    }

    /// Takes a token from `client`'s bucket.
    pub fn take(&self, client: &ClientKey) -> Decision {
        match self.limiter.check_key(client) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let missing = self.config.burst.saturating_sub(remaining);
                Decision::Allowed {
                    remaining,
                    full_in: Duration::from_secs_f64(
                        f64::from(missing) / f64::from(self.config.per_second.max(1)),
                    ),
                }
            }
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(self.limiter.clock().now()),
            },
        }
    }

    /// Forgets clients whose bucket is full again (call periodically).
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// The `RateLimit-Policy` value for route `name`.
    pub fn policy_field(&self, name: &str) -> String {
        let window = f64::from(self.config.burst) / f64::from(self.config.per_second.max(1));
        format!(
            "\"{name}\";q={};w={}",
            self.config.burst,
            (window.ceil() as u64).max(1)
        )
    }

    /// The `RateLimit` value for route `name` after `decision`.
    pub fn state_field(name: &str, decision: Decision) -> String {
        let (remaining, reset) = match decision {
            Decision::Allowed { remaining, full_in } => (remaining, full_in),
            Decision::Limited { retry_after } => (0, retry_after),
        };
        format!("\"{name}\";r={remaining};t={}", ceil_secs(reset))
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
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
            .get::<ConnectInfo<crate::framing::ClientAddr>>()
            .map_or(ClientKey::Unknown, |c| ClientKey::Address(c.0.0.ip())),
    };
    let decision = route.bucket.take(&client);
    let policy = route.policy_field.clone();
    let state = HeaderValue::from_str(&Bucket::state_field(&route.name, decision)).ok();
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
    let headers = response.headers_mut();
    if let Some(policy) = policy {
        headers.insert(RATELIMIT_POLICY.clone(), policy);
    }
    if let Some(state) = state {
        headers.insert(RATELIMIT.clone(), state);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_and_fields() {
        let bucket = Bucket::new(RateLimitConfig {
            per_second: 1,
            burst: 3,
        });
        assert_eq!(bucket.policy_field("stores"), "\"stores\";q=3;w=3");
        let a = ClientKey::Subject("a".into());
        let first = bucket.take(&a);
        assert!(
            matches!(first, Decision::Allowed { remaining: 2, .. }),
            "{first:?}"
        );
        assert_eq!(Bucket::state_field("stores", first), "\"stores\";r=2;t=1");
        assert!(matches!(
            bucket.take(&a),
            Decision::Allowed { remaining: 1, .. }
        ));
        assert!(matches!(
            bucket.take(&a),
            Decision::Allowed { remaining: 0, .. }
        ));
        let limited = bucket.take(&a);
        let Decision::Limited { retry_after } = limited else {
            panic!("{limited:?}");
        };
        assert!(retry_after <= Duration::from_secs(1));
        assert!(Bucket::state_field("stores", limited).starts_with("\"stores\";r=0;t="));
        // Another client has its own bucket.
        assert!(matches!(
            bucket.take(&ClientKey::Subject("b".into())),
            Decision::Allowed { remaining: 2, .. }
        ));
    }
}
