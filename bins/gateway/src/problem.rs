//! The gateway's catalogue of errors: every error the gateway itself sends
//! is the platform's one RFC 9457 `application/problem+json` body
//! (`store_domain::Problem`: `type`, `title`, `status`, `detail`,
//! `instance`, `error`, `message`, `requestId`), rendered by
//! `service_kit::problem`; the request-id layer fills in the id and path.

use std::time::Duration;

use axum::{
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use store_domain::{PROBLEM_TYPE_BASE, Problem};

/// The message of a fail-closed denial (part of the contract).
pub const SECURITY_UNAVAILABLE_MESSAGE: &str =
    "Access denied due to security system unavailability.";

/// The gateway's error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Code {
    /// 401: no token, or a token that does not verify.
    Unauthorized,
    /// 403: the token lacks a scope.
    InsufficientScope,
    /// 503: the signing keys cannot be obtained or are too old.
    SecurityServiceUnavailable,
    /// 429: the client's bucket is empty.
    RateLimited,
    /// 404: no route.
    NotFound,
    /// 405: the route does not allow the method.
    MethodNotAllowed,
    /// 400: a path that could escape its route, or a malformed request.
    BadRequest,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 502: the upstream could not be reached or broke the exchange.
    BadGateway,
    /// 503: the upstream's breaker is open.
    UpstreamUnavailable,
    /// 504: the upstream did not answer in time.
    GatewayTimeout,
    /// 503: the gateway is shutting down or not ready.
    ServiceUnavailable,
    /// 503: the upstream is down and the write queue is full (or cannot
    /// take the write): nothing was accepted.
    WriteQueueFull,
    /// 503: the upstream is down and the write queue could not make the
    /// write durable (its storage failed, or the shared queue did not
    /// confirm it in time): nothing was accepted.
    WriteQueueUnavailable,
    /// 429: the upstream is down and this subject already has as many
    /// unfinished queued writes as one subject may: nothing was accepted.
    TooManyQueuedWrites,
    /// 400: a write's `Idempotency-Key` breaks the store API's rule (1 to
    /// 255 visible ASCII characters): refused before it is forwarded or
    /// queued.
    InvalidIdempotencyKey,
}

impl Code {
    /// The stable name (`error` field).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unauthorized => "UNAUTHORIZED",
            Self::InsufficientScope => "INSUFFICIENT_SCOPE",
            Self::SecurityServiceUnavailable => "SECURITY_SERVICE_UNAVAILABLE",
            Self::RateLimited => "RATE_LIMITED",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::BadRequest => "BAD_REQUEST",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::BadGateway => "BAD_GATEWAY",
            Self::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            Self::GatewayTimeout => "GATEWAY_TIMEOUT",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::WriteQueueFull => "WRITE_QUEUE_FULL",
            Self::WriteQueueUnavailable => "WRITE_QUEUE_UNAVAILABLE",
            Self::TooManyQueuedWrites => "TOO_MANY_QUEUED_WRITES",
            Self::InvalidIdempotencyKey => "INVALID_IDEMPOTENCY_KEY",
        }
    }

    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope => StatusCode::FORBIDDEN,
            Self::SecurityServiceUnavailable
            | Self::UpstreamUnavailable
            | Self::ServiceUnavailable
            | Self::WriteQueueFull
            | Self::WriteQueueUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited | Self::TooManyQueuedWrites => StatusCode::TOO_MANY_REQUESTS,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BadRequest | Self::InvalidIdempotencyKey => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The title (the same for every occurrence).
    pub fn title(self) -> &'static str {
        match self {
            Self::Unauthorized => "Unauthorized",
            Self::InsufficientScope => "Insufficient scope",
            Self::SecurityServiceUnavailable => "Security service unavailable",
            Self::RateLimited => "Too many requests",
            Self::NotFound => "Not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::BadRequest => "Bad request",
            Self::PayloadTooLarge => "Payload too large",
            Self::BadGateway => "Bad gateway",
            Self::UpstreamUnavailable => "Upstream unavailable",
            Self::GatewayTimeout => "Gateway timeout",
            Self::ServiceUnavailable => "Service unavailable",
            Self::WriteQueueFull => "Write queue full",
            Self::WriteQueueUnavailable => "Write queue unavailable",
            Self::TooManyQueuedWrites => "Too many queued writes",
            Self::InvalidIdempotencyKey => "Invalid idempotency key",
        }
    }

    /// The default message.
    pub fn message(self) -> &'static str {
        match self {
            Self::Unauthorized => "A valid bearer token is required.",
            Self::InsufficientScope => "The token does not grant the scope this request needs.",
            Self::SecurityServiceUnavailable => SECURITY_UNAVAILABLE_MESSAGE,
            Self::RateLimited => "Too many requests; retry after the time in Retry-After.",
            Self::NotFound => "No route for this path.",
            Self::MethodNotAllowed => "This route does not allow the method.",
            Self::BadRequest => "The request is malformed.",
            Self::PayloadTooLarge => "The request body is larger than the gateway accepts.",
            Self::BadGateway => "The upstream service could not be reached.",
            Self::UpstreamUnavailable => "The upstream service is unavailable; retry later.",
            Self::GatewayTimeout => "The upstream service did not answer in time.",
            Self::ServiceUnavailable => "The gateway is not available.",
            Self::WriteQueueFull => {
                "The upstream service is unavailable and the gateway cannot queue more writes; nothing was accepted. Retry later."
            }
            Self::WriteQueueUnavailable => {
                "The upstream service is unavailable and the gateway could not store the write durably; nothing was accepted. Retry after the time in Retry-After."
            }
            Self::TooManyQueuedWrites => {
                "The upstream service is unavailable and you already have as many queued writes as one client may; nothing was accepted. Retry after the time in Retry-After."
            }
            Self::InvalidIdempotencyKey => {
                "The Idempotency-Key header must be 1 to 255 printable ASCII characters."
            }
        }
    }

    fn kebab(self) -> String {
        self.name().to_ascii_lowercase().replace('_', "-")
    }
}

