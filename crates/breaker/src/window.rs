//! The sliding windows, brought up to date from the striped totals.
//!
//! The hot path only bumps striped counters. A [`SlidingWindow`] is updated
//! when the breaker judges its rates: at once after every failure, timeout or
//! slow call, and after successes when they can change the verdict (see
//! [`SlidingWindow::successes_may_trip`]). Between two updates the calls that
//! came in are folded in with these rules:
//!
//! - failures, timeouts and slow calls since the last update are the most
//!   recent calls (exact when calls are sequential, since each of them
//!   triggers an update of its own);
//! - in a count window, the successes come before them;
//! - in a time window, the successes are spread evenly over the time since
//!   the last update, and the others land in the current bucket.

use std::collections::VecDeque;

use crate::policy::{Policy, Window};
use crate::state::Generation;
use crate::stripes::Totals;

/// What the window holds after an update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct WindowStats {
    /// Calls in the window (successes, failures, timeouts).
    pub(crate) calls: u64,
    /// Failures and timeouts in the window.
    pub(crate) failures: u64,
    /// Slow calls in the window.
    pub(crate) slow: u64,
}

/// Why the window says the breaker should open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Trip {
    /// The failure rate (percent) reached its threshold.
    FailureRate(f64),
    /// The slow-call rate (percent) reached its threshold.
    SlowCallRate(f64),
}

impl WindowStats {
    /// The failure rate in percent, once the window holds `minimum` calls.
    pub(crate) fn failure_rate(&self, minimum: u64) -> Option<f64> {
        (self.calls >= minimum.max(1)).then(|| percent(self.failures, self.calls))
    }

    /// The slow-call rate in percent, once the window holds `minimum` calls.
    pub(crate) fn slow_call_rate(&self, minimum: u64) -> Option<f64> {
        (self.calls >= minimum.max(1)).then(|| percent(self.slow, self.calls))
    }

    /// Whether the rates reach the policy's thresholds (`>=`), judged only
    /// once the window holds the minimum number of calls.
    pub(crate) fn verdict(&self, policy: &Policy) -> Option<Trip> {
        let minimum = u64::from(policy.minimum_calls);
        if self.calls < minimum.max(1) {
            return None;
        }
        if reaches(self.failures, self.calls, policy.failure_rate_threshold) {
            return Some(Trip::FailureRate(percent(self.failures, self.calls)));
        }
        match policy.slow_calls {
            Some(slow) if reaches(self.slow, self.calls, slow.rate_threshold) => {
                Some(Trip::SlowCallRate(percent(self.slow, self.calls)))
            }
            _ => None,
        }
    }

    /// Whether successes alone can make this window trip: it has not reached
    /// the minimum yet, and once it does (by successes) its rates will still
    /// reach a threshold. Only then must a success be judged; otherwise a
    /// success can only lower the rates of a count window.
    pub(crate) fn successes_may_trip(&self, policy: &Policy) -> bool {
        let minimum = u64::from(policy.minimum_calls).max(1);
        if self.calls >= minimum {
            return false;
        }
        reaches(self.failures, minimum, policy.failure_rate_threshold)
            || policy
                .slow_calls
                .is_some_and(|slow| reaches(self.slow, minimum, slow.rate_threshold))
    }
}

/// `part / whole` in percent.
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// `part / whole >= threshold %`, without dividing (exact at the boundary for
/// whole-number thresholds).
fn reaches(part: u64, whole: u64, threshold: f64) -> bool {
    whole > 0 && part as f64 * 100.0 >= threshold * whole as f64
}

/// A time-window bucket.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which bucket of time this is (`nanos / bucket_nanos`).
    index: u64,
    /// Calls.
    calls: u64,
    /// Failures and timeouts.
    failures: u64,
    /// Slow calls.
    slow: u64,
}

