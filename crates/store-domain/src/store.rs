//! [`Store`], the response bodies that carry it, and [`Store::apply`]: what a
//! validated update makes of a store.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    ErrorCode, HistoryCursor, InvalidTransition, PageLimit, Secrets, StoreEvent, StoreStatus,
    ValidUpdate, etag,
};

/// A store, as the API returns it.
///
/// On the wire: camelCase members, times in RFC 3339
/// (`"2026-11-26T09:30:00Z"`), `secretKeys` naming the secrets (never their
/// values). Unknown members are ignored when deserializing, so a client keeps
/// working when a later version adds one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Store {
    /// The store's id.
    pub id: Uuid,
    /// Its name: plain text, 3 to 100 characters.
    pub name: String,
    /// Where it is in its lifecycle.
    pub status: StoreStatus,
    /// Free-form settings, a JSON object.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub config: Map<String, Value>,
    /// Starts at 1 and grows by one with every update; the `ETag` is this
    /// number in quotes, and updates send it back (`version` or `If-Match`).
    pub version: i32,
    /// When the store was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it was last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The key names of its secrets, sorted.
    pub secret_keys: Vec<String>,
}

impl Store {
    /// The `ETag` of this version: `"7"` (with the quotes).
    #[must_use]
    pub fn etag(&self) -> String {
        etag::etag(self.version)
    }

    /// This store after `update`, at `now`: each field present in the update
    /// replaces the stored one, the version grows by one, `updated_at`
    /// becomes `now`. Pure: the caller writes the result (with
    /// `WHERE version = <expected>`) and records the event
    /// ([`StoreEvent::updated`]).
    ///
    /// The version is checked before the status, so a client working from a
    /// stale copy learns that first.
    ///
    /// # Errors
    ///
    /// [`ApplyError::VersionRequired`] when the update names no version,
    /// [`ApplyError::VersionMismatch`] when it is not this one,
    /// [`ApplyError::InvalidTransition`] when the lifecycle refuses the
    /// status, [`ApplyError::VersionExhausted`] at `i32::MAX`.
    pub fn apply(&self, update: &ValidUpdate, now: OffsetDateTime) -> Result<Self, ApplyError> {
        let expected = update
            .expected_version()
            .ok_or(ApplyError::VersionRequired)?;
        if expected != self.version {
            return Err(ApplyError::VersionMismatch {
                expected,
                current: self.version,
            });
        }
        let status = match update.status() {
            None => self.status,
            Some(next) => self.status.transition_to(next)?.status(),
        };
        let version = self
            .version
            .checked_add(1)
            .ok_or(ApplyError::VersionExhausted)?;
        Ok(Self {
            id: self.id,
            name: update
                .name()
                .map_or_else(|| self.name.clone(), str::to_owned),
            status,
            config: update
                .config()
                .map_or_else(|| self.config.clone(), Clone::clone),
            version,
            created_at: self.created_at,
            updated_at: now,
            secret_keys: update
                .secrets()
                .map_or_else(|| self.secret_keys.clone(), Secrets::key_names),
        })
    }
}

/// Why [`Store::apply`] refused an update. Each maps to an API code
/// ([`code`](Self::code)); none is worth retrying unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// The update names no version, in its body or `If-Match`
    /// (`PRECONDITION_REQUIRED`, 428).
    #[error("the update must say which version it is based on")]
    VersionRequired,
    /// The store changed since the client read it (`CONCURRENCY_ERROR`,
    /// status 409, or 412 when the version came in `If-Match`).
    #[error("the update is based on version {expected}, the store is at version {current}")]
    VersionMismatch {
        /// The version the update is based on.
        expected: i32,
        /// The store's version.
        current: i32,
    },
    /// The lifecycle does not allow the requested status
    /// (`INVALID_STATUS_TRANSITION`, 409).
    #[error(transparent)]
    InvalidTransition(#[from] InvalidTransition),
    /// The store is at version `i32::MAX` (`INTERNAL_ERROR`, 500).
    #[error("the store's version cannot grow further")]
    VersionExhausted,
}

impl ApplyError {
    /// The API code. (A [`VersionMismatch`](Self::VersionMismatch) whose
    /// version came in `If-Match` keeps this code but is sent with status
    /// 412: see [`Problem::concurrency`](crate::Problem::concurrency).)
    #[must_use]
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::VersionRequired => ErrorCode::PreconditionRequired,
            Self::VersionMismatch { .. } => ErrorCode::ConcurrencyError,
            Self::InvalidTransition(_) => ErrorCode::InvalidStatusTransition,
            Self::VersionExhausted => ErrorCode::InternalError,
        }
    }

    /// Whether sending the same request again may succeed: never (a
    /// concurrency error needs a fresh read first).
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        false
    }
}

/// The body of `GET /api/stores/{id}` (`{"store": ...}`), and of `POST` and
/// `PUT`, which add a `message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoreResponse {
    /// The store.
    pub store: Store,
    /// What happened, for people (`"Store created successfully"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl StoreResponse {
    /// The message of a create.
    pub const CREATED: &'static str = "Store created successfully";
    /// The message of an update.
    pub const UPDATED: &'static str = "Store updated successfully";

    /// A read: the store, no message.
    #[must_use]
    pub const fn found(store: Store) -> Self {
        Self {
            store,
            message: None,
        }
    }

    /// A create: the store and [`CREATED`](Self::CREATED).
    #[must_use]
    pub fn created(store: Store) -> Self {
        Self {
            store,
            message: Some(Self::CREATED.to_owned()),
        }
    }

    /// An update: the store and [`UPDATED`](Self::UPDATED).
    #[must_use]
    pub fn updated(store: Store) -> Self {
        Self {
            store,
            message: Some(Self::UPDATED.to_owned()),
        }
    }
}

/// The body of `GET /api/stores/{id}/history`: one page of the store's
/// events, oldest first, and the cursor of the next page (`null` on the
/// last one).
///
/// ```json
/// {"storeId": "...", "events": [...], "count": 2, "nextCursor": "AgAAAAI"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoreHistory {
    /// The store's id.
    pub store_id: Uuid,
    /// This page's creates and updates, in version order.
    pub events: Vec<StoreEvent>,
    /// How many events this page holds.
    pub count: usize,
    /// Where the next page starts; `null` when this is the last page.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub next_cursor: Option<HistoryCursor>,
}

impl StoreHistory {
    /// A page of `store_id`'s history from events fetched with `LIMIT`
    /// [`PageLimit::fetch`] (one more than the limit): when that extra
    /// event came, it is dropped and the next cursor points after the last
    /// event kept.
    #[must_use]
    pub fn from_rows(store_id: Uuid, mut events: Vec<StoreEvent>, limit: PageLimit) -> Self {
        let limit = usize::from(limit.get());
        let next_cursor = if events.len() > limit {
            events.truncate(limit);
            events.last().map(|e| HistoryCursor::after(e.version))
        } else {
            None
        };
        Self {
            store_id,
            count: events.len(),
            events,
            next_cursor,
        }
    }
}

/// The body of `GET /api/stores/{id}/secrets`: the decrypted values.
///
/// `Debug` shows the key names only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretsResponse {
    /// The store's id.
    pub store_id: Uuid,
    /// Key name → value.
    pub secrets: Secrets,
}
