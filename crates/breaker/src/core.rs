//! The shared state of one breaker and its state machine.
//!
//! # Concurrency
//!
//! - The state word ([`crate::state`]) is read with one load on every call and
//!   written only by transitions (one compare-and-swap each).
//! - Outcomes go to striped counters ([`crate::stripes`]): one relaxed
//!   `fetch_add` on the calling thread's own cache line.
//! - Half-open probes are counted in one packed word (`probes`): taking a slot
//!   and reporting are compare-and-swap loops, so no more than
//!   `permitted_probes` permits are ever out in one generation.
//! - Rates are judged by whoever first finds the window free: a failure sets
//!   `dirty` and tries the window's lock; if another thread holds it, that
//!   thread sees `dirty` and judges again before leaving. No thread ever
//!   waits for another, and the closed path with successes never touches the
//!   lock at all.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};

use crate::classify::Outcome;
use crate::clock::{Clock, Timeline, nanos};
use crate::error::{RejectReason, Rejected};
use crate::event::{self, EVENT_CAPACITY, Event, Events, Reason};
use crate::policy::Policy;
use crate::snapshot::{Snapshot, Totals as PublicTotals};
use crate::state::{Generation, RAW_CLOSED, State, Word, deadline_ms, raw_generation, raw_state};
use crate::stripes::{Kind, Stripes, Totals};
use crate::window::{SlidingWindow, Trip, WindowStats};

/// Successes between two updates of a time window, per stripe (a power of
/// two). Under steady traffic this keeps the spreading of successes over time
/// accurate; failures always update at once.
const TIME_WINDOW_STRIDE: u64 = 1024;

/// Keeps `T` on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

/// What every call reads; written only on transitions and verdicts.
#[derive(Debug)]
pub(crate) struct Hot {
    /// The packed state word.
    pub(crate) state: AtomicU64,
    /// Whether a success must be judged (see
    /// [`WindowStats::successes_may_trip`]).
    judge_successes: AtomicBool,
    /// Judge after every `stride_mask + 1` successes on a stripe
    /// (`u64::MAX`: never).
    stride_mask: u64,
    /// Slow-call threshold in nanoseconds; zero when detection is off.
    slow_nanos: u64,
}

/// The role of an admitted call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Admitted in a state that judges the window.
    Window,
    /// A half-open probe.
    Probe,
    /// Admitted while disabled: nothing is recorded.
    Untracked,
}

/// An admitted call, before its outcome is known.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    /// The generation it was admitted in.
    pub(crate) generation: Generation,
    /// Its role.
    pub(crate) role: Role,
    /// When it started (nanoseconds since origin); zero when slow-call
    /// detection is off.
    started: u64,
}

/// Packing of the half-open probe word: generation 16 bits, in flight 10,
/// then successes, failures and slow calls 12 bits each.
mod probe_word {
    use crate::state::Generation;

    const IN_FLIGHT_SHIFT: u32 = 16;
    const OK_SHIFT: u32 = 26;
    const BAD_SHIFT: u32 = 38;
    const SLOW_SHIFT: u32 = 50;
    const TEN: u64 = (1 << 10) - 1;
    const TWELVE: u64 = (1 << 12) - 1;

    /// The probes of one half-open generation.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub(crate) struct Probes {
        /// The half-open generation.
        pub(crate) generation: Generation,
        /// Probes admitted and not yet reported.
        pub(crate) in_flight: u64,
        /// Probes that succeeded.
        pub(crate) ok: u64,
        /// Probes that failed or timed out.
        pub(crate) bad: u64,
        /// Probes that were slow.
        pub(crate) slow: u64,
    }

    impl Probes {
        /// Decodes.
        pub(crate) const fn unpack(raw: u64) -> Self {
            Self {
                generation: (raw & 0xFFFF) as Generation,
                in_flight: (raw >> IN_FLIGHT_SHIFT) & TEN,
                ok: (raw >> OK_SHIFT) & TWELVE,
                bad: (raw >> BAD_SHIFT) & TWELVE,
                slow: (raw >> SLOW_SHIFT) & TWELVE,
            }
        }

        /// Encodes.
        pub(crate) const fn pack(self) -> u64 {
            (self.generation as u64)
                | ((self.in_flight & TEN) << IN_FLIGHT_SHIFT)
                | ((self.ok & TWELVE) << OK_SHIFT)
                | ((self.bad & TWELVE) << BAD_SHIFT)
                | ((self.slow & TWELVE) << SLOW_SHIFT)
        }

        /// Probes that reported.
        pub(crate) const fn done(self) -> u64 {
            self.ok + self.bad
        }
    }

    /// Whether generation `a` is later than `b` (modulo wrapping).
    pub(crate) const fn is_later(a: Generation, b: Generation) -> bool {
        (a.wrapping_sub(b) as i16) > 0
    }
}

