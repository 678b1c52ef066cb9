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

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderName, HeaderValue, StatusCode},
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
    auth::{Authenticated, Principal},
    client::{self, ClientIp},
    config::RateLimitConfig,
    problem::{Code, GatewayError},
    routing::MatchedRoute,
    state::Gateway,
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
    /// The client IP (an IPv6 address by its /64: one host holds a whole
    /// /64, so its single addresses are not distinct clients).
    Address(std::net::IpAddr),
    /// Neither known, or the bucket tracks `max_clients` already: one
    /// shared bucket.
    Unknown,
}

impl ClientKey {
    /// The key of the client at `ip`.
    pub fn address(ip: std::net::IpAddr) -> Self {
        match client::canonical(ip) {
            std::net::IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1_u128 << 64) - 1);
                Self::Address(std::net::Ipv6Addr::from(prefix).into())
            }
            v4 => Self::Address(v4),
        }
    }
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
    /// When the bucket was made (the clock's origin for sweeps).
    created: tokio::time::Instant,
    /// When idle clients were last forgotten because the bucket was full
    /// (ms after `created`).
    last_sweep_ms: Arc<std::sync::atomic::AtomicU64>,
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
        let limiter: Limiter = RateLimiter::keyed(quota).with_middleware();
        Self {
            created: tokio::time::Instant::now(),
            limiter: Arc::new(limiter),
            config,
            last_sweep_ms: Arc::default(),
        }
    }

    /// Takes a token from `client`'s bucket (the shared overflow bucket
    /// when `max_clients` keys are tracked already).
    pub fn take(&self, client: &ClientKey) -> Decision {
        let full = || self.limiter.len() >= self.config.max_clients as usize;
        let client = if full() && (!self.sweep_now() || full()) {
            &ClientKey::Unknown
        } else {
            client
        };
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

    /// Forgets idle clients now unless that was done less than a second
    /// ago; returns whether it did.
    fn sweep_now(&self) -> bool {
        let now_ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self
            .last_sweep_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if now_ms < last.saturating_add(1000)
            || self
                .last_sweep_ms
                .compare_exchange(
                    last,
                    now_ms,
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                )
                .is_err()
        {
            return false;
        }
        self.limiter.retain_recent();
        true
    }

    /// Clients tracked now.
    pub fn clients(&self) -> usize {
        self.limiter.len()
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

/// The name of the limit before authentication (its `RateLimit` fields and
/// `gateway_rate_limited_total`'s `route` label).
pub const PRE_AUTH: &str = "unauthenticated";

/// The limit before authentication: a bucket of failures per client
/// address, and the addresses whose bucket is empty now (answered 429
/// before any work).
pub struct PreAuthLimiter {
    /// Failures per address.
    bucket: Bucket,
    /// Addresses refused until the instant, bounded like the bucket.
    blocked: moka::sync::Cache<ClientKey, tokio::time::Instant>,
    /// The `RateLimit-Policy` field.
    policy_field: Option<HeaderValue>,
}

impl std::fmt::Debug for PreAuthLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counts only: the addresses are many and are clients' data.
        f.debug_struct("PreAuthLimiter")
            .field("bucket", &self.bucket)
            .field("clients", &self.clients())
            .field("blocked", &self.blocked.entry_count())
            .finish()
    }
}

impl PreAuthLimiter {
    /// The limiter of `config`.
    pub fn new(config: RateLimitConfig) -> Self {
        let bucket = Bucket::new(config);
        let policy_field = HeaderValue::from_str(&bucket.policy_field(PRE_AUTH)).ok();
        // An address stays blocked for one token's time at most; a minute
        // bounds any entry's life whatever the configuration.
        let blocked = moka::sync::Cache::builder()
            .max_capacity(u64::from(config.max_clients))
            .time_to_live(Duration::from_secs(60))
            .build();
        Self {
            bucket,
            blocked,
            policy_field,
        }
    }

    /// How long `client` is still refused, if it is.
    fn blocked(&self, client: &ClientKey) -> Option<Duration> {
        let until = self.blocked.get(client)?;
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Counts one failure of `client`.
    fn fail(&self, client: &ClientKey) -> Decision {
        let decision = self.bucket.take(client);
        if let Decision::Limited { retry_after } = decision {
            self.blocked
                .insert(client.clone(), tokio::time::Instant::now() + retry_after);
        }
        decision
    }

    /// Forgets addresses whose bucket is full again (call periodically).
    pub fn forget_idle(&self) {
        self.bucket.forget_idle();
        self.blocked.run_pending_tasks();
    }

    /// Addresses tracked now.
    pub fn clients(&self) -> usize {
        self.bucket.clients()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_and_fields() {
        let bucket = Bucket::new(RateLimitConfig {
            per_second: 1,
            burst: 3,
            max_clients: 2,
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
        // Past `max_clients`, new clients share one bucket: memory stays
        // bounded whatever the number of keys.
        for i in 0..1000 {
            bucket.take(&ClientKey::Subject(format!("c{i}").into()));
        }
        assert_eq!(bucket.clients(), 3, "a, b and the shared overflow bucket");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: std::net::IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::address(a), ClientKey::address(b));
        assert_ne!(ClientKey::address(a), ClientKey::address(c));
        let v4: std::net::IpAddr = [192, 0, 2, 1].into();
        assert_eq!(ClientKey::address(v4), ClientKey::Address(v4));
        let mapped: std::net::IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(ClientKey::address(mapped), ClientKey::Address(v4));
    }
}
