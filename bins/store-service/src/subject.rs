//! Who is asking: the subject the gateway verified, from its
//! `x-gateway-subject` header ([`ACTOR_HEADER`]), decoded by store-domain's
//! [`Actor`].
//!
//! The gateway authenticates every caller, removes that header from every
//! client request and sets it to the verified subject (the token's `sub`,
//! percent-encoded). This layer decodes it into an [`Actor`] request
//! extension, which the idempotency layer keys its records by and the
//! handlers write into the audit trail. A request without the header (one
//! that reached the service directly: local use, tests) belongs to the
//! anonymous subject and has no [`Actor`] extension. The service trusts the
//! header because only the gateway may call it: in `deploy/`, Istio's
//! `AuthorizationPolicy` admits the gateway's service account alone (and
//! Prometheus for `GET /metrics`), behind a default-deny `NetworkPolicy`.
//!
//! A header that does not decode ([`store_domain::ActorError`]), or more
//! than one, is a 400 `INVALID_SUBJECT` problem, on every route; the value
//! is never echoed or logged.

use axum::{
    extract::Request,
    middleware::Next,
    response::{IntoResponse, Response},
};
use store_domain::{ACTOR_HEADER, Actor, ErrorCode};

use crate::problem::ApiError;

/// The subject of a request: its [`Actor`] extension, `None` when
/// anonymous.
pub fn of(request: &Request) -> Option<Actor> {
    request.extensions().get::<Actor>().cloned()
}

/// The key of the anonymous subject's idempotency records (a subject is
/// never empty).
pub const ANONYMOUS: &str = "";

/// The middleware, outside the idempotency layer: decodes the header into
/// an [`Actor`] extension, or answers 400 `INVALID_SUBJECT`.
pub async fn layer(mut request: Request, next: Next) -> Response {
    // Any client-sent copy of the header is an error, never a second
    // extension: the gateway sends exactly one.
    let mut values = request.headers().get_all(ACTOR_HEADER).iter();
    let decoded = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(value), None) => match Actor::from_header_value(value.as_bytes()) {
            Ok(actor) => Some(actor),
            Err(error) => {
                tracing::warn!(%error, "refused the subject header");
                return ApiError::Code(error.code()).into_response();
            }
        },
        (Some(_), Some(_)) => {
            tracing::warn!("refused a request with more than one subject header");
            return ApiError::Code(ErrorCode::InvalidSubject).into_response();
        }
    };
    if let Some(actor) = decoded {
        request.extensions_mut().insert(actor);
    }
    next.run(request).await
}
