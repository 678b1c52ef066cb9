#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - [`Breaker`] (`breaker.rs`): the handle: admission, calls, control.
//! - `core.rs`: the shared state machine, lock-free on the call path.
//! - `state.rs`: the packed state word; `stripes.rs`: striped counters;
//!   `window.rs`: count and time windows.
//! - [`Policy`] (`policy.rs`), [`Preset`] (`preset.rs`), [`Backoff`] and
//!   the workspace's one back-off, [`ExponentialBackoff`] (`backoff.rs`);
//!   `policy_file.rs` and `duration_text.rs` (with `DurationText`) read
//!   them from configuration files (feature `serde`).
//! - [`Permit`] (`permit.rs`), [`Classify`] (`classify.rs`), errors
//!   (`error.rs`), [`Snapshot`] (`snapshot.rs`), [`Event`] (`event.rs`),
//!   [`Registry`] (`registry.rs`), [`Clock`] (`clock.rs`).
//! - Optional: `tower_layer.rs` (feature `tower`), `metrics_export.rs`
//!   (feature `metrics`).

mod backoff;
mod breaker;
mod classify;
mod clock;
mod core;
#[cfg(feature = "serde")]
mod duration_text;
mod error;
mod event;
#[cfg(feature = "metrics")]
mod metrics_export;
mod names;
mod permit;
mod policy;
#[cfg(feature = "serde")]
mod policy_file;
mod preset;
mod registry;
mod snapshot;
mod state;
mod stripes;
#[cfg(feature = "tower")]
mod tower_layer;
mod window;

pub use crate::backoff::{Backoff, ExponentialBackoff};
pub use crate::breaker::Breaker;
pub use crate::classify::{
    AnyError, Classify, HttpClassifier, HttpStatus, Outcome, http_status_outcome,
};
pub use crate::clock::{Clock, ManualClock, TokioClock};
#[cfg(feature = "serde")]
pub use crate::duration_text::DurationText;
pub use crate::error::{CallError, ConfigError, RejectReason, Rejected};
pub use crate::event::{Event, Events, Reason};
#[cfg(feature = "metrics")]
pub use crate::metrics_export::describe_metrics;
pub use crate::permit::{OwnedPermit, Permit};
pub use crate::policy::{
    MAX_BUCKETS, MAX_COUNT_WINDOW, MAX_PROBES, OpenAction, Policy, PolicyBuilder, SlowCalls, Window,
};
pub use crate::preset::Preset;
pub use crate::registry::Registry;
pub use crate::snapshot::{Snapshot, Totals};
pub use crate::state::State;
#[cfg(feature = "tower")]
pub use crate::tower_layer::{Admission, BreakerLayer, BreakerService, ResponseFuture};
