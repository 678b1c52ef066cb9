//! A `tower` middleware (feature `tower`).
//!
//! [`BreakerLayer`] wraps a service so every request goes through a
//! [`Breaker`]: admission is decided in `poll_ready`, the outcome is
//! classified from the response (default [`AnyError`]; use
//! [`HttpClassifier`](crate::HttpClassifier) for HTTP), and the policy's
//! `call_timeout` applies to the response future.
//!
//! Two admission modes ([`Admission`]):
//!
//! - **reject** (default): when the breaker says no, `poll_ready` is ready at
//!   once and `call` returns [`CallError::Rejected`] without touching the
//!   inner service;
//! - **back-pressure**: `poll_ready` stays pending while the breaker is open
//!   or its probes are busy, waking on the next transition or freed probe
//!   slot, for at most `max_wait`; after that the request is rejected. A
//!   breaker forced open rejects at once in both modes.
//!
//! Timers (the call timeout and the back-pressure wait) are tokio timers, so
//! the service must run inside a tokio runtime with time enabled.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::Breaker;
use crate::classify::{AnyError, Classify, Outcome};
use crate::error::{CallError, Rejected};
use crate::permit::OwnedPermit;

/// How the layer admits requests when the breaker does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Admission {
    /// Reject at once.
    #[default]
    Reject,
    /// Hold `poll_ready` pending until the breaker admits, for at most
    /// `max_wait`, then reject.
    Backpressure {
        /// The longest `poll_ready` waits.
        max_wait: Duration,
    },
}

/// Wraps services with a [`Breaker`].
///
/// ```
/// use std::time::Duration;
/// use breaker::{Breaker, BreakerLayer, HttpClassifier, Preset};
///
/// let breaker = Breaker::new("store", Preset::StoreService.policy());
/// let layer = BreakerLayer::new(breaker)
///     .classifier(HttpClassifier)
///     .backpressure(Duration::from_secs(2));
/// # let _ = layer;
/// ```
#[derive(Debug, Clone)]
pub struct BreakerLayer<C = AnyError> {
    /// The breaker every wrapped service shares.
    breaker: Breaker,
    /// The admission mode.
    admission: Admission,
    /// The classifier of responses.
    classifier: C,
}

impl BreakerLayer {
    /// A layer that rejects at once and treats every `Err` as a failure.
    pub fn new(breaker: Breaker) -> Self {
        Self {
            breaker,
            admission: Admission::Reject,
            classifier: AnyError,
        }
    }
}

impl<C> BreakerLayer<C> {
    /// Uses `classifier` for responses.
    pub fn classifier<C2>(self, classifier: C2) -> BreakerLayer<C2> {
        BreakerLayer {
            breaker: self.breaker,
            admission: self.admission,
            classifier,
        }
    }

    /// Sets the admission mode.
    pub fn admission(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }

    /// Back-pressure mode, waiting at most `max_wait` in `poll_ready`.
    pub fn backpressure(self, max_wait: Duration) -> Self {
        self.admission(Admission::Backpressure { max_wait })
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService {
            inner,
            breaker: self.breaker.clone(),
            admission: self.admission,
            classifier: self.classifier.clone(),
            admitted: None,
            waiting: None,
        }
    }
}

/// A future waiting for the breaker to admit a request.
type Waiting = Pin<Box<dyn Future<Output = Result<OwnedPermit, Rejected>> + Send>>;

/// A service behind a [`Breaker`]; made by [`BreakerLayer`].
pub struct BreakerService<S, C = AnyError> {
    /// The protected service.
    inner: S,
    /// The breaker.
    breaker: Breaker,
    /// The admission mode.
    admission: Admission,
    /// The classifier of responses.
    classifier: C,
    /// The decision taken in `poll_ready`, used by the next `call`.
    admitted: Option<Result<OwnedPermit, Rejected>>,
    /// Back-pressure: waiting for admission.
    waiting: Option<Waiting>,
}

impl<S: Clone, C: Clone> Clone for BreakerService<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            admission: self.admission,
            classifier: self.classifier.clone(),
            admitted: None,
            waiting: None,
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for BreakerService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerService")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

/// Tries to be admitted until `max_wait` has passed, waking on transitions
/// and freed probe slots.
async fn admit_within(breaker: Breaker, max_wait: Duration) -> Result<OwnedPermit, Rejected> {
    let give_up = Instant::now() + max_wait;
    loop {
        let changed = breaker.shared().changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let rejected = match breaker.try_acquire_owned() {
            Ok(permit) => return Ok(permit),
            Err(rejected) => rejected,
        };
        let Some(retry_after) = rejected.retry_after() else {
            return Err(rejected);
        };
        let now = Instant::now();
        if now >= give_up {
            return Err(rejected);
        }
        let wake = (now + retry_after.max(Duration::from_millis(1))).min(give_up);
        let _ = tokio::time::timeout_at(wake, changed).await;
    }
}

