#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `config`: nodes (libpq multi-host URL or one URL per node), pools,
//!   timeouts, probing, read routing, retries.
//! - `credentials`: fixed or rotating (watch channel) logins.
//! - `pool`: one deadpool pool per node, credentials-aware, evictable.
//! - `probe`: the background prober of each node.
//! - `topology`: the pure state machine from observations to a primary,
//!   readable replicas, a generation and events.
//! - `classify`: what an error says about the node and the request.
//! - `backoff`: retry settings on breaker's `ExponentialBackoff` (full
//!   jitter), deadlines.
//! - `cluster`: the handle, routing, connections and retried operations.
//! - `events`, `health`, `lsn`, `error`, `metrics`.

mod backoff;
mod classify;
mod cluster;
mod config;
mod credentials;
mod error;
mod events;
mod health;
mod lsn;
mod metrics;
mod pool;
mod probe;
mod topology;

pub use backoff::RetryPolicy;
pub use cluster::{BoxFuture, Cluster, Connection, OpFuture, OpOptions, Written};
pub use config::{
    Balance, Config, DEFAULT_MAX_CONNECTIONS, Fallback, NodeConfig, ProbeSettings, ReadSettings,
    Timeouts,
};
pub use credentials::{Credentials, CredentialsProvider, Password};
pub use error::{Error, PoolError};
pub use events::{Event, NodeId, Role};
pub use health::{Health, NodeHealth, PoolStats};
pub use lsn::{CommitToken, Lsn};

/// Re-exported so that callers name the same versions this crate uses.
pub use deadpool_postgres;
/// Re-exported so that callers name the same versions this crate uses.
pub use tokio_postgres;
