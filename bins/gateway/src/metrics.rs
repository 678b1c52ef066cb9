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
//! | `breaker_*` | `breaker` | the `breaker` crate's figures for every breaker |

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

use crate::{routing::RouteLabel, startup::Gateway};

/// The buckets of every histogram (all are durations in seconds): 0.5 ms
/// to 30 s.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

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
            breaker::describe_metrics();
            handle
        })
        .clone()
}

/// A route's metric handles by method and status, so the hot path does
/// not rebuild and hash label sets for every request.
#[derive(Default)]
pub struct RouteMetrics(
    std::sync::RwLock<std::collections::HashMap<(Method, u16), (Counter, Histogram)>>,
);

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteMetrics")
    }
}

impl RouteMetrics {
    /// Counts one request of route `route`.
    pub fn record(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let key = (method.clone(), status);
        let known = self.0.read().ok().and_then(|m| m.get(&key).cloned());
        let (counter, histogram) = known.unwrap_or_else(|| {
            let labels = [
                ("route", route.to_owned()),
                ("method", method.to_string()),
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
    let path = request.uri().path();
    let own = matches!(path, "/health" | "/ready" | "/metrics").then(|| path.to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16();
    match (own, response.extensions().get::<RouteLabel>()) {
        (None, Some(RouteLabel(route))) => route.record(&method, status, started.elapsed()),
        (own, _) => {
            let labels = [
                ("route", own.unwrap_or_else(|| "unmatched".to_owned())),
                ("method", method.to_string()),
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
