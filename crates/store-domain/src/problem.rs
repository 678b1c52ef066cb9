//! The API's error codes ([`ErrorCode`]) and its error body ([`Problem`]):
//! RFC 9457 `application/problem+json` with the original design's members.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{FieldError, InvalidTransition, ValidationErrors};

/// The media type of a [`Problem`] body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Where problem type URIs start; the rest is the code in kebab case
/// (`.../concurrency-error`).
pub const PROBLEM_TYPE_BASE: &str = "https://example.invalid/problems/";

/// The message of a stale version, word for word as the original design has
/// it.
pub const CONCURRENCY_MESSAGE: &str =
    "Store was modified by another request. Please refresh and try again.";

/// Declares [`ErrorCode`] from one table: variant, wire name, HTTP status,
/// kebab name, title, default message, retryable.
macro_rules! error_codes {
    ($(
        $(#[$doc:meta])*
        $variant:ident = ($code:literal, $status:literal, $kebab:literal, $title:literal, $message:expr, $retry:literal)
    ),* $(,)?) => {
        /// The stable error codes of the API: the `error` member of every
        /// [`Problem`].
        ///
        /// Each has an HTTP status ([`status`](Self::status)), a short
        /// [`title`](Self::title), a default [`message`](Self::message) and
        /// says whether the request may be sent again unchanged
        /// ([`is_retryable`](Self::is_retryable)). The wire names never
        /// change; `#[non_exhaustive]` because codes may be added.
        ///
        /// On the wire each is its `SCREAMING_SNAKE_CASE` name
        /// ([`as_str`](Self::as_str)).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(
                $(#[$doc])*
                $variant,
            )*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];

            /// The wire name, e.g. `CONCURRENCY_ERROR`.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $code,)* }
            }

            /// The HTTP status it is sent with.
            #[must_use]
            pub const fn status(self) -> u16 {
                match self { $(Self::$variant => $status,)* }
            }

            /// The RFC 9457 `title`: the same for every occurrence.
            #[must_use]
            pub const fn title(self) -> &'static str {
                match self { $(Self::$variant => $title,)* }
            }

            /// The default `message` (and `detail`).
            #[must_use]
            pub const fn message(self) -> &'static str {
                match self { $(Self::$variant => $message,)* }
            }

            /// The RFC 9457 `type`: [`PROBLEM_TYPE_BASE`] and the code in
            /// kebab case.
            #[must_use]
            pub fn type_uri(self) -> String {
                let kebab = match self { $(Self::$variant => $kebab,)* };
                format!("{PROBLEM_TYPE_BASE}{kebab}")
            }

            /// Whether the same request may succeed if sent again later
            /// (after `Retry-After`, when the response has one): rate
            /// limits, unavailability, timeouts and a key still in use.
            /// A `CONCURRENCY_ERROR` is not: the client must read the store
            /// again first.
            #[must_use]
            pub const fn is_retryable(self) -> bool {
                match self { $(Self::$variant => $retry,)* }
            }
        }
    };
}

