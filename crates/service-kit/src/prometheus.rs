//! The Prometheus recorder behind the `metrics` facade, rendered by the
//! service on its own `GET /metrics` route (no listener of the exporter's
//! own), and the bounded `method` label.
//!
//! Every label value must come from a closed set: each new value is a
//! series kept for the life of the process, so a label copied from the
//! request as sent would let any client grow the registry without bound.
//! [`method_label`] maps a request method onto [`KNOWN_METHODS`] or
//! [`OTHER_METHOD`].
//!
//! Histogram samples are kept one by one until they are folded into the
//! buckets, which rendering does, and so does the exporter's "upkeep".
//! [`install`] runs the upkeep every [`UPKEEP_EVERY`] on a thread of its
//! own: without it every request's latency stayed in memory until the next
//! scrape, and for ever when nothing scraped (80 KB/s per histogram at
//! 10,000 requests/s; the sweep of issue 19 found it as memory not given
//! back after a load).

use std::sync::OnceLock;
use std::time::Duration;

use axum::{
    http::{HeaderValue, Method, header},
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The methods that are their own `method` label value: RFC 9110's and
/// `PATCH`.
pub const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// The `method` label value of every other (extension) method.
pub const OTHER_METHOD: &str = "OTHER";

/// The media type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The `method` label value of `method`: its name when it is one of
/// [`KNOWN_METHODS`], else [`OTHER_METHOD`].
#[must_use]
pub fn method_label(method: &Method) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|known| **known == method.as_str())
        .copied()
        .unwrap_or(OTHER_METHOD)
}

/// How often histogram samples are folded into their buckets when nothing
/// renders them (the exporter's own default upkeep period).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process-wide recorder's handle.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder as the global `metrics` recorder, once
/// per process, and returns its handle (every later call returns the same
/// handle and ignores its arguments).
///
/// Histograms get `buckets` (seconds) rather than the exporter's default
/// summaries: buckets add up across pods, quantiles do not. `describe`
/// runs once, after the recorder is installed: the place for
/// `metrics::describe_*!` and for series that must exist (at 0) from the
/// start. A recorder installed before by the embedding program wins; the
/// handle then renders an empty registry.
///
/// The first call also starts the upkeep thread (`metrics-upkeep`), which
/// folds histogram samples into their buckets every [`UPKEEP_EVERY`] for
/// the life of the process, whether or not anything scrapes. A thread
/// rather than a task: the recorder outlives any one runtime.
pub fn install(buckets: &[f64], describe: impl FnOnce()) -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(buckets)
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            let upkeep = handle.clone();
            let started = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP_EVERY);
                        upkeep.run_upkeep();
                        // The folded samples' blocks are freed by the epoch
                        // collector, deferred in this thread's own bag:
                        // hand them over and collect (twice, for the epoch
                        // to advance past them), or an idle process keeps
                        // them.
                        for _ in 0..2 {
                            crossbeam_epoch::pin().flush();
                        }
                    }
                });
            if let Err(error) = started {
                // Scrapes still fold the samples; only an unscraped
                // process keeps them.
                tracing::warn!(%error, "no metrics upkeep thread");
            }
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// The `GET /metrics` answer: the registry in the text format
/// ([`CONTENT_TYPE`]).
pub fn render(handle: &PrometheusHandle) -> Response {
    let mut response = handle.render().into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
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
}
