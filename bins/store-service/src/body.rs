//! Reading a request body within [`MAX_BODY_BYTES`]: shared by the
//! idempotency layer (which fingerprints the body) and the handlers.

use axum::body::{Body, Bytes};
use store_domain::ErrorCode;

use crate::problem::ApiError;

/// Bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The body's bytes: 413 over [`MAX_BODY_BYTES`], 400 `INVALID_BODY` when
/// it cannot be read (a broken chunked encoding, an aborted upload).
pub async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|error| {
            let inner = error.into_inner();
            let too_large =
                std::iter::successors(Some(&*inner as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            ApiError::Code(if too_large {
                ErrorCode::PayloadTooLarge
            } else {
                ErrorCode::InvalidBody
            })
        })
}
