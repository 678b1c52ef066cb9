//! Why keys could not be had: [`KeyError`] for a lookup, [`FetchError`]
//! for a fetch. The floor the key store and its events stand on.

use std::time::Duration;

/// Why no key could be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// No keys, or keys older than the maximum age: fail closed
    /// (retryable after `retry_after`).
    #[error("signing keys unavailable or older than the maximum age")]
    Unavailable {
        /// When to try again.
        retry_after: Duration,
    },
    /// The token names a key the security service does not publish.
    #[error("unknown key id")]
    UnknownKid,
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The security breaker is open.
    #[error("security breaker open: {0}")]
    Rejected(breaker::Rejected),
    /// The fetch took longer than the breaker's call timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Transport error or timeout.
    #[error("request failed: {0}")]
    Http(String),
    /// The security service answered with an error status.
    #[error("answered {0}")]
    Status(u16),
    /// The document is not a JWKS with usable keys.
    #[error("unusable JWKS: {0}")]
    Document(String),
}

impl FetchError {
    /// Whether a later fetch may succeed (all but a malformed document).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Document(_))
    }
}