impl<S, C, Request> Service<Request> for BreakerService<S, C>
where
    S: Service<Request>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = CallError<S::Error>;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while self.admitted.is_none() {
            if let Some(waiting) = self.waiting.as_mut() {
                let decision = std::task::ready!(waiting.as_mut().poll(cx));
                self.waiting = None;
                self.admitted = Some(decision);
                break;
            }
            match (self.breaker.try_acquire_owned(), self.admission) {
                (Ok(permit), _) => self.admitted = Some(Ok(permit)),
                (Err(rejected), Admission::Reject) => self.admitted = Some(Err(rejected)),
                (Err(rejected), Admission::Backpressure { .. })
                    if rejected.retry_after().is_none() =>
                {
                    self.admitted = Some(Err(rejected));
                }
                (Err(_), Admission::Backpressure { max_wait }) => {
                    self.waiting = Some(Box::pin(admit_within(self.breaker.clone(), max_wait)));
                }
            }
        }
        match self.admitted {
            Some(Ok(_)) => self.inner.poll_ready(cx).map_err(CallError::Inner),
            _ => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let admitted = self
            .admitted
            .take()
            .unwrap_or_else(|| self.breaker.try_acquire_owned());
        match admitted {
            Err(rejected) => ResponseFuture::rejected(rejected, self.classifier.clone()),
            Ok(permit) => {
                let on_drop = self.classifier.cancelled();
                ResponseFuture {
                    inner: Some(self.inner.call(request)),
                    sleep: None,
                    timeout: self.breaker.policy().call_timeout(),
                    rejected: None,
                    permit: Some(permit),
                    on_drop,
                    classifier: self.classifier.clone(),
                }
            }
        }
    }
}

pin_project! {
    /// The response future of a [`BreakerService`].
    ///
    /// Dropping it before it finishes reports the classifier's
    /// [`cancelled`](Classify::cancelled) outcome (by default: cancelled,
    /// counts nothing).
    // (pin-project-lite accepts no doc attributes on fields, hence `//`.)
    pub struct ResponseFuture<F, C> {
        // The inner service's future; `None` once finished or rejected.
        #[pin]
        inner: Option<F>,
        // The call timeout, started on first poll.
        #[pin]
        sleep: Option<Sleep>,
        // The policy's call timeout.
        timeout: Option<Duration>,
        // A rejection to return on first poll.
        rejected: Option<Rejected>,
        // The admission; `None` once reported.
        permit: Option<OwnedPermit>,
        // What to report if dropped before finishing.
        on_drop: Outcome,
        // Classifies the inner result.
        classifier: C,
    }

    impl<F, C> PinnedDrop for ResponseFuture<F, C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(permit) = this.permit.take()
                && *this.on_drop != Outcome::Ignore
            {
                permit.record(*this.on_drop);
            }
        }
    }
}

impl<F, C> ResponseFuture<F, C> {
    /// A future that resolves to a rejection.
    fn rejected(rejected: Rejected, classifier: C) -> Self {
        Self {
            inner: None,
            sleep: None,
            timeout: None,
            rejected: Some(rejected),
            permit: None,
            on_drop: Outcome::Ignore,
            classifier,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("timeout", &self.timeout)
            .field("rejected", &self.rejected)
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    C: Classify<T, E>,
{
    type Output = Result<T, CallError<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(rejected) = this.rejected.take() {
            return Poll::Ready(Err(CallError::Rejected(rejected)));
        }
        let polled = match this.inner.as_mut().as_pin_mut() {
            Some(inner) => inner.poll(cx),
            // Polled after completion.
            None => return Poll::Pending,
        };
        if let Poll::Ready(result) = polled {
            this.inner.set(None);
            this.sleep.set(None);
            if let Some(permit) = this.permit.take() {
                permit.record(this.classifier.classify(&result));
            }
            return Poll::Ready(result.map_err(CallError::Inner));
        }
        if let Some(limit) = *this.timeout {
            if this.sleep.is_none() {
                this.sleep.set(Some(tokio::time::sleep(limit)));
            }
            if let Some(sleep) = this.sleep.as_mut().as_pin_mut()
                && sleep.poll(cx).is_ready()
            {
                this.inner.set(None);
                this.sleep.set(None);
                if let Some(permit) = this.permit.take() {
                    permit.record(Outcome::Timeout);
                }
                return Poll::Ready(Err(CallError::Timeout(limit)));
            }
        }
        Poll::Pending
    }
}
