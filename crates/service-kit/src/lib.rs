#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - [`Limits`]: how many connections, how long a request head may take,
//!   how big it may be.
//! - [`serve`]: the accept loop with those limits, and graceful shutdown.

mod serve;

pub use serve::{Limits, LimitsError, serve};