error_codes! {
    /// The body broke a rule; `errors` lists each field.
    ValidationError = ("VALIDATION_ERROR", 400, "validation-error", "Validation failed",
        "The request is invalid; see errors for each field.", false),
    /// The body is not JSON (or nests too deep to read).
    MalformedJson = ("MALFORMED_JSON", 400, "malformed-json", "Malformed JSON",
        "The request body is not valid JSON.", false),
    /// The body could not be read (a broken chunked encoding, a client
    /// that stopped sending).
    InvalidBody = ("INVALID_BODY", 400, "invalid-body", "Invalid body",
        "The request body could not be read.", false),
    /// The id in the path is not a UUID.
    InvalidId = ("INVALID_ID", 400, "invalid-id", "Invalid id",
        "The store id must be a UUID.", false),
    /// The `Idempotency-Key` header is empty, too long or not printable ASCII.
    InvalidIdempotencyKey = ("INVALID_IDEMPOTENCY_KEY", 400, "invalid-idempotency-key",
        "Invalid idempotency key",
        "The Idempotency-Key header must be 1 to 255 printable ASCII characters.", false),
    /// The gateway's subject header (`x-gateway-subject`, [`crate::ACTOR_HEADER`])
    /// does not decode to a subject ([`crate::ActorError`]): not
    /// percent-encoded UTF-8, empty, too long or with a control character.
    /// The gateway sets that header itself and removes it from every client
    /// request, so this means a caller that bypassed the gateway or a
    /// gateway bug; the value is never echoed.
    InvalidSubject = ("INVALID_SUBJECT", 400, "invalid-subject", "Invalid subject",
        "The x-gateway-subject header must be a percent-encoded UTF-8 subject of 1 to 255 bytes without control characters.",
        false),
    /// No valid credentials (gateway).
    Unauthorized = ("UNAUTHORIZED", 401, "unauthorized", "Unauthorized",
        "Authentication is required.", false),
    /// Credentials without the right (gateway).
    Forbidden = ("FORBIDDEN", 403, "forbidden", "Forbidden",
        "You are not allowed to do this.", false),
    /// No such store (or route).
    NotFound = ("NOT_FOUND", 404, "not-found", "Not found",
        "Store not found.", false),
    /// The route exists but not with this method.
    MethodNotAllowed = ("METHOD_NOT_ALLOWED", 405, "method-not-allowed", "Method not allowed",
        "This method is not allowed on this resource.", false),
    /// The `version` in the body is not the store's (see `currentVersion`).
    ConcurrencyError = ("CONCURRENCY_ERROR", 409, "concurrency-error", "Concurrent modification",
        CONCURRENCY_MESSAGE, false),
    /// The lifecycle does not allow the requested status.
    InvalidStatusTransition = ("INVALID_STATUS_TRANSITION", 409, "invalid-status-transition",
        "Invalid status transition",
        "The store cannot move to the requested status.", false),
    /// A request with the same `Idempotency-Key` is still being processed.
    IdempotencyKeyInUse = ("IDEMPOTENCY_KEY_IN_USE", 409, "idempotency-key-in-use",
        "Idempotency key in use",
        "A request with this Idempotency-Key is still being processed. Retry later.", true),
    /// The `If-Match` version is not the store's (see `currentVersion`).
    PreconditionFailed = ("PRECONDITION_FAILED", 412, "precondition-failed",
        "Precondition failed", CONCURRENCY_MESSAGE, false),
    /// The body is over the size limit (64 KiB).
    PayloadTooLarge = ("PAYLOAD_TOO_LARGE", 413, "payload-too-large", "Payload too large",
        "The request body is too large.", false),
    /// The body is not `application/json`.
    UnsupportedMediaType = ("UNSUPPORTED_MEDIA_TYPE", 415, "unsupported-media-type",
        "Unsupported media type",
        "The request body must be application/json.", false),
    /// The `Idempotency-Key` was used before with a different request.
    IdempotencyKeyReused = ("IDEMPOTENCY_KEY_REUSED", 422, "idempotency-key-reused",
        "Idempotency key reused",
        "This Idempotency-Key was already used with a different request.", false),
    /// An update named no version (neither `version` nor `If-Match`).
    PreconditionRequired = ("PRECONDITION_REQUIRED", 428, "precondition-required",
        "Precondition required",
        "Send the version you are updating, as \"version\" in the body or in an If-Match header.",
        false),
    /// Too many requests; see `Retry-After`.
    RateLimited = ("RATE_LIMITED", 429, "rate-limited", "Too many requests",
        "Too many requests. Retry later.", true),
    /// Something failed inside; nothing about it is shown.
    InternalError = ("INTERNAL_ERROR", 500, "internal-error", "Internal error",
        "An unexpected error occurred.", false),
    /// A dependency (database, Vault) is unavailable; see `Retry-After`.
    ServiceUnavailable = ("SERVICE_UNAVAILABLE", 503, "service-unavailable",
        "Service unavailable",
        "The service is temporarily unavailable. Retry later.", true),
    /// The request took longer than allowed.
    Timeout = ("TIMEOUT", 504, "timeout", "Timeout",
        "The request took too long. Retry later.", true),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|code| code.as_str() == s)
            .ok_or(UnknownErrorCode)
    }
}

/// A string that is not one of this version's [`ErrorCode`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a known error code")]
pub struct UnknownErrorCode;

/// How an update named the version it is based on; decides the status of a
/// `CONCURRENCY_ERROR`: 409 for the body, 412 for `If-Match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSource {
    /// `"version"` in the body.
    Body,
    /// An `If-Match` header.
    IfMatch,
}

