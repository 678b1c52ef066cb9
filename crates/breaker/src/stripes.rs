//! Striped counters, in the manner of Java's `LongAdder`.
//!
//! Each thread adds to the counters of one stripe, picked once per thread, and
//! each stripe sits on its own pair of cache lines. Two threads hammering one
//! breaker therefore write different cache lines, and the sum is only taken
//! when somebody needs it (a failure is judged, a snapshot is taken).

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counter slots of a stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A success that was not slow.
    Success = 0,
    /// A slow success.
    SlowSuccess,
    /// A failure that was not slow.
    Failure,
    /// A slow failure.
    SlowFailure,
    /// A timeout.
    Timeout,
    /// An ignored result.
    Ignored,
    /// A permit dropped without a result.
    Cancelled,
    /// A rejected call.
    Rejected,
    /// A result from an older state generation, discarded.
    Stale,
}

/// How many slots a stripe has.
const KINDS: usize = 9;

/// One stripe: its own 128 bytes (two cache lines, so the adjacent-line
/// prefetcher does not couple neighbours).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Stripe {
    /// One monotonic counter per [`Kind`].
    counts: [AtomicU64; KINDS],
}

impl Stripe {
    /// Adds one to `kind`, returning the count before.
    #[inline]
    pub(crate) fn add(&self, kind: Kind) -> u64 {
        self.counts[kind as usize].fetch_add(1, Ordering::Relaxed)
    }
}

/// Cumulative counts, summed over stripes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Per [`Kind`].
    counts: [u64; KINDS],
}

impl Totals {
    /// The count of `kind`.
    pub(crate) fn get(&self, kind: Kind) -> u64 {
        self.counts[kind as usize]
    }

    /// Calls judged by the window: successes, failures and timeouts.
    pub(crate) fn calls(&self) -> u64 {
        self.plain_successes() + self.notable()
    }

    /// Successes that were not slow.
    pub(crate) fn plain_successes(&self) -> u64 {
        self.get(Kind::Success)
    }

    /// Calls that were a failure, a timeout, or slow.
    pub(crate) fn notable(&self) -> u64 {
        self.get(Kind::SlowSuccess)
            .wrapping_add(self.get(Kind::Failure))
            .wrapping_add(self.get(Kind::SlowFailure))
            .wrapping_add(self.get(Kind::Timeout))
    }

    /// Failures, slow failures and timeouts.
    pub(crate) fn failures(&self) -> u64 {
        self.get(Kind::Failure)
            .wrapping_add(self.get(Kind::SlowFailure))
            .wrapping_add(self.get(Kind::Timeout))
    }

    /// Slow successes and slow failures.
    pub(crate) fn slow(&self) -> u64 {
        self.get(Kind::SlowSuccess)
            .wrapping_add(self.get(Kind::SlowFailure))
    }

    /// Adds another set of totals.
    pub(crate) fn plus(mut self, other: &Totals) -> Self {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts) {
            *mine = mine.wrapping_add(theirs);
        }
        self
    }
}

/// A set of stripes.
#[derive(Debug)]
pub(crate) struct Stripes {
    /// The stripes; their number is a power of two.
    stripes: Box<[Stripe]>,
    /// `stripes.len() - 1`.
    mask: usize,
}

impl Stripes {
    /// Enough stripes for this machine: twice the available parallelism,
    /// rounded up to a power of two, between 2 and 64.
    pub(crate) fn for_this_machine() -> Self {
        static STRIPES: OnceLock<usize> = OnceLock::new();
        let count = *STRIPES.get_or_init(|| {
            std::thread::available_parallelism()
                .map_or(4, |n| n.get().saturating_mul(2))
                .clamp(2, 64)
                .next_power_of_two()
        });
        Self::with_count(count)
    }

    /// A single stripe, for counters that are rarely written.
    pub(crate) fn single() -> Self {
        Self::with_count(1)
    }

    /// `count` stripes, `count` a power of two.
    fn with_count(count: usize) -> Self {
        let count = count.max(1).next_power_of_two();
        Self {
            stripes: (0..count).map(|_| Stripe::default()).collect(),
            mask: count - 1,
        }
    }

    /// The calling thread's stripe.
    #[inline]
    pub(crate) fn local(&self) -> &Stripe {
        // The index is always in bounds (masked); `get` keeps this panic-free.
        let index = thread_index() & self.mask;
        match self.stripes.get(index) {
            Some(stripe) => stripe,
            None => &self.stripes[0],
        }
    }

    /// Sums every stripe.
    pub(crate) fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for stripe in self.stripes.iter() {
            for (slot, count) in totals.counts.iter_mut().enumerate() {
                *count = count.wrapping_add(stripe.counts[slot].load(Ordering::Relaxed));
            }
        }
        totals
    }

    /// How many stripes there are.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.stripes.len()
    }
}

/// The next thread index to hand out.
static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's index, `usize::MAX` until first use.
    static THREAD_INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// A small number fixed per thread; consecutive threads get consecutive
/// numbers, so the first threads of a process land on distinct stripes.
#[inline]
fn thread_index() -> usize {
    THREAD_INDEX
        .try_with(|cell| {
            let index = cell.get();
            if index != usize::MAX {
                return index;
            }
            let index = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) & (usize::MAX >> 1);
            cell.set(index);
            index
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_are_cache_line_apart() {
        assert_eq!(std::mem::align_of::<Stripe>(), 128);
        assert_eq!(std::mem::size_of::<Stripe>(), 128);
    }

    #[test]
    fn totals_sum_all_stripes() {
        let stripes = Stripes::with_count(4);
        stripes.local().add(Kind::Success);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                stripes.local().add(Kind::Failure);
                stripes.local().add(Kind::SlowSuccess);
            });
            scope.spawn(|| {
                stripes.local().add(Kind::Timeout);
            });
        });
        let totals = stripes.totals();
        assert_eq!(totals.plain_successes(), 1);
        assert_eq!(totals.failures(), 2);
        assert_eq!(totals.slow(), 1);
        assert_eq!(totals.notable(), 3);
        assert_eq!(totals.calls(), 4);
        assert_eq!(totals.get(Kind::Rejected), 0);
    }

    #[test]
    fn thread_index_is_stable_per_thread() {
        assert_eq!(thread_index(), thread_index());
    }

    #[test]
    fn machine_stripes_are_a_power_of_two() {
        let stripes = Stripes::for_this_machine();
        assert!(stripes.len().is_power_of_two());
        assert!((2..=64).contains(&stripes.len()));
        assert_eq!(Stripes::single().len(), 1);
    }
}