use probe_word::{Probes, is_later};

/// The window figures last computed, for snapshots.
#[derive(Debug, Default)]
struct Published {
    /// Calls in the window.
    calls: AtomicU64,
    /// Failures in the window.
    failures: AtomicU64,
    /// Slow calls in the window.
    slow: AtomicU64,
}

/// Everything one breaker shares between its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Read by every call.
    pub(crate) hot: CachePadded<Hot>,
    /// Outcome counters of the window states.
    stripes: Stripes,
    /// The half-open probe word.
    probes: CachePadded<AtomicU64>,
    /// Set when the window must be judged again.
    dirty: CachePadded<AtomicBool>,
    /// The sliding window; only ever `try_lock`ed by the call path.
    window: Mutex<SlidingWindow>,
    /// Figures of the last judgement.
    published: Published,
    /// Outcome counters of half-open probes (kept out of the window).
    probe_counts: Stripes,
    /// When the current state began (nanoseconds since origin).
    state_since: AtomicU64,
    /// The breaker's name (interned).
    pub(crate) name: &'static str,
    /// The policy.
    pub(crate) policy: Policy,
    /// Time.
    pub(crate) timeline: Timeline,
    /// Event subscribers.
    events: broadcast::Sender<Event>,
    /// Woken on every transition and freed probe slot (tower back-pressure).
    pub(crate) changed: Notify,
}

impl Shared {
    /// A closed breaker.
    pub(crate) fn new(name: &'static str, policy: Policy, clock: Arc<dyn Clock>) -> Self {
        let window = SlidingWindow::new(policy.window);
        let stride_mask = if window.is_time() {
            TIME_WINDOW_STRIDE - 1
        } else {
            u64::MAX
        };
        let slow_nanos = policy
            .slow_calls
            .map_or(0, |slow| nanos(slow.duration).max(1));
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Self {
            hot: CachePadded(Hot {
                state: AtomicU64::new(Word::INITIAL.pack()),
                judge_successes: AtomicBool::new(false),
                stride_mask,
                slow_nanos,
            }),
            stripes: Stripes::for_this_machine(),
            probes: CachePadded(AtomicU64::new(0)),
            dirty: CachePadded(AtomicBool::new(false)),
            window: Mutex::new(window),
            published: Published::default(),
            probe_counts: Stripes::single(),
            state_since: AtomicU64::new(0),
            name,
            policy,
            timeline: Timeline::new(clock),
            events,
            changed: Notify::new(),
        }
    }

    /// The decoded state word.
    pub(crate) fn word(&self) -> Word {
        Word::unpack(self.hot.0.state.load(Ordering::Acquire))
    }

    /// When a call admitted now starts, for slow-call detection.
    #[inline]
    fn start_time(&self) -> u64 {
        if self.hot.0.slow_nanos == 0 {
            0
        } else {
            self.timeline.now_nanos()
        }
    }

    /// Admits a call or rejects it. Performs the lazy transitions: open to
    /// half-open once the open wait is over, half-open to open once its
    /// probes are overdue.
    #[inline]
    pub(crate) fn acquire(&self) -> Result<Ticket, Rejected> {
        let raw = self.hot.0.state.load(Ordering::Acquire);
        if raw_state(raw) == RAW_CLOSED {
            return Ok(Ticket {
                generation: raw_generation(raw),
                role: Role::Window,
                started: self.start_time(),
            });
        }
        self.acquire_slow(raw)
    }