/// An error response body: RFC 9457 members (`type`, `title`, `status`,
/// `detail`, `instance`) and the original design's (`error`, `message`,
/// `requestId`), plus `errors` for validation and `currentVersion` for
/// version conflicts.
///
/// ```json
/// {
///   "type": "https://example.invalid/problems/concurrency-error",
///   "title": "Concurrent modification",
///   "status": 409,
///   "detail": "Store was modified by another request. Please refresh and try again.",
///   "instance": "/api/stores/0192...",
///   "error": "CONCURRENCY_ERROR",
///   "message": "Store was modified by another request. Please refresh and try again.",
///   "requestId": "0192...",
///   "currentVersion": 4
/// }
/// ```
///
/// Deserializing is lenient (missing members take defaults, unknown members
/// are ignored), so a client can read problems from any version of the
/// service, and from other services. `error` stays a string; [`code`](Self::code)
/// parses it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// A URI naming the kind of problem (RFC 9457 `type`).
    #[serde(rename = "type", default = "about_blank")]
    pub type_uri: String,
    /// A short summary of the kind of problem, the same for every
    /// occurrence.
    #[serde(default)]
    pub title: String,
    /// The HTTP status.
    #[serde(default)]
    pub status: u16,
    /// What went wrong this time, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path the problem is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The stable code (an [`ErrorCode`] name).
    #[serde(default)]
    pub error: String,
    /// The original design's message (the same text as `detail`).
    #[serde(default)]
    pub message: String,
    /// The request's id (`X-Request-Id`), to find it in logs.
    #[serde(default)]
    pub request_id: String,
    /// Each failing field, for `VALIDATION_ERROR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// The store's version, for `CONCURRENCY_ERROR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i32>,
}

/// RFC 9457's default `type`.
fn about_blank() -> String {
    "about:blank".to_owned()
}

impl Problem {
    /// A problem of kind `code` with its default title and message.
    #[must_use]
    pub fn new(code: ErrorCode, request_id: impl Into<String>) -> Self {
        Self {
            type_uri: code.type_uri(),
            title: code.title().to_owned(),
            status: code.status(),
            detail: Some(code.message().to_owned()),
            instance: None,
            error: code.as_str().to_owned(),
            message: code.message().to_owned(),
            request_id: request_id.into(),
            errors: None,
            current_version: None,
        }
    }

    /// A `VALIDATION_ERROR` listing every failing field.
    #[must_use]
    pub fn validation(errors: &ValidationErrors, request_id: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationError, request_id).with_errors(errors.errors().to_vec())
    }

    /// A stale version: `"error": "CONCURRENCY_ERROR"` with the exact
    /// [`CONCURRENCY_MESSAGE`] and the store's current version, with status
    /// 409 when the version came in the body and 412 (Precondition Failed)
    /// when it came in `If-Match`. The code is the same either way, so a
    /// client detects a conflict by `error` whichever way it sent the
    /// version.
    #[must_use]
    pub fn concurrency(
        current_version: i32,
        source: VersionSource,
        request_id: impl Into<String>,
    ) -> Self {
        let mut problem = Self::new(ErrorCode::ConcurrencyError, request_id)
            .with_message(CONCURRENCY_MESSAGE)
            .with_current_version(current_version);
        if source == VersionSource::IfMatch {
            problem.status = ErrorCode::PreconditionFailed.status();
            problem.title = ErrorCode::PreconditionFailed.title().to_owned();
        }
        problem
    }

    /// An `INVALID_STATUS_TRANSITION` naming both statuses and the allowed
    /// ones.
    #[must_use]
    pub fn invalid_transition(error: &InvalidTransition, request_id: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidStatusTransition, request_id).with_message(error.message())
    }

    /// Sets `message` and `detail`.
    #[must_use]
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        let message = message.into();
        self.detail = Some(message.clone());
        self.message = message;
        self
    }

    /// Sets `instance` (the request path).
    #[must_use]
    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    /// Sets `errors`.
    #[must_use]
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = Some(errors);
        self
    }

    /// Sets `currentVersion`.
    #[must_use]
    pub const fn with_current_version(mut self, version: i32) -> Self {
        self.current_version = Some(version);
        self
    }

    /// The code, if this version of the crate knows it.
    #[must_use]
    pub fn code(&self) -> Option<ErrorCode> {
        self.error.parse().ok()
    }

    /// Whether the request may succeed if sent again later (see
    /// [`ErrorCode::is_retryable`]); unknown codes are not, except that any
    /// 429, 503 or 504 is.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.code().map_or_else(
            || matches!(self.status, 429 | 503 | 504),
            ErrorCode::is_retryable,
        )
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error, self.message)
    }
}

