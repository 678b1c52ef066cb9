//! The crate's error type: what went wrong, whether it may be retried, and
//! whether the request may have reached the server.

use std::time::Duration;

/// Whether a failed request may have reached the server.
///
/// Vault requests are not all idempotent: each read of `database/creds/<role>`
/// creates a database user, each unwrap consumes a single-use token. A caller
/// (and this crate's own retry loop) may repeat such a request only when it
/// certainly never left this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// The request never left this process (invalid input, connection
    /// refused, DNS or TLS handshake failure, circuit breaker open).
    NotSent,
    /// The request was sent but no complete answer came back (timeout or
    /// connection lost): the server may or may not have acted on it.
    MaybeDelivered,
    /// The server answered.
    Delivered,
}

/// Everything a Vault call can fail with.
///
/// No variant ever carries a token, a password or a secret value: messages
/// name the API path, the status and Vault's own error strings (which do not
/// echo request bodies). Check [`Error::is_retryable`] before trying again,
/// and [`Error::delivery`] before repeating a request that is not idempotent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// An API path (or mount, key or role name) was refused before anything
    /// was sent.
    #[error("invalid Vault path {path:?}: {reason}")]
    InvalidPath {
        /// The offending path, as given (it names a secret, it is not one).
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// An argument other than a path was refused before anything was sent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The connection could not be established (refused, DNS, reset during
    /// the handshake). The request was not sent.
    #[error("cannot connect to Vault for {path}: {source}")]
    Connect {
        /// The API path.
        path: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// TLS failed: the server's certificate is not trusted or does not name
    /// the server, or the client certificate was refused. Not retryable.
    #[error("TLS with Vault failed for {path}: {reason}")]
    Tls {
        /// The API path.
        path: String,
        /// What rustls reported.
        reason: String,
    },
    /// The request was sent (or partly sent) and then the connection failed
    /// or the answer could not be read.
    #[error("Vault request {path} failed after it was sent: {source}")]
    Transport {
        /// The API path.
        path: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// No answer within the time limit (the client timeout or the breaker's
    /// call timeout). The server may have acted on the request.
    #[error("Vault request {path} timed out after {after:?}")]
    Timeout {
        /// The API path.
        path: String,
        /// The limit that expired.
        after: Duration,
    },
    /// The circuit breaker is open: the call was not made.
    #[error("Vault call {path} not made: {rejected}")]
    CircuitOpen {
        /// The API path.
        path: String,
        /// The breaker's rejection (name, reason, when to retry).
        rejected: breaker::Rejected,
    },
    /// Vault answered with an error status.
    #[error("Vault {method} {path} returned {status}: {}", .errors.join("; "))]
    Api {
        /// The HTTP method.
        method: &'static str,
        /// The API path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// Vault's `errors` list (truncated; never a secret).
        errors: Vec<String>,
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// A KV v2 write with check-and-set did not match the current version.
    #[error("check-and-set conflict on {path}: the secret changed since the version given")]
    CasMismatch {
        /// The API path.
        path: String,
    },
    /// The answer was not valid JSON.
    #[error("Vault answered {path} with invalid JSON: {reason}")]
    Decode {
        /// The API path.
        path: String,
        /// The parser's message (positions only, never content).
        reason: String,
    },
    /// The answer was JSON but lacked a field this crate needs, or had it
    /// with the wrong type.
    #[error("Vault answered {path} without {field} ({expected})")]
    MissingField {
        /// The API path.
        path: String,
        /// A JSON pointer to the field.
        field: String,
        /// The type that was expected.
        expected: &'static str,
    },
    /// The answer was larger than the configured limit.
    #[error("Vault answered {path} with more than {limit} bytes")]
    BodyTooLarge {
        /// The API path.
        path: String,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A response-wrapping token was created somewhere else than expected:
    /// it may have been intercepted and replaced. Nothing was unwrapped.
    #[error("wrapping token was created by {actual:?}, expected {expected:?}; refusing to unwrap")]
    WrappingMismatch {
        /// The creation path the token should have.
        expected: String,
        /// The creation path it has.
        actual: String,
    },
    /// No token is available: the auth method cannot log in, or the token
    /// expired and logging in again failed.
    #[error("no valid Vault token: {0}")]
    NoToken(String),
    /// A local file (CA bundle, client certificate, service-account JWT)
    /// could not be read.
    #[error("{context}: {source}")]
    Io {
        /// What was being read, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The client, or the lease manager, was shut down.
    #[error("the Vault client was shut down")]
    Shutdown,
    /// A recent login failed and this call did not log in again: it was
    /// waiting for that login, or the login back-off has not elapsed yet.
    /// Retryability, status and availability are those of that login's
    /// error.
    #[error("Vault login failed (next attempt allowed in {retry_in:?}): {reason}")]
    LoginFailed {
        /// Why the login failed (that error's message).
        reason: String,
        /// The HTTP status of that failure, if Vault answered.
        status: Option<u16>,
        /// Whether that failure was retryable.
        retryable: bool,
        /// Whether that failure meant Vault was unavailable.
        unavailable: bool,
        /// When another login may be sent.
        retry_in: Duration,
    },
}

impl Error {
    /// Whether trying the same call again later may succeed.
    ///
    /// True for connection failures, timeouts, an open breaker (unless it was
    /// forced open), 5xx answers except 501, and 429. False for invalid
    /// input, TLS failures, 4xx answers, CAS conflicts and malformed answers.
    /// A retryable error on a request that is not idempotent still needs
    /// [`Error::delivery`] to be [`Delivery::NotSent`] before a blind retry.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Transport { .. } | Error::Timeout { .. } => true,
            Error::CircuitOpen { rejected, .. } => rejected.is_retryable(),
            Error::Api { status, .. } => retryable_status(*status),
            Error::LoginFailed { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Whether the request may have reached the server.
    pub fn delivery(&self) -> Delivery {
        match self {
            Error::Config(_)
            | Error::InvalidPath { .. }
            | Error::InvalidArgument(_)
            | Error::Connect { .. }
            | Error::Tls { .. }
            | Error::CircuitOpen { .. }
            | Error::NoToken(_)
            | Error::Io { .. }
            | Error::Shutdown
            | Error::LoginFailed { .. } => Delivery::NotSent,
            Error::Transport { .. } | Error::Timeout { .. } => Delivery::MaybeDelivered,
            Error::Api { .. }
            | Error::CasMismatch { .. }
            | Error::Decode { .. }
            | Error::MissingField { .. }
            | Error::BodyTooLarge { .. }
            | Error::WrappingMismatch { .. } => Delivery::Delivered,
        }
    }

    /// Whether the request may have reached the server (anything but
    /// [`Delivery::NotSent`]).
    pub fn may_have_reached_server(&self) -> bool {
        self.delivery() != Delivery::NotSent
    }

    /// The HTTP status Vault answered with, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::CasMismatch { .. } => Some(400),
            Error::LoginFailed { status, .. } => *status,
            _ => None,
        }
    }

    /// Whether Vault said the path does not exist (404).
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Whether Vault refused the token (403: expired, revoked, or the policy
    /// does not allow the path).
    pub fn is_forbidden(&self) -> bool {
        self.status() == Some(403)
    }

    /// Whether this error means Vault is unavailable (so a read may be served
    /// from a fallback): connection failures, timeouts, an open breaker, 5xx
    /// and 429 answers.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Connect { .. }
            | Error::Transport { .. }
            | Error::Timeout { .. }
            | Error::CircuitOpen { .. } => true,
            Error::Api { status, .. } => *status >= 500 || *status == 429,
            Error::LoginFailed { unavailable, .. } => *unavailable,
            _ => false,
        }
    }

    /// The delay the server (`Retry-After`), the breaker or the login
    /// back-off ([`Error::LoginFailed`]) asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            Error::CircuitOpen { rejected, .. } => rejected.retry_after(),
            Error::LoginFailed { retry_in, .. } => Some(*retry_in),
            _ => None,
        }
    }
}

/// 5xx except 501 (not implemented: asking again will not help), and 429.
impl Error {
    /// This error as seen by callers that shared a failed login.
    pub(crate) fn login_failed(&self, retry_in: Duration) -> Error {
        if let Error::LoginFailed {
            reason,
            status,
            retryable,
            unavailable,
            ..
        } = self
        {
            return Error::LoginFailed {
                reason: reason.clone(),
                status: *status,
                retryable: *retryable,
                unavailable: *unavailable,
                retry_in,
            };
        }
        Error::LoginFailed {
            reason: self.to_string(),
            status: self.status(),
            retryable: self.is_retryable(),
            unavailable: self.is_unavailable(),
            retry_in,
        }
    }
}

pub(crate) fn retryable_status(status: u16) -> bool {
    (status >= 500 && status != 501) || status == 429
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> Error {
        Error::Api {
            method: "GET",
            path: "kv/data/x".into(),
            status,
            errors: vec![],
            retry_after: None,
        }
    }

    #[test]
    fn retryable_statuses() {
        for (status, retryable) in [
            (500, true),
            (502, true),
            (503, true),
            (501, false),
            (429, true),
            (400, false),
            (403, false),
            (404, false),
        ] {
            assert_eq!(api(status).is_retryable(), retryable, "{status}");
            assert_eq!(api(status).delivery(), Delivery::Delivered);
        }
        let path = Error::InvalidPath {
            path: "a/../b".into(),
            reason: "x",
        };
        assert!(!path.is_retryable());
        assert!(!path.may_have_reached_server());
        let timeout = Error::Timeout {
            path: "database/creds/r".into(),
            after: Duration::from_secs(1),
        };
        assert!(timeout.is_retryable());
        assert_eq!(timeout.delivery(), Delivery::MaybeDelivered);
        assert!(api(404).is_not_found());
        assert!(api(403).is_forbidden());
        assert!(api(503).is_unavailable());
        assert!(!api(400).is_unavailable());
    }
}
