//! [`Event`]s and the [`Observer`] that receives them: the crate reports
//! what happens to the keys and leaves alerting and metrics to its user.

use crate::errors::FetchError;

/// Something that happened to the keys.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// No keys, or keys older than [`Config::max_age`](crate::Config::max_age):
    /// verification fails closed. Reported on every refused call and by the
    /// refresher each time it finds the keys stale, so an observer that
    /// raises an alert should raise it once until [`Event::KeysRefreshed`].
    KeysUnavailable,
    /// A fetch succeeded: the keys are fresh again.
    KeysRefreshed {
        /// The number of usable keys.
        count: usize,
    },
    /// A fetch failed (the previous keys, if any, stay until too old).
    FetchFailed {
        /// Why.
        error: &'a FetchError,
    },
    /// A token named an unknown `kid` and a refresh was allowed.
    UnknownKidRefresh,
    /// A token named an unknown `kid` and no refresh was allowed: one was
    /// made less than [`Config::unknown_kid_interval`](crate::Config::unknown_kid_interval)
    /// ago.
    UnknownKidRefused,
}

/// Receives [`Event`]s, synchronously, on the task where they happen:
/// keep it quick (count, set a flag, queue work).
///
/// Any `Fn(&Event<'_>) + Send + Sync` closure is an observer.
pub trait Observer: Send + Sync + 'static {
    /// Called for every event.
    fn on_event(&self, event: &Event<'_>);
}

impl<F> Observer for F
where
    F: Fn(&Event<'_>) + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event<'_>) {
        self(event);
    }
}

/// The observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ignore;

impl Observer for Ignore {
    fn on_event(&self, _: &Event<'_>) {}
}
