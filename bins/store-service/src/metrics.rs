//! Prometheus metrics through the `metrics` facade: request counts and
//! latency by route and status, and requests in flight (this layer), pool and failover figures
//! (db-failover's `metrics` feature, plus gauges set here at each scrape),
//! Vault lease TTL (vault-client's `metrics` feature). Rendered on
//! `GET /metrics`; no HTTP listener of the exporter's own.
//!
//! Every label value comes from a closed set, so that no client can grow
//! the registry (each new label value is a series kept for the life of the
//! process): `method` is one of `KNOWN_METHODS` or `OTHER_METHOD`
//! ([`method_label`], `service_kit::prometheus`),
//! `route` is a path template of the router (`/api/stores/{id}`) or
//! [`UNMATCHED_ROUTE`], never the request's path, and `status` is a status
//! code the service answered with. The other labels (`node`, `op`, `role`,
//! `breaker`) come from the configuration and the code.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::Response,
};
use metrics_exporter_prometheus::PrometheusHandle;
use service_kit::prometheus::method_label;

use crate::state::AppState;

/// The buckets of every histogram (all are durations in seconds): 1 ms to
/// 30 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The `route` label value of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The `route` label value of a request: the path template it matched, or
/// [`UNMATCHED_ROUTE`].
pub fn route_label(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |p| p.as_str().to_owned())
}

/// Installs the Prometheus recorder (once per process, shared by every
/// `Application` of the process; `service_kit::prometheus`) with the
/// service's buckets and descriptions, and returns its handle.
pub fn install() -> PrometheusHandle {
    service_kit::prometheus::install(&LATENCY_BUCKETS, || {
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
    })
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
    service_kit::prometheus::render(&state.metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unrouted_requests_share_one_route_label() {
        let request = Request::builder()
            .uri("/invented/path/12345")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(route_label(&request), UNMATCHED_ROUTE);
    }
}
