//! Property tests of the state machine's invariants, for any sequence of
//! outcomes, cancellations, resets and clock advances:
//!
//! - never more probe permits of the current half-open generation out than
//!   the policy permits;
//! - the breaker always leaves open (and half-open) once the waits are over:
//!   it never gets stuck;
//! - a result from an older generation changes nothing but the `stale`
//!   counter.

use std::time::Duration;

use breaker::{Backoff, Breaker, ManualClock, Outcome, Permit, Policy, State, Window};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Ask for a permit and keep it.
    Acquire,
    /// Report the outcome of the held permit at this index (modulo).
    Record(usize, Outcome),
    /// Drop the held permit at this index (a cancelled call).
    Cancel(usize),
    /// Advance the clock.
    Advance(u64),
    /// Reset the breaker.
    Reset,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Success),
        3 => Just(Outcome::Failure),
        1 => Just(Outcome::Timeout),
        1 => Just(Outcome::Ignore),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Acquire),
        6 => (any::<usize>(), outcome()).prop_map(|(i, o)| Op::Record(i, o)),
        2 => any::<usize>().prop_map(Op::Cancel),
        3 => (0u64..3_000).prop_map(Op::Advance),
        1 => Just(Op::Reset),
    ]
}

const OPEN_WAIT: Duration = Duration::from_secs(1);
const MAX_OPEN_WAIT: Duration = Duration::from_secs(4);
const HALF_OPEN_WAIT: Duration = Duration::from_secs(2);

fn breaker(probes: u32) -> (Breaker, ManualClock) {
    let policy = Policy::builder()
        .window(Window::count(5))
        .minimum_calls(2)
        .failure_rate_threshold(50.0)
        .open_wait(OPEN_WAIT)
        .backoff(Backoff::exponential(2.0, MAX_OPEN_WAIT))
        .permitted_probes(probes)
        .max_half_open_wait(HALF_OPEN_WAIT)
        .build()
        .expect("valid policy");
    let clock = ManualClock::new();
    (Breaker::with_clock("prop", policy, clock.clone()), clock)
}

/// Probe permits held for the current half-open generation.
fn current_probes(breaker: &Breaker, held: &[Permit<'_>]) -> usize {
    let snapshot = breaker.snapshot();
    if snapshot.state != State::HalfOpen {
        return 0;
    }
    held.iter()
        .filter(|permit| permit.is_probe() && permit.generation() == snapshot.generation)
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn state_machine_invariants(probes in 1u32..=3, ops in prop::collection::vec(op(), 1..80)) {
        let (breaker, clock) = breaker(probes);
        let mut held: Vec<Permit<'_>> = Vec::new();
        for op in ops {
            match op {
                Op::Acquire => {
                    if let Ok(permit) = breaker.try_acquire() {
                        held.push(permit);
                    }
                }
                Op::Record(index, outcome) if !held.is_empty() => {
                    let permit = held.swap_remove(index % held.len());
                    let before = breaker.snapshot();
                    let stale = permit.generation() != before.generation;
                    permit.record(outcome);
                    if stale {
                        let mut after = breaker.snapshot();
                        prop_assert_eq!(after.totals.stale, before.totals.stale + 1);
                        after.totals.stale = before.totals.stale;
                        prop_assert_eq!(after, before, "a stale result changed the breaker");
                    }
                }
                Op::Cancel(index) if !held.is_empty() => {
                    drop(held.swap_remove(index % held.len()));
                }
                Op::Advance(millis) => clock.advance(Duration::from_millis(millis)),
                Op::Reset => breaker.reset(),
                Op::Record(..) | Op::Cancel(_) => {}
            }
            let in_flight = current_probes(&breaker, &held);
            prop_assert!(in_flight <= probes as usize, "{in_flight} probes out, {probes} permitted");
            prop_assert!(breaker.snapshot().probes_in_flight <= probes);
        }

        // Liveness: with every call finished (or cancelled) and the longest
        // waits over, a call gets through.
        held.clear();
        clock.advance(MAX_OPEN_WAIT + HALF_OPEN_WAIT);
        let permit = breaker.try_acquire();
        prop_assert!(permit.is_ok(), "stuck in {:?}", breaker.state());
        if let Ok(permit) = permit {
            let probe = permit.is_probe();
            permit.record(Outcome::Success);
            if probe && probes == 1 {
                prop_assert_eq!(breaker.state(), State::Closed);
            }
        }
    }

    #[test]
    fn open_always_ends_after_its_wait(failures in 2usize..20, extra in 0u64..5_000) {
        let (breaker, clock) = breaker(1);
        for _ in 0..failures {
            if let Ok(permit) = breaker.try_acquire() {
                permit.record(Outcome::Failure);
            }
        }
        prop_assert_eq!(breaker.state(), State::Open);
        let retry_after = breaker.try_acquire().err().and_then(|r| r.retry_after());
        prop_assert_eq!(retry_after, Some(OPEN_WAIT));
        clock.advance(OPEN_WAIT + Duration::from_millis(extra));
        let permit = breaker.try_acquire();
        prop_assert!(permit.as_ref().is_ok_and(Permit::is_probe));
    }
}
