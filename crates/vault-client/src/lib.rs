#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - [`Client`] (`client.rs`): the request pipeline (path check, token,
//!   breaker, HTTP, bounded body, JSON, retries) and generic calls.
//! - [`Config`] (`config.rs`), [`Environment`] (`env.rs`), TLS (`tls.rs`).
//! - Auth (`auth.rs`) and the token manager (`token.rs`).
//! - Engines: [`Kv2`] (`kv2.rs`), [`Kv1`] (`kv1.rs`), [`Transit`]
//!   (`transit.rs`), [`Database`] (`database.rs`) and its [`LeaseManager`]
//!   (`lease.rs`); the deadpool connector (`pool.rs`, feature `deadpool`).
//! - Resilience: retries (`retry.rs`), the read fallback chain
//!   (`fallback.rs`), `sys/health` (`health.rs`).
//! - Secrets (`secret.rs`), errors (`error.rs`), events (`events.rs`),
//!   metrics (`metrics.rs`, feature `metrics`), paths (`path.rs`), JSON
//!   field access (`json.rs`).

mod auth;
mod client;
mod config;
mod database;
mod env;
mod error;
mod events;
mod fallback;
mod health;
mod json;
mod kv1;
mod kv2;
mod lease;
mod metrics;
mod path;
#[cfg(feature = "deadpool")]
pub mod pool;
mod retry;
mod secret;
mod tls;
mod token;
mod transit;

pub use breaker;

pub use crate::auth::{AppRole, AuthMethod, KUBERNETES_JWT_PATH, Kubernetes, SecretId};
pub use crate::client::{Client, WrapInfo};
pub use crate::config::{
    Config, ConfigBuilder, ConfigError, DEFAULT_ADDR, DEFAULT_FALLBACK_PREFIX, FallbackConfig,
    TlsConfig,
};
pub use crate::database::{Database, DbCredentials, Lease};
pub use crate::env::{Environment, ProcessEnv};
pub use crate::error::{Delivery, Error, Result};
pub use crate::events::Event;
pub use crate::fallback::{Source, env_prefix_for};
pub use crate::health::Health;
pub use crate::kv1::Kv1;
pub use crate::kv2::{Kv2, KvMetadata, KvSecret, KvVersion, KvVersionState, MetadataSettings};
pub use crate::lease::{Credentials, LeaseEvent, LeaseManager, LeaseManagerBuilder, LeaseOptions};
#[cfg(feature = "metrics")]
pub use crate::metrics::describe_metrics;
pub use crate::path::MAX_PATH_LEN;
pub use crate::retry::Backoff;
pub use crate::secret::{ExposeSecret, SecretBytes, SecretData, SecretString};
pub use crate::tls::install_crypto_provider;
pub use crate::token::RenewalPolicy;
pub use crate::transit::{
    DataKey, DataKeyKind, DecryptItem, DecryptOptions, EncryptItem, EncryptOptions, ItemError,
    KeyInfo, Transit, ciphertext_version,
};
