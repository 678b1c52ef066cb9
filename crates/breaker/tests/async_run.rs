//! `Breaker::run` on tokio's paused clock: timeouts, cancellation, open waits.

use std::future::{Future, pending};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use breaker::{Breaker, CallError, Classify, Event, Outcome, Policy, Preset, State, Window};

const SECOND: Duration = Duration::from_secs(1);

fn policy() -> breaker::PolicyBuilder {
    Policy::builder()
        .window(Window::count(10))
        .minimum_calls(2)
        .failure_rate_threshold(50.0)
        .open_wait(30 * SECOND)
        .call_timeout(5 * SECOND)
}

/// Polls a future once.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test(start_paused = true)]
async fn run_records_success_and_failure() {
    let breaker = Breaker::new("run", policy().build().unwrap());
    let ok: Result<u8, CallError<&str>> = breaker.run(async { Ok(1) }).await;
    assert_eq!(ok.ok(), Some(1));
    let failed: Result<u8, CallError<&str>> = breaker.run(async { Err("down") }).await;
    assert!(matches!(failed, Err(CallError::Inner("down"))));
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.totals.successes, 1);
    assert_eq!(snapshot.totals.failures, 1);
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn run_times_out_and_counts_a_timeout() {
    let breaker = Breaker::new("timeout", policy().build().unwrap());
    let slow = breaker.run(async {
        tokio::time::sleep(6 * SECOND).await;
        Ok::<_, ()>(())
    });
    let result = slow.await;
    assert!(matches!(result, Err(CallError::Timeout(limit)) if limit == 5 * SECOND));
    assert!(result.is_err_and(|error| error.is_retryable()));
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.totals.timeouts, 1);
    assert_eq!(snapshot.window_failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_just_inside_the_timeout_succeeds() {
    let breaker = Breaker::new("inside", policy().build().unwrap());
    let result = breaker
        .run(async {
            tokio::time::sleep(5 * SECOND - Duration::from_millis(1)).await;
            Ok::<_, ()>(7)
        })
        .await;
    assert_eq!(result.ok(), Some(7));
}

#[tokio::test(start_paused = true)]
async fn open_wait_follows_tokio_time() {
    let breaker = Breaker::new("tokio-time", policy().build().unwrap());
    for _ in 0..2 {
        let _ = breaker.run(async { Err::<(), _>(()) }).await;
    }
    assert_eq!(breaker.state(), State::Open);
    let rejected = breaker.run(async { Ok::<_, ()>(()) }).await;
    let retry_after = rejected
        .as_ref()
        .err()
        .and_then(CallError::as_rejected)
        .and_then(|rejected| rejected.retry_after());
    assert_eq!(retry_after, Some(30 * SECOND));
    tokio::time::advance(30 * SECOND).await;
    assert!(breaker.run(async { Ok::<_, ()>(()) }).await.is_ok());
    assert_eq!(breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn cancelled_probe_frees_its_slot() {
    let breaker = Breaker::new("cancel", policy().build().unwrap());
    breaker.force_open();
    breaker.reset();
    for _ in 0..2 {
        let _ = breaker.run(async { Err::<(), _>(()) }).await;
    }
    tokio::time::advance(30 * SECOND).await;
    {
        let mut probe = pin!(breaker.run(pending::<Result<(), ()>>()));
        assert!(poll_once(probe.as_mut()).is_pending());
        assert_eq!(breaker.state(), State::HalfOpen);
        assert!(breaker.try_acquire().is_err(), "the probe slot is taken");
    }
    // Dropped: the slot is free, nothing was judged.
    assert_eq!(breaker.state(), State::HalfOpen);
    assert_eq!(breaker.snapshot().totals.cancelled, 1);
    assert!(breaker.run(async { Ok::<_, ()>(()) }).await.is_ok());
    assert_eq!(breaker.state(), State::Closed);
}

/// Treats a cancelled call as a failure (callers give up when it is slow).
struct CancelIsFailure;

impl Classify<(), ()> for CancelIsFailure {
    fn classify(&self, result: &Result<(), ()>) -> Outcome {
        if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        }
    }

    fn cancelled(&self) -> Outcome {
        Outcome::Failure
    }
}

#[tokio::test(start_paused = true)]
async fn the_classifier_decides_what_cancellation_means() {
    let breaker = Breaker::new("cancel-fails", policy().build().unwrap());
    for _ in 0..2 {
        let mut call = pin!(breaker.run_with(&CancelIsFailure, pending()));
        assert!(poll_once(call.as_mut()).is_pending());
    }
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.totals.failures, 2);
    assert_eq!(snapshot.totals.cancelled, 0);
    assert_eq!(breaker.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn events_arrive_on_the_stream() {
    let breaker = Breaker::new("events", policy().build().unwrap());
    let mut events = breaker.subscribe();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(event) = events.recv().await {
            if let Event::Transition { from, to, .. } = event {
                seen.push((from, to));
            }
        }
        seen
    });
    for _ in 0..2 {
        let _ = breaker.run(async { Err::<(), _>(()) }).await;
    }
    tokio::time::advance(30 * SECOND).await;
    let _ = breaker.run(async { Ok::<_, ()>(()) }).await;
    drop(breaker);
    let seen = watcher.await.expect("watcher finished");
    assert_eq!(
        seen,
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn presets_time_out_at_their_call_timeout() {
    for (preset, timeout) in [
        (Preset::Vault, 10),
        (Preset::StoreService, 15),
        (Preset::HardwareService, 30),
        (Preset::SecurityService, 20),
    ] {
        let breaker = Breaker::new(preset.name(), preset.policy());
        let result = breaker
            .run(async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, ()>(())
            })
            .await;
        assert!(
            matches!(result, Err(CallError::Timeout(limit)) if limit == Duration::from_secs(timeout)),
            "{preset}"
        );
    }
}
