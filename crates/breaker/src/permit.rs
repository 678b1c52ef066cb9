//! Admission tokens: a call that got through holds a permit until it reports
//! its outcome.

use std::fmt;
use std::sync::Arc;

use crate::classify::Outcome;
use crate::core::{Role, Shared, Ticket};

/// Leave to make one call, from [`Breaker::try_acquire`](crate::Breaker::try_acquire).
///
/// Report how the call went with [`record`](Permit::record). A permit dropped
/// without a result (the call's future was cancelled, or it panicked) frees
/// its half-open probe slot and counts nothing but a cancellation, so a lost
/// permit can never keep the breaker half-open.
///
/// A result that arrives after the breaker has changed state (a newer
/// *generation*) is discarded: a slow call admitted while closed cannot close
/// or re-open a breaker that has moved on.
#[must_use = "record the call's outcome with `Permit::record`; a dropped permit counts as cancelled"]
pub struct Permit<'a> {
    /// The breaker.
    shared: &'a Shared,
    /// The admission; `None` once reported.
    ticket: Option<Ticket>,
}

impl<'a> Permit<'a> {
    /// Wraps an admission.
    pub(crate) fn new(shared: &'a Shared, ticket: Ticket) -> Self {
        Self {
            shared,
            ticket: Some(ticket),
        }
    }

    /// Reports the call's outcome.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.finish(ticket, outcome);
        }
    }

    /// Whether this permit is one of the half-open probes.
    pub fn is_probe(&self) -> bool {
        self.ticket.is_some_and(|ticket| ticket.role == Role::Probe)
    }

    /// The state generation the permit was issued in.
    pub fn generation(&self) -> u32 {
        self.ticket.map_or(0, |ticket| u32::from(ticket.generation))
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.cancel(ticket);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.shared.name)
            .field("ticket", &self.ticket)
            .finish()
    }
}

/// A [`Permit`] that owns a handle to its breaker, for futures that must be
/// `'static` (from [`Breaker::try_acquire_owned`](crate::Breaker::try_acquire_owned)).
#[must_use = "record the call's outcome with `OwnedPermit::record`; a dropped permit counts as cancelled"]
pub struct OwnedPermit {
    /// The breaker.
    shared: Arc<Shared>,
    /// The admission; `None` once reported.
    ticket: Option<Ticket>,
}

impl OwnedPermit {
    /// Wraps an admission.
    pub(crate) fn new(shared: Arc<Shared>, ticket: Ticket) -> Self {
        Self {
            shared,
            ticket: Some(ticket),
        }
    }

    /// Reports the call's outcome.
    pub fn record(mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.finish(ticket, outcome);
        }
    }

    /// Whether this permit is one of the half-open probes.
    pub fn is_probe(&self) -> bool {
        self.ticket.is_some_and(|ticket| ticket.role == Role::Probe)
    }

    /// The state generation the permit was issued in.
    pub fn generation(&self) -> u32 {
        self.ticket.map_or(0, |ticket| u32::from(ticket.generation))
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.cancel(ticket);
        }
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("breaker", &self.shared.name)
            .field("ticket", &self.ticket)
            .finish()
    }
}
