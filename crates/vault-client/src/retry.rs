//! Retry rules: which failures are retried, and how long to wait.
//!
//! - Connection failures (the request was never sent) are retried for every
//!   request.
//! - 5xx answers (except 501) and timeouts are retried only for requests
//!   that may safely run twice ([`Idempotence::Safe`]).
//! - 429 is retried for every request (the server refused it without acting),
//!   waiting at least its `Retry-After`. A standby's 429 from `sys/health`
//!   is an answer, not rate limiting, and is never retried.
//! - An open breaker is never retried: fail fast is the point.

use std::time::{Duration, SystemTime};

use breaker::ExponentialBackoff;

use crate::config::ConfigError;
use crate::error::{Delivery, Error};

/// Whether a request may run twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotence {
    /// Reads, writes of the same value, encryption: retried after any
    /// retryable failure.
    Safe,
    /// Reads that create something (`database/creds`), unwraps (single use),
    /// logins: retried only when the request certainly never reached the
    /// server, or the server refused it with 429.
    NotAfterSent,
}

/// Whether a failed attempt may be tried again under `idempotence`.
pub(crate) fn may_retry(error: &Error, idempotence: Idempotence) -> bool {
    if matches!(error, Error::CircuitOpen { .. }) {
        return false;
    }
    if !error.is_retryable() {
        return false;
    }
    match idempotence {
        Idempotence::Safe => true,
        Idempotence::NotAfterSent => {
            error.delivery() == Delivery::NotSent || error.status() == Some(429)
        }
    }
}

/// Exponential back-off with jitter: attempt `n` (from 0) waits
/// `min(max, initial * multiplier^n)`, minus up to `jitter` of it at random.
///
/// The settings of the workspace's one back-off,
/// [`breaker::ExponentialBackoff`] ([`Backoff::curve`]), which computes
/// every wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first wait.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Growth per attempt (at least 1).
    pub multiplier: f64,
    /// The fraction of each wait taken off at random (0 to 1), so that many
    /// clients do not retry in step.
    pub jitter: f64,
}

impl Default for Backoff {
    /// 250 ms, doubling, at most 5 s, 50 % jitter.
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl From<Backoff> for ExponentialBackoff {
    fn from(backoff: Backoff) -> Self {
        ExponentialBackoff::new(backoff.initial, backoff.max)
            .multiplier(backoff.multiplier)
            .jitter(backoff.jitter)
    }
}

impl Backoff {
    /// A back-off from `initial` to `max`, doubling, with 50 % jitter.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            ..Backoff::default()
        }
    }

    /// The workspace's back-off with these settings.
    pub fn curve(&self) -> ExponentialBackoff {
        ExponentialBackoff::from(*self)
    }

    /// The wait before retry `attempt` (0 for the first retry), given a
    /// random number `unit` in `[0, 1)`.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        self.curve().delay_with(attempt, unit)
    }

    /// The wait before retry `attempt`, with fresh randomness.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.curve().delay(attempt)
    }

    /// Checks the settings: `0 < initial <= max`, a multiplier of at least
    /// 1 and a jitter between 0 and 1.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let bad = |reason: String| ConfigError::Setting {
            setting: "backoff",
            reason,
        };
        if self.initial.is_zero() {
            return Err(bad("need 0 < initial <= max".to_owned()));
        }
        self.curve()
            .validate()
            .map_err(|error| bad(error.to_string()))
    }
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date (relative to
/// `now`). A date in the past is zero.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds.min(86_400)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_within_bounds() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            multiplier: 2.0,
            jitter: 0.5,
        };
        assert_eq!(backoff.delay_with(0, 0.0), Duration::from_millis(100));
        assert_eq!(backoff.delay_with(1, 0.0), Duration::from_millis(200));
        assert_eq!(backoff.delay_with(3, 0.0), Duration::from_millis(800));
        assert_eq!(backoff.delay_with(10, 0.0), Duration::from_secs(2));
        assert_eq!(backoff.delay_with(u32::MAX, 0.0), Duration::from_secs(2));
        assert_eq!(backoff.delay_with(10, 1.0), Duration::from_secs(1));
        for attempt in 0..40 {
            let d = backoff.delay(attempt);
            assert!(d <= Duration::from_secs(2), "{attempt}: {d:?}");
            assert!(d >= backoff.delay_with(attempt, 1.0), "{attempt}: {d:?}");
        }
        assert!(backoff.check().is_ok());
        for bad in [
            Backoff {
                initial: Duration::ZERO,
                ..backoff
            },
            Backoff {
                multiplier: 0.5,
                ..backoff
            },
            Backoff {
                jitter: 1.5,
                ..backoff
            },
            Backoff {
                max: Duration::from_millis(1),
                ..backoff
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn creds_reads_are_never_retried_after_they_were_sent() {
        let timeout = Error::Timeout {
            path: "database/creds/app".into(),
            after: Duration::from_secs(1),
        };
        assert!(may_retry(&timeout, Idempotence::Safe));
        assert!(!may_retry(&timeout, Idempotence::NotAfterSent));
        let api = |status| Error::Api {
            method: "GET",
            path: "database/creds/app".into(),
            status,
            errors: vec![],
            retry_after: None,
        };
        assert!(may_retry(&api(503), Idempotence::Safe));
        assert!(!may_retry(&api(503), Idempotence::NotAfterSent));
        assert!(!may_retry(&api(501), Idempotence::Safe));
        assert!(may_retry(&api(429), Idempotence::NotAfterSent));
        assert!(!may_retry(&api(403), Idempotence::Safe));
    }
}
