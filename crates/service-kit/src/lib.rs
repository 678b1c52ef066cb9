#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! Each module stands alone, except that the request-id layer uses the
//! problem rendering and the trace context:
//!
//! - [`Limits`], [`serve`]: the accept loop with bounded connections, a
//!   header-read timeout, and graceful shutdown, which gives memory back
//!   to the kernel after a load (`memory`, below it); [`shutdown_signal`]:
//!   when to stop (SIGTERM or ctrl-c).
//! - [`telemetry`]: JSON logs, OTLP export (feature `otlp`), W3C trace
//!   context.
//! - [`problem`]: RFC 9457 problem responses, completed with the request's
//!   id and path.
//! - [`request_id`]: the outermost layer (`X-Request-Id`, the request span,
//!   problem completion).
//! - [`prometheus`]: the Prometheus recorder, `/metrics`, the bounded
//!   `method` label.
//! - [`Secret`]: configuration values that never print.

mod memory;
pub mod problem;
pub mod prometheus;
pub mod request_id;
mod secret;
mod serve;
mod shutdown;
pub mod telemetry;

pub use secret::Secret;
pub use serve::{Limits, LimitsError, serve};
pub use shutdown::shutdown_signal;