/// A problem the gateway answers with, plus its extra headers; becomes a
/// response completed by the request-id layer.
#[derive(Clone, Debug)]
pub struct GatewayError {
    /// The code.
    pub code: Code,
    /// The message (default: the code's).
    pub message: Option<String>,
    /// `Retry-After`, in seconds (rounded up).
    pub retry_after: Option<Duration>,
    /// More headers (`WWW-Authenticate`, `Allow`, rate-limit fields).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl GatewayError {
    /// An error of kind `code` with its default message.
    pub fn new(code: Code) -> Self {
        Self {
            code,
            message: None,
            retry_after: None,
            headers: Vec::new(),
        }
    }

    /// With a specific message (never quoting input).
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// With `Retry-After`.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// With one more header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The body for request `request_id` at `instance`.
    pub fn problem(&self, request_id: &str, instance: &str) -> Problem {
        let message = self
            .message
            .clone()
            .unwrap_or_else(|| self.code.message().to_owned());
        Problem {
            type_uri: format!("{PROBLEM_TYPE_BASE}{}", self.code.kebab()),
            title: self.code.title().to_owned(),
            status: self.code.status().as_u16(),
            detail: Some(message.clone()),
            instance: Some(instance.to_owned()),
            error: self.code.name().to_owned(),
            message,
            request_id: request_id.to_owned(),
            errors: None,
            current_version: None,
        }
    }

    /// The full response for request `request_id` at `instance` (the
    /// request-id layer completes it again with the request's own).
    pub fn to_response(&self, request_id: &str, instance: &str) -> Response {
        let mut response = service_kit::problem::response(self.problem(request_id, instance));
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        response
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        self.to_response("", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_closed_body_is_the_contract() {
        let error = GatewayError::new(Code::SecurityServiceUnavailable)
            .retry_after(Duration::from_millis(1500));
        let response = error.to_response("req-1", "/api/stores");
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = serde_json::to_value(error.problem("req-1", "/api/stores")).unwrap();
        assert_eq!(body["error"], "SECURITY_SERVICE_UNAVAILABLE");
        assert_eq!(
            body["message"],
            "Access denied due to security system unavailability."
        );
        assert_eq!(body["detail"], body["message"]);
        assert_eq!(body["requestId"], "req-1");
        assert_eq!(body["instance"], "/api/stores");
        assert_eq!(
            body["type"],
            "https://example.invalid/problems/security-service-unavailable"
        );
        assert_eq!(body["status"], 503);
    }
}
