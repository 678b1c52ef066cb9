//! [`Config`]: where the keys are, what a token must say, how old keys may
//! get, how often they are fetched.

use std::time::Duration;

use breaker::{Policy, Preset};

/// What a [`Verifier`](crate::Verifier) needs. Build it with
/// [`Config::new`], then change the fields whose defaults do not fit.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The JWKS URL (the security service's published keys).
    pub jwks_url: String,
    /// The expected `iss`.
    pub issuer: String,
    /// The accepted `aud` values (a token needs one of them).
    pub audiences: Vec<String>,
    /// Keys older than this are not trusted: verification fails closed.
    /// Default 60 s.
    pub max_age: Duration,
    /// How often [`KeyStore::spawn_refresher`](crate::KeyStore::spawn_refresher)
    /// fetches the keys. Default 20 s.
    pub refresh_interval: Duration,
    /// At most one refresh for an unknown `kid` per this interval.
    /// Default 10 s.
    pub unknown_kid_interval: Duration,
    /// Timeout of one JWKS fetch. Default 5 s.
    pub fetch_timeout: Duration,
    /// Clock skew allowed on `exp` and `nbf`. Default 5 s.
    pub leeway: Duration,
    /// The name of the breaker around the fetches. Default `security`.
    pub breaker_name: String,
    /// The breaker's policy. Default [`Preset::SecurityService`].
    pub breaker: Policy,
}

impl Config {
    /// The configuration for keys at `jwks_url` and tokens from `issuer`
    /// for one of `audiences`, with the default ages and intervals.
    pub fn new(
        jwks_url: impl Into<String>,
        issuer: impl Into<String>,
        audiences: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            jwks_url: jwks_url.into(),
            issuer: issuer.into(),
            audiences: audiences.into_iter().map(Into::into).collect(),
            max_age: Duration::from_secs(60),
            refresh_interval: Duration::from_secs(20),
            unknown_kid_interval: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(5),
            leeway: Duration::from_secs(5),
            breaker_name: "security".into(),
            breaker: Preset::SecurityService.policy(),
        }
    }
}
