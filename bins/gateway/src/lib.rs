#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! From the top floor down; a module imports only from floors below it.
//!
//! - [`startup`]: [`Application`], the composition root: builds every part
//!   and the layer stack, runs the listener and the graceful shutdown.
//! - The layers, outermost first: `service_kit::request_id`, [`metrics`],
//!   the limit before authentication ([`ratelimit::pre_auth_layer`]),
//!   [`routing`], [`auth`] (on the [`jwt_verify`] crate), [`ratelimit`],
//!   [`proxy`]; beside them [`readiness`] (`/health`, `/ready`),
//!   [`requests`] (`/api/requests/{id}`), [`openapi`] (`/openapi.json`,
//!   composed from the upstreams' documents) and [`replay`] (the replay
//!   loop of queued writes). Each takes the narrow state it needs from [`state`]
//!   through axum's `FromRef` (routing: [`routing::Routing`]; auth:
//!   [`auth::Authenticating`]; the proxy: [`proxy::Forwarding`]).
//! - [`state`]: [`Gateway`], what every layer shares, made of the parts
//!   below.
//! - The parts: [`degraded`] (stale reads and the write queue),
//!   [`routes`] (the route table), [`limiter`] (token buckets),
//!   [`principal`] (who the caller is, the verifier), [`upstream`] (the
//!   pooled upstream client), [`alerts`] (critical alerts: log, metric,
//!   PagerDuty Events v2), [`tls`] (the HTTPS client's roots).
//! - The floor: [`settings`] (command line, environment) and [`config`]
//!   (the TOML file, checked at start), [`path`] (what a path may look
//!   like), [`client`] (who the client is), [`queue`] (the durable write
//!   queue), [`stale`] (last good copies), [`problem`] (the gateway's
//!   error catalogue; the problem+json body and its rendering are
//!   `store_domain`'s and `service_kit`'s), [`framing`] (the smuggling
//!   guard under the HTTP parser). Logs, OTLP export and trace context are
//!   `service_kit::telemetry`.

pub mod alerts;
pub mod auth;
pub mod client;
pub mod config;
pub mod degraded;
pub mod framing;
pub mod limiter;
pub mod metrics;
pub mod openapi;
pub mod path;
pub mod principal;
pub mod problem;
pub mod proxy;
pub mod queue;
pub mod ratelimit;
pub mod readiness;
pub mod replay;
pub mod requests;
pub mod routes;
pub mod routing;
pub mod settings;
pub mod stale;
pub mod startup;
pub mod state;
pub mod tls;
pub mod upstream;

pub use config::{Config, ConfigError};
pub use settings::{Cli, Secret, Settings};
pub use startup::Application;
pub use state::Gateway;
