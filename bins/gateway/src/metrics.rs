//! Prometheus metrics through the `metrics` facade, rendered on
//! `GET /metrics` (no listener of the exporter's own):
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `gateway_requests_total` | `route`, `method`, `status` | every request |
//! | `gateway_request_duration_seconds` | `route`, `method`, `status` | latency histogram |
//! | `gateway_auth_failures_total` | `reason` | refused tokens, fail-closed denials, missing scopes |
//! | `gateway_rate_limited_total` | `route` | 429s |
//! | `gateway_alerts_total` / `gateway_alert_active` | `alert` | critical alerts raised / raised now |
//! | `gateway_security_breaker_state` | | 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed |
//! | `gateway_jwks_age_seconds` | | age of the signing keys (-1: none yet) |
//! | `gateway_jwks_fetches_total` | `outcome` | key fetches |
//! | `gateway_upstream_circuit_state` | `upstream` | each route's breaker, as above |
//! | `gateway_stale_responses_total` | `reason` | stale copies served (`circuit_open`, `service_unavailable`, `timeout`) |
//! | `gateway_queued_writes_total` / `gateway_queue_refused_total` | `route` / | writes queued / refused with 503 |
//! | `gateway_queue_unavailable_total` | | writes refused with 503 `WRITE_QUEUE_UNAVAILABLE` |
//! | `gateway_queue_depth`, `gateway_queue_bytes`, `gateway_queue_oldest_age_seconds` | | the write queue (fleet-wide with JetStream) |
//! | `gateway_replays_total` | `outcome` | replay attempts: `completed`, `retried`, `expired`, `failed` |
//! | `breaker_*` | `breaker` | the `breaker` crate's figures for every breaker |
//!
//! Every label value comes from a closed set, never from the request as
//! sent: `method` is one of `service_kit::prometheus::KNOWN_METHODS` or
//! `OTHER` ([`method_label`]); `route` is a
//! configured route's name, `health`/`ready`/`metrics`/`requests` for the
//! gateway's own endpoints, or `unmatched`; `status` is the answer's code.
//! A client inventing methods and paths adds no series.

use std::time::Instant;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::Response,
};
use metrics_exporter_prometheus::PrometheusHandle;
use service_kit::prometheus::method_label;

use crate::{queue::WriteQueue, routes::RouteLabel, state::Gateway};

/// The buckets of every histogram (all are durations in seconds): 0.5 ms
/// to 30 s.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The `route` label of a request that no configured route answered.
fn own_route(path: &str) -> &'static str {
    match path {
        "/health" => "health",
        "/ready" => "ready",
        "/metrics" => "metrics",
        "/openapi.json" => "openapi",
        _ if path.starts_with("/api/requests/") => "requests",
        _ => "unmatched",
    }
}

/// Installs the Prometheus recorder (once; `service_kit::prometheus`) with
/// the gateway's buckets and descriptions, and returns its handle.
pub fn install() -> PrometheusHandle {
    service_kit::prometheus::install(&LATENCY_BUCKETS, || {
        metrics::describe_counter!(
            "gateway_requests_total",
            "Requests by route, method and status"
        );
        metrics::describe_histogram!(
            "gateway_request_duration_seconds",
            "Request latency by route, method and status"
        );
        metrics::describe_counter!(
            "gateway_auth_failures_total",
            "Requests refused by authentication, by reason"
        );
        metrics::describe_counter!(
            "gateway_rate_limited_total",
            "Requests refused by the rate limit, by route"
        );
        metrics::describe_gauge!(
            "gateway_security_breaker_state",
            "The security breaker: 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed"
        );
        metrics::describe_gauge!(
            "gateway_jwks_age_seconds",
            "Age of the cached signing keys (-1: none yet)"
        );
        metrics::describe_counter!(
            "gateway_jwks_fetches_total",
            "Signing key fetches by outcome"
        );
        metrics::describe_gauge!(
            "gateway_upstream_circuit_state",
            "Each upstream's breaker: 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed"
        );
        metrics::describe_counter!(
            "gateway_stale_responses_total",
            "Stale copies served while an upstream was down, by reason"
        );
        metrics::describe_counter!(
            "gateway_queued_writes_total",
            "Writes queued while their upstream was down, by route"
        );
        metrics::describe_counter!(
            "gateway_queue_refused_total",
            "Writes refused because the queue was full or failed (503)"
        );
        metrics::describe_counter!(
            "gateway_queue_unavailable_total",
            "Writes answered 503 WRITE_QUEUE_UNAVAILABLE: the queue could not make them durable"
        );
        metrics::describe_gauge!("gateway_queue_depth", "Queued writes not finished yet");
        metrics::describe_gauge!(
            "gateway_queue_bytes",
            "Bytes of the queued writes not finished yet"
        );
        metrics::describe_gauge!(
            "gateway_queue_oldest_age_seconds",
            "Age of the oldest unfinished queued write (0: none)"
        );
        metrics::describe_counter!(
            "gateway_replays_total",
            "Replay attempts of queued writes, by outcome (completed, retried, expired, failed)"
        );
        breaker::describe_metrics();
        // Present (at 0) from the start, so that rates and alerts see
        // them before the first event.
        for reason in ["circuit_open", "service_unavailable", "timeout"] {
            metrics::counter!("gateway_stale_responses_total", "reason" => reason).increment(0);
        }
        for outcome in ["completed", "retried", "expired", "failed"] {
            metrics::counter!("gateway_replays_total", "outcome" => outcome).increment(0);
        }
        metrics::counter!("gateway_queue_refused_total").increment(0);
        metrics::counter!("gateway_queue_unavailable_total").increment(0);
    })
}