/// The two kinds of window.
#[derive(Debug)]
enum Data {
    /// Exact last-N calls: positions (cumulative call numbers) of the recent
    /// failures and slow calls.
    Count {
        /// N.
        size: u64,
        /// Positions of the failures in the window, oldest first.
        failures: VecDeque<u64>,
        /// Positions of the slow calls in the window, oldest first.
        slow: VecDeque<u64>,
    },
    /// Buckets of time, slot `index % len`.
    Time {
        /// Length of a bucket.
        bucket_nanos: u64,
        /// The slots.
        buckets: Box<[Bucket]>,
    },
}

/// A sliding window. Only the thread that holds the breaker's window lock
/// updates it.
#[derive(Debug)]
pub(crate) struct SlidingWindow {
    /// The window's contents.
    data: Data,
    /// The state generation the contents belong to.
    generation: Option<Generation>,
    /// The totals at the last update.
    last: Totals,
    /// When the last update happened (nanoseconds since the breaker's origin).
    last_nanos: u64,
    /// Cumulative calls when the current generation began (count windows).
    period_start_calls: u64,
    /// Whether the last verdict was to trip (for metrics-only events).
    pub(crate) tripped: bool,
}

impl SlidingWindow {
    /// An empty window of the policy's kind.
    pub(crate) fn new(window: Window) -> Self {
        let data = match window {
            Window::Count { size } => Data::Count {
                size: u64::from(size),
                failures: VecDeque::with_capacity(size.min(1024) as usize),
                slow: VecDeque::new(),
            },
            Window::Time { duration, buckets } => {
                let buckets = u64::from(buckets.max(1));
                let total = crate::clock::nanos(duration);
                Data::Time {
                    bucket_nanos: (total / buckets).max(1),
                    buckets: (0..buckets).map(|_| Bucket::default()).collect(),
                }
            }
        };
        Self {
            data,
            generation: None,
            last: Totals::default(),
            last_nanos: 0,
            period_start_calls: 0,
            tripped: false,
        }
    }

    /// Whether this is a time window (which needs the clock to update).
    pub(crate) fn is_time(&self) -> bool {
        matches!(self.data, Data::Time { .. })
    }

    /// Brings the window up to date with `totals` at `now_nanos`, in state
    /// generation `generation` which began at `period_start_nanos`. A new
    /// generation starts from an empty window.
    pub(crate) fn update(
        &mut self,
        generation: Generation,
        totals: &Totals,
        now_nanos: u64,
        period_start_nanos: u64,
    ) -> WindowStats {
        if self.generation != Some(generation) {
            self.generation = Some(generation);
            self.period_start_calls = self.last.calls();
            self.last_nanos = self.last_nanos.max(period_start_nanos);
            self.tripped = false;
            match &mut self.data {
                Data::Count { failures, slow, .. } => {
                    failures.clear();
                    slow.clear();
                }
                Data::Time { buckets, .. } => buckets.fill(Bucket::default()),
            }
        }
        let new_plain = totals
            .plain_successes()
            .wrapping_sub(self.last.plain_successes());
        let new_failures = totals.failures().wrapping_sub(self.last.failures());
        let new_slow = totals.slow().wrapping_sub(self.last.slow());
        let new_notable = totals.notable().wrapping_sub(self.last.notable());
        let calls = totals.calls();

        let stats = match &mut self.data {
            Data::Count {
                size,
                failures,
                slow,
            } => {
                push_recent(failures, calls, new_failures, *size);
                push_recent(slow, calls, new_slow, *size);
                WindowStats {
                    calls: calls.wrapping_sub(self.period_start_calls).min(*size),
                    failures: failures.len() as u64,
                    slow: slow.len() as u64,
                }
            }
            Data::Time {
                bucket_nanos,
                buckets,
            } => {
                let now = now_nanos.max(self.last_nanos);
                let current = now / *bucket_nanos;
                spread(
                    buckets,
                    *bucket_nanos,
                    self.last_nanos,
                    now,
                    new_plain,
                    current,
                );
                let bucket = slot(buckets, current);
                bucket.calls += new_notable;
                bucket.failures += new_failures;
                bucket.slow += new_slow;
                sum_window(buckets, current)
            }
        };
        self.last = *totals;
        self.last_nanos = self.last_nanos.max(now_nanos);
        stats
    }
}

