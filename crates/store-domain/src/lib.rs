#![doc = include_str!("../README.md")]
//!
//! # Layout
//!
//! - `store`: [`Store`], the response bodies that carry it, [`Store::apply`]
//!   and [`ApplyError`].
//! - `status`: [`StoreStatus`] and the lifecycle state machine
//!   ([`Transition`], [`InvalidTransition`]).
//! - `create`, `update`: the request bodies [`CreateStore`] and
//!   [`UpdateStore`], and what validation makes of them ([`ValidCreate`],
//!   [`ValidUpdate`]).
//! - `rules`: the checks of each field (`sanitize`, then `validator`);
//!   `limits`: their bounds; `body`: reading a body member by member.
//! - `secrets`: [`Secrets`], whose `Debug` never shows a value.
//! - `validation`: [`ValidationErrors`] and [`FieldError`].
//! - `event`: [`StoreEvent`], the audit trail; `actor`: [`Actor`], who
//!   asked for a change (the gateway's verified subject).
//! - `page`, `cursor`: [`StorePage`], [`PageLimit`], [`StoreQuery`] and
//!   [`Cursor`].
//! - `problem`: [`ErrorCode`] and the error body [`Problem`]; `etag`: the
//!   `ETag` form of a version.

mod actor;
mod body;
mod create;
mod cursor;
mod etag;
mod event;
mod idempotency;
pub mod limits;
mod page;
mod problem;
mod rules;
mod secrets;
mod status;
mod store;
mod update;
mod validation;

pub use actor::{ACTOR_HEADER, ACTOR_MAX_BYTES, Actor, ActorError};
pub use create::{CreateStore, ValidCreate};
pub use cursor::{
    CURSOR_MAX_CHARS, CURSOR_PATTERN, Cursor, CursorError, HISTORY_CURSOR_PATTERN, HistoryCursor,
};
pub use etag::{InvalidEtag, etag, parse_etag};
pub use event::{ChangedField, EventKind, FieldChange, StoreEvent};
pub use idempotency::{IDEMPOTENCY_KEY_HEADER, IDEMPOTENCY_KEY_MAX_LEN, is_valid_idempotency_key};
pub use page::{HistoryQuery, PageLimit, PageLimitError, StorePage, StoreQuery};
pub use problem::{
    CONCURRENCY_MESSAGE, ErrorCode, PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE, Problem,
    UnknownErrorCode, VersionSource,
};
pub use secrets::Secrets;
pub use status::{InvalidTransition, ParseStatusError, StoreStatus, Transition};
pub use store::{ApplyError, SecretsResponse, Store, StoreHistory, StoreResponse};
pub use update::{UpdateStore, ValidUpdate};
pub use validation::{FieldError, FieldErrorCode, ValidationErrors};
