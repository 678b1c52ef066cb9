//! A point-in-time view of a breaker, for dashboards and health endpoints.

use std::time::Duration;

use crate::state::State;

/// Cumulative counts since the breaker was created. They only grow (a
/// [`reset`](crate::Breaker::reset) clears the window, not these), so they
/// export as monotonic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Totals {
    /// Calls that succeeded (slow ones included).
    pub successes: u64,
    /// Calls that failed (slow ones included), not counting timeouts.
    pub failures: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Calls that were slow (successes and failures).
    pub slow_calls: u64,
    /// Calls whose result was ignored.
    pub ignored: u64,
    /// Permits dropped without a result (cancelled calls).
    pub cancelled: u64,
    /// Calls rejected.
    pub rejected: u64,
    /// Results discarded because they came from an older state generation.
    pub stale: u64,
}

/// A breaker's state and figures at one instant.
///
/// Rates are percentages and are `None` until the window holds the policy's
/// minimum number of calls (they are not judged before that).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Snapshot {
    /// The breaker's name.
    pub name: String,
    /// The state.
    pub state: State,
    /// The state generation (bumped on every transition, wraps at 65 536).
    pub generation: u32,
    /// Failure rate of the window, percent.
    pub failure_rate: Option<f64>,
    /// Slow-call rate of the window, percent.
    pub slow_call_rate: Option<f64>,
    /// Calls in the window.
    pub window_calls: u64,
    /// Failures and timeouts in the window.
    pub window_failures: u64,
    /// Slow calls in the window.
    pub window_slow_calls: u64,
    /// Probe calls in flight (half-open only).
    pub probes_in_flight: u32,
    /// Cumulative counts.
    pub totals: Totals,
    /// How long the breaker has been in this state.
    #[cfg_attr(feature = "serde", serde(with = "crate::duration_text"))]
    pub in_state_for: Duration,
    /// When open: how long until a probe is allowed (zero if it already is).
    /// When half-open: how long until it gives up waiting for its probes.
    #[cfg_attr(feature = "serde", serde(with = "crate::duration_text::option"))]
    pub next_probe_in: Option<Duration>,
}
