//! Export through the `metrics` facade (feature `metrics`).
//!
//! | metric                          | kind    | labels               | updated                      |
//! |---------------------------------|---------|----------------------|------------------------------|
//! | `breaker_state`                 | gauge   | `breaker`            | on every transition, export  |
//! | `breaker_transitions_total`     | counter | `breaker`, `to`      | on every transition          |
//! | `breaker_calls_total`           | counter | `breaker`, `outcome` | on export                    |
//! | `breaker_rejected_total`        | counter | `breaker`            | on export                    |
//! | `breaker_failure_rate`          | gauge   | `breaker`            | on export (percent)          |
//! | `breaker_slow_call_rate`        | gauge   | `breaker`            | on export (percent)          |
//!
//! `outcome` is one of `success`, `failure`, `timeout`, `slow`, `ignored`,
//! `cancelled`, `stale`. The state gauge uses [`State::code`]. Counters are
//! set with `absolute` from the breaker's own monotonic totals, so the call
//! path never touches the metrics recorder: call
//! [`Registry::export_metrics`](crate::Registry::export_metrics) before each
//! scrape (or on a timer).

use crate::breaker::Breaker;
use crate::state::State;

/// Describes the metrics to the installed recorder (units and help text).
pub fn describe_metrics() {
    metrics::describe_gauge!(
        "breaker_state",
        "Circuit state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed, 5 disabled, 6 metrics only"
    );
    metrics::describe_counter!(
        "breaker_transitions_total",
        "State transitions, by the state entered"
    );
    metrics::describe_counter!("breaker_calls_total", "Calls let through, by outcome");
    metrics::describe_counter!("breaker_rejected_total", "Calls rejected");
    metrics::describe_gauge!(
        "breaker_failure_rate",
        metrics::Unit::Percent,
        "Failure rate of the sliding window"
    );
    metrics::describe_gauge!(
        "breaker_slow_call_rate",
        metrics::Unit::Percent,
        "Slow-call rate of the sliding window"
    );
}

/// Records a transition.
pub(crate) fn transition(breaker: &'static str, to: State) {
    metrics::gauge!("breaker_state", "breaker" => breaker).set(f64::from(to.code()));
    metrics::counter!(
        "breaker_transitions_total",
        "breaker" => breaker,
        "to" => to.as_str()
    )
    .increment(1);
}

impl Breaker {
    /// Exports this breaker's state, counters and rates through the `metrics`
    /// facade (feature `metrics`; see the table in the crate docs).
    pub fn export_metrics(&self) {
        let snapshot = self.snapshot();
        let name = self.name();
        metrics::gauge!("breaker_state", "breaker" => name).set(f64::from(snapshot.state.code()));
        let totals = snapshot.totals;
        for (outcome, value) in [
            ("success", totals.successes),
            ("failure", totals.failures),
            ("timeout", totals.timeouts),
            ("slow", totals.slow_calls),
            ("ignored", totals.ignored),
            ("cancelled", totals.cancelled),
            ("stale", totals.stale),
        ] {
            metrics::counter!("breaker_calls_total", "breaker" => name, "outcome" => outcome)
                .absolute(value);
        }
        metrics::counter!("breaker_rejected_total", "breaker" => name).absolute(totals.rejected);
        if let Some(rate) = snapshot.failure_rate {
            metrics::gauge!("breaker_failure_rate", "breaker" => name).set(rate);
        }
        if let Some(rate) = snapshot.slow_call_rate {
            metrics::gauge!("breaker_slow_call_rate", "breaker" => name).set(rate);
        }
    }
}