    /// [`Shared::acquire`] outside the closed state.
    #[cold]
    fn acquire_slow(&self, mut raw: u64) -> Result<Ticket, Rejected> {
        loop {
            let word = Word::unpack(raw);
            match word.state {
                State::Closed | State::ForcedClosed | State::MetricsOnly => {
                    return Ok(Ticket {
                        generation: word.generation,
                        role: Role::Window,
                        started: self.start_time(),
                    });
                }
                State::Disabled => {
                    return Ok(Ticket {
                        generation: word.generation,
                        role: Role::Untracked,
                        started: 0,
                    });
                }
                State::ForcedOpen => return Err(self.reject(RejectReason::ForcedOpen, None)),
                State::Open => {
                    let now = self.timeline.now_nanos();
                    let deadline = word.deadline_nanos();
                    if now < deadline {
                        return Err(self.reject(
                            RejectReason::Open,
                            Some(Duration::from_nanos(deadline - now)),
                        ));
                    }
                    let until = now.saturating_add(nanos(self.policy.max_half_open_wait));
                    let next = word.next(State::HalfOpen, word.streak, deadline_ms(until));
                    self.transition(raw, next, Reason::OpenWaitElapsed, now);
                }
                State::HalfOpen => {
                    if self.take_probe(word.generation) {
                        return Ok(Ticket {
                            generation: word.generation,
                            role: Role::Probe,
                            started: self.start_time(),
                        });
                    }
                    let now = self.timeline.now_nanos();
                    let deadline = word.deadline_nanos();
                    if now < deadline {
                        return Err(self.reject(
                            RejectReason::HalfOpenBusy,
                            Some(Duration::from_nanos(deadline - now)),
                        ));
                    }
                    let next = self.reopen(word, now);
                    self.transition(raw, next, Reason::HalfOpenTimedOut, now);
                }
            }
            raw = self.hot.0.state.load(Ordering::Acquire);
        }
    }

    /// The open state that follows `word` (closed or half-open) at `now`,
    /// with the back-off's next wait.
    fn reopen(&self, word: Word, now: u64) -> Word {
        let wait = self
            .policy
            .backoff
            .wait(self.policy.open_wait, word.streak, fastrand::f64());
        let until = now.saturating_add(nanos(wait));
        word.next(
            State::Open,
            word.streak.saturating_add(1),
            deadline_ms(until),
        )
    }

    /// Counts and builds a rejection.
    fn reject(&self, reason: RejectReason, retry_after: Option<Duration>) -> Rejected {
        self.stripes.local().add(Kind::Rejected);
        Rejected::new(self.name, reason, retry_after, self.policy.on_open)
    }

    /// Takes a probe slot of half-open generation `generation`.
    fn take_probe(&self, generation: Generation) -> bool {
        let permitted = u64::from(self.policy.permitted_probes);
        let mut raw = self.probes.0.load(Ordering::Acquire);
        loop {
            let current = Probes::unpack(raw);
            let base = if current.generation == generation {
                current
            } else if is_later(generation, current.generation) {
                Probes {
                    generation,
                    ..Probes::default()
                }
            } else {
                // The probes belong to a later generation: our view is stale.
                return false;
            };
            if base.in_flight + base.done() >= permitted {
                return false;
            }
            let next = Probes {
                in_flight: base.in_flight + 1,
                ..base
            };
            match self.probes.0.compare_exchange_weak(
                raw,
                next.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => raw = actual,
            }
        }
    }

    /// The counter kind of an outcome, given when the call started.
    #[inline]
    fn kind(&self, outcome: Outcome, started: u64) -> Kind {
        let slow = self.hot.0.slow_nanos != 0
            && matches!(outcome, Outcome::Success | Outcome::Failure)
            && self.timeline.now_nanos().saturating_sub(started) >= self.hot.0.slow_nanos;
        match (outcome, slow) {
            (Outcome::Success, false) => Kind::Success,
            (Outcome::Success, true) => Kind::SlowSuccess,
            (Outcome::Failure, false) => Kind::Failure,
            (Outcome::Failure, true) => Kind::SlowFailure,
            (Outcome::Timeout, _) => Kind::Timeout,
            (Outcome::Ignore, _) => Kind::Ignored,
        }
    }

