//! [`UpdateStore`], the body of `PUT /api/stores/{id}`, and [`ValidUpdate`],
//! what validation makes of it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::validation::{Collector, FieldError, FieldErrorCode};
use crate::{Secrets, StoreStatus, ValidationErrors, body, rules};

/// The body of `PUT /api/stores/{id}`: any of `name`, `status`, `config`,
/// `secrets`, and the expected `version`.
///
/// Each field present replaces the stored one whole: `config` is not merged,
/// and `secrets` replaces the whole set (keys not sent are removed). A
/// missing or `null` field is left as it is. At least one of `name`,
/// `status`, `config`, `secrets` must be present.
///
/// `version` is the version the client last read; it may instead come in an
/// `If-Match` header ([`ValidUpdate::with_expected_version`]).
///
/// Unknown members are refused when deserializing (`deny_unknown_fields`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateStore {
    /// A new name (3 to 100 characters once HTML and surrounding spaces are
    /// removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A new status, allowed by the lifecycle from the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StoreStatus>,
    /// A new config, replacing the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub config: Option<Map<String, Value>>,
    /// A new set of secrets, replacing the old set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Secrets>,
    /// The version this update is based on (or send `If-Match`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub version: Option<i32>,
}

impl UpdateStore {
    /// An update of nothing yet, based on `version`.
    #[must_use]
    pub fn based_on(version: i32) -> Self {
        Self {
            version: Some(version),
            ..Self::default()
        }
    }

    /// Sets a new name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets a new status.
    #[must_use]
    pub const fn with_status(mut self, status: StoreStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// Sets a new config.
    #[must_use]
    pub fn with_config(mut self, config: Map<String, Value>) -> Self {
        self.config = Some(config);
        self
    }

    /// Sets a new set of secrets.
    #[must_use]
    pub fn with_secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Cleans and checks every field present, like
    /// [`CreateStore::validate`](crate::CreateStore::validate), plus
    /// `version` ≥ 1 and at least one field to change.
    ///
    /// # Errors
    ///
    /// [`ValidationErrors`] listing every failing field.
    pub fn validate(self) -> Result<ValidUpdate, ValidationErrors> {
        let mut errors = Collector::default();
        let valid = check(
            Fields {
                name: self.name,
                status: self.status,
                config: self.config,
                secrets: self.secrets,
                version: self.version,
            },
            &mut errors,
        );
        errors.finish(valid)
    }
}

impl TryFrom<UpdateStore> for ValidUpdate {
    type Error = ValidationErrors;

    fn try_from(request: UpdateStore) -> Result<Self, Self::Error> {
        request.validate()
    }
}

/// An update that passed validation. It can only be made by validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidUpdate {
    /// The cleaned new name.
    name: Option<String>,
    /// The requested status (its transition is checked against the store,
    /// by [`Store::apply`](crate::Store::apply)).
    status: Option<StoreStatus>,
    /// The cleaned new config.
    config: Option<Map<String, Value>>,
    /// The new secrets.
    secrets: Option<Secrets>,
    /// The version the update is based on.
    expected_version: Option<i32>,
}

impl ValidUpdate {
    /// Reads and validates an update body given as JSON, reporting every
    /// wrong member (unknown members, wrong types, an unknown status, a
    /// version out of range) and every rule of [`UpdateStore::validate`].
    /// Values are never quoted back.
    ///
    /// # Errors
    ///
    /// [`ValidationErrors`] listing every failing field.
    pub fn from_json(body: Value) -> Result<Self, ValidationErrors> {
        let mut errors = Collector::default();
        let known = ["name", "status", "config", "secrets", "version"];
        let valid = body::members(body, &known, &mut errors).and_then(|mut map| {
            let fields = Fields {
                name: body::string(&mut map, "name", false, &mut errors),
                status: body::status(&mut map, &mut errors),
                config: body::object(&mut map, "config", &mut errors),
                secrets: body::secrets(&mut map, &mut errors),
                version: body::version(&mut map, &mut errors),
            };
            check(fields, &mut errors)
        });
        errors.finish(valid)
    }

    /// Sets the expected version from elsewhere (an `If-Match` header),
    /// replacing the body's.
    #[must_use]
    pub const fn with_expected_version(mut self, version: i32) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// The cleaned new name.
    #[must_use]
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The requested status.
    #[must_use]
    pub const fn status(&self) -> Option<StoreStatus> {
        self.status
    }

    /// The cleaned new config.
    #[must_use]
    pub const fn config(&self) -> Option<&Map<String, Value>> {
        self.config.as_ref()
    }

    /// The new secrets.
    #[must_use]
    pub const fn secrets(&self) -> Option<&Secrets> {
        self.secrets.as_ref()
    }

    /// The version the update is based on, from the body or
    /// [`with_expected_version`](Self::with_expected_version). `None` means
    /// the request must be refused as `PRECONDITION_REQUIRED`.
    #[must_use]
    pub const fn expected_version(&self) -> Option<i32> {
        self.expected_version
    }
}

/// The members of an update, as read.
struct Fields {
    /// `name`.
    name: Option<String>,
    /// `status`.
    status: Option<StoreStatus>,
    /// `config`.
    config: Option<Map<String, Value>>,
    /// `secrets`.
    secrets: Option<Secrets>,
    /// `version`.
    version: Option<i32>,
}

/// The field checks of an update; `None` when any failed (the errors are
/// in `errors`).
fn check(fields: Fields, errors: &mut Collector) -> Option<ValidUpdate> {
    let changes_something = fields.name.is_some()
        || fields.status.is_some()
        || fields.config.is_some()
        || fields.secrets.is_some();
    // A member that was present but of the wrong type already has its
    // error; "no fields" would only repeat it.
    if !changes_something && errors.is_empty() {
        errors.push(FieldError::new(
            "",
            "",
            FieldErrorCode::NoFields,
            "an update must change at least one of name, status, config, secrets",
        ));
    }
    let name = fields
        .name
        .and_then(|name| rules::check_name(&name).map_err(|e| errors.push(e)).ok());
    let config = fields
        .config
        .and_then(|config| rules::check_config(config).map_err(|e| errors.push(e)).ok());
    let secrets = fields.secrets.and_then(|secrets| {
        rules::check_secrets(secrets)
            .map_err(|e| errors.extend(e))
            .ok()
    });
    let expected_version = fields
        .version
        .and_then(|v| rules::check_version(v).map_err(|e| errors.push(e)).ok());
    if !errors.is_empty() {
        return None;
    }
    Some(ValidUpdate {
        name,
        status: fields.status,
        config,
        secrets,
        expected_version,
    })
}
