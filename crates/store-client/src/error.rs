//! [`ClientError`]: what a call can fail with, and whether trying again
//! can help.

use std::time::Duration;

use store_domain::{ErrorCode, Problem};
use uuid::Uuid;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The API answered with a problem (RFC 9457): the store service's or
    /// the gateway's.
    #[error("{status} {}: {}", problem.error, problem.message)]
    Problem {
        /// The HTTP status.
        status: u16,
        /// The problem body.
        problem: Box<Problem>,
        /// The `Retry-After` of the answer, if it had one.
        retry_after: Option<Duration>,
    },
    /// The request could not be sent, or its answer not read.
    #[error("the request could not be completed: {0}")]
    Transport(#[source] reqwest::Error),
    /// An answer this client does not understand (not the API's JSON).
    #[error("unexpected answer (status {status}): {message}")]
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// What was wrong with it.
        message: String,
    },
    /// The token provider could not give a token.
    #[error("no token: {0}")]
    Token(String),
    /// A queued write was given up by the gateway.
    #[error("the queued write {request_id} failed: {reason}")]
    QueuedWriteFailed {
        /// The write's request id.
        request_id: Uuid,
        /// The gateway's `lastError`.
        reason: String,
    },
    /// The base URL or a path could not make a URL.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
}

impl ClientError {
    /// Whether the same call may succeed later (and is safe to repeat: a
    /// write carries its idempotency key): 408, 429 and 5xx problems (but
    /// a 500), and connection failures and timeouts.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Problem { status, .. } => {
                matches!(status, 408 | 429 | 502 | 503 | 504)
            }
            Self::Transport(error) => error.is_connect() || error.is_timeout(),
            _ => false,
        }
    }

    /// The problem's `error` code, when the API answered one.
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Problem { problem, .. } => Some(problem.error.as_str()),
            _ => None,
        }
    }

    /// The store API's code, when the problem is one of its codes.
    #[must_use]
    pub fn store_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Problem { problem, .. } => problem.code(),
            _ => None,
        }
    }
}
