//! The HTTP handlers.

pub mod health;
pub mod stores;

use store_domain::ErrorCode;

use crate::problem::ApiError;

/// Any unknown path: 404 `NOT_FOUND`.
pub async fn not_found() -> ApiError {
    ApiError::Code(ErrorCode::NotFound)
}

/// A known path with another method: 405 `METHOD_NOT_ALLOWED`.
pub async fn method_not_allowed() -> ApiError {
    ApiError::Code(ErrorCode::MethodNotAllowed)
}