    /// Records the outcome of an admitted call.
    #[inline]
    pub(crate) fn finish(&self, ticket: Ticket, outcome: Outcome) {
        match ticket.role {
            Role::Window => self.finish_window(ticket.generation, ticket.started, outcome),
            Role::Probe => self.finish_probe(ticket, outcome),
            Role::Untracked => {}
        }
    }

    /// Whether the fast path applies to a call admitted with state word
    /// `raw`: closed, and no slow-call detection (so no clock to read).
    #[inline]
    pub(crate) fn fast_path(&self, raw: u64) -> bool {
        raw_state(raw) == RAW_CLOSED && self.hot.0.slow_nanos == 0
    }

    /// Records the outcome of a call admitted in a window state in
    /// generation `generation`, started at `started`.
    #[inline]
    pub(crate) fn finish_window(&self, generation: Generation, started: u64, outcome: Outcome) {
        let raw = self.hot.0.state.load(Ordering::Acquire);
        let stripe = self.stripes.local();
        if raw_generation(raw) != generation {
            stripe.add(Kind::Stale);
            return;
        }
        match self.kind(outcome, started) {
            Kind::Success => {
                let before = stripe.add(Kind::Success);
                if self.hot.0.judge_successes.load(Ordering::Relaxed)
                    || before & self.hot.0.stride_mask == self.hot.0.stride_mask
                {
                    self.judge();
                }
            }
            Kind::Ignored => {
                stripe.add(Kind::Ignored);
            }
            kind => {
                stripe.add(kind);
                self.judge();
            }
        }
    }

    /// Records the outcome of a half-open probe; the last probe to report
    /// decides between closed and open.
    fn finish_probe(&self, ticket: Ticket, outcome: Outcome) {
        if raw_generation(self.hot.0.state.load(Ordering::Acquire)) != ticket.generation {
            // The breaker has moved on (the probes were overdue, or a control
            // call): the result is stale.
            self.probe_counts.local().add(Kind::Stale);
            return;
        }
        let kind = self.kind(outcome, ticket.started);
        if kind == Kind::Ignored {
            self.release_probe(ticket, Kind::Ignored);
            return;
        }
        let permitted = u64::from(self.policy.permitted_probes);
        let mut raw = self.probes.0.load(Ordering::Acquire);
        let reported = loop {
            let current = Probes::unpack(raw);
            if current.generation != ticket.generation || current.in_flight == 0 {
                self.probe_counts.local().add(Kind::Stale);
                return;
            }
            let bad = matches!(kind, Kind::Failure | Kind::SlowFailure | Kind::Timeout);
            let slow = matches!(kind, Kind::SlowSuccess | Kind::SlowFailure);
            let next = Probes {
                in_flight: current.in_flight - 1,
                ok: current.ok + u64::from(!bad),
                bad: current.bad + u64::from(bad),
                slow: current.slow + u64::from(slow),
                ..current
            };
            match self.probes.0.compare_exchange_weak(
                raw,
                next.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break next,
                Err(actual) => raw = actual,
            }
        };
        self.probe_counts.local().add(kind);
        if reported.done() < permitted {
            return;
        }
        let raw = self.hot.0.state.load(Ordering::Acquire);
        let word = Word::unpack(raw);
        if word.state != State::HalfOpen || word.generation != ticket.generation {
            return;
        }
        let failure_rate = percent(reported.bad, reported.done());
        let slow_call_rate = percent(reported.slow, reported.done());
        let failed = failure_rate >= self.policy.failure_rate_threshold
            || self
                .policy
                .slow_calls
                .is_some_and(|slow| slow_call_rate >= slow.rate_threshold);
        let now = self.timeline.now_nanos();
        if failed {
            let next = self.reopen(word, now);
            self.transition(
                raw,
                next,
                Reason::ProbesFailed {
                    failure_rate,
                    slow_call_rate,
                },
                now,
            );
        } else {
            let next = word.next(State::Closed, 0, 0);
            self.transition(raw, next, Reason::ProbesSucceeded, now);
        }
    }