/// Appends the positions of `new` recent calls ending at `calls`, and drops
/// positions that have left a window of `size` calls.
fn push_recent(positions: &mut VecDeque<u64>, calls: u64, new: u64, size: u64) {
    let new = new.min(size);
    for offset in (0..new).rev() {
        positions.push_back(calls.saturating_sub(offset));
    }
    while positions
        .front()
        .is_some_and(|&position| position.saturating_add(size) <= calls)
    {
        positions.pop_front();
    }
}

/// The slot of bucket `index`, emptied first if it held an older bucket.
fn slot(buckets: &mut [Bucket], index: u64) -> &mut Bucket {
    let len = buckets.len() as u64;
    let position = usize::try_from(index % len).unwrap_or(0);
    let bucket = &mut buckets[position];
    if bucket.index != index {
        *bucket = Bucket {
            index,
            ..Bucket::default()
        };
    }
    bucket
}

/// Spreads `count` successes evenly over `(from, to]`, keeping only the
/// buckets still inside the window that ends with bucket `current`.
fn spread(buckets: &mut [Bucket], bucket_nanos: u64, from: u64, to: u64, count: u64, current: u64) {
    if count == 0 {
        return;
    }
    let len = buckets.len() as u64;
    let oldest = (current + 1).saturating_sub(len);
    if to <= from || from / bucket_nanos >= current {
        slot(buckets, current).calls += count;
        return;
    }
    let span = u128::from(to - from);
    let first = (from / bucket_nanos).max(oldest);
    let in_window_from = from.max(first * bucket_nanos);
    let expected = (u128::from(count) * u128::from(to - in_window_from) / span) as u64;
    let mut assigned = 0;
    for index in first..current {
        let low = from.max(index * bucket_nanos);
        let high = (index + 1) * bucket_nanos;
        let share = (u128::from(count) * u128::from(high.saturating_sub(low)) / span) as u64;
        slot(buckets, index).calls += share;
        assigned += share;
    }
    slot(buckets, current).calls += expected.saturating_sub(assigned);
}

