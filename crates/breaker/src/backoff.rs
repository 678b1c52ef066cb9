//! How the open wait grows when a breaker keeps re-opening.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::ConfigError;
use crate::policy::check;

/// The back-off of the open wait.
///
/// The *streak* is how many times the breaker has opened since it last closed
/// after successful probes. The first open of a streak waits the policy's
/// `open_wait`; a failed probe re-opens it with the next wait. A successful
/// close resets the streak, and so do [`Breaker::reset`](crate::Breaker::reset)
/// and [`Breaker::force_closed`](crate::Breaker::force_closed).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[non_exhaustive]
pub enum Backoff {
    /// Every open waits `open_wait`.
    #[default]
    Fixed,
    /// The `n`-th open of a streak (from 0) waits
    /// `min(max, open_wait * multiplier^n)`, then up to `jitter` of that wait is
    /// taken off at random, so that many breakers opened together do not all
    /// probe at the same instant. The wait never exceeds `max`.
    Exponential {
        /// Growth per consecutive open (at least 1).
        multiplier: f64,
        /// The cap (at least `open_wait`).
        max: Duration,
        /// The fraction (0 to 1) of the wait that may be taken off at random.
        jitter: f64,
    },
}

impl Backoff {
    /// Exponential back-off without jitter.
    pub const fn exponential(multiplier: f64, max: Duration) -> Self {
        Self::Exponential {
            multiplier,
            max,
            jitter: 0.0,
        }
    }

    /// The same back-off with `jitter` (0 to 1); no effect on [`Backoff::Fixed`].
    pub const fn with_jitter(self, jitter: f64) -> Self {
        match self {
            Self::Fixed => Self::Fixed,
            Self::Exponential {
                multiplier, max, ..
            } => Self::Exponential {
                multiplier,
                max,
                jitter,
            },
        }
    }

    /// The wait of the open numbered `streak` (from 0) in a streak, given a
    /// uniform random number `random` in `[0, 1)`.
    pub fn wait(&self, open_wait: Duration, streak: u32, random: f64) -> Duration {
        match *self {
            Self::Fixed => open_wait,
            Self::Exponential {
                multiplier,
                max,
                jitter,
            } => {
                let exponent = i32::try_from(streak).unwrap_or(i32::MAX);
                let grown = open_wait.as_secs_f64() * multiplier.powi(exponent);
                let capped = if grown.is_finite() {
                    grown.min(max.as_secs_f64())
                } else {
                    max.as_secs_f64()
                };
                let jittered = capped * (1.0 - jitter * random.clamp(0.0, 1.0));
                Duration::try_from_secs_f64(jittered)
                    .unwrap_or(max)
                    .min(max)
                    .max(Duration::from_millis(1))
            }
        }
    }

    /// Checks the back-off against the policy's `open_wait`.
    pub(crate) fn validate(&self, open_wait: Duration) -> Result<(), ConfigError> {
        if let Self::Exponential {
            multiplier,
            max,
            jitter,
        } = *self
        {
            check(
                "backoff.multiplier",
                multiplier >= 1.0 && multiplier.is_finite(),
                "a finite number at least 1",
                multiplier,
            )?;
            check(
                "backoff.max",
                max >= open_wait,
                "at least open_wait",
                format_args!("{max:?}"),
            )?;
            check(
                "backoff.jitter",
                (0.0..=1.0).contains(&jitter),
                "between 0 and 1",
                jitter,
            )?;
        }
        Ok(())
    }
}

/// A small lock-free random source for jitter (SplitMix64), seeded from the
/// standard library's per-process random hash keys.
#[derive(Debug)]
pub(crate) struct JitterSource {
    /// The SplitMix64 state.
    state: AtomicU64,
}

impl JitterSource {
    /// A source with a random seed.
    pub(crate) fn new() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        Self {
            state: AtomicU64::new(hasher.finish()),
        }
    }

    /// A uniform number in `[0, 1)`.
    pub(crate) fn next_unit(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 53 random bits, the precision of an f64 mantissa.
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn fixed_always_waits_open_wait() {
        for streak in [0, 1, 7, 31] {
            assert_eq!(Backoff::Fixed.wait(10 * S, streak, 0.9), 10 * S);
        }
    }

    #[test]
    fn exponential_grows_then_caps() {
        let backoff = Backoff::exponential(2.0, 60 * S);
        assert_eq!(backoff.wait(10 * S, 0, 0.5), 10 * S);
        assert_eq!(backoff.wait(10 * S, 1, 0.5), 20 * S);
        assert_eq!(backoff.wait(10 * S, 2, 0.5), 40 * S);
        assert_eq!(backoff.wait(10 * S, 3, 0.5), 60 * S);
        assert_eq!(backoff.wait(10 * S, 31, 0.5), 60 * S);
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let backoff = Backoff::exponential(2.0, 60 * S).with_jitter(0.25);
        assert_eq!(backoff.wait(10 * S, 1, 0.0), 20 * S);
        assert_eq!(backoff.wait(10 * S, 1, 1.0), 15 * S);
        let mid = backoff.wait(10 * S, 1, 0.5);
        assert_eq!(mid, Duration::from_millis(17_500));
    }

    #[test]
    fn validation() {
        assert!(Backoff::exponential(0.5, 60 * S).validate(S).is_err());
        assert!(Backoff::exponential(2.0, S / 2).validate(S).is_err());
        assert!(
            Backoff::exponential(2.0, 60 * S)
                .with_jitter(1.5)
                .validate(S)
                .is_err()
        );
        assert!(Backoff::exponential(2.0, 60 * S).validate(S).is_ok());
    }

    #[test]
    fn jitter_source_is_in_unit_interval_and_varies() {
        let source = JitterSource::new();
        let draws: Vec<f64> = (0..100).map(|_| source.next_unit()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let first = draws[0];
        assert!(draws.iter().any(|x| *x != first));
    }
}