/// The middleware: one count and one latency sample per request.
pub async fn layer(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let own = own_route(request.uri().path());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    match response.extensions().get::<RouteLabel>() {
        Some(RouteLabel(route)) => route.record(&method, status, started.elapsed()),
        None => {
            let labels = [
                ("route", own.to_owned()),
                ("method", method_label(&method).to_owned()),
                ("status", status.to_string()),
            ];
            metrics::counter!("gateway_requests_total", &labels).increment(1);
            metrics::histogram!("gateway_request_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
        }
    }
    response
}

/// `GET /metrics`: the Prometheus text format.
pub async fn render(State(gateway): State<std::sync::Arc<Gateway>>) -> Response {
    let keys = gateway.verifier.keys();
    keys.breaker().export_metrics();
    for route in gateway.routes.0.iter() {
        route.breaker.export_metrics();
        metrics::gauge!("gateway_upstream_circuit_state", "upstream" => route.name.clone())
            .set(state_number(route.breaker.state()));
    }
    if let Some(degraded) = &gateway.degraded {
        queue_gauges(&degraded.queue).await;
    }
    metrics::gauge!("gateway_security_breaker_state").set(state_number(keys.breaker().state()));
    metrics::gauge!("gateway_jwks_age_seconds")
        .set(keys.age().map_or(-1.0, |age| age.as_secs_f64()));
    service_kit::prometheus::render(&gateway.metrics)
}

/// Sets the queue's gauges: depth, bytes and the oldest write's age. A
/// queue that does not answer within a second keeps the last figures (a
/// scrape never waits on an unreachable cluster).
pub async fn queue_gauges(queue: &WriteQueue) {
    let stats = tokio::time::timeout(std::time::Duration::from_secs(1), queue.stats()).await;
    match stats {
        Err(_) => tracing::warn!("the write queue's figures did not come in time"),
        Ok(Err(error)) => tracing::error!(%error, "reading the write queue's figures failed"),
        Ok(Ok(stats)) => {
            metrics::gauge!("gateway_queue_depth").set(stats.depth as f64);
            metrics::gauge!("gateway_queue_bytes").set(stats.bytes as f64);
            let age = stats.oldest_accepted_ms.map_or(0.0, |at| {
                let now = crate::queue::millis(std::time::SystemTime::now());
                now.saturating_sub(at) as f64 / 1000.0
            });
            metrics::gauge!("gateway_queue_oldest_age_seconds").set(age);
        }
    }
}

/// The gauge value of a breaker state.
pub fn state_number(state: breaker::State) -> f64 {
    match state {
        breaker::State::Closed => 0.0,
        breaker::State::Open => 1.0,
        breaker::State::HalfOpen => 2.0,
        breaker::State::ForcedOpen => 3.0,
        breaker::State::ForcedClosed => 4.0,
        _ => -1.0,
    }
}
