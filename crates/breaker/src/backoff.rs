//! Back-off: [`ExponentialBackoff`], the workspace's one exponential
//! back-off (breaker open waits, vault-client and db-failover retries, the
//! gateway's write replays), and [`Backoff`], how a breaker's open wait grows.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ConfigError;
use crate::policy::check;

/// Exponential back-off with a cap and jitter.
///
/// Attempt `n` (from 0) waits `min(max, initial * multiplier^n)` (its
/// [`ceiling`](Self::ceiling)), then up to `jitter` of that is taken off at
/// random, so that many clients that failed together do not retry in step.
/// A `jitter` of 1 is "full jitter": anything up to the ceiling. The wait
/// never exceeds `max`.
///
/// The random number is a parameter of [`delay_with`](Self::delay_with)
/// (deterministic, for tests and seeded generators);
/// [`delay`](Self::delay) draws it from `fastrand`. [`pause`](Self::pause)
/// waits on tokio's clock, so `tokio::time::pause()` drives it in tests.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ExponentialBackoff {
    /// The first wait (attempt 0, before jitter).
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Growth per attempt (at least 1).
    pub multiplier: f64,
    /// The fraction (0 to 1) of each wait taken off at random.
    pub jitter: f64,
}

impl ExponentialBackoff {
    /// From `initial` to `max`, doubling, without jitter.
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            multiplier: 2.0,
            jitter: 0.0,
        }
    }

    /// The same back-off growing by `multiplier` per attempt.
    #[must_use]
    pub const fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The same back-off with `jitter` (0 to 1).
    #[must_use]
    pub const fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The wait of `attempt` before jitter: `min(max, initial *
    /// multiplier^attempt)`, exact to the nanosecond for whole multipliers.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt).unwrap_or(i32::MAX);
        let grown = self.initial.as_nanos() as f64 * self.multiplier.powi(exponent);
        self.nanos(grown)
    }

    /// The wait of `attempt` (from 0), given a uniform random number `unit`
    /// in `[0, 1)`: the ceiling minus `jitter * unit` of it.
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt).as_nanos() as f64;
        let unit = if unit.is_nan() {
            0.0
        } else {
            unit.clamp(0.0, 1.0)
        };
        self.nanos(ceiling * (1.0 - self.jitter.clamp(0.0, 1.0) * unit))
    }

    /// The wait of `attempt`, with fresh randomness.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, fastrand::f64())
    }

    /// Waits the delay of `attempt` (given `unit`, as in
    /// [`delay_with`](Self::delay_with)) on tokio's clock, never past
    /// `deadline`, cut short when `wake` completes (say, the thing waited
    /// for has changed). `false` when the deadline has passed: give up.
    pub async fn pause(
        &self,
        attempt: u32,
        unit: f64,
        deadline: Option<Instant>,
        wake: impl Future<Output = ()>,
    ) -> bool {
        let now = Instant::now();
        let mut delay = self.delay_with(attempt, unit);
        if let Some(deadline) = deadline {
            if now >= deadline {
                return false;
            }
            delay = delay.min(deadline - now);
        }
        // Either the delay passed or `wake` completed: both end the pause.
        let _ = tokio::time::timeout(delay, wake).await;
        deadline.is_none_or(|deadline| Instant::now() < deadline)
    }

    /// Checks the settings: a multiplier of at least 1, a jitter between 0
    /// and 1, and `initial <= max`. Errors name the field `backoff.*`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(
            "backoff.multiplier",
            self.multiplier >= 1.0 && self.multiplier.is_finite(),
            "a finite number at least 1",
            self.multiplier,
        )?;
        check(
            "backoff.max",
            self.max >= self.initial,
            "at least the first wait (initial, or a breaker's open_wait)",
            format_args!("{:?}", self.max),
        )?;
        check(
            "backoff.jitter",
            (0.0..=1.0).contains(&self.jitter),
            "between 0 and 1",
            self.jitter,
        )
    }

    /// `nanos` (a float, maybe infinite or NaN) as a duration of at most
    /// `max`.
    fn nanos(&self, nanos: f64) -> Duration {
        let max = self.max.as_nanos();
        // NaN (zero times infinity) is a zero wait; infinity is the cap.
        let nanos = if nanos.is_nan() { 0.0 } else { nanos.max(0.0) };
        let nanos = if nanos >= max as f64 {
            max
        } else {
            (nanos.round() as u128).min(max)
        };
        const PER_SEC: u128 = 1_000_000_000;
        // At most `max`, so the seconds fit.
        Duration::new(
            u64::try_from(nanos / PER_SEC).unwrap_or(u64::MAX),
            (nanos % PER_SEC) as u32,
        )
    }
}

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
    /// probe at the same instant: an [`ExponentialBackoff`] starting at
    /// `open_wait`. The wait never exceeds `max`, and is at least 1 ms.
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

    /// The exponential back-off this is with `open_wait` as its first wait
    /// (`None` for [`Backoff::Fixed`]).
    pub const fn curve(&self, open_wait: Duration) -> Option<ExponentialBackoff> {
        match *self {
            Self::Fixed => None,
            Self::Exponential {
                multiplier,
                max,
                jitter,
            } => Some(
                ExponentialBackoff::new(open_wait, max)
                    .multiplier(multiplier)
                    .jitter(jitter),
            ),
        }
    }

    /// The wait of the open numbered `streak` (from 0) in a streak, given a
    /// uniform random number `random` in `[0, 1)`.
    pub fn wait(&self, open_wait: Duration, streak: u32, random: f64) -> Duration {
        match self.curve(open_wait) {
            None => open_wait,
            Some(curve) => curve
                .delay_with(streak, random)
                .max(Duration::from_millis(1)),
        }
    }

    /// Checks the back-off against the policy's `open_wait`.
    pub(crate) fn validate(&self, open_wait: Duration) -> Result<(), ConfigError> {
        self.curve(open_wait)
            .map_or(Ok(()), |curve| curve.validate())
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
        assert_eq!(backoff.wait(10 * S, u32::MAX, 0.5), 60 * S);
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let backoff = Backoff::exponential(2.0, 60 * S).with_jitter(0.25);
        assert_eq!(backoff.wait(10 * S, 1, 0.0), 20 * S);
        assert_eq!(backoff.wait(10 * S, 1, 1.0), 15 * S);
        let mid = backoff.wait(10 * S, 1, 0.5);
        assert_eq!(mid, Duration::from_millis(17_500));
        // Full jitter never makes an open wait zero.
        let full = Backoff::exponential(2.0, 60 * S).with_jitter(1.0);
        assert_eq!(full.wait(10 * S, 0, 1.0), Duration::from_millis(1));
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
        assert!(Backoff::Fixed.validate(S).is_ok());
        let error = ExponentialBackoff::new(S, S)
            .jitter(-0.1)
            .validate()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "`backoff.jitter` must be between 0 and 1, got -0.1"
        );
    }

    #[test]
    fn ceilings_are_exact_and_capped() {
        let curve = ExponentialBackoff::new(Duration::from_millis(100), 2 * S);
        let ms = |n| curve.ceiling(n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(5), ms(6)],
            [100, 200, 400, 800, 1600, 2000, 2000]
        );
        assert_eq!(curve.ceiling(u32::MAX), 2 * S);
        // A zero first wait stays zero, however many attempts.
        let zero = ExponentialBackoff::new(Duration::ZERO, S);
        assert_eq!(zero.ceiling(u32::MAX), Duration::ZERO);
        // The largest cap does not overflow.
        let huge = ExponentialBackoff::new(S, Duration::MAX);
        assert_eq!(huge.ceiling(u32::MAX), Duration::MAX);
        assert_eq!(huge.ceiling(3), 8 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn pause_waits_on_tokio_time_until_the_deadline_or_a_wake() {
        let curve = ExponentialBackoff::new(Duration::from_millis(100), 2 * S);
        let started = Instant::now();
        assert!(curve.pause(2, 0.0, None, std::future::pending()).await);
        assert_eq!(started.elapsed(), Duration::from_millis(400));
        // Cut at the deadline, and then it says give up.
        let deadline = Instant::now() + Duration::from_millis(250);
        let before = Instant::now();
        assert!(
            !curve
                .pause(5, 0.0, Some(deadline), std::future::pending())
                .await
        );
        assert_eq!(before.elapsed(), Duration::from_millis(250));
        assert!(
            !curve
                .pause(0, 0.0, Some(deadline), std::future::pending())
                .await
        );
        assert_eq!(before.elapsed(), Duration::from_millis(250));
        // A wake ends the pause early.
        let before = Instant::now();
        let wake = tokio::time::sleep(Duration::from_millis(3));
        assert!(curve.pause(5, 0.0, None, wake).await);
        assert_eq!(before.elapsed(), Duration::from_millis(3));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::ExponentialBackoff;
        use std::time::Duration;

        fn curve() -> impl Strategy<Value = ExponentialBackoff> {
            (
                1u64..10_000_000_000,
                0u64..100_000_000_000,
                1.0f64..10.0,
                0.0f64..=1.0,
            )
                .prop_map(|(initial, extra, multiplier, jitter)| {
                    ExponentialBackoff::new(
                        Duration::from_nanos(initial),
                        Duration::from_nanos(initial + extra),
                    )
                    .multiplier(multiplier)
                    .jitter(jitter)
                })
        }

        proptest! {
            #[test]
            fn ceilings_never_shrink_and_never_pass_the_cap(curve in curve(), attempt in 0u32..200) {
                prop_assert!(curve.validate().is_ok());
                let (now, next) = (curve.ceiling(attempt), curve.ceiling(attempt + 1));
                prop_assert!(now <= next);
                prop_assert!(next <= curve.max);
                prop_assert!(curve.ceiling(0) == curve.initial);
            }

            #[test]
            fn jitter_only_takes_off_its_fraction(curve in curve(), attempt in 0u32..200, unit in 0.0f64..1.0) {
                let ceiling = curve.ceiling(attempt);
                let delay = curve.delay_with(attempt, unit);
                prop_assert!(delay <= ceiling);
                let floor = ceiling.as_secs_f64() * (1.0 - curve.jitter);
                prop_assert!(delay.as_secs_f64() >= floor - 1e-9, "{delay:?} < {floor}");
                prop_assert_eq!(curve.delay_with(attempt, 0.0), ceiling);
                let drawn = curve.delay(attempt);
                prop_assert!(drawn <= ceiling && drawn.as_secs_f64() >= floor - 1e-9);
            }
        }
    }
}
