//! What a breaker judges and how it reacts: [`Policy`] and its builder.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::error::ConfigError;
use crate::preset::Preset;

/// The largest count window (calls).
pub const MAX_COUNT_WINDOW: u32 = 1_000_000;
/// The largest number of buckets in a time window.
pub const MAX_BUCKETS: u32 = 1_024;
/// The largest number of half-open probes.
pub const MAX_PROBES: u32 = 1_023;

/// The sliding window over which failure and slow-call rates are computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    /// The last `size` recorded calls, exactly.
    Count {
        /// How many calls the window holds (1 to 1 000 000).
        size: u32,
    },
    /// The calls of the last `duration`, kept in `buckets` equal buckets.
    ///
    /// The window holds the current, partly elapsed bucket plus the
    /// `buckets - 1` before it, so it spans between `duration - duration /
    /// buckets` and `duration`.
    Time {
        /// How far back the window reaches.
        duration: Duration,
        /// How many buckets the duration is cut into (1 to 1 024).
        buckets: u32,
    },
}

impl Window {
    /// A count window over the last `size` calls.
    pub const fn count(size: u32) -> Self {
        Self::Count { size }
    }

    /// A time window over the last `duration`, in `buckets` buckets.
    pub const fn time(duration: Duration, buckets: u32) -> Self {
        Self::Time { duration, buckets }
    }
}

/// Slow-call detection: a call that takes at least `duration` is slow, and the
/// breaker opens when the slow-call rate reaches `rate_threshold` percent.
///
/// Detection reads the clock before and after every call, so it costs two
/// clock reads per call; it is off unless configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowCalls {
    /// A call lasting at least this long is slow.
    pub duration: Duration,
    /// Open when this percentage (0 < t <= 100) of the window is slow.
    pub rate_threshold: f64,
}

/// What a caller should do with a rejection. The breaker rejects in the same
/// way whatever this says; it is carried on every
/// [`Rejected`](crate::Rejected) so the caller's fallback code reads it from
/// the policy table instead of hard-coding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum OpenAction {
    /// Fail fast and fall back: a cache, stale data, a queue for writes.
    #[default]
    Fallback,
    /// Deny the request. Security people call this "fail closed"; it has
    /// nothing to do with a *closed circuit*, which lets calls through.
    Deny,
}

/// A breaker's complete, validated configuration.
///
/// Build one with [`Policy::builder`], start from a [`Preset`], or deserialize
/// one (feature `serde`). A `Policy` is always valid: every way to make one
/// checks it.
///
/// ```
/// use std::time::Duration;
/// use breaker::{Policy, Window};
///
/// let policy = Policy::builder()
///     .window(Window::time(Duration::from_secs(60), 6))
///     .minimum_calls(20)
///     .failure_rate_threshold(50.0)
///     .open_wait(Duration::from_secs(30))
///     .build()?;
/// assert_eq!(policy.minimum_calls(), 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(
        try_from = "crate::policy_file::PolicyFile",
        into = "crate::policy_file::PolicyFile"
    )
)]
pub struct Policy {
    /// The sliding window.
    pub(crate) window: Window,
    /// Calls the window must hold before rates are judged.
    pub(crate) minimum_calls: u32,
    /// Open when this percentage of the window failed.
    pub(crate) failure_rate_threshold: f64,
    /// Optional slow-call detection.
    pub(crate) slow_calls: Option<SlowCalls>,
    /// Per-call timeout for asynchronous calls.
    pub(crate) call_timeout: Option<Duration>,
    /// The first open wait, and the base of an exponential back-off.
    pub(crate) open_wait: Duration,
    /// How the open wait grows over consecutive opens.
    pub(crate) backoff: Backoff,
    /// Probe calls let through in half-open.
    pub(crate) permitted_probes: u32,
    /// How long half-open waits for its probes before opening again.
    pub(crate) max_half_open_wait: Duration,
    /// Advice to callers on rejection.
    pub(crate) on_open: OpenAction,
}

impl Default for Policy {
    /// A count window of 100 calls, judged from 10 calls, opening at 50 %
    /// failures for 30 s, one probe, half-open given up after 60 s, no slow
    /// calls, no timeout.
    fn default() -> Self {
        Self {
            window: Window::count(100),
            minimum_calls: 10,
            failure_rate_threshold: 50.0,
            slow_calls: None,
            call_timeout: None,
            open_wait: Duration::from_secs(30),
            backoff: Backoff::Fixed,
            permitted_probes: 1,
            max_half_open_wait: Duration::from_secs(60),
            on_open: OpenAction::Fallback,
        }
    }
}

