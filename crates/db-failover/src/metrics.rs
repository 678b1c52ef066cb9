//! Metrics through the `metrics` facade (feature `metrics`); without the
//! feature every function here is an empty inline function.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `db_failover_pool_size` | gauge: open connections | `node` |
//! | `db_failover_pool_available` | gauge: idle connections | `node` |
//! | `db_failover_pool_waiting` | gauge: requests waiting | `node` |
//! | `db_failover_pool_wait_seconds` | histogram: time to get a connection | `node` |
//! | `db_failover_probe_seconds` | histogram: successful probe latency | `node` |
//! | `db_failover_probe_failures_total` | counter | `node` |
//! | `db_failover_node_up` | gauge: 1 up, 0 not | `node` |
//! | `db_failover_replica_lag_bytes` | gauge | `node` |
//! | `db_failover_replica_lag_seconds` | gauge | `node` |
//! | `db_failover_failovers_total` | counter | |
//! | `db_failover_failover_seconds` | histogram: trouble → new primary | |

use std::time::Duration;

use deadpool::managed::Status;

/// A connection was requested from `node`'s pool.
#[cfg(feature = "metrics")]
pub(crate) fn acquired(node: &str, wait: Duration, status: Status) {
    let label = [("node", node.to_owned())];
    metrics::histogram!("db_failover_pool_wait_seconds", &label).record(wait.as_secs_f64());
    metrics::gauge!("db_failover_pool_size", &label).set(status.size as f64);
    metrics::gauge!("db_failover_pool_available", &label).set(status.available as f64);
    metrics::gauge!("db_failover_pool_waiting", &label).set(status.waiting as f64);
}

/// A probe of `node` finished (`None`: it failed).
#[cfg(feature = "metrics")]
pub(crate) fn probe(node: &str, latency: Option<Duration>) {
    let label = [("node", node.to_owned())];
    match latency {
        Some(latency) => {
            metrics::histogram!("db_failover_probe_seconds", &label).record(latency.as_secs_f64());
        }
        None => metrics::counter!("db_failover_probe_failures_total", &label).increment(1),
    }
}

/// `node`'s state after an observation.
#[cfg(feature = "metrics")]
pub(crate) fn node(node: &str, up: bool, lag_bytes: Option<u64>, lag: Option<Duration>) {
    let label = [("node", node.to_owned())];
    metrics::gauge!("db_failover_node_up", &label).set(if up { 1.0 } else { 0.0 });
    if let Some(bytes) = lag_bytes {
        metrics::gauge!("db_failover_replica_lag_bytes", &label).set(bytes as f64);
    }
    if let Some(lag) = lag {
        metrics::gauge!("db_failover_replica_lag_seconds", &label).set(lag.as_secs_f64());
    }
}

/// A failover completed.
#[cfg(feature = "metrics")]
pub(crate) fn failover(duration: Duration) {
    metrics::counter!("db_failover_failovers_total").increment(1);
    metrics::histogram!("db_failover_failover_seconds").record(duration.as_secs_f64());
}

#[cfg(not(feature = "metrics"))]
#[inline]
pub(crate) fn acquired(_: &str, _: Duration, _: Status) {}

#[cfg(not(feature = "metrics"))]
#[inline]
pub(crate) fn probe(_: &str, _: Option<Duration>) {}

#[cfg(not(feature = "metrics"))]
#[inline]
pub(crate) fn node(_: &str, _: bool, _: Option<u64>, _: Option<Duration>) {}

#[cfg(not(feature = "metrics"))]
#[inline]
pub(crate) fn failover(_: Duration) {}