    /// Frees a probe slot without a result.
    fn release_probe(&self, ticket: Ticket, kind: Kind) {
        let mut raw = self.probes.0.load(Ordering::Acquire);
        loop {
            let current = Probes::unpack(raw);
            if current.generation != ticket.generation || current.in_flight == 0 {
                self.probe_counts.local().add(Kind::Stale);
                return;
            }
            let next = Probes {
                in_flight: current.in_flight - 1,
                ..current
            };
            match self.probes.0.compare_exchange_weak(
                raw,
                next.pack(),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => raw = actual,
            }
        }
        self.probe_counts.local().add(kind);
        self.changed.notify_waiters();
    }

    /// A permit was dropped without a result: frees its probe slot, counts
    /// nothing but the cancellation.
    pub(crate) fn cancel(&self, ticket: Ticket) {
        match ticket.role {
            Role::Probe => self.release_probe(ticket, Kind::Cancelled),
            Role::Window => {
                self.stripes.local().add(Kind::Cancelled);
            }
            Role::Untracked => {}
        }
    }

    /// Brings the window up to date and judges it, unless another thread is
    /// doing so (it will then judge again before it leaves).
    pub(crate) fn judge(&self) {
        self.dirty.0.store(true, Ordering::SeqCst);
        loop {
            let mut window = match self.window.try_lock() {
                Ok(guard) => guard,
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            };
            while self.dirty.0.swap(false, Ordering::AcqRel) {
                self.evaluate(&mut window);
            }
            drop(window);
            // Pairs with the store above: either the other thread saw the
            // lock free, or we see its flag.
            fence(Ordering::SeqCst);
            if !self.dirty.0.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// One judgement, with the window locked.
    fn evaluate(&self, window: &mut SlidingWindow) {
        let raw = self.hot.0.state.load(Ordering::Acquire);
        let word = Word::unpack(raw);
        if !word.state.judges_window() {
            return;
        }
        let totals = self.stripes.totals();
        let now = if window.is_time() {
            self.timeline.now_nanos()
        } else {
            0
        };
        let since = self.state_since.load(Ordering::Acquire);
        let stats = window.update(word.generation, &totals, now, since);
        self.published.calls.store(stats.calls, Ordering::Relaxed);
        self.published
            .failures
            .store(stats.failures, Ordering::Relaxed);
        self.published.slow.store(stats.slow, Ordering::Relaxed);
        let may_trip = stats.successes_may_trip(&self.policy);
        if self.hot.0.judge_successes.load(Ordering::Relaxed) != may_trip {
            self.hot
                .0
                .judge_successes
                .store(may_trip, Ordering::Relaxed);
        }
        let Some(trip) = stats.verdict(&self.policy) else {
            window.tripped = false;
            return;
        };
        let reason = match trip {
            Trip::FailureRate(rate) => Reason::FailureRate { rate },
            Trip::SlowCallRate(rate) => Reason::SlowCallRate { rate },
        };
        match word.state {
            State::Closed => {
                let now = if now == 0 {
                    self.timeline.now_nanos()
                } else {
                    now
                };
                let next = self.reopen(word, now);
                self.transition(raw, next, reason, now);
            }
            State::MetricsOnly if !window.tripped => {
                window.tripped = true;
                event::announce(
                    &self.events,
                    Event::ThresholdExceeded {
                        breaker: self.name,
                        reason,
                    },
                );
            }
            _ => {}
        }
    }

    /// Moves from the state word `from` to `to`; false if the word changed
    /// meanwhile (somebody else moved it).
    fn transition(&self, from: u64, to: Word, reason: Reason, now: u64) -> bool {
        if self
            .hot
            .0
            .state
            .compare_exchange(from, to.pack(), Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        self.state_since.store(now, Ordering::Release);
        self.hot.0.judge_successes.store(false, Ordering::Relaxed);
        if to.state == State::HalfOpen {
            let fresh = Probes {
                generation: to.generation,
                ..Probes::default()
            };
            let _ = self
                .probes
                .0
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |raw| {
                    let current = Probes::unpack(raw);
                    is_later(to.generation, current.generation).then_some(fresh.pack())
                });
        }
        event::announce(
            &self.events,
            Event::Transition {
                breaker: self.name,
                from: Word::unpack(from).state,
                to: to.state,
                reason,
            },
        );
        self.changed.notify_waiters();
        true
    }

    /// Puts the breaker in `state` by hand. `Closed` (reset) always starts a
    /// new generation, with an empty window and the back-off reset.
    pub(crate) fn control(&self, state: State) {
        let now = self.timeline.now_nanos();
        loop {
            let raw = self.hot.0.state.load(Ordering::Acquire);
            let word = Word::unpack(raw);
            if word.state == state && state != State::Closed {
                return;
            }
            let streak = match state {
                State::Closed | State::ForcedClosed => 0,
                _ => word.streak,
            };
            if self.transition(raw, word.next(state, streak, 0), Reason::Control, now) {
                return;
            }
        }
    }

    /// A new subscription to events.
    pub(crate) fn subscribe(&self) -> Events {
        Events::new(self.events.subscribe())
    }

    /// The current figures.
    pub(crate) fn snapshot(&self) -> Snapshot {
        self.judge();
        let word = self.word();
        let now = self.timeline.now_nanos();
        let totals = self.stripes.totals().plus(&self.probe_counts.totals());
        let stats = WindowStats {
            calls: self.published.calls.load(Ordering::Relaxed),
            failures: self.published.failures.load(Ordering::Relaxed),
            slow: self.published.slow.load(Ordering::Relaxed),
        };
        let minimum = u64::from(self.policy.minimum_calls);
        let probes = Probes::unpack(self.probes.0.load(Ordering::Acquire));
        let probes_in_flight =
            if word.state == State::HalfOpen && probes.generation == word.generation {
                u32::try_from(probes.in_flight).unwrap_or(u32::MAX)
            } else {
                0
            };
        let next_probe_in = match word.state {
            State::Open | State::HalfOpen => Some(Duration::from_nanos(
                word.deadline_nanos().saturating_sub(now),
            )),
            _ => None,
        };
        Snapshot {
            name: self.name.to_string(),
            state: word.state,
            generation: u32::from(word.generation),
            failure_rate: stats.failure_rate(minimum),
            slow_call_rate: self
                .policy
                .slow_calls
                .and_then(|_| stats.slow_call_rate(minimum)),
            window_calls: stats.calls,
            window_failures: stats.failures,
            window_slow_calls: stats.slow,
            probes_in_flight,
            totals: public_totals(&totals),
            in_state_for: Duration::from_nanos(
                now.saturating_sub(self.state_since.load(Ordering::Acquire)),
            ),
            next_probe_in,
        }
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

/// The public view of the counters.
fn public_totals(totals: &Totals) -> PublicTotals {
    PublicTotals {
        successes: totals
            .get(Kind::Success)
            .wrapping_add(totals.get(Kind::SlowSuccess)),
        failures: totals
            .get(Kind::Failure)
            .wrapping_add(totals.get(Kind::SlowFailure)),
        timeouts: totals.get(Kind::Timeout),
        slow_calls: totals.slow(),
        ignored: totals.get(Kind::Ignored),
        cancelled: totals.get(Kind::Cancelled),
        rejected: totals.get(Kind::Rejected),
        stale: totals.get(Kind::Stale),
    }
}

#[cfg(test)]
mod tests {
    use super::probe_word::{Probes, is_later};

    #[test]
    fn probe_word_round_trips() {
        let probes = Probes {
            generation: 65_535,
            in_flight: 1_023,
            ok: 4_095,
            bad: 17,
            slow: 3,
        };
        assert_eq!(Probes::unpack(probes.pack()), probes);
        assert_eq!(probes.done(), 4_112);
    }

    #[test]
    fn later_generation_wraps() {
        assert!(is_later(1, 0));
        assert!(is_later(0, 65_535));
        assert!(!is_later(5, 5));
        assert!(!is_later(4, 5));
    }
}
