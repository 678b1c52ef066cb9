//! Errors: rejected calls, failed calls and invalid configuration.

use std::fmt;
use std::time::Duration;

use crate::policy::OpenAction;

/// Why a call was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The breaker is open and its open wait is not over.
    Open,
    /// The breaker is half-open and all its probe slots are taken.
    HalfOpenBusy,
    /// An operator forced the breaker open.
    ForcedOpen,
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Open => "the circuit is open",
            Self::HalfOpenBusy => "the circuit is half-open and its probes are in flight",
            Self::ForcedOpen => "the circuit was forced open",
        })
    }
}

/// A call the breaker did not let through.
///
/// It names the breaker, says why, and says when a probe will next be allowed
/// ([`retry_after`](Rejected::retry_after)), so an HTTP front can set
/// `Retry-After`. What to do instead is the caller's choice; the policy's
/// advice is [`action`](Rejected::action).
///
/// ```
/// use std::time::Duration;
/// use breaker::{Breaker, Policy, RejectReason};
///
/// let breaker = Breaker::new("inventory", Policy::default());
/// breaker.force_open();
/// let rejected = breaker.try_acquire().unwrap_err();
/// assert_eq!(rejected.breaker(), "inventory");
/// assert_eq!(rejected.reason(), RejectReason::ForcedOpen);
/// assert_eq!(rejected.retry_after(), None);
/// assert!(!rejected.is_retryable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker `{breaker}` rejected the call: {reason}{}", RetryAfter(*.retry_after))]
pub struct Rejected {
    /// The breaker's name.
    breaker: &'static str,
    /// Why.
    reason: RejectReason,
    /// When a call may next be let through, if known.
    retry_after: Option<Duration>,
    /// The policy's advice.
    action: OpenAction,
}

/// Formats the optional retry hint of a rejection.
struct RetryAfter(Option<Duration>);

impl fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(after) => write!(f, " (retry after {after:?})"),
            None => Ok(()),
        }
    }
}

impl Rejected {
    /// Builds a rejection.
    pub(crate) fn new(
        breaker: &'static str,
        reason: RejectReason,
        retry_after: Option<Duration>,
        action: OpenAction,
    ) -> Self {
        Self {
            breaker,
            reason,
            retry_after,
            action,
        }
    }

    /// The name of the breaker that rejected the call.
    pub fn breaker(&self) -> &'static str {
        self.breaker
    }

    /// Why the call was rejected.
    pub fn reason(&self) -> RejectReason {
        self.reason
    }

    /// How long until the breaker lets a call through again, at the latest:
    /// when open, the rest of the open wait; when half-open with its probes in
    /// flight, the rest of the half-open wait (it may close sooner). `None`
    /// when forced open: nobody knows.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// What the policy says callers should do now (fall back, or deny).
    pub fn action(&self) -> OpenAction {
        self.action
    }

    /// Whether trying again later may succeed: true unless the breaker was
    /// forced open.
    pub fn is_retryable(&self) -> bool {
        self.retry_after.is_some()
    }
}

/// The error of a call made through a breaker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError<E> {
    /// The breaker did not let the call through; the call was not made.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// The call did not finish within the policy's `call_timeout` and was
    /// dropped. It counted as a failure.
    #[error("the call timed out after {0:?}")]
    Timeout(Duration),
    /// The call ran and returned this error.
    #[error(transparent)]
    Inner(E),
}

impl<E> CallError<E> {
    /// Whether the call may be tried again later: rejections say so
    /// themselves, a timeout may; the protected call's own errors are for the
    /// caller to judge, so this says `false` for them.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Rejected(rejected) => rejected.is_retryable(),
            Self::Timeout(_) => true,
            Self::Inner(_) => false,
        }
    }

    /// The rejection, if the call was rejected.
    pub fn as_rejected(&self) -> Option<&Rejected> {
        match self {
            Self::Rejected(rejected) => Some(rejected),
            _ => None,
        }
    }

    /// The protected call's own error, if it returned one.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(error) => Some(error),
            _ => None,
        }
    }
}

/// An invalid configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting is out of its range.
    #[error("`{field}` must be {expected}, got {got}")]
    OutOfRange {
        /// The setting, as named in configuration files.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it was.
        got: String,
    },
    /// No preset has this name.
    #[error(
        "unknown preset `{0}` (expected vault, store-service, hardware-service or security-service)"
    )]
    UnknownPreset(String),
    /// A duration could not be read.
    #[error(
        "invalid duration `{0}`: expected a number followed by ms, s, m or h, e.g. `250ms` or `10s`"
    )]
    Duration(String),
    /// Two breakers of a registry have the same name.
    #[error("two breakers are named `{0}`")]
    DuplicateName(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_message_names_breaker_and_retry() {
        let rejected = Rejected::new(
            "vault",
            RejectReason::Open,
            Some(Duration::from_secs(3)),
            OpenAction::Fallback,
        );
        assert_eq!(
            rejected.to_string(),
            "circuit breaker `vault` rejected the call: the circuit is open (retry after 3s)"
        );
        assert!(rejected.is_retryable());
        let error: CallError<std::io::Error> = rejected.clone().into();
        assert!(error.is_retryable());
        assert_eq!(error.as_rejected(), Some(&rejected));
    }

    #[test]
    fn inner_errors_are_transparent() {
        let error: CallError<std::io::Error> =
            CallError::Inner(std::io::Error::other("connection reset"));
        assert_eq!(error.to_string(), "connection reset");
        assert!(!error.is_retryable());
        assert!(error.into_inner().is_some());
    }
}
