//! [`CreateStore`], the body of `POST /api/stores`, and [`ValidCreate`], what
//! validation makes of it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::validation::Collector;
use crate::{Secrets, Store, StoreStatus, ValidationErrors, body, rules};

/// The body of `POST /api/stores`: `{"name", "config"?, "secrets"?}`.
///
/// Unknown members are refused when deserializing (`deny_unknown_fields`).
/// Nothing here is checked yet: [`validate`](Self::validate) cleans and
/// checks it into a [`ValidCreate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateStore {
    /// The store's name: 3 to 100 characters once HTML and surrounding
    /// spaces are removed.
    pub name: String,
    /// Free-form settings, a JSON object (default `{}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub config: Option<Map<String, Value>>,
    /// Secret values by key name; stored encrypted, never returned by the
    /// store endpoints (which list `secretKeys` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Secrets>,
}

impl CreateStore {
    /// A request with a name only.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            config: None,
            secrets: None,
        }
    }

    /// Sets `config`.
    #[must_use]
    pub fn with_config(mut self, config: Map<String, Value>) -> Self {
        self.config = Some(config);
        self
    }

    /// Adds one secret.
    #[must_use]
    pub fn with_secret(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.secrets = Some(self.secrets.take().unwrap_or_default().with(key, value));
        self
    }

    /// Cleans and checks every field: `sanitize` first (name as plain text,
    /// config through `clean_json`), then the `validator` rules on the
    /// cleaned values.
    ///
    /// # Errors
    ///
    /// [`ValidationErrors`] listing every failing field.
    pub fn validate(self) -> Result<ValidCreate, ValidationErrors> {
        let mut errors = Collector::default();
        let valid = check(Some(self.name), self.config, self.secrets, &mut errors);
        errors.finish(valid)
    }
}

impl TryFrom<CreateStore> for ValidCreate {
    type Error = ValidationErrors;

    fn try_from(request: CreateStore) -> Result<Self, Self::Error> {
        request.validate()
    }
}

/// A create request that passed validation: the cleaned name, config and
/// secrets. It can only be made by validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidCreate {
    /// The cleaned name.
    name: String,
    /// The cleaned config (`{}` when none was sent).
    config: Map<String, Value>,
    /// The checked secrets (empty when none were sent).
    secrets: Secrets,
}

impl ValidCreate {
    /// Reads and validates a create body given as JSON, reporting every
    /// wrong member: unknown members, wrong types, a missing name, and every
    /// rule of [`CreateStore::validate`]. Values are never quoted back.
    ///
    /// A server should prefer this to deserializing [`CreateStore`], which
    /// stops at the first wrong member.
    ///
    /// # Errors
    ///
    /// [`ValidationErrors`] listing every failing field.
    pub fn from_json(body: Value) -> Result<Self, ValidationErrors> {
        let mut errors = Collector::default();
        let valid =
            body::members(body, &["name", "config", "secrets"], &mut errors).and_then(|mut map| {
                let name = body::string(&mut map, "name", true, &mut errors);
                let config = body::object(&mut map, "config", &mut errors);
                let secrets = body::secrets(&mut map, &mut errors);
                check(name, config, secrets, &mut errors)
            });
        errors.finish(valid)
    }

    /// The cleaned name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cleaned config.
    #[must_use]
    pub fn config(&self) -> &Map<String, Value> {
        &self.config
    }

    /// The secrets.
    #[must_use]
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// The new store, in [`StoreStatus::INITIAL`] at version 1, created and
    /// updated at `now`, and its secrets (which the store itself only names).
    #[must_use]
    pub fn into_store(self, id: Uuid, now: OffsetDateTime) -> (Store, Secrets) {
        let store = Store {
            id,
            name: self.name,
            status: StoreStatus::INITIAL,
            config: self.config,
            version: 1,
            created_at: now,
            updated_at: now,
            secret_keys: self.secrets.key_names(),
        };
        (store, self.secrets)
    }
}

/// The field checks of a create; `None` when any failed (the errors are in
/// `errors`) or the name is missing.
fn check(
    name: Option<String>,
    config: Option<Map<String, Value>>,
    secrets: Option<Secrets>,
    errors: &mut Collector,
) -> Option<ValidCreate> {
    let name = name.and_then(|name| rules::check_name(&name).map_err(|e| errors.push(e)).ok());
    let config = match config {
        None => Some(Map::new()),
        Some(config) => rules::check_config(config).map_err(|e| errors.push(e)).ok(),
    };
    let secrets = match secrets {
        None => Some(Secrets::new()),
        Some(secrets) => rules::check_secrets(secrets)
            .map_err(|e| errors.extend(e))
            .ok(),
    };
    if !errors.is_empty() {
        return None;
    }
    Some(ValidCreate {
        name: name?,
        config: config?,
        secrets: secrets?,
    })
}
