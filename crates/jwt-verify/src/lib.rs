#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - [`Config`] (`config.rs`): URLs, claims, ages, intervals.
//! - [`KeyStore`] (`keys.rs`): fetching, parsing and caching the JWKS;
//!   fail closed; the unknown-`kid` refresh limit.
//! - [`Verifier`] (`verify.rs`): a token to a caller, [`FromClaims`],
//!   [`Principal`], [`VerifyError`], the verified-token cache; [`Scopes`]
//!   (`scopes.rs`).
//! - [`Event`] and [`Observer`] (`events.rs`): what the key store reports.
//! - [`KeyError`], [`FetchError`] (`errors.rs`).
//!
//! `verify` builds on `keys`, which builds on `config`, `events` and
//! `errors`; `events` builds on `errors`.

mod config;
mod errors;
mod events;
mod keys;
mod scopes;
mod verify;

pub use config::Config;
pub use errors::{FetchError, KeyError};
pub use events::{Event, Ignore, Observer};
pub use keys::{KeySet, KeyStore, VerifyKey, parse_jwks};
pub use scopes::Scopes;
pub use verify::{FromClaims, Principal, Verifier, VerifyError, bearer};

/// The algorithms a key may be pinned to (re-exported from `jsonwebtoken`).
pub use jsonwebtoken::Algorithm;
