//! [`StoreEvent`]: one entry of a store's audit trail.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{Actor, Store};

/// One create or update of a store, as its history lists it.
///
/// Secrets appear as key names only: the `old` and `new` of a `secrets`
/// change are arrays of names. `actor` is who asked for the change (the
/// subject the gateway verified), `null` for an anonymous caller (a request
/// that did not come through the gateway).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StoreEvent {
    /// The store.
    pub store_id: Uuid,
    /// The store's version after this event (1 for the create).
    pub version: i32,
    /// When it happened (the store's `updatedAt` at that version).
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// Create or update.
    pub kind: EventKind,
    /// The fields that changed, in the order name, status, config, secrets.
    pub changes: Vec<FieldChange>,
    /// The id of the request that made the change (`X-Request-Id`).
    pub request_id: String,
    /// Who asked for the change: the subject the gateway verified, or
    /// `null` (always present) for an anonymous caller. An event without
    /// the member (from before it existed) reads as anonymous.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, required = true))]
    pub actor: Option<Actor>,
}

/// What kind of change an event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum EventKind {
    /// The store was created.
    Created,
    /// The store was updated.
    Updated,
}

impl EventKind {
    /// The wire name: `CREATED` or `UPDATED`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "CREATED",
            Self::Updated => "UPDATED",
        }
    }
}

/// A store field that an event can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[non_exhaustive]
pub enum ChangedField {
    /// `name`.
    Name,
    /// `status`.
    Status,
    /// `config`.
    Config,
    /// `secrets` (as key names).
    Secrets,
}

impl ChangedField {
    /// The wire name: `name`, `status`, `config`, `secrets`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Status => "status",
            Self::Config => "config",
            Self::Secrets => "secrets",
        }
    }
}

/// One field's change: its value before and after. `old` is `null` in a
/// create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldChange {
    /// Which field.
    pub field: ChangedField,
    /// The value before (`null` when there was none).
    pub old: Value,
    /// The value after.
    pub new: Value,
}

impl StoreEvent {
    /// The event of a create by `actor` (`None`: anonymous): every field,
    /// from `null` to its first value.
    #[must_use]
    pub fn created(store: &Store, request_id: impl Into<String>, actor: Option<Actor>) -> Self {
        let changes = [
            (ChangedField::Name, name(store)),
            (ChangedField::Status, status(store)),
            (ChangedField::Config, config(store)),
            (ChangedField::Secrets, secret_keys(store)),
        ]
        .into_iter()
        .map(|(field, new)| FieldChange {
            field,
            old: Value::Null,
            new,
        })
        .collect();
        Self {
            store_id: store.id,
            version: store.version,
            occurred_at: store.updated_at,
            kind: EventKind::Created,
            changes,
            request_id: request_id.into(),
            actor,
        }
    }

    /// The event of an update from `before` to `after` by `actor` (`None`:
    /// anonymous): the fields whose values differ, and `secrets` also when
    /// `secrets_written` (new values under the same key names are a change
    /// the key names cannot show).
    #[must_use]
    pub fn updated(
        before: &Store,
        after: &Store,
        secrets_written: bool,
        request_id: impl Into<String>,
        actor: Option<Actor>,
    ) -> Self {
        let mut changes = Vec::new();
        let mut compare = |field, old: Value, new: Value, forced: bool| {
            if forced || old != new {
                changes.push(FieldChange { field, old, new });
            }
        };
        compare(ChangedField::Name, name(before), name(after), false);
        compare(ChangedField::Status, status(before), status(after), false);
        compare(ChangedField::Config, config(before), config(after), false);
        compare(
            ChangedField::Secrets,
            secret_keys(before),
            secret_keys(after),
            secrets_written,
        );
        Self {
            store_id: after.id,
            version: after.version,
            occurred_at: after.updated_at,
            kind: EventKind::Updated,
            changes,
            request_id: request_id.into(),
            actor,
        }
    }
}

/// `name` as a JSON value.
fn name(store: &Store) -> Value {
    Value::String(store.name.clone())
}

/// `status` as a JSON value.
fn status(store: &Store) -> Value {
    Value::String(store.status.as_str().to_owned())
}

/// `config` as a JSON value.
fn config(store: &Store) -> Value {
    Value::Object(store.config.clone())
}

/// The secrets' key names as a JSON array.
fn secret_keys(store: &Store) -> Value {
    Value::Array(
        store
            .secret_keys
            .iter()
            .cloned()
            .map(Value::String)
            .collect(),
    )
}
