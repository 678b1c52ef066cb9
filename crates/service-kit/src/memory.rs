//! Memory given back after a load.
//!
//! glibc's malloc keeps what it freed for reuse: after a burst of 4,000
//! connections both services still held 95 % of their peak RSS 60 s after
//! the last connection closed, though a heap profile showed under 1 MB
//! still allocated (docs/BENCHMARKS.md, issue 19). `malloc_trim(0)` hands
//! every free page of every arena back to the kernel.
//!
//! [`Trimmer`] calls it once the load has fallen: when the open connections
//! are at most a quarter of the most seen since the last trim, and that
//! peak was at least [`MIN_PEAK`]. It looks every [`CHECK_EVERY`], so at
//! most one trim per period, on a blocking thread (a trim walks the
//! arenas). On other C libraries it does nothing: musl's allocator, that
//! of the static images deploy/ builds, unmaps freed memory itself.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use std::time::Duration;

/// How often the open connections are compared with their peak.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Peaks below this are not worth a trim (an idle service's few
/// connections come and go).
pub(crate) const MIN_PEAK: usize = 64;

/// Tracks the peak of open connections and trims after it falls.
#[derive(Debug, Default)]
pub(crate) struct Trimmer {
    /// The most connections open at once since the last trim.
    peak: AtomicUsize,
}

impl Trimmer {
    /// Records that `open` connections are open now.
    pub(crate) fn opened(&self, open: usize) {
        self.peak.fetch_max(open, Ordering::Relaxed);
    }

    /// Whether `open` connections, after the peak so far, call for a trim;
    /// if so the peak starts again from `open`.
    pub(crate) fn due(&self, open: usize) -> bool {
        let peak = self.peak.load(Ordering::Relaxed);
        if peak >= MIN_PEAK && open <= peak / 4 {
            self.peak.store(open, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Every [`CHECK_EVERY`], trims if [`Trimmer::due`] says so, with the
    /// open connections `open()` counts. Runs until dropped.
    pub(crate) async fn run(self: Arc<Self>, open: impl Fn() -> usize) {
        let mut checks = tokio::time::interval(CHECK_EVERY);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            checks.tick().await;
            if self.due(open()) {
                let _ = tokio::task::spawn_blocking(trim).await;
            }
        }
    }
}

/// Gives the allocator's free pages back to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the one FFI call of the crate
fn trim() {
    // SAFETY: `malloc_trim` takes a plain integer and only touches the
    // allocator's own state, under its own locks; it is safe to call from
    // any thread at any time.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released = released != 0, "malloc_trim after a load");
}

/// Nothing to do: the allocator returns freed memory itself.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_is_due_once_the_load_has_fallen_to_a_quarter() {
        let trimmer = Trimmer::default();
        for open in [1, 500, 4_000, 3_000] {
            trimmer.opened(open);
        }
        assert!(!trimmer.due(3_000), "still loaded");
        assert!(!trimmer.due(1_001));
        assert!(trimmer.due(1_000), "a quarter of the peak");
        // The peak starts again from there: no trim until it falls again.
        assert!(!trimmer.due(900));
        assert!(trimmer.due(250));
    }

    #[test]
    fn small_peaks_are_not_worth_a_trim() {
        let trimmer = Trimmer::default();
        trimmer.opened(MIN_PEAK - 1);
        assert!(!trimmer.due(0));
        trimmer.opened(MIN_PEAK);
        assert!(trimmer.due(0));
        assert!(!trimmer.due(0), "nothing new since the last trim");
    }

    #[tokio::test(start_paused = true)]
    async fn the_loop_trims_after_the_load_and_not_before() {
        let trimmer = Arc::new(Trimmer::default());
        let open = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&open);
        let task = tokio::spawn(Arc::clone(&trimmer).run(move || counted.load(Ordering::Relaxed)));
        open.store(4_000, Ordering::Relaxed);
        trimmer.opened(4_000);
        tokio::time::sleep(CHECK_EVERY * 2).await;
        assert_eq!(
            trimmer.peak.load(Ordering::Relaxed),
            4_000,
            "no trim under load"
        );
        open.store(0, Ordering::Relaxed);
        tokio::time::sleep(CHECK_EVERY + Duration::from_millis(1)).await;
        // A trim ran: the peak starts again from the open count.
        assert_eq!(trimmer.peak.load(Ordering::Relaxed), 0);
        task.abort();
    }
}
