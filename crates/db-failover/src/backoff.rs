//! Retry timing: exponential back-off with full jitter under an overall
//! deadline, on tokio's clock so tests can pause it. The back-off itself is
//! the workspace's one, [`breaker::ExponentialBackoff`]; this module holds
//! the settings ([`RetryPolicy`]) and the operation's [`Deadline`].

use std::future::Future;
use std::time::Duration;

use breaker::ExponentialBackoff;
use tokio::time::Instant;

/// How failed attempts are retried.
///
/// Attempt `n` (0-based) that fails with a retryable error is followed by a
/// pause drawn uniformly from `[0, min(cap, base · 2ⁿ)]` ("full jitter", so
/// that clients that failed together do not retry together), unless the
/// operation's `deadline` has passed by then. Which failures are retried at
/// all is decided by the error, see the crate docs on retry safety.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// The first pause's upper bound (default 100 ms).
    pub base: Duration,
    /// No pause is longer than this (default 2 s).
    pub cap: Duration,
    /// An operation gives up this long after it started, attempts and
    /// pauses included (default 5 s). Also bounds the wait for a primary.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
            deadline: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The workspace's back-off with these settings: from `base` to `cap`,
    /// doubling, full jitter.
    pub fn backoff(&self) -> ExponentialBackoff {
        ExponentialBackoff::new(self.base, self.cap)
            .multiplier(2.0)
            .jitter(1.0)
    }

    /// The upper bound of the pause after failed attempt `attempt`:
    /// `min(cap, base · 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.backoff().ceiling(attempt)
    }

    /// A pause drawn uniformly from `[0, ceiling(attempt)]`.
    pub fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        self.backoff().delay_with(attempt, rng.f64())
    }
}

/// The longest budget a deadline honours (about 30 years): enough for
/// "never" without overflowing the clock.
pub(crate) const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The moment an operation gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    /// `budget` from now.
    /// A budget too large for the clock (`Duration::MAX`, say) is capped
    /// at [`FAR_FUTURE`] instead of overflowing.
    pub(crate) fn after(budget: Duration) -> Deadline {
        let now = Instant::now();
        Deadline {
            at: now.checked_add(budget.min(FAR_FUTURE)).unwrap_or(now),
            budget,
        }
    }

    /// Time left, zero once passed.
    pub(crate) fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// The whole budget it was created with.
    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }

    /// The instant itself.
    pub(crate) fn instant(&self) -> Instant {
        self.at
    }
}

/// The pause after failed attempt `attempt` (0-based): a full-jitter delay,
/// never past the deadline, cut short when `wake` completes (a new primary
/// was elected, say). `false` when the deadline has passed: give up.
pub(crate) async fn pause(
    policy: &RetryPolicy,
    attempt: u32,
    deadline: &Deadline,
    rng: &mut fastrand::Rng,
    wake: impl Future<Output = ()>,
) -> bool {
    policy
        .backoff()
        .pause(attempt, rng.f64(), Some(deadline.instant()), wake)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_huge_budget_does_not_overflow_the_clock() {
        let deadline = Deadline::after(Duration::MAX);
        assert_eq!(deadline.budget(), Duration::MAX);
        assert!(!deadline.remaining().is_zero());
        assert!(deadline.remaining() >= FAR_FUTURE - Duration::from_secs(1));
        let policy = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(7);
        assert!(pause(&policy, 3, &deadline, &mut rng, std::future::pending()).await);
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let ms = |n| policy.ceiling(n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(4), ms(5), ms(6)],
            [100, 200, 400, 800, 1600, 2000, 2000]
        );
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn full_jitter_stays_in_bounds_and_spreads() {
        let policy = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(7);
        for attempt in 0..10 {
            let ceiling = policy.ceiling(attempt);
            let delays: Vec<Duration> = (0..200).map(|_| policy.delay(attempt, &mut rng)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter: both halves of the range are used.
            assert!(delays.iter().any(|d| *d < ceiling / 2), "attempt {attempt}");
            assert!(delays.iter().any(|d| *d > ceiling / 2), "attempt {attempt}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_follows_tokio_time() {
        let deadline = Deadline::after(Duration::from_secs(2));
        assert!(!deadline.remaining().is_zero());
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(deadline.remaining(), Duration::from_millis(500));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(deadline.remaining(), Duration::ZERO);
        assert_eq!(deadline.budget(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_stay_under_the_ceiling_and_the_deadline() {
        let policy = RetryPolicy::default();
        for seed in 0..50 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let deadline = Deadline::after(Duration::from_millis(250));
            let started = Instant::now();
            let mut attempt = 0;
            let mut pauses = Vec::new();
            loop {
                let before = Instant::now();
                let again = pause(
                    &policy,
                    attempt,
                    &deadline,
                    &mut rng,
                    std::future::pending(),
                )
                .await;
                pauses.push(before.elapsed());
                assert!(before.elapsed() <= policy.ceiling(attempt), "seed {seed}");
                if !again {
                    break;
                }
                attempt += 1;
                assert!(attempt < 1000, "seed {seed}: never gave up");
            }
            // Gave up exactly at the deadline, never after it.
            assert_eq!(
                started.elapsed(),
                Duration::from_millis(250),
                "seed {seed}: {pauses:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_cuts_the_pause_short() {
        let policy = RetryPolicy::default();
        let mut rng = fastrand::Rng::with_seed(1);
        let deadline = Deadline::after(Duration::from_secs(5));
        let started = Instant::now();
        let woken = async { tokio::time::sleep(Duration::from_millis(3)).await };
        // Attempt 20: a pause of up to 2 s, woken after 3 ms.
        let delay = policy.delay(20, &mut fastrand::Rng::with_seed(1));
        assert!(delay > Duration::from_millis(3), "{delay:?}");
        assert!(pause(&policy, 20, &deadline, &mut rng, woken).await);
        assert_eq!(started.elapsed(), Duration::from_millis(3));
        // An expired deadline gives up without pausing.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!pause(&policy, 0, &deadline, &mut rng, std::future::ready(())).await);
    }
}
