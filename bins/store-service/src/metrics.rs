//! Prometheus metrics through the `metrics` facade: request counts and
//! latency by route and status, and requests in flight (this layer), pool and failover figures
//! (db-failover's `metrics` feature, plus gauges set here at each scrape),
//! Vault lease TTL (vault-client's `metrics` feature). Rendered on
//! `GET /metrics`; no HTTP listener of the exporter's own.
//!
//! Every label value comes from a closed set, so that no client can grow
//! the registry (each new label value is a series kept for the life of the
//! process): `method` is one of [`KNOWN_METHODS`] or [`OTHER_METHOD`],
//! `route` is a path template of the router (`/api/stores/{id}`) or
//! [`UNMATCHED_ROUTE`], never the request's path, and `status` is a status
//! code the service answered with. The other labels (`node`, `op`, `role`,
//! `breaker`) come from the configuration and the code.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::startup::AppState;

/// The buckets of every histogram (all are durations in seconds): 1 ms to
/// 30 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The methods that are their own `method` label value: RFC 9110's and
/// `PATCH`.
pub const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// The `method` label value of every other (extension) method.
pub const OTHER_METHOD: &str = "OTHER";

/// The `route` label value of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The `method` label value of `method`: its name when it is one of
/// [`KNOWN_METHODS`], else [`OTHER_METHOD`].
pub fn method_label(method: &Method) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|known| **known == method.as_str())
        .copied()
        .unwrap_or(OTHER_METHOD)
}

/// The `route` label value of a request: the path template it matched, or
/// [`UNMATCHED_ROUTE`].
pub fn route_label(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |p| p.as_str().to_owned())
}

/// The process-wide recorder's handle (installed once, shared by every
/// `Application` of the process).
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
            // Another recorder installed by the embedding program wins; the
            // handle then renders an empty registry.
            let _ = metrics::set_global_recorder(recorder);
            metrics::describe_counter!(
                "http_requests_total",
                "HTTP requests by method, route and status"
            );
            metrics::describe_histogram!(
                "http_request_duration_seconds",
                "HTTP request latency by method, route and status"
            );
            metrics::describe_gauge!(
                "http_requests_in_flight",
                "HTTP requests started and not yet answered, by method and route"
            );
            handle
        })
        .clone()
}

/// Counts a request in flight until dropped (also when the client goes
/// away and the request's future is dropped).
struct InFlight(metrics::Gauge);

impl InFlight {
    fn start(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The middleware: one count and one latency sample per request, and the
/// requests in flight.
pub async fn layer(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = route_label(&request);
    let in_flight = InFlight::start(metrics::gauge!(
        "http_requests_in_flight",
        "method" => method,
        "route" => route.clone()
    ));
    let response = next.run(request).await;
    drop(in_flight);
    let status = response.status().as_u16().to_string();
    metrics::counter!(
        "http_requests_total",
        "method" => method,
        "route" => route.clone(),
        "status" => status.clone()
    )
    .increment(1);
    metrics::histogram!(
        "http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => status
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`: the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn render(State(state): State<AppState>) -> Response {
    let health = state.cluster.health();
    metrics::gauge!("store_db_primary_up").set(if health.is_ready() { 1.0 } else { 0.0 });
    metrics::gauge!("store_db_topology_generation").set(health.generation as f64);
    metrics::gauge!("store_db_readable_replicas").set(health.readable_replicas().count() as f64);
    for node in &health.nodes {
        let labels = [("node", node.address.clone())];
        let in_use = node.pool.size.saturating_sub(node.pool.available);
        metrics::gauge!("store_db_pool_in_use", &labels).set(in_use as f64);
        metrics::gauge!("store_db_pool_size", &labels).set(node.pool.size as f64);
    }
    if let Some(leases) = &state.leases {
        let current = leases.current();
        let ttl = current
            .expires_at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        metrics::gauge!("store_db_credentials_ttl_seconds").set(ttl.as_secs_f64());
        metrics::gauge!("store_db_credentials_generation").set(current.generation as f64);
    }
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_map_to_a_closed_set() {
        for known in KNOWN_METHODS {
            let method = Method::from_bytes(known.as_bytes()).unwrap();
            assert_eq!(method_label(&method), known);
        }
        for invented in ["M00001AAAA", "get", "PROPFIND", "BREW", "GETS"] {
            let method = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(method_label(&method), OTHER_METHOD, "{invented}");
        }
    }

    #[test]
    fn unrouted_requests_share_one_route_label() {
        let request = Request::builder()
            .uri("/invented/path/12345")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(route_label(&request), UNMATCHED_ROUTE);
    }
}