impl Policy {
    /// A builder starting from [`Policy::default`].
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder {
            policy: Self::default(),
        }
    }

    /// A builder starting from this policy, to change a few settings.
    pub fn to_builder(&self) -> PolicyBuilder {
        PolicyBuilder {
            policy: self.clone(),
        }
    }

    /// The policy of a named preset.
    pub fn preset(preset: Preset) -> Self {
        preset.policy()
    }

    /// The sliding window.
    pub fn window(&self) -> Window {
        self.window
    }

    /// Calls the window must hold before any rate is judged.
    pub fn minimum_calls(&self) -> u32 {
        self.minimum_calls
    }

    /// The failure-rate threshold, in percent. The breaker opens when the
    /// rate is greater than *or equal to* it.
    pub fn failure_rate_threshold(&self) -> f64 {
        self.failure_rate_threshold
    }

    /// Slow-call detection, if on.
    pub fn slow_calls(&self) -> Option<SlowCalls> {
        self.slow_calls
    }

    /// The per-call timeout applied by [`Breaker::run`](crate::Breaker::run)
    /// and the tower layer.
    pub fn call_timeout(&self) -> Option<Duration> {
        self.call_timeout
    }

    /// The first open wait.
    pub fn open_wait(&self) -> Duration {
        self.open_wait
    }

    /// The back-off of the open wait.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Probe calls admitted in half-open.
    pub fn permitted_probes(&self) -> u32 {
        self.permitted_probes
    }

    /// How long half-open waits for its probes' results before opening again.
    pub fn max_half_open_wait(&self) -> Duration {
        self.max_half_open_wait
    }

    /// What callers should do with a rejection.
    pub fn on_open(&self) -> OpenAction {
        self.on_open
    }

    /// Checks every setting; the builder and deserialization call this.
    pub(crate) fn validate(self) -> Result<Self, ConfigError> {
        match self.window {
            Window::Count { size } => {
                check(
                    "window.size",
                    (1..=MAX_COUNT_WINDOW).contains(&size),
                    "between 1 and 1000000",
                    size,
                )?;
                check(
                    "minimum_calls",
                    (1..=size).contains(&self.minimum_calls),
                    "between 1 and the window size",
                    self.minimum_calls,
                )?;
            }
            Window::Time { duration, buckets } => {
                check(
                    "window.buckets",
                    (1..=MAX_BUCKETS).contains(&buckets),
                    "between 1 and 1024",
                    buckets,
                )?;
                check(
                    "window.duration",
                    duration >= Duration::from_millis(u64::from(buckets)),
                    "at least one millisecond per bucket",
                    format_args!("{duration:?}"),
                )?;
                check(
                    "minimum_calls",
                    self.minimum_calls >= 1,
                    "at least 1",
                    self.minimum_calls,
                )?;
            }
        }
        check_rate("failure_rate_threshold", self.failure_rate_threshold)?;
        if let Some(slow) = self.slow_calls {
            check_rate("slow_calls.rate_threshold", slow.rate_threshold)?;
            check(
                "slow_calls.duration",
                !slow.duration.is_zero(),
                "greater than zero",
                format_args!("{:?}", slow.duration),
            )?;
        }
        if let Some(timeout) = self.call_timeout {
            check(
                "call_timeout",
                !timeout.is_zero(),
                "greater than zero",
                format_args!("{timeout:?}"),
            )?;
        }
        check(
            "open_wait",
            self.open_wait >= Duration::from_millis(1),
            "at least 1ms",
            format_args!("{:?}", self.open_wait),
        )?;
        check(
            "max_half_open_wait",
            self.max_half_open_wait >= Duration::from_millis(1),
            "at least 1ms",
            format_args!("{:?}", self.max_half_open_wait),
        )?;
        check(
            "permitted_probes",
            (1..=MAX_PROBES).contains(&self.permitted_probes),
            "between 1 and 1023",
            self.permitted_probes,
        )?;
        self.backoff.validate(self.open_wait)?;
        Ok(self)
    }
}

/// Fails with [`ConfigError::OutOfRange`] unless `ok`.
pub(crate) fn check(
    field: &'static str,
    ok: bool,
    expected: &'static str,
    got: impl std::fmt::Display,
) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            field,
            expected,
            got: got.to_string(),
        })
    }
}

/// A percentage threshold must be in (0, 100].
fn check_rate(field: &'static str, rate: f64) -> Result<(), ConfigError> {
    check(
        field,
        rate > 0.0 && rate <= 100.0,
        "a percentage greater than 0 and at most 100",
        rate,
    )
}

