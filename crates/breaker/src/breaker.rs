//! The public handle: [`Breaker`].

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::classify::{AnyError, Classify, Outcome};
use crate::clock::{Clock, TokioClock};
use crate::core::{Shared, Ticket};
use crate::error::{CallError, Rejected};
use crate::event::Events;
use crate::names::intern;
use crate::permit::{OwnedPermit, Permit};
use crate::policy::Policy;
use crate::snapshot::Snapshot;
use crate::state::{State, raw_generation};

/// A circuit breaker. Cloning is cheap and every clone controls the same
/// breaker, so the clone handed to an admin endpoint can
/// [`force_open`](Breaker::force_open) the one the request path uses.
///
/// ```
/// use breaker::{Breaker, CallError, Policy};
///
/// let breaker = Breaker::new("inventory", Policy::default());
/// let answer: Result<u32, CallError<std::io::Error>> = breaker.call(|| Ok(42));
/// assert_eq!(answer.ok(), Some(42));
/// ```
#[derive(Clone)]
pub struct Breaker {
    /// The state every clone shares.
    shared: Arc<Shared>,
}

impl Breaker {
    /// A closed breaker named `name` (the name appears in rejections, events,
    /// logs and metrics labels), on the default [`TokioClock`].
    pub fn new(name: impl AsRef<str>, policy: Policy) -> Self {
        Self::with_shared_clock(name.as_ref(), policy, Arc::new(TokioClock))
    }

    /// A closed breaker that reads time from `clock`.
    pub fn with_clock(name: impl AsRef<str>, policy: Policy, clock: impl Clock) -> Self {
        Self::with_shared_clock(name.as_ref(), policy, Arc::new(clock))
    }

    /// A closed breaker on a clock shared with others (the registry's).
    pub(crate) fn with_shared_clock(name: &str, policy: Policy, clock: Arc<dyn Clock>) -> Self {
        Self {
            shared: Arc::new(Shared::new(intern(name), policy, clock)),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &'static str {
        self.shared.name
    }

    /// The breaker's policy.
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// The current state. An open breaker whose wait is over still reads
    /// [`State::Open`] until the next call moves it to half-open.
    pub fn state(&self) -> State {
        self.shared.word().state
    }

    /// Asks to make one call. On success, make the call and report with
    /// [`Permit::record`]; on rejection, don't make it.
    ///
    /// ```
    /// use breaker::{Breaker, Outcome, Policy};
    ///
    /// let breaker = Breaker::new("search", Policy::default());
    /// match breaker.try_acquire() {
    ///     Ok(permit) => {
    ///         // ... make the call ...
    ///         permit.record(Outcome::Success);
    ///     }
    ///     Err(rejected) => eprintln!("not calling: {rejected}"),
    /// }
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let ticket = self.shared.acquire()?;
        Ok(Permit::new(&self.shared, ticket))
    }

