#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - [`settings`]: the command line and environment; [`config`]: the TOML
//!   file, checked at start.
//! - [`state`]: [`Gateway`], what every layer shares (below the layers).
//! - [`startup`]: [`Application`], the layer stack, graceful shutdown.
//! - [`framing`]: the smuggling guard under the HTTP parser.
//! - [`request_id`], [`metrics`], the limit before authentication
//!   ([`ratelimit::pre_auth_layer`], with [`client`]: who the client is),
//!   [`routing`], [`auth`] (with [`jwks`]), [`ratelimit`], [`proxy`]: one
//!   concern per layer, outermost first.
//! - [`alerts`]: critical alerts (log, metric, PagerDuty Events v2).
//! - [`problem`]: the problem+json bodies; [`readiness`]: `/health`, `/ready`;
//!   [`telemetry`]: JSON logs and OTLP export.

pub mod alerts;
pub mod auth;
pub mod client;
pub mod config;
pub mod degraded;
pub mod framing;
pub mod jwks;
pub mod metrics;
pub mod problem;
pub mod proxy;
pub mod queue;
pub mod ratelimit;
pub mod readiness;
pub mod replay;
pub mod request_id;
pub mod requests;
pub mod routing;
pub mod settings;
pub mod stale;
pub mod startup;
pub mod state;
pub mod telemetry;

pub use config::{Config, ConfigError};
pub use settings::{Cli, Secret, Settings};
pub use startup::Application;
pub use state::Gateway;
