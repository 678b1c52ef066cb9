//! Every transition of the state machine, driven by a manual clock.

use std::time::Duration;

use breaker::{
    Backoff, Breaker, Event, ManualClock, Outcome, Policy, Reason, RejectReason, State, Window,
};

const SECOND: Duration = Duration::from_secs(1);

/// Window of 10 calls, judged from 4, opens at 50 %, waits 10 s, 1 probe,
/// half-open gives up after 5 s.
fn policy() -> breaker::PolicyBuilder {
    Policy::builder()
        .window(Window::count(10))
        .minimum_calls(4)
        .failure_rate_threshold(50.0)
        .open_wait(10 * SECOND)
        .max_half_open_wait(5 * SECOND)
}

fn breaker_with(builder: breaker::PolicyBuilder) -> (Breaker, ManualClock) {
    let clock = ManualClock::new();
    let policy = builder.build().expect("valid policy");
    (Breaker::with_clock("test", policy, clock.clone()), clock)
}

fn record(breaker: &Breaker, outcomes: &[Outcome]) {
    for outcome in outcomes {
        breaker.try_acquire().expect("admitted").record(*outcome);
    }
}

use Outcome::{Failure as F, Success as S};

/// Opens the breaker with 4 failures.
fn trip(breaker: &Breaker) {
    record(breaker, &[F, F, F, F]);
    assert_eq!(breaker.state(), State::Open);
}

fn transitions(events: &mut breaker::Events) -> Vec<(State, State)> {
    std::iter::from_fn(|| events.try_recv())
        .filter_map(|event| match event {
            Event::Transition { from, to, .. } => Some((from, to)),
            _ => None,
        })
        .collect()
}

#[test]
fn failures_below_the_minimum_never_trip() {
    let (breaker, _) = breaker_with(policy());
    record(&breaker, &[F, F, F]);
    assert_eq!(breaker.state(), State::Closed);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.window_calls, 3);
    assert_eq!(snapshot.window_failures, 3);
    assert_eq!(snapshot.failure_rate, None, "not judged below the minimum");
}

#[test]
fn trips_at_exactly_the_threshold_and_checks_after_successes() {
    let (breaker, _) = breaker_with(policy());
    let mut events = breaker.subscribe();
    // 2 failures then a success: 3 calls, below the minimum.
    record(&breaker, &[F, F, S]);
    assert_eq!(breaker.state(), State::Closed);
    // The 4th call is a success, and 2 of 4 is 50 % >= 50 %: it trips.
    record(&breaker, &[S]);
    assert_eq!(breaker.state(), State::Open);
    match events.try_recv() {
        Some(Event::Transition {
            breaker: name,
            from: State::Closed,
            to: State::Open,
            reason: Reason::FailureRate { rate },
        }) => {
            assert_eq!(name, "test");
            assert_eq!(rate, 50.0);
        }
        other => panic!("unexpected event {other:?}"),
    }
}

#[test]
fn just_below_the_threshold_stays_closed() {
    let (breaker, _) = breaker_with(policy().minimum_calls(5));
    // 2 of 5 = 40 % < 50 %.
    record(&breaker, &[F, S, F, S, S]);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().failure_rate, Some(40.0));
}

#[test]
fn count_window_forgets_calls_older_than_its_size() {
    let (breaker, _) = breaker_with(policy().window(Window::count(4)));
    record(&breaker, &[F, S, S, S, S, F]);
    // The first failure left the window: 1 of 4 = 25 %.
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().failure_rate, Some(25.0));
    record(&breaker, &[F]);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn open_rejects_with_retry_after_until_the_wait_is_over() {
    let (breaker, clock) = breaker_with(policy());
    trip(&breaker);
    let rejected = breaker.try_acquire().expect_err("open");
    assert_eq!(rejected.reason(), RejectReason::Open);
    assert_eq!(rejected.breaker(), "test");
    assert_eq!(rejected.retry_after(), Some(10 * SECOND));
    assert!(rejected.is_retryable());

    clock.advance(4 * SECOND);
    let rejected = breaker.try_acquire().expect_err("still open");
    assert_eq!(rejected.retry_after(), Some(6 * SECOND));
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.next_probe_in, Some(6 * SECOND));
    assert_eq!(snapshot.in_state_for, 4 * SECOND);
    assert_eq!(snapshot.totals.rejected, 2);
}