/// Sums the buckets in the window ending with bucket `current`.
fn sum_window(buckets: &[Bucket], current: u64) -> WindowStats {
    let len = buckets.len() as u64;
    let oldest = (current + 1).saturating_sub(len);
    buckets
        .iter()
        .filter(|bucket| bucket.index >= oldest && bucket.index <= current)
        .fold(WindowStats::default(), |sum, bucket| WindowStats {
            calls: sum.calls + bucket.calls,
            failures: sum.failures + bucket.failures,
            slow: sum.slow + bucket.slow,
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stripes::{Kind, Stripes};

    /// Drives a window with a single thread's outcomes.
    struct Driver {
        /// The counters the window reads.
        stripes: Stripes,
        /// The window under test.
        window: SlidingWindow,
        /// The time, in nanoseconds since the origin.
        now: u64,
    }

    impl Driver {
        fn new(window: Window) -> Self {
            Self {
                stripes: Stripes::single(),
                window: SlidingWindow::new(window),
                now: 0,
            }
        }

        fn record(&mut self, kinds: &[Kind]) -> WindowStats {
            for kind in kinds {
                self.stripes.local().add(*kind);
            }
            self.update()
        }

        fn update(&mut self) -> WindowStats {
            self.window.update(0, &self.stripes.totals(), self.now, 0)
        }
    }

    use Kind::{Failure as F, SlowFailure as SF, SlowSuccess as SS, Success as S};

    #[test]
    fn count_window_holds_exactly_the_last_n_calls() {
        let mut driver = Driver::new(Window::count(4));
        let stats = driver.record(&[F]);
        assert_eq!((stats.calls, stats.failures), (1, 1));
        let stats = driver.record(&[S, S, S]);
        assert_eq!((stats.calls, stats.failures), (4, 1));
        // One more call pushes the failure out.
        let stats = driver.record(&[S]);
        assert_eq!((stats.calls, stats.failures), (4, 0));
        let stats = driver.record(&[F]);
        assert_eq!((stats.calls, stats.failures), (4, 1));
        let stats = driver.record(&[SF]);
        assert_eq!((stats.calls, stats.failures, stats.slow), (4, 2, 1));
        let stats = driver.record(&[SS]);
        assert_eq!((stats.calls, stats.failures, stats.slow), (4, 2, 2));
        let stats = driver.record(&[S, S, S, S, S]);
        assert_eq!((stats.calls, stats.failures, stats.slow), (4, 0, 0));
    }

    #[test]
    fn new_generation_starts_empty() {
        let mut driver = Driver::new(Window::count(10));
        driver.record(&[F, F, S]);
        for kind in [S, F] {
            driver.stripes.local().add(kind);
        }
        let stats = driver
            .window
            .update(1, &driver.stripes.totals(), driver.now, 0);
        // Calls recorded since the last update belong to the new generation.
        assert_eq!((stats.calls, stats.failures), (2, 1));
    }

    #[test]
    fn time_window_expires_old_buckets() {
        let second = 1_000_000_000;
        let mut driver = Driver::new(Window::time(Duration::from_secs(10), 10));
        let stats = driver.record(&[F, F]);
        assert_eq!((stats.calls, stats.failures), (2, 2));
        driver.now = 5 * second;
        let stats = driver.record(&[F]);
        assert_eq!((stats.calls, stats.failures), (3, 3));
        driver.now = 10 * second;
        let stats = driver.update();
        assert_eq!((stats.calls, stats.failures), (1, 1));
        driver.now = 15 * second;
        let stats = driver.update();
        assert_eq!(stats, WindowStats::default());
    }

    #[test]
    fn time_window_spreads_successes_since_last_update() {
        let second = 1_000_000_000;
        let mut driver = Driver::new(Window::time(Duration::from_secs(10), 10));
        driver.update();
        // 200 successes over 20 s, folded in at the end. At 20 s the window
        // holds buckets 11..=20 (the current one just begun), so 9 s of them:
        // 90 successes, plus the failure.
        for _ in 0..200 {
            driver.stripes.local().add(S);
        }
        driver.now = 20 * second;
        let stats = driver.record(&[F]);
        assert_eq!(stats.failures, 1);
        assert_eq!(stats.calls, 91, "{stats:?}");
    }

    #[test]
    fn verdict_trips_at_threshold_not_below_minimum() {
        let policy = Policy::builder()
            .window(Window::count(10))
            .minimum_calls(4)
            .failure_rate_threshold(50.0)
            .build()
            .unwrap();
        let stats = |calls, failures| WindowStats {
            calls,
            failures,
            slow: 0,
        };
        assert_eq!(stats(3, 3).verdict(&policy), None);
        assert_eq!(stats(4, 1).verdict(&policy), None);
        assert_eq!(stats(4, 2).verdict(&policy), Some(Trip::FailureRate(50.0)));
        assert!(stats(3, 2).successes_may_trip(&policy));
        assert!(!stats(3, 1).successes_may_trip(&policy));
        assert!(!stats(4, 1).successes_may_trip(&policy));
        assert_eq!(stats(4, 2).failure_rate(4), Some(50.0));
        assert_eq!(stats(3, 2).failure_rate(4), None);
    }

    #[test]
    fn slow_rate_trips_too() {
        let policy = Policy::builder()
            .window(Window::count(10))
            .minimum_calls(2)
            .slow_calls(Duration::from_secs(1), 50.0)
            .build()
            .unwrap();
        let stats = WindowStats {
            calls: 4,
            failures: 0,
            slow: 2,
        };
        assert_eq!(stats.verdict(&policy), Some(Trip::SlowCallRate(50.0)));
    }
}
