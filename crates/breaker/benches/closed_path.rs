//! `breaker` against `recloser` and `failsafe`, and against no breaker at all.
//!
//! Every case times a plain loop of calls (`iter_custom`), so criterion's own
//! per-iteration overhead is not in the figures. Three cases, each for all
//! contenders in one run:
//!
//! - `closed/1_thread`: one thread, every call succeeds;
//! - `closed/2_threads`: two threads hammer one shared breaker; the figure is
//!   the wall time for each thread to make one call (both run at once);
//! - `rejected/1_thread` and `rejected/2_threads`: the breaker is open, every
//!   call is rejected;
//! - `reference/clock_read`: one `Instant::now()`, which every open path pays.
//!
//! Run: `cargo bench -p breaker --bench closed_path -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::CircuitBreaker as _;

/// The protected call: succeeds.
#[inline]
fn ok_call() -> Result<u64, u64> {
    Ok(black_box(7))
}

/// The protected call: fails.
#[inline]
fn failing_call() -> Result<u64, u64> {
    Err(black_box(7))
}

/// A `breaker` with the default policy.
fn our_breaker() -> breaker::Breaker {
    breaker::Breaker::new("bench", breaker::Policy::default())
}

/// Runs `call` `iters` times in a plain loop and returns the time taken.
#[inline(always)]
fn plain_loop<F: FnMut()>(iters: u64, mut call: F) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        call();
    }
    start.elapsed()
}

/// Runs `call` `iters` times on each of two threads at once and returns the
/// wall time, so criterion reports the time per call of each thread.
fn two_threads<B, F>(shared: Arc<B>, iters: u64, call: F) -> Duration
where
    B: Send + Sync + 'static,
    F: Fn(&B) + Send + Sync + Copy + 'static,
{
    let barrier = Arc::new(Barrier::new(3));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let shared = Arc::clone(&shared);
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..iters {
                    call(&shared);
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for worker in workers {
        worker.join().expect("bench thread panicked");
    }
    start.elapsed()
}

fn closed_one_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("closed/1_thread");
    group.bench_function("no_breaker", |b| {
        b.iter_custom(|iters| {
            plain_loop(iters, || {
                let _ = black_box(ok_call());
            })
        })
    });
    let ours = our_breaker();
    group.bench_function("breaker", |b| {
        b.iter_custom(|iters| {
            plain_loop(iters, || {
                let _ = black_box(ours.call(ok_call));
            })
        })
    });
    let recloser = recloser::Recloser::default();
    group.bench_function("recloser", |b| {
        b.iter_custom(|iters| {
            plain_loop(iters, || {
                let _ = black_box(recloser.call(ok_call));
            })
        })
    });
    let failsafe = failsafe::Config::new().build();
    group.bench_function("failsafe", |b| {
        b.iter_custom(|iters| {
            plain_loop(iters, || {
                let _ = black_box(failsafe.call(ok_call));
            })
        })
    });
    group.finish();
}

fn closed_two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("closed/2_threads");
    group.bench_function("no_breaker", |b| {
        let shared = Arc::new(());
        b.iter_custom(|iters| {
            two_threads(Arc::clone(&shared), iters, |_: &()| {
                let _ = black_box(ok_call());
            })
        })
    });
    group.bench_function("breaker", |b| {
        let shared = Arc::new(our_breaker());
        b.iter_custom(|iters| {
            two_threads(Arc::clone(&shared), iters, |breaker: &breaker::Breaker| {
                let _ = black_box(breaker.call(ok_call));
            })
        })
    });
    group.bench_function("recloser", |b| {
        let shared = Arc::new(recloser::Recloser::default());
        b.iter_custom(|iters| {
            two_threads(
                Arc::clone(&shared),
                iters,
                |recloser: &recloser::Recloser| {
                    let _ = black_box(recloser.call(ok_call));
                },
            )
        })
    });
    group.bench_function("failsafe", |b| {
        let shared = Arc::new(failsafe::Config::new().build());
        b.iter_custom(|iters| {
            two_threads(Arc::clone(&shared), iters, |failsafe| {
                let _ = black_box(failsafe.call(ok_call));
            })
        })
    });
    group.finish();
}

fn rejected_when_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("rejected/1_thread");
    let hour = Duration::from_secs(3600);

    let policy = breaker::Policy::builder()
        .open_wait(hour)
        .build()
        .expect("valid policy");
    let ours = breaker::Breaker::new("bench", policy);
    while ours.state() != breaker::State::Open {
        let _ = ours.call(failing_call);
    }
    group.bench_function("breaker", |b| {
        b.iter_custom(|iters| {
            plain_loop(iters, || {
                let _ = black_box(ours.call(ok_call));
            })
        })
    });

    let recloser = recloser::Recloser::custom()
        .closed_len(10)
        .open_wait(hour)
        .build();
    for _ in 0..20 {
        let _ = recloser.call(failing_call);
    }
    assert!(matches!(
        recloser.call(ok_call),
        Err(recloser::Error::Rejected)
    ));
    group.bench_function("recloser", |b| {
        b.iter_custom(|iters| {
            plain_loop(iters, || {
                let _ = black_box(recloser.call(ok_call));
            })
        })
    });

    let failsafe = failsafe::Config::new()
        .failure_policy(failsafe::failure_policy::consecutive_failures(
            3,
            failsafe::backoff::constant(hour),
        ))
        .build();
    for _ in 0..5 {
        let _ = failsafe.call(failing_call);
    }
    assert!(matches!(
        failsafe.call(ok_call),
        Err(failsafe::Error::Rejected)
    ));
    group.bench_function("failsafe", |b| {
        b.iter_custom(|iters| {
            plain_loop(iters, || {
                let _ = black_box(failsafe.call(ok_call));
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group("rejected/2_threads");
    let ours = Arc::new(ours);
    group.bench_function("breaker", |b| {
        b.iter_custom(|iters| {
            two_threads(Arc::clone(&ours), iters, |breaker: &breaker::Breaker| {
                let _ = black_box(breaker.call(ok_call));
            })
        })
    });
    let recloser = Arc::new(recloser);
    group.bench_function("recloser", |b| {
        b.iter_custom(|iters| {
            two_threads(
                Arc::clone(&recloser),
                iters,
                |recloser: &recloser::Recloser| {
                    let _ = black_box(recloser.call(ok_call));
                },
            )
        })
    });
    let failsafe = Arc::new(failsafe);
    group.bench_function("failsafe", |b| {
        b.iter_custom(|iters| {
            two_threads(Arc::clone(&failsafe), iters, |failsafe| {
                let _ = black_box(failsafe.call(ok_call));
            })
        })
    });
    group.finish();
}

/// What one read of the monotonic clock costs on this machine: the open
/// path of every breaker here reads it once per call.
fn reference(c: &mut Criterion) {
    let mut group = c.benchmark_group("reference");
    group.bench_function("clock_read", |b| {
        b.iter_custom(|iters| {
            plain_loop(iters, || {
                let _ = black_box(Instant::now());
            })
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    closed_one_thread,
    closed_two_threads,
    rejected_when_open,
    reference
);
criterion_main!(benches);
