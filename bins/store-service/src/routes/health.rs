//! `GET /health`: the process answers (liveness; no dependency checked).

use axum::Json;
use serde_json::{Value, json};

/// `{"status":"healthy","service":"store-service"}`.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process is alive", body = Object,
        example = json!({"status": "healthy", "service": "store-service"}))))]
pub async fn health() -> Json<Value> {
    Json(json!({"status": "healthy", "service": "store-service"}))
}
