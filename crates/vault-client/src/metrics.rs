//! Metrics through the `metrics` facade (feature `metrics`); without the
//! feature every function here is empty.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `vault_requests_total` | counter | `op`, `outcome` (`ok`, `error`, `rejected`, `timeout`) |
//! | `vault_request_duration_seconds` | histogram | `op` |
//! | `vault_token_ttl_seconds` | gauge | |
//! | `vault_lease_ttl_seconds` | gauge | `role` |
//! | `vault_renewals_total` | counter | `kind` (`token`, `lease`), `result` (`ok`, `error`) |
//! | `vault_rotations_total` | counter | `role` |
//! | `vault_fallbacks_total` | counter | `source` (`last_known_good`, `environment`) |
//!
//! The breaker's own metrics (`breaker_*`, label `breaker`) come with it:
//! call [`Client::export_metrics`](crate::Client::export_metrics) before each
//! scrape.

use std::time::Duration;

/// Registers descriptions of this crate's metrics with the recorder.
#[cfg(feature = "metrics")]
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "vault_requests_total",
        "Vault API requests, by operation and outcome"
    );
    describe_histogram!(
        "vault_request_duration_seconds",
        metrics::Unit::Seconds,
        "Vault API request latency (one attempt)"
    );
    describe_gauge!(
        "vault_token_ttl_seconds",
        metrics::Unit::Seconds,
        "TTL left on the client token"
    );
    describe_gauge!(
        "vault_lease_ttl_seconds",
        metrics::Unit::Seconds,
        "TTL left on the current database lease"
    );
    describe_counter!("vault_renewals_total", "Token and lease renewals");
    describe_counter!("vault_rotations_total", "Database credential rotations");
    describe_counter!("vault_fallbacks_total", "Reads served from a fallback");
    breaker::describe_metrics();
}

#[allow(unused_variables)]
pub(crate) fn request(op: &'static str, outcome: &'static str, elapsed: Duration) {
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("vault_requests_total", "op" => op, "outcome" => outcome).increment(1);
        metrics::histogram!("vault_request_duration_seconds", "op" => op)
            .record(elapsed.as_secs_f64());
    }
}

#[allow(unused_variables)]
pub(crate) fn token_ttl(remaining: Option<Duration>) {
    #[cfg(feature = "metrics")]
    if let Some(remaining) = remaining {
        metrics::gauge!("vault_token_ttl_seconds").set(remaining.as_secs_f64());
    }
}

#[allow(unused_variables)]
pub(crate) fn lease_ttl(role: &str, remaining: Duration) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("vault_lease_ttl_seconds", "role" => role.to_owned())
        .set(remaining.as_secs_f64());
}

#[allow(unused_variables)]
pub(crate) fn renewal(kind: &'static str, ok: bool) {
    #[cfg(feature = "metrics")]
    metrics::counter!("vault_renewals_total", "kind" => kind, "result" => if ok { "ok" } else { "error" })
        .increment(1);
}

#[allow(unused_variables)]
pub(crate) fn rotation(role: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("vault_rotations_total", "role" => role.to_owned()).increment(1);
}

#[allow(unused_variables)]
pub(crate) fn fallback(source: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("vault_fallbacks_total", "source" => source).increment(1);
}
