//! `GET /health` (the process answers) and `GET /ready`: the configuration
//! is loaded (it is, or the process would not run), every upstream's host
//! resolves, the signing keys were obtained at least once, and the write
//! queue is open. Neither
//! needs a token.

use std::{sync::Arc, time::Duration};

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;

use crate::state::Gateway;

/// `GET /health`.
pub async fn health() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// `GET /ready`: 200 when ready, else 503 with each check.
pub async fn ready(State(gateway): State<Arc<Gateway>>) -> impl IntoResponse {
    let keys = gateway.verifier.keys().obtained_once();
    let mut upstreams = serde_json::Map::new();
    for route in gateway.routes.0.iter() {
        let resolves = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::lookup_host(route.address.clone()),
        )
        .await
        .is_ok_and(|r| r.is_ok_and(|mut addrs| addrs.next().is_some()));
        upstreams.insert(route.name.clone(), json!(resolves));
    }
    let shutting_down = gateway.is_shutting_down();
    // The queue answers a read (its file is open and readable).
    let queue = match &gateway.degraded {
        Some(degraded) => degraded.queue.stats().await.is_ok(),
        None => false,
    };
    let ready = keys && queue && !shutting_down && upstreams.values().all(|v| v == &json!(true));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not ready" },
            "configuration": true,
            "signingKeys": keys,
            "writeQueue": queue,
            "upstreams": upstreams,
            "shuttingDown": shutting_down,
        })),
    )
}