    /// Like [`try_acquire`](Breaker::try_acquire), with a permit that owns a
    /// handle to the breaker (for `'static` futures).
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        let ticket = self.shared.acquire()?;
        Ok(OwnedPermit::new(Arc::clone(&self.shared), ticket))
    }

    /// Makes a synchronous call through the breaker; `Ok` is a success and
    /// `Err` a failure. The policy's `call_timeout` does not apply: a
    /// synchronous call cannot be interrupted (slow-call detection does).
    #[inline]
    pub fn call<T, E, F>(&self, f: F) -> Result<T, CallError<E>>
    where
        F: FnOnce() -> Result<T, E>,
    {
        self.call_with(&AnyError, f)
    }

    /// Like [`call`](Breaker::call), classifying the result with `classifier`.
    #[inline]
    pub fn call_with<T, E, F, C>(&self, classifier: &C, f: F) -> Result<T, CallError<E>>
    where
        F: FnOnce() -> Result<T, E>,
        C: Classify<T, E> + ?Sized,
    {
        let raw = self.shared.hot.0.state.load(Ordering::Acquire);
        if self.shared.fast_path(raw) {
            // Closed without slow-call detection: nothing to free if `f`
            // panics, so no permit is needed.
            let result = f();
            self.shared
                .finish_window(raw_generation(raw), 0, classifier.classify(&result));
            return result.map_err(CallError::Inner);
        }
        let permit = self.try_acquire()?;
        let result = f();
        permit.record(classifier.classify(&result));
        result.map_err(CallError::Inner)
    }

    /// Runs a future through the breaker, with the policy's `call_timeout`;
    /// `Ok` is a success, `Err` a failure, a timeout is
    /// [`Outcome::Timeout`]. If the returned future is dropped before it
    /// finishes, the call counts as cancelled (see [`Classify::cancelled`]).
    pub async fn run<T, E, F>(&self, future: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.run_with(&AnyError, future).await
    }

    /// Like [`run`](Breaker::run), classifying the result with `classifier`.
    pub async fn run_with<T, E, F, C>(&self, classifier: &C, future: F) -> Result<T, CallError<E>>
    where
        F: Future<Output = Result<T, E>>,
        C: Classify<T, E> + ?Sized,
    {
        let ticket = self.shared.acquire()?;
        let mut guard = CallGuard {
            shared: &self.shared,
            ticket: Some(ticket),
            on_drop: classifier.cancelled(),
        };
        let result = match self.shared.policy.call_timeout {
            Some(limit) => match tokio::time::timeout(limit, future).await {
                Ok(result) => result,
                Err(_) => {
                    guard.finish(Outcome::Timeout);
                    return Err(CallError::Timeout(limit));
                }
            },
            None => future.await,
        };
        guard.finish(classifier.classify(&result));
        result.map_err(CallError::Inner)
    }

    /// Rejects every call until another control call (state
    /// [`State::ForcedOpen`]). Rejections say `retry_after: None`.
    pub fn force_open(&self) {
        self.shared.control(State::ForcedOpen);
    }

    /// Lets every call through and never opens by itself until another
    /// control call (state [`State::ForcedClosed`]). Outcomes are still
    /// counted, so snapshots keep showing the rates.
    pub fn force_closed(&self) {
        self.shared.control(State::ForcedClosed);
    }

    /// Lets every call through and records nothing (state
    /// [`State::Disabled`]).
    pub fn disable(&self) {
        self.shared.control(State::Disabled);
    }

    /// Lets every call through and judges outcomes as if closed, but emits
    /// [`Event::ThresholdExceeded`](crate::Event::ThresholdExceeded) instead
    /// of opening (state [`State::MetricsOnly`]): a dry run of a policy.
    pub fn metrics_only(&self) {
        self.shared.control(State::MetricsOnly);
    }

    /// Back to normal: closed, an empty window, the back-off reset. Leaves
    /// any forced, disabled or metrics-only mode. The cumulative counters are
    /// kept (they are monotonic).
    pub fn reset(&self) {
        self.shared.control(State::Closed);
    }

    /// The breaker's state and figures now. Brings the window up to date
    /// first (without waiting if another thread is doing it).
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// Subscribes to state transitions (and metrics-only threshold events).
    /// Publishing never waits for a slow subscriber.
    pub fn subscribe(&self) -> Events {
        self.shared.subscribe()
    }

    /// The shared state, for the tower layer.
    #[cfg(feature = "tower")]
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("name", &self.shared.name)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Reports a running call's outcome, or its cancellation if dropped first.
struct CallGuard<'a> {
    /// The breaker.
    shared: &'a Shared,
    /// The admission; `None` once reported.
    ticket: Option<Ticket>,
    /// The outcome to report if the call is cancelled.
    on_drop: Outcome,
}

impl CallGuard<'_> {
    /// Reports `outcome`.
    fn finish(&mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.finish(ticket, outcome);
        }
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            match self.on_drop {
                Outcome::Ignore => self.shared.cancel(ticket),
                outcome => self.shared.finish(ticket, outcome),
            }
        }
    }
}