/// Builds a [`Policy`]; [`build`](PolicyBuilder::build) validates it.
#[derive(Debug, Clone)]
#[must_use]
pub struct PolicyBuilder {
    /// The policy being built, not yet validated.
    policy: Policy,
}

impl PolicyBuilder {
    /// Sets the sliding window.
    pub fn window(mut self, window: Window) -> Self {
        self.policy.window = window;
        self
    }

    /// Sets how many calls the window must hold before rates are judged, so a
    /// single failure in a quiet period never opens the breaker.
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.policy.minimum_calls = calls;
        self
    }

    /// Sets the failure-rate threshold in percent (0 < t <= 100); the breaker
    /// opens when the rate is `>=` it.
    pub fn failure_rate_threshold(mut self, percent: f64) -> Self {
        self.policy.failure_rate_threshold = percent;
        self
    }

    /// Turns on slow-call detection: calls lasting at least `duration` are
    /// slow, and the breaker opens when `rate_threshold` percent are.
    pub fn slow_calls(mut self, duration: Duration, rate_threshold: f64) -> Self {
        self.policy.slow_calls = Some(SlowCalls {
            duration,
            rate_threshold,
        });
        self
    }

    /// Turns slow-call detection off.
    pub fn no_slow_calls(mut self) -> Self {
        self.policy.slow_calls = None;
        self
    }

    /// Sets the per-call timeout of asynchronous calls.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.policy.call_timeout = Some(timeout);
        self
    }

    /// Removes the per-call timeout.
    pub fn no_call_timeout(mut self) -> Self {
        self.policy.call_timeout = None;
        self
    }

    /// Sets the open wait (the first one, under an exponential back-off).
    pub fn open_wait(mut self, wait: Duration) -> Self {
        self.policy.open_wait = wait;
        self
    }

    /// Sets the back-off of the open wait.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.policy.backoff = backoff;
        self
    }

    /// Sets how many probe calls half-open admits at once (1 to 1023).
    pub fn permitted_probes(mut self, probes: u32) -> Self {
        self.policy.permitted_probes = probes;
        self
    }

    /// Sets how long half-open waits for its probes before opening again.
    pub fn max_half_open_wait(mut self, wait: Duration) -> Self {
        self.policy.max_half_open_wait = wait;
        self
    }

    /// Sets what callers should do with a rejection.
    pub fn on_open(mut self, action: OpenAction) -> Self {
        self.policy.on_open = action;
        self
    }

    /// Validates and returns the policy.
    pub fn build(self) -> Result<Policy, ConfigError> {
        self.policy.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_is_valid() {
        assert_eq!(Policy::builder().build(), Ok(Policy::default()));
    }

    #[test]
    fn rejects_out_of_range_settings() {
        let cases: Vec<(PolicyBuilder, &str)> = vec![
            (Policy::builder().window(Window::count(0)), "window.size"),
            (
                Policy::builder().window(Window::count(5)).minimum_calls(6),
                "minimum_calls",
            ),
            (Policy::builder().minimum_calls(0), "minimum_calls"),
            (
                Policy::builder().window(Window::time(Duration::from_secs(1), 0)),
                "window.buckets",
            ),
            (
                Policy::builder().window(Window::time(Duration::from_millis(5), 10)),
                "window.duration",
            ),
            (
                Policy::builder().failure_rate_threshold(0.0),
                "failure_rate_threshold",
            ),
            (
                Policy::builder().failure_rate_threshold(100.5),
                "failure_rate_threshold",
            ),
            (
                Policy::builder().failure_rate_threshold(f64::NAN),
                "failure_rate_threshold",
            ),
            (
                Policy::builder().slow_calls(Duration::ZERO, 50.0),
                "slow_calls.duration",
            ),
            (
                Policy::builder().slow_calls(Duration::from_secs(1), 0.0),
                "slow_calls.rate_threshold",
            ),
            (
                Policy::builder().call_timeout(Duration::ZERO),
                "call_timeout",
            ),
            (Policy::builder().open_wait(Duration::ZERO), "open_wait"),
            (
                Policy::builder().max_half_open_wait(Duration::ZERO),
                "max_half_open_wait",
            ),
            (Policy::builder().permitted_probes(0), "permitted_probes"),
            (Policy::builder().permitted_probes(1024), "permitted_probes"),
        ];
        for (builder, field) in cases {
            match builder.build() {
                Err(ConfigError::OutOfRange { field: got, .. }) => assert_eq!(got, field),
                other => panic!("expected an error on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn time_window_allows_minimum_above_bucket_count() {
        let policy = Policy::builder()
            .window(Window::time(Duration::from_secs(10), 10))
            .minimum_calls(500)
            .build();
        assert!(policy.is_ok());
    }
}
