//! `GET /health` (the process answers) and `GET /ready`: the configuration
//! is loaded (it is, or the process would not run), every upstream's host
//! resolves, the signing keys were obtained at least once, and the write
//! queue answers. Neither needs a token.
//!
//! The shared (JetStream) queue is reported but does not make a gateway
//! unready: its cluster is the same for every gateway, so pulling them all
//! out of the Service would turn "writes get 503 WRITE_QUEUE_UNAVAILABLE"
//! into "nothing answers", stale reads included. An embedded queue that
//! fails is this pod's own disk: another pod may do better.

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
    // The queue answers a read (its file is open and readable, or its
    // cluster answers), in time.
    let (queue, queue_gates) = match &gateway.degraded {
        Some(degraded) => (
            tokio::time::timeout(Duration::from_secs(2), degraded.queue.stats())
                .await
                .is_ok_and(|stats| stats.is_ok()),
            degraded.queue.backend_name() != "jetstream",
        ),
        None => (false, true),
    };
    let ready = keys
        && (queue || !queue_gates)
        && !shutting_down
        && upstreams.values().all(|v| v == &json!(true));
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
