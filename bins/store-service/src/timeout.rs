//! The request timeout: 504 `TIMEOUT` (a problem body) after the budget.

use std::time::Duration;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use store_domain::ErrorCode;

use crate::problem::ApiError;

/// The middleware.
pub async fn layer(State(budget): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(budget, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Code(ErrorCode::Timeout).into_response(),
    }
}
