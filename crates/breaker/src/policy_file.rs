//! Policies in configuration files (feature `serde`).
//!
//! Every field is optional: missing ones come from the `preset` if one is
//! named, otherwise from [`Policy::default`]. The result is validated, so a
//! bad file fails to load instead of building a broken breaker.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backoff::Backoff;
use crate::error::ConfigError;
use crate::policy::{OpenAction, Policy, SlowCalls, Window};
use crate::preset::Preset;

/// The file form of a [`Policy`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    /// The preset the other fields override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preset: Option<Preset>,
    /// See [`Policy::window`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    window: Option<WindowFile>,
    /// See [`Policy::minimum_calls`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    minimum_calls: Option<u32>,
    /// See [`Policy::failure_rate_threshold`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_rate_threshold: Option<f64>,
    /// See [`Policy::slow_calls`]; `false` turns detection off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    slow_calls: Option<SlowCallsFile>,
    /// See [`Policy::call_timeout`]; `false` removes the timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    call_timeout: Option<TimeoutFile>,
    /// See [`Policy::open_wait`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration_text::option"
    )]
    open_wait: Option<Duration>,
    /// See [`Policy::backoff`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backoff: Option<BackoffFile>,
    /// See [`Policy::permitted_probes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    permitted_probes: Option<u32>,
    /// See [`Policy::max_half_open_wait`].
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration_text::option"
    )]
    max_half_open_wait: Option<Duration>,
    /// See [`Policy::on_open`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_open: Option<OpenAction>,
}

/// The file form of a [`Window`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum WindowFile {
    /// [`Window::Count`].
    Count {
        /// Calls.
        size: u32,
    },
    /// [`Window::Time`].
    Time {
        /// Span.
        #[serde(with = "crate::duration_text")]
        duration: Duration,
        /// Buckets.
        buckets: u32,
    },
}

/// Slow-call settings, or `false` for none.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(untagged)]
enum SlowCallsFile {
    /// Off.
    Off(bool),
    /// On.
    On {
        /// See [`SlowCalls::duration`].
        #[serde(with = "crate::duration_text")]
        duration: Duration,
        /// See [`SlowCalls::rate_threshold`].
        rate_threshold: f64,
    },
}

/// A timeout, or `false` for none.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(untagged)]
enum TimeoutFile {
    /// Off.
    Off(bool),
    /// On.
    On(#[serde(with = "crate::duration_text")] Duration),
}

/// The file form of a [`Backoff`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum BackoffFile {
    /// [`Backoff::Fixed`].
    Fixed,
    /// [`Backoff::Exponential`].
    Exponential {
        /// Growth per open.
        multiplier: f64,
        /// Cap.
        #[serde(with = "crate::duration_text")]
        max: Duration,
        /// Random fraction taken off.
        #[serde(default)]
        jitter: f64,
    },
}

impl TryFrom<PolicyFile> for Policy {
    type Error = ConfigError;

    fn try_from(file: PolicyFile) -> Result<Self, Self::Error> {
        let mut policy = file.preset.map_or_else(Policy::default, Preset::policy);
        if let Some(window) = file.window {
            policy.window = match window {
                WindowFile::Count { size } => Window::Count { size },
                WindowFile::Time { duration, buckets } => Window::Time { duration, buckets },
            };
        }
        if let Some(calls) = file.minimum_calls {
            policy.minimum_calls = calls;
        }
        if let Some(rate) = file.failure_rate_threshold {
            policy.failure_rate_threshold = rate;
        }
        match file.slow_calls {
            None => {}
            Some(SlowCallsFile::Off(false)) => policy.slow_calls = None,
            Some(SlowCallsFile::Off(true)) => {
                return Err(ConfigError::OutOfRange {
                    field: "slow_calls",
                    expected: "`false` or a table with duration and rate_threshold",
                    got: "true".to_owned(),
                });
            }
            Some(SlowCallsFile::On {
                duration,
                rate_threshold,
            }) => {
                policy.slow_calls = Some(SlowCalls {
                    duration,
                    rate_threshold,
                });
            }
        }
        match file.call_timeout {
            None => {}
            Some(TimeoutFile::Off(false)) => policy.call_timeout = None,
            Some(TimeoutFile::Off(true)) => {
                return Err(ConfigError::OutOfRange {
                    field: "call_timeout",
                    expected: "`false` or a duration",
                    got: "true".to_owned(),
                });
            }
            Some(TimeoutFile::On(timeout)) => policy.call_timeout = Some(timeout),
        }
        if let Some(wait) = file.open_wait {
            policy.open_wait = wait;
        }
        if let Some(backoff) = file.backoff {
            policy.backoff = match backoff {
                BackoffFile::Fixed => Backoff::Fixed,
                BackoffFile::Exponential {
                    multiplier,
                    max,
                    jitter,
                } => Backoff::Exponential {
                    multiplier,
                    max,
                    jitter,
                },
            };
        }
        if let Some(probes) = file.permitted_probes {
            policy.permitted_probes = probes;
        }
        if let Some(wait) = file.max_half_open_wait {
            policy.max_half_open_wait = wait;
        }
        if let Some(action) = file.on_open {
            policy.on_open = action;
        }
        policy.validate()
    }
}

impl From<Policy> for PolicyFile {
    fn from(policy: Policy) -> Self {
        Self {
            preset: None,
            window: Some(match policy.window {
                Window::Count { size } => WindowFile::Count { size },
                Window::Time { duration, buckets } => WindowFile::Time { duration, buckets },
            }),
            minimum_calls: Some(policy.minimum_calls),
            failure_rate_threshold: Some(policy.failure_rate_threshold),
            slow_calls: Some(match policy.slow_calls {
                Some(slow) => SlowCallsFile::On {
                    duration: slow.duration,
                    rate_threshold: slow.rate_threshold,
                },
                None => SlowCallsFile::Off(false),
            }),
            call_timeout: Some(match policy.call_timeout {
                Some(timeout) => TimeoutFile::On(timeout),
                None => TimeoutFile::Off(false),
            }),
            open_wait: Some(policy.open_wait),
            backoff: Some(match policy.backoff {
                Backoff::Fixed => BackoffFile::Fixed,
                Backoff::Exponential {
                    multiplier,
                    max,
                    jitter,
                } => BackoffFile::Exponential {
                    multiplier,
                    max,
                    jitter,
                },
            }),
            permitted_probes: Some(policy.permitted_probes),
            max_half_open_wait: Some(policy.max_half_open_wait),
            on_open: Some(policy.on_open),
        }
    }
}
