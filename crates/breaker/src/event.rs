//! State-transition events: a non-blocking stream for alerts, plus `tracing`
//! and (feature `metrics`) the `metrics` facade.

use tokio::sync::broadcast;

use crate::state::State;

/// How many events a subscriber may fall behind before it misses some.
pub(crate) const EVENT_CAPACITY: usize = 64;

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Reason {
    /// The failure rate (percent) of the window reached the threshold.
    FailureRate {
        /// The rate, in percent.
        rate: f64,
    },
    /// The slow-call rate (percent) of the window reached the threshold.
    SlowCallRate {
        /// The rate, in percent.
        rate: f64,
    },
    /// The open wait is over; probes may go through.
    OpenWaitElapsed,
    /// The half-open probes succeeded.
    ProbesSucceeded,
    /// The half-open probes failed (or were slow) too often.
    ProbesFailed {
        /// Failure rate of the probes, in percent.
        failure_rate: f64,
        /// Slow-call rate of the probes, in percent.
        slow_call_rate: f64,
    },
    /// The probes did not all report within the half-open wait.
    HalfOpenTimedOut,
    /// A control call: `force_open`, `force_closed`, `disable`,
    /// `metrics_only` or `reset`.
    Control,
}

/// Something that happened to a breaker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The breaker changed state.
    Transition {
        /// The breaker's name.
        breaker: &'static str,
        /// The state it left.
        from: State,
        /// The state it entered.
        to: State,
        /// Why.
        reason: Reason,
    },
    /// In metrics-only mode, a rate reached its threshold: the breaker would
    /// have opened. Emitted once each time the window crosses over.
    ThresholdExceeded {
        /// The breaker's name.
        breaker: &'static str,
        /// Which rate, and its value.
        reason: Reason,
    },
}

impl Event {
    /// The name of the breaker the event is about.
    pub fn breaker(&self) -> &'static str {
        match self {
            Self::Transition { breaker, .. } | Self::ThresholdExceeded { breaker, .. } => breaker,
        }
    }
}

/// A subscription to a breaker's events, from
/// [`Breaker::subscribe`](crate::Breaker::subscribe).
///
/// Publishing never waits for subscribers: one that falls more than 64 events
/// behind skips the oldest ones and [`missed`](Events::missed) counts them.
#[derive(Debug)]
pub struct Events {
    /// The channel.
    receiver: broadcast::Receiver<Event>,
    /// Events skipped because this subscriber fell behind.
    missed: u64,
}

impl Events {
    /// Wraps a receiver.
    pub(crate) fn new(receiver: broadcast::Receiver<Event>) -> Self {
        Self {
            receiver,
            missed: 0,
        }
    }

    /// The next event; `None` once every handle of the breaker is dropped and
    /// all events are read.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.receiver.recv().await {
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    self.missed = self.missed.saturating_add(skipped);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        loop {
            match self.receiver.try_recv() {
                Ok(event) => return Some(event),
                Err(broadcast::error::TryRecvError::Lagged(skipped)) => {
                    self.missed = self.missed.saturating_add(skipped);
                }
                Err(_) => return None,
            }
        }
    }

    /// How many events this subscriber skipped because it fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

/// Reports a transition to `tracing`, the subscribers and `metrics`.
pub(crate) fn announce(sender: &broadcast::Sender<Event>, event: Event) {
    match &event {
        Event::Transition {
            breaker,
            from,
            to,
            reason,
        } => {
            if *to == State::Open {
                tracing::warn!(target: "breaker", breaker = %breaker, from = %from, to = %to, reason = ?reason, "circuit opened");
            } else {
                tracing::info!(target: "breaker", breaker = %breaker, from = %from, to = %to, reason = ?reason, "circuit state changed");
            }
            #[cfg(feature = "metrics")]
            crate::metrics_export::transition(breaker, *to);
        }
        Event::ThresholdExceeded { breaker, reason } => {
            tracing::warn!(target: "breaker", breaker = %breaker, reason = ?reason, "threshold exceeded (metrics only: not opening)");
        }
    }
    // An error only means nobody is subscribed.
    let _ = sender.send(event);
}
