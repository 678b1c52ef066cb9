//! Events: what the client did on its own (logins, renewals) and every read
//! served from a fallback. Subscribe with
//! [`Client::subscribe`](crate::Client::subscribe); lease events are on
//! [`LeaseManager::subscribe`](crate::LeaseManager::subscribe).

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::fallback::Source;

/// Something the client did, or had to do. No event carries a secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A login succeeded.
    LoggedIn {
        /// The token generation (1 for the first login).
        generation: u64,
        /// The new token's TTL (`None`: it never expires).
        ttl: Option<Duration>,
    },
    /// The token was renewed.
    TokenRenewed {
        /// The TTL granted.
        ttl: Duration,
        /// False when Vault granted less than asked: the token's max TTL is
        /// near, and the next step is a new login.
        extended: bool,
    },
    /// The token expired and could not be replaced (a fixed token).
    TokenExpired,
    /// A renewal, lookup or login failed; it is retried after `retry_in`.
    AuthFailed {
        /// `renew`, `login` or `lookup`.
        operation: &'static str,
        /// Why.
        error: Arc<Error>,
        /// When the next attempt is made.
        retry_in: Duration,
    },
    /// A read was served from a fallback, because Vault was unavailable.
    Fallback {
        /// The API path that was read.
        path: String,
        /// Where the value came from.
        source: Source,
    },
}
