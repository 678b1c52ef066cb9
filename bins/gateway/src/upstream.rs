//! The pooled upstream client (hyper-util's, HTTP/1.1 with keep-alive):
//! built once at start, shared by the proxy and the replay of queued
//! writes.

use std::time::Duration;

use axum::body::Body;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};

/// The pooled upstream client.
pub type UpstreamClient = Client<HttpConnector, Body>;

/// A client keeping at most `max_idle` idle connections per upstream for
/// `idle_timeout`, connecting within `connect_timeout`. (A burst of
/// thousands of requests opens as many upstream connections; without the
/// cap all of them stayed pooled, holding the gateway's and the upstream's
/// memory, until the idle timeout.)
pub fn client(
    idle_timeout: Duration,
    connect_timeout: Duration,
    max_idle: usize,
) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle_timeout)
        .pool_max_idle_per_host(max_idle)
        .pool_timer(TokioTimer::new())
        .build(connector)
}