#[test]
fn open_becomes_half_open_exactly_when_the_wait_is_over() {
    let (breaker, clock) = breaker_with(policy());
    trip(&breaker);
    let mut events = breaker.subscribe();
    clock.advance(10 * SECOND - Duration::from_millis(1));
    assert!(breaker.try_acquire().is_err());
    clock.advance(Duration::from_millis(1));
    let permit = breaker.try_acquire().expect("a probe");
    assert!(permit.is_probe());
    assert_eq!(breaker.state(), State::HalfOpen);
    assert_eq!(
        transitions(&mut events),
        vec![(State::Open, State::HalfOpen)]
    );
    permit.record(S);
}

#[test]
fn half_open_admits_only_the_permitted_probes() {
    let (breaker, clock) = breaker_with(policy().permitted_probes(2));
    trip(&breaker);
    clock.advance(10 * SECOND);
    let first = breaker.try_acquire().expect("probe 1");
    let second = breaker.try_acquire().expect("probe 2");
    let rejected = breaker.try_acquire().expect_err("no third probe");
    assert_eq!(rejected.reason(), RejectReason::HalfOpenBusy);
    assert_eq!(rejected.retry_after(), Some(5 * SECOND));
    assert_eq!(breaker.snapshot().probes_in_flight, 2);
    // One result is not enough to decide with two probes.
    first.record(S);
    assert_eq!(breaker.state(), State::HalfOpen);
    // Its slot is used: still no third probe.
    assert!(breaker.try_acquire().is_err());
    second.record(S);
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn successful_probe_closes_with_an_empty_window() {
    let (breaker, clock) = breaker_with(policy());
    trip(&breaker);
    clock.advance(10 * SECOND);
    let mut events = breaker.subscribe();
    record(&breaker, &[S]);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(
        transitions(&mut events),
        vec![
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.window_calls, 0);
    // Three failures in the new window do not trip (below the minimum).
    record(&breaker, &[F, F, F]);
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn failed_probe_reopens_with_exponential_backoff_reset_after_close() {
    let backoff = Backoff::exponential(2.0, 35 * SECOND);
    let (breaker, clock) = breaker_with(policy().backoff(backoff));
    trip(&breaker);
    // First open: 10 s.
    assert_eq!(
        breaker.try_acquire().unwrap_err().retry_after(),
        Some(10 * SECOND)
    );
    clock.advance(10 * SECOND);
    record(&breaker, &[F]);
    assert_eq!(breaker.state(), State::Open);
    // Second: 20 s.
    assert_eq!(
        breaker.try_acquire().unwrap_err().retry_after(),
        Some(20 * SECOND)
    );
    clock.advance(20 * SECOND);
    record(&breaker, &[F]);
    // Third: capped at 35 s.
    assert_eq!(
        breaker.try_acquire().unwrap_err().retry_after(),
        Some(35 * SECOND)
    );
    clock.advance(35 * SECOND);
    record(&breaker, &[S]);
    assert_eq!(breaker.state(), State::Closed);
    // After a successful close the streak starts again at 10 s.
    trip(&breaker);
    assert_eq!(
        breaker.try_acquire().unwrap_err().retry_after(),
        Some(10 * SECOND)
    );
}

#[test]
fn probe_failure_rate_is_judged_against_the_threshold() {
    let (breaker, clock) = breaker_with(policy().permitted_probes(4));
    trip(&breaker);
    clock.advance(10 * SECOND);
    // 1 of 4 probes failed: 25 % < 50 %, closes.
    record(&breaker, &[S, F, S, S]);
    assert_eq!(breaker.state(), State::Closed);
    trip(&breaker);
    clock.advance(10 * SECOND);
    // 2 of 4: 50 % >= 50 %, re-opens.
    record(&breaker, &[S, F, S, F]);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn overdue_probes_reopen_and_their_late_results_are_ignored() {
    let (breaker, clock) = breaker_with(policy());
    trip(&breaker);
    clock.advance(10 * SECOND);
    let hung = breaker.try_acquire().expect("probe");
    // Within the half-open wait, others are turned away.
    clock.advance(4 * SECOND);
    assert_eq!(
        breaker.try_acquire().unwrap_err().reason(),
        RejectReason::HalfOpenBusy
    );
    // After it, the next caller re-opens the breaker.
    clock.advance(SECOND);
    let rejected = breaker.try_acquire().expect_err("re-opened");
    assert_eq!(rejected.reason(), RejectReason::Open);
    assert_eq!(breaker.state(), State::Open);
    // The hung probe's success arrives late: it changes nothing.
    hung.record(S);
    assert_eq!(breaker.state(), State::Open);
    assert_eq!(breaker.snapshot().totals.stale, 1);
    // And the breaker recovers normally.
    clock.advance(10 * SECOND);
    record(&breaker, &[S]);
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn dropped_probe_frees_its_slot_and_counts_nothing() {
    let (breaker, clock) = breaker_with(policy());
    trip(&breaker);
    clock.advance(10 * SECOND);
    let probe = breaker.try_acquire().expect("probe");
    drop(probe);
    assert_eq!(breaker.state(), State::HalfOpen);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.totals.cancelled, 1);
    assert_eq!(snapshot.probes_in_flight, 0);
    // The slot is free again.
    record(&breaker, &[S]);
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn ignored_probe_frees_its_slot() {
    let (breaker, clock) = breaker_with(policy());
    trip(&breaker);
    clock.advance(10 * SECOND);
    record(&breaker, &[Outcome::Ignore]);
    assert_eq!(breaker.state(), State::HalfOpen);
    record(&breaker, &[F]);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn panicking_probe_frees_its_slot() {
    let (breaker, clock) = breaker_with(policy());
    trip(&breaker);
    clock.advance(10 * SECOND);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        breaker.call(|| -> Result<(), ()> { panic!("boom") })
    }));
    assert!(outcome.is_err());
    assert_eq!(breaker.state(), State::HalfOpen);
    assert!(breaker.call(|| Ok::<_, ()>(())).is_ok());
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn results_from_an_older_generation_are_ignored() {
    let (breaker, _) = breaker_with(policy());
    let slow = breaker.try_acquire().expect("closed");
    let generation = slow.generation();
    trip(&breaker);
    breaker.reset();
    assert_eq!(breaker.state(), State::Closed);
    // Three failures in the new window, then the old call's failure arrives:
    // if it counted, 4 of 4 would trip.
    record(&breaker, &[F, F, F]);
    assert_ne!(generation, breaker.snapshot().generation);
    slow.record(F);
    assert_eq!(breaker.state(), State::Closed);
    assert_eq!(breaker.snapshot().window_calls, 3);
    assert_eq!(breaker.snapshot().totals.stale, 1);
}

#[test]
fn ignored_outcomes_do_not_count() {
    let (breaker, _) = breaker_with(policy());
    record(&breaker, &[F, F, Outcome::Ignore, Outcome::Ignore, S]);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.window_calls, 3);
    assert_eq!(snapshot.totals.ignored, 2);
    assert_eq!(breaker.state(), State::Closed);
}

#[test]
fn timeouts_count_as_failures_of_their_own_kind() {
    let (breaker, _) = breaker_with(policy());
    record(&breaker, &[Outcome::Timeout, Outcome::Timeout, S]);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.totals.timeouts, 2);
    assert_eq!(snapshot.totals.failures, 0);
    assert_eq!(snapshot.window_failures, 2);
    record(&breaker, &[S]);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn slow_calls_trip_the_slow_call_rate() {
    let (breaker, clock) = breaker_with(
        policy()
            .failure_rate_threshold(100.0)
            .slow_calls(2 * SECOND, 50.0),
    );
    let slow_call = || {
        breaker
            .call(|| {
                clock.advance(2 * SECOND);
                Ok::<_, ()>(())
            })
            .expect("admitted")
    };
    let fast_call = || breaker.call(|| Ok::<_, ()>(())).expect("admitted");
    slow_call();
    fast_call();
    fast_call();
    assert_eq!(breaker.state(), State::Closed);
    slow_call();
    assert_eq!(breaker.state(), State::Open);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.totals.slow_calls, 2);
    assert_eq!(snapshot.totals.successes, 4);
    assert_eq!(snapshot.slow_call_rate, Some(50.0));
}

#[test]
fn slow_probe_reopens() {
    let (breaker, clock) = breaker_with(policy().slow_calls(SECOND, 100.0));
    trip(&breaker);
    clock.advance(10 * SECOND);
    let probe = breaker.try_acquire().expect("probe");
    clock.advance(SECOND);
    probe.record(S);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn time_window_forgets_old_failures() {
    let (breaker, clock) = breaker_with(
        policy()
            .window(Window::time(10 * SECOND, 10))
            .minimum_calls(4),
    );
    record(&breaker, &[F, F, F]);
    clock.advance(11 * SECOND);
    // The three failures have left the window.
    record(&breaker, &[F]);
    assert_eq!(breaker.state(), State::Closed);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.window_calls, 1);
    record(&breaker, &[F, S, S]);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn force_open_rejects_without_retry_after_until_reset() {
    let (breaker, clock) = breaker_with(policy());
    breaker.force_open();
    assert_eq!(breaker.state(), State::ForcedOpen);
    clock.advance(3600 * SECOND);
    let rejected = breaker.try_acquire().expect_err("forced open");
    assert_eq!(rejected.reason(), RejectReason::ForcedOpen);
    assert_eq!(rejected.retry_after(), None);
    assert!(!rejected.is_retryable());
    breaker.reset();
    assert_eq!(breaker.state(), State::Closed);
    record(&breaker, &[S]);
}

#[test]
fn force_closed_never_trips_but_keeps_counting() {
    let (breaker, _) = breaker_with(policy());
    breaker.force_closed();
    record(&breaker, &[F; 10]);
    assert_eq!(breaker.state(), State::ForcedClosed);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.failure_rate, Some(100.0));
    assert_eq!(snapshot.totals.failures, 10);
}

#[test]
fn disabled_lets_everything_through_and_records_nothing() {
    let (breaker, _) = breaker_with(policy());
    breaker.disable();
    record(&breaker, &[F; 10]);
    assert_eq!(breaker.state(), State::Disabled);
    assert_eq!(breaker.snapshot().totals.failures, 0);
    breaker.reset();
    record(&breaker, &[F; 4]);
    assert_eq!(breaker.state(), State::Open);
}

#[test]
fn metrics_only_reports_what_would_have_tripped() {
    let (breaker, _) = breaker_with(policy());
    breaker.metrics_only();
    let mut events = breaker.subscribe();
    record(&breaker, &[F; 6]);
    assert_eq!(breaker.state(), State::MetricsOnly);
    let exceeded: Vec<Event> = std::iter::from_fn(|| events.try_recv()).collect();
    assert_eq!(exceeded.len(), 1, "once per crossing: {exceeded:?}");
    assert!(matches!(
        exceeded[0],
        Event::ThresholdExceeded {
            reason: Reason::FailureRate { .. },
            ..
        }
    ));
    // Back under the threshold, then over again: a second event.
    record(&breaker, &[S; 10]);
    record(&breaker, &[F; 5]);
    assert_eq!(std::iter::from_fn(|| events.try_recv()).count(), 1);
}

#[test]
fn reset_clears_the_window_and_leaves_any_mode() {
    let (breaker, _) = breaker_with(policy());
    record(&breaker, &[F, F, F]);
    breaker.reset();
    record(&breaker, &[F]);
    assert_eq!(breaker.state(), State::Closed);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.window_calls, 1);
    // The counters are cumulative.
    assert_eq!(snapshot.totals.failures, 4);
}

#[test]
fn control_calls_emit_events() {
    let (breaker, _) = breaker_with(policy());
    let mut events = breaker.subscribe();
    breaker.force_open();
    breaker.force_closed();
    breaker.disable();
    breaker.metrics_only();
    breaker.reset();
    assert_eq!(
        transitions(&mut events),
        vec![
            (State::Closed, State::ForcedOpen),
            (State::ForcedOpen, State::ForcedClosed),
            (State::ForcedClosed, State::Disabled),
            (State::Disabled, State::MetricsOnly),
            (State::MetricsOnly, State::Closed),
        ]
    );
}

#[test]
fn sync_call_maps_errors_and_rejections() {
    let (breaker, _) = breaker_with(policy());
    let failed = breaker.call(|| Err::<(), _>("boom"));
    assert!(matches!(failed, Err(breaker::CallError::Inner("boom"))));
    record(&breaker, &[F, F, F]);
    assert_eq!(breaker.state(), State::Open);
    let rejected = breaker.call(|| Ok::<_, ()>(()));
    match rejected {
        Err(breaker::CallError::Rejected(rejected)) => {
            assert_eq!(rejected.reason(), RejectReason::Open);
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn call_with_uses_the_classifier() {
    let (breaker, _) = breaker_with(policy());
    let ignore_not_found = |result: &Result<u16, ()>| match result {
        Ok(404) => Outcome::Ignore,
        Ok(_) => Outcome::Success,
        Err(()) => Outcome::Failure,
    };
    for _ in 0..10 {
        let _ = breaker.call_with(&ignore_not_found, || Ok(404));
    }
    assert_eq!(breaker.snapshot().totals.ignored, 10);
    let _ = breaker.call_with(&breaker::HttpClassifier, || Ok::<u16, ()>(503));
    assert_eq!(breaker.snapshot().totals.failures, 1);
}
