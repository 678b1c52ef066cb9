//! Several threads hammer one breaker through many transitions: the probe
//! limit holds in every half-open generation, every admitted call is
//! accounted for exactly once, and the breaker still recovers at the end.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use breaker::{Breaker, ManualClock, Outcome, Policy, State, Window};

const THREADS: usize = 4;
const ITERATIONS: u64 = 20_000;
const PROBES: usize = 3;

/// A small deterministic random sequence per thread.
struct XorShift(
    /// The state; never zero.
    u64,
);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn probe_limit_and_accounting_hold_under_contention() {
    let clock = ManualClock::new();
    let policy = Policy::builder()
        .window(Window::count(20))
        .minimum_calls(5)
        .failure_rate_threshold(50.0)
        .open_wait(Duration::from_millis(100))
        .max_half_open_wait(Duration::from_millis(200))
        .permitted_probes(PROBES as u32)
        .build()
        .expect("valid policy");
    let breaker = Breaker::with_clock("stress", policy, clock.clone());
    // Probe permits we hold, per generation.
    let probes_out: Vec<AtomicUsize> = (0..=u16::MAX as usize)
        .map(|_| AtomicUsize::new(0))
        .collect();
    let most_probes_out = AtomicUsize::new(0);
    let half_opens = AtomicU64::new(0);

    thread::scope(|scope| {
        for worker in 0..THREADS {
            let breaker = &breaker;
            let clock = &clock;
            let probes_out = &probes_out;
            let most_probes_out = &most_probes_out;
            let half_opens = &half_opens;
            scope.spawn(move || {
                let mut random = XorShift(0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1));
                for i in 0..ITERATIONS {
                    if worker == 0 && i % 50 == 0 {
                        clock.advance(Duration::from_millis(random.next() % 40));
                    }
                    let Ok(permit) = breaker.try_acquire() else {
                        continue;
                    };
                    let generation = permit.generation() as usize;
                    if permit.is_probe() {
                        let out = probes_out[generation].fetch_add(1, Ordering::SeqCst) + 1;
                        most_probes_out.fetch_max(out, Ordering::SeqCst);
                        half_opens.fetch_add(1, Ordering::Relaxed);
                        assert!(out <= PROBES, "{out} probes out in generation {generation}");
                        thread::yield_now();
                        probes_out[generation].fetch_sub(1, Ordering::SeqCst);
                    }
                    match random.next() % 10 {
                        0..=3 => permit.record(Outcome::Failure),
                        4 => drop(permit),
                        5 => permit.record(Outcome::Ignore),
                        6 => permit.record(Outcome::Timeout),
                        _ => permit.record(Outcome::Success),
                    }
                }
            });
        }
    });

    let snapshot = breaker.snapshot();
    let totals = snapshot.totals;
    let accounted = totals.successes
        + totals.failures
        + totals.timeouts
        + totals.ignored
        + totals.cancelled
        + totals.rejected
        + totals.stale;
    assert_eq!(accounted, THREADS as u64 * ITERATIONS, "{totals:?}");
    assert!(most_probes_out.load(Ordering::SeqCst) <= PROBES);
    assert!(
        half_opens.load(Ordering::Relaxed) > 0,
        "the run never reached half-open: {snapshot:?}"
    );

    // Recovery: past every wait, successful probes close it.
    for _ in 0..10 {
        if breaker.state() == State::Closed {
            break;
        }
        clock.advance(Duration::from_millis(300));
        for _ in 0..PROBES {
            if let Ok(permit) = breaker.try_acquire() {
                permit.record(Outcome::Success);
            }
        }
    }
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn closed_path_counts_every_call_from_every_thread() {
    let breaker = Breaker::new("counting", Policy::default());
    thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                for _ in 0..ITERATIONS {
                    let _ = breaker.call(|| Ok::<_, ()>(()));
                }
            });
        }
    });
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.totals.successes, THREADS as u64 * ITERATIONS);
    assert_eq!(snapshot.state, State::Closed);
    assert_eq!(snapshot.window_calls, 100);
}
