//! The token buckets the rate limits take from (the layers are in
//! `ratelimit`): a [`Bucket`] per route keyed by [`ClientKey`] (`governor`'s
//! GCRA), and the [`PreAuthLimiter`] of failures before authentication per
//! client address. Both are bounded: at most `max_clients` keys each.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use axum::http::HeaderValue;
use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};

use crate::{client, config::RateLimitConfig};

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

pub(crate) fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
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
    pub(crate) policy_field: Option<HeaderValue>,
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
    pub(crate) fn blocked(&self, client: &ClientKey) -> Option<Duration> {
        let until = self.blocked.get(client)?;
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Counts one failure of `client`.
    pub(crate) fn fail(&self, client: &ClientKey) -> Decision {
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
