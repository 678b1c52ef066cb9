//! Histogram samples do not pile up when nothing scrapes: the upkeep
//! thread folds them into their buckets. Live heap bytes are counted by a
//! wrapping allocator (alone in this test binary, so they are this test's).

#![allow(unsafe_code)] // the counting allocator

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use service_kit::prometheus;

/// The system allocator, counting the bytes it has out.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to `System` unchanged; only a counter is
// added, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn unscraped_histogram_samples_are_folded_into_buckets() {
    let _handle = prometheus::install(&[0.005, 0.05, 0.5], || {});
    let histogram = metrics::histogram!("upkeep_test_seconds");
    histogram.record(0.001); // the series and its first block exist now

    let before = LIVE.load(Ordering::Relaxed);
    const SAMPLES: usize = 200_000;
    for i in 0..SAMPLES {
        histogram.record((i % 100) as f64 / 1_000.0);
    }
    let loaded = LIVE.load(Ordering::Relaxed);
    // Each sample is kept (8 bytes) until the upkeep folds it.
    assert!(
        loaded - before >= SAMPLES * 8,
        "the samples took {} bytes",
        loaded - before
    );

    // Nothing renders: only the upkeep thread can free them.
    let waited = Instant::now();
    let mut now = LIVE.load(Ordering::Relaxed);
    while now > before + 64 * 1024 && waited.elapsed() < prometheus::UPKEEP_EVERY * 4 {
        std::thread::sleep(Duration::from_millis(100));
        now = LIVE.load(Ordering::Relaxed);
    }
    eprintln!(
        "{SAMPLES} samples: heap {before} -> {loaded} -> {now} bytes ({:?} after)",
        waited.elapsed()
    );
    assert!(
        now <= before + 64 * 1024,
        "{} bytes of samples still held {:?} after they were recorded",
        now.saturating_sub(before),
        waited.elapsed()
    );
}
