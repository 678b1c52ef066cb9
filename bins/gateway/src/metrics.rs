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
//! | `gateway_queue_depth`, `gateway_queue_bytes`, `gateway_queue_oldest_age_seconds` | | the write queue |
//! | `gateway_replays_total` | `outcome` | replay attempts: `completed`, `retried`, `expired`, `failed` |
//! | `breaker_*` | `breaker` | the `breaker` crate's figures for every breaker |
//!
//! Every label value comes from a closed set, never from the request as
//! sent: `method` is one of [`METHODS`] or `OTHER`; `route` is a
//! configured route's name, `health`/`ready`/`metrics`/`requests` for the
//! gateway's own endpoints, or `unmatched`; `status` is the answer's code.
//! A client inventing methods and paths adds no series.

use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::{routing::RouteLabel, state::Gateway};

/// The buckets of every histogram (all are durations in seconds): 0.5 ms
/// to 30 s.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The methods that are their own `method` label; any other is `OTHER`.
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// The `method` label of `method`: its name if it is one of [`METHODS`],
/// else `OTHER`.
pub fn method_label(method: &Method) -> &'static str {
    METHODS
        .iter()
        .find(|known| **known == method.as_str())
        .copied()
        .unwrap_or("OTHER")
}

/// The `route` label of a request that no configured route answered.
fn own_route(path: &str) -> &'static str {
    match path {
        "/health" => "health",
        "/ready" => "ready",
        "/metrics" => "metrics",
        _ if path.starts_with("/api/requests/") => "requests",
        _ => "unmatched",
    }
}

/// The process-wide recorder's handle.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Histograms with buckets (not the exporter's default summaries):
            // buckets add up across pods, quantiles do not.
            let recorder = PrometheusBuilder::new()
                .set_buckets(&LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            // A recorder installed by the embedding program wins.
            let _ = metrics::set_global_recorder(recorder);
            metrics::describe_counter!("gateway_requests_total", "Requests by route, method and status");
            metrics::describe_histogram!("gateway_request_duration_seconds", "Request latency by route, method and status");
            metrics::describe_counter!("gateway_auth_failures_total", "Requests refused by authentication, by reason");
            metrics::describe_counter!("gateway_rate_limited_total", "Requests refused by the rate limit, by route");
            metrics::describe_gauge!("gateway_security_breaker_state", "The security breaker: 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed");
            metrics::describe_gauge!("gateway_jwks_age_seconds", "Age of the cached signing keys (-1: none yet)");
            metrics::describe_counter!("gateway_jwks_fetches_total", "Signing key fetches by outcome");
            metrics::describe_gauge!("gateway_upstream_circuit_state", "Each upstream's breaker: 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed");
            metrics::describe_counter!("gateway_stale_responses_total", "Stale copies served while an upstream was down, by reason");
            metrics::describe_counter!("gateway_queued_writes_total", "Writes queued while their upstream was down, by route");
            metrics::describe_counter!("gateway_queue_refused_total", "Writes refused because the queue was full or failed (503)");
            metrics::describe_gauge!("gateway_queue_depth", "Queued writes not finished yet");
            metrics::describe_gauge!("gateway_queue_bytes", "Bytes of the queued writes not finished yet");
            metrics::describe_gauge!("gateway_queue_oldest_age_seconds", "Age of the oldest unfinished queued write (0: none)");
            metrics::describe_counter!("gateway_replays_total", "Replay attempts of queued writes, by outcome (completed, retried, expired, failed)");
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
            handle
        })
        .clone()
}

/// A route's metric handles by method label and status, so the hot path
/// does not rebuild and hash label sets for every request (bounded: ten
/// method labels times the status codes).
#[derive(Default)]
pub struct RouteMetrics(std::sync::RwLock<HandlesByLabels>);

/// Metric handles by (method label, status).
type HandlesByLabels = std::collections::HashMap<(&'static str, u16), (Counter, Histogram)>;

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteMetrics")
    }
}

impl RouteMetrics {
    /// Counts one request of route `route`.
    pub fn record(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let key = (method_label(method), status);
        let known = self.0.read().ok().and_then(|m| m.get(&key).cloned());
        let (counter, histogram) = known.unwrap_or_else(|| {
            let labels = [
                ("route", route.to_owned()),
                ("method", key.0.to_owned()),
                ("status", status.to_string()),
            ];
            let handles = (
                metrics::counter!("gateway_requests_total", &labels),
                metrics::histogram!("gateway_request_duration_seconds", &labels),
            );
            if let Ok(mut map) = self.0.write() {
                map.insert(key, handles.clone());
            }
            handles
        });
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
    }
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
    let mut response = gateway.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// Sets the queue's gauges: depth, bytes and the oldest write's age.
pub async fn queue_gauges(queue: &std::sync::Arc<crate::queue::WriteQueue>) {
    match crate::replay::blocking(queue, crate::queue::WriteQueue::stats).await {
        Ok(stats) => {
            metrics::gauge!("gateway_queue_depth").set(stats.depth as f64);
            metrics::gauge!("gateway_queue_bytes").set(stats.bytes as f64);
            let age = stats.oldest_accepted_ms.map_or(0.0, |at| {
                let now = crate::queue::millis(std::time::SystemTime::now());
                now.saturating_sub(at) as f64 / 1000.0
            });
            metrics::gauge!("gateway_queue_oldest_age_seconds").set(age);
        }
        Err(error) => tracing::error!(%error, "reading the write queue's figures failed"),
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