impl std::error::Error for Problem {}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::StoreStatus;

    #[test]
    fn codes_table() {
        let expected = [
            ("VALIDATION_ERROR", 400),
            ("MALFORMED_JSON", 400),
            ("INVALID_BODY", 400),
            ("INVALID_ID", 400),
            ("INVALID_IDEMPOTENCY_KEY", 400),
            ("INVALID_SUBJECT", 400),
            ("UNAUTHORIZED", 401),
            ("FORBIDDEN", 403),
            ("NOT_FOUND", 404),
            ("METHOD_NOT_ALLOWED", 405),
            ("CONCURRENCY_ERROR", 409),
            ("INVALID_STATUS_TRANSITION", 409),
            ("IDEMPOTENCY_KEY_IN_USE", 409),
            ("PRECONDITION_FAILED", 412),
            ("PAYLOAD_TOO_LARGE", 413),
            ("UNSUPPORTED_MEDIA_TYPE", 415),
            ("IDEMPOTENCY_KEY_REUSED", 422),
            ("PRECONDITION_REQUIRED", 428),
            ("RATE_LIMITED", 429),
            ("INTERNAL_ERROR", 500),
            ("SERVICE_UNAVAILABLE", 503),
            ("TIMEOUT", 504),
        ];
        let got: Vec<(&str, u16)> = ErrorCode::ALL
            .iter()
            .map(|code| (code.as_str(), code.status()))
            .collect();
        assert_eq!(got, expected);
        for &code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                json!(code.as_str()),
                "serde name of {code}"
            );
            let kebab = code.as_str().to_ascii_lowercase().replace('_', "-");
            assert_eq!(code.type_uri(), format!("{PROBLEM_TYPE_BASE}{kebab}"));
            assert!(!code.title().is_empty() && !code.message().is_empty());
        }
        assert_eq!("nope".parse::<ErrorCode>(), Err(UnknownErrorCode));
    }

    #[test]
    fn retryable_codes() {
        let retryable: Vec<&str> = ErrorCode::ALL
            .iter()
            .filter(|c| c.is_retryable())
            .map(|c| c.as_str())
            .collect();
        assert_eq!(
            retryable,
            [
                "IDEMPOTENCY_KEY_IN_USE",
                "RATE_LIMITED",
                "SERVICE_UNAVAILABLE",
                "TIMEOUT"
            ]
        );
    }

    #[test]
    fn concurrency_problem_exact_json() {
        let problem =
            Problem::concurrency(4, VersionSource::Body, "req-1").with_instance("/api/stores/0192");
        assert_eq!(
            serde_json::to_value(&problem).unwrap(),
            json!({
                "type": "https://example.invalid/problems/concurrency-error",
                "title": "Concurrent modification",
                "status": 409,
                "detail": "Store was modified by another request. Please refresh and try again.",
                "instance": "/api/stores/0192",
                "error": "CONCURRENCY_ERROR",
                "message": "Store was modified by another request. Please refresh and try again.",
                "requestId": "req-1",
                "currentVersion": 4
            })
        );
        let if_match = Problem::concurrency(4, VersionSource::IfMatch, "req-1");
        assert_eq!(
            (if_match.status, if_match.error.as_str()),
            (412, "CONCURRENCY_ERROR")
        );
        assert_eq!(if_match.message, CONCURRENCY_MESSAGE);
        assert_eq!(if_match.current_version, Some(4));
    }

    #[test]
    fn invalid_transition_problem() {
        let err = StoreStatus::Decommissioned
            .transition_to(StoreStatus::Active)
            .unwrap_err();
        let problem = Problem::invalid_transition(&err, "r");
        assert_eq!(problem.status, 409);
        assert_eq!(problem.code(), Some(ErrorCode::InvalidStatusTransition));
        assert_eq!(problem.detail.as_deref(), Some(problem.message.as_str()));
        assert!(problem.message.contains("DECOMMISSIONED to ACTIVE"));
    }

    #[test]
    fn lenient_deserialization() {
        let minimal: Problem = serde_json::from_str(
            r#"{"title":"Teapot","status":418,"error":"I_AM_A_TEAPOT","extra":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(minimal.type_uri, "about:blank");
        assert_eq!(minimal.code(), None);
        assert!(!minimal.is_retryable());
        let unavailable: Problem =
            serde_json::from_str(r#"{"status":503,"error":"NEW_CODE"}"#).unwrap();
        assert!(unavailable.is_retryable());
        let round = Problem::new(ErrorCode::RateLimited, "r");
        let back: Problem = serde_json::from_str(&serde_json::to_string(&round).unwrap()).unwrap();
        assert_eq!(back, round);
        assert!(back.is_retryable());
        assert_eq!(
            back.to_string(),
            "429 RATE_LIMITED: Too many requests. Retry later."
        );
    }
}
