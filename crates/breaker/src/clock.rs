//! Injectable time.
//!
//! A breaker reads the clock only where time matters: on the open path (is the
//! open wait over?), in half-open (has the probe taken too long?), when a time
//! window is brought up to date, and around a call when slow-call detection is
//! on. The closed fast path with a count window never reads it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A source of monotonic time.
///
/// The default, [`TokioClock`], follows `tokio::time::Instant`, so
/// `tokio::time::pause()` and `advance()` drive a breaker in tests. Use
/// [`ManualClock`] to drive it without a runtime.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The default clock: `tokio::time::Instant::now()`.
///
/// Outside a runtime, or without tokio's `test-util` feature, this is the
/// operating system's monotonic clock; inside a runtime whose time is paused it
/// is the runtime's frozen clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that only moves when told to.
///
/// Cloning shares the clock: advance one clone and every breaker built with any
/// clone sees the new time.
///
/// ```
/// use std::time::Duration;
/// use breaker::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let before = clock.now();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now() - before, Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    /// The shared reading.
    inner: Arc<ManualInner>,
}

/// What the clones of a [`ManualClock`] share.
struct ManualInner {
    /// The instant the clock started at.
    base: Instant,
    /// Nanoseconds advanced since `base`.
    offset_nanos: AtomicU64,
}

impl ManualClock {
    /// A clock standing at the current instant.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(ManualInner {
                base: Instant::now(),
                offset_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// Moves the clock forward by `by` (saturating after about 584 years).
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ =
            self.inner
                .offset_nanos
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                    Some(current.saturating_add(nanos))
                });
    }

    /// How far the clock has been advanced since it was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.inner.offset_nanos.load(Ordering::Acquire))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.inner.base + self.elapsed()
    }
}

/// A clock plus the instant a breaker was created, giving nanosecond offsets
/// that fit in atomics.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    /// Where time comes from.
    clock: Arc<dyn Clock>,
    /// Offset zero.
    origin: Instant,
}

impl Timeline {
    /// Starts a timeline at the clock's current instant.
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        let origin = clock.now();
        Self { clock, origin }
    }

    /// Nanoseconds since the origin.
    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        nanos(self.clock.now().saturating_duration_since(self.origin))
    }
}

/// A duration in whole nanoseconds, saturating.
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
