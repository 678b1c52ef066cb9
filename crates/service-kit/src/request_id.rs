//! The request id: a sane incoming `X-Request-Id` is kept, anything else is
//! replaced by a UUIDv7. It is set on the request (so a proxy forwards it),
//! in the request's extensions ([`RequestId`]), on every log line of the
//! request (a `request` span with `request_id`, `method`, `path`,
//! `status`), in every problem body ([`problem::complete`]), and echoed in
//! the response.

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::Response,
};
use tracing::Instrument;

use crate::{problem, telemetry};

/// The header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id accepted from a client.
pub const MAX_LEN: usize = sanitize::REQUEST_ID_MAX_LEN;

/// The current request's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Whether a client's id is kept: 1 to 128 characters of `A-Z a-z 0-9 - _ . :`
/// (the platform's one rule, `sanitize::request_id`).
#[must_use]
pub fn is_sane(id: &str) -> bool {
    sanitize::request_id(id).is_some()
}

/// The middleware (outermost layer, `axum::middleware::from_fn(layer)`):
/// sets the id on the request (replacing the client's header when it is
/// not sane), makes a W3C `traceparent` the parent of the request's span
/// ([`telemetry::set_remote_parent`]), logs `request done` with the status,
/// completes problem bodies and echoes the id.
pub async fn layer(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_sane(v))
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
    let path = request.uri().path().to_owned();
    let value = HeaderValue::from_str(&id).ok();
    if let Some(value) = &value {
        request
            .headers_mut()
            .insert(X_REQUEST_ID.clone(), value.clone());
    }
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %path,
        status = tracing::field::Empty,
    );
    telemetry::set_remote_parent(&span, request.headers());
    let response = next.run(request).instrument(span.clone()).await;
    let mut response = problem::complete(response, &id, &path);
    span.record("status", response.status().as_u16());
    span.in_scope(|| tracing::info!(status = response.status().as_u16(), "request done"));
    if let Some(value) = value {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanity() {
        assert!(is_sane("req-1.a:b_c"));
        assert!(!is_sane(""));
        assert!(!is_sane("a b"));
        assert!(!is_sane("<script>"));
        assert!(!is_sane(&"a".repeat(MAX_LEN + 1)));
    }
}
