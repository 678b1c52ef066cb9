//! Every error the API sends: an RFC 9457 `application/problem+json` body
//! (store-domain's [`Problem`], rendered by `service_kit::problem`) with
//! the request id and the path.

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use store_domain::{ApplyError, ErrorCode, Problem, ValidationErrors, VersionSource};

/// Why a request failed; turned into a problem body by [`ApiError::into_problem`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A code with its default message.
    #[error("{0:?}")]
    Code(ErrorCode),
    /// A code with a specific message (never quoting input values).
    #[error("{code:?}: {message}")]
    Message {
        /// The code.
        code: ErrorCode,
        /// What to tell the client.
        message: String,
    },
    /// Body or query validation failed.
    #[error("validation failed: {0}")]
    Validation(#[from] ValidationErrors),
    /// The update does not apply to the stored store.
    #[error("update refused: {error}")]
    Apply {
        /// Why.
        error: ApplyError,
        /// Where the expected version came from (409 or 412).
        via: VersionSource,
    },
    /// A dependency is down (database, Vault): 503, retryable.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything unexpected: logged, never shown.
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    /// A code with a specific message.
    pub fn message(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Message {
            code,
            message: message.into(),
        }
    }

    /// The problem body for this error in request `request_id` at `instance`.
    pub fn into_problem(self, request_id: &str, instance: &str) -> Problem {
        let problem = match self {
            Self::Code(code) => Problem::new(code, request_id),
            Self::Message { code, message } => Problem::new(code, request_id).with_message(message),
            Self::Validation(errors) => Problem::validation(&errors, request_id),
            Self::Apply { error, via } => match error {
                ApplyError::VersionMismatch { current, .. } => {
                    Problem::concurrency(current, via, request_id)
                }
                ApplyError::InvalidTransition(transition) => {
                    Problem::invalid_transition(&transition, request_id)
                }
                other => Problem::new(other.code(), request_id),
            },
            Self::Unavailable(cause) => {
                tracing::warn!(%cause, "dependency unavailable");
                Problem::new(ErrorCode::ServiceUnavailable, request_id)
            }
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Problem::new(ErrorCode::InternalError, request_id)
            }
        };
        problem.with_instance(instance)
    }
}

impl From<db_failover::Error> for ApiError {
    fn from(error: db_failover::Error) -> Self {
        if error.is_retryable() || error.is_outcome_unknown() {
            Self::Unavailable(error.to_string())
        } else {
            Self::Internal(error.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    /// The problem as a response (`service_kit::problem`, completed with
    /// the request's id and path by the request-id layer), with
    /// `Retry-After: 1` when the request may be sent again.
    fn into_response(self) -> Response {
        let problem = self.into_problem("", "");
        let retryable = problem.is_retryable();
        let mut response = service_kit::problem::response(problem);
        if retryable {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
