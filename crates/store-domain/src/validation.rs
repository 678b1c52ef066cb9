//! [`ValidationErrors`]: every failing field of a request, each with a
//! stable code and a message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One failing field, as listed in a problem body's `errors` member.
///
/// `code` and `field` are for programs, `message` for people. Messages never
/// repeat the submitted value (a secret stays secret even when it is
/// refused); they name the field and the rule.
///
/// The members are plain strings so that a client built against this
/// version still reads codes added later; [`kind`](Self::kind) parses the
/// ones it knows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// The top-level member of the request body (`name`, `status`,
    /// `config`, `secrets`, `version`), a query parameter (`limit`,
    /// `cursor`), an unknown member's name, or `""` for the body as a whole.
    pub field: String,
    /// Where exactly, as a JSON pointer (RFC 6901) into the request body:
    /// `/name`, `/config/a/b`, `/secrets/WIFI_PASSWORD`; `""` for the whole
    /// body, and for a query parameter (which is not in the body).
    #[serde(default)]
    pub pointer: String,
    /// A stable, `snake_case` code: one of [`FieldErrorCode`]'s names.
    pub code: String,
    /// A sentence saying which rule was broken.
    pub message: String,
}

impl FieldError {
    /// A field error with a known code.
    #[must_use]
    pub fn new(
        field: impl Into<String>,
        pointer: impl Into<String>,
        code: FieldErrorCode,
        message: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            pointer: pointer.into(),
            code: code.as_str().to_owned(),
            message: message.into(),
        }
    }

    /// The code, if this version of the crate knows it.
    #[must_use]
    pub fn kind(&self) -> Option<FieldErrorCode> {
        FieldErrorCode::from_code(&self.code)
    }
}

/// The stable codes of [`FieldError::code`].
///
/// `#[non_exhaustive]`: later versions may add codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FieldErrorCode {
    /// A required member is missing (`name` on create).
    Required,
    /// The member has the wrong JSON type (`"name": 5`, `"config": []`).
    InvalidType,
    /// A string that is not one of the accepted values (an unknown status, a
    /// cursor that does not decode, a limit that is not a number).
    InvalidValue,
    /// The body has a member this API does not know.
    UnknownField,
    /// An update that names no field to change.
    NoFields,
    /// Text shorter than allowed after cleaning (a name that is only markup
    /// is empty).
    TooShort,
    /// Text longer than allowed after cleaning, or too large before it.
    TooLong,
    /// A secret value that is the empty string.
    Empty,
    /// A number outside its range (`version` below 1, `limit` outside
    /// 1..=200).
    OutOfRange,
    /// A secret's key name outside `[A-Za-z0-9_.-]{1,64}`.
    InvalidKey,
    /// An object with more keys than allowed (`secrets`, or an object in
    /// `config`).
    TooManyKeys,
    /// `config` nests deeper than allowed.
    TooDeep,
    /// `config` is larger than allowed.
    TooLarge,
    /// An array in `config` has more elements than allowed.
    ArrayTooLong,
    /// A key in `config` is longer than allowed.
    KeyTooLong,
    /// Two keys of one object in `config` clean to the same key.
    KeyCollision,
    /// A `config` value refused for a reason this crate does not name more
    /// precisely.
    Invalid,
}

impl FieldErrorCode {
    /// Every code.
    pub const ALL: [Self; 17] = [
        Self::Required,
        Self::InvalidType,
        Self::InvalidValue,
        Self::UnknownField,
        Self::NoFields,
        Self::TooShort,
        Self::TooLong,
        Self::Empty,
        Self::OutOfRange,
        Self::InvalidKey,
        Self::TooManyKeys,
        Self::TooDeep,
        Self::TooLarge,
        Self::ArrayTooLong,
        Self::KeyTooLong,
        Self::KeyCollision,
        Self::Invalid,
    ];

    /// The wire name, in `snake_case`. These strings do not change between
    /// versions.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Required => "required",
            Self::InvalidType => "invalid_type",
            Self::InvalidValue => "invalid_value",
            Self::UnknownField => "unknown_field",
            Self::NoFields => "no_fields",
            Self::TooShort => "too_short",
            Self::TooLong => "too_long",
            Self::Empty => "empty",
            Self::OutOfRange => "out_of_range",
            Self::InvalidKey => "invalid_key",
            Self::TooManyKeys => "too_many_keys",
            Self::TooDeep => "too_deep",
            Self::TooLarge => "too_large",
            Self::ArrayTooLong => "array_too_long",
            Self::KeyTooLong => "key_too_long",
            Self::KeyCollision => "key_collision",
            Self::Invalid => "invalid",
        }
    }

    /// Parses a wire name.
    #[must_use]
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

impl fmt::Display for FieldErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused request: every failing field, in a stable order (body-level
/// errors, then `name`, `status`, `config`, `secrets`, `version`, then
/// unknown members and query parameters), each with a code and a message.
///
/// The API code is `VALIDATION_ERROR` (HTTP 400); see
/// [`Problem::validation`](crate::Problem::validation). Not retryable: the
/// same input is refused the same way every time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    /// The failing fields; never empty.
    errors: Vec<FieldError>,
}

impl ValidationErrors {
    /// Errors from a list, sorted into the stable order. `None` when the list
    /// is empty.
    pub(crate) fn from_list(mut errors: Vec<FieldError>) -> Option<Self> {
        if errors.is_empty() {
            return None;
        }
        // A stable sort: several errors of one field keep the order in which
        // the rules found them.
        errors.sort_by(|a, b| {
            field_rank(&a.field)
                .cmp(&field_rank(&b.field))
                .then_with(|| a.pointer.cmp(&b.pointer))
        });
        Some(Self { errors })
    }

    /// The failing fields (never empty).
    #[must_use]
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// The failing fields, by value.
    #[must_use]
    pub fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }

    /// Whether `field` failed with `code`.
    #[must_use]
    pub fn has(&self, field: &str, code: FieldErrorCode) -> bool {
        self.errors
            .iter()
            .any(|e| e.field == field && e.code == code.as_str())
    }

    /// Whether `field` failed at all.
    #[must_use]
    pub fn has_field(&self, field: &str) -> bool {
        self.errors.iter().any(|e| e.field == field)
    }

    /// Whether this error is worth retrying unchanged: never.
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        false
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid request: ")?;
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if error.field.is_empty() {
                write!(f, "{}", error.message)?;
            } else {
                write!(f, "{}: {}", error.pointer, error.message)?;
            }
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a ValidationErrors {
    type Item = &'a FieldError;
    type IntoIter = std::slice::Iter<'a, FieldError>;

    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

/// Where a field's errors go in the stable order.
fn field_rank(field: &str) -> u8 {
    match field {
        "" => 0,
        "name" => 1,
        "status" => 2,
        "config" => 3,
        "secrets" => 4,
        "version" => 5,
        "limit" => 6,
        "cursor" => 7,
        _ => 8,
    }
}

/// Collects field errors while a request is checked.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    /// What was found so far.
    errors: Vec<FieldError>,
}

impl Collector {
    /// Adds one error.
    pub(crate) fn push(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    /// Adds several errors.
    pub(crate) fn extend(&mut self, errors: impl IntoIterator<Item = FieldError>) {
        self.errors.extend(errors);
    }

    /// `value` if nothing failed, else every error.
    ///
    /// The checks return `None` only after recording why; should one ever
    /// not, the request is still refused, with a body-level `invalid` error.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, ValidationErrors> {
        match (value, ValidationErrors::from_list(self.errors)) {
            (Some(value), None) => Ok(value),
            (_, Some(errors)) => Err(errors),
            (None, None) => Err(ValidationErrors {
                errors: vec![FieldError::new(
                    "",
                    "",
                    FieldErrorCode::Invalid,
                    "the request is invalid",
                )],
            }),
        }
    }

    /// Whether anything failed.
    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for code in FieldErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert_eq!(FieldErrorCode::from_code(code.as_str()), Some(code));
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_')
            );
        }
        assert_eq!(FieldErrorCode::from_code("nope"), None);
    }

    #[test]
    fn errors_are_sorted_by_field_then_pointer() {
        let e = |field: &str, pointer: &str| {
            FieldError::new(field, pointer, FieldErrorCode::Invalid, "x")
        };
        let errors = ValidationErrors::from_list(vec![
            e("zzz", "/zzz"),
            e("secrets", "/secrets/b"),
            e("name", "/name"),
            e("secrets", "/secrets/a"),
            e("", ""),
        ])
        .unwrap();
        let order: Vec<&str> = errors.errors().iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(order, ["", "/name", "/secrets/a", "/secrets/b", "/zzz"]);
        assert!(ValidationErrors::from_list(Vec::new()).is_none());
    }

    #[test]
    fn display_lists_each_field() {
        let errors = ValidationErrors::from_list(vec![
            FieldError::new("name", "/name", FieldErrorCode::TooShort, "too short"),
            FieldError::new("", "", FieldErrorCode::NoFields, "nothing to change"),
        ])
        .unwrap();
        assert_eq!(
            errors.to_string(),
            "invalid request: nothing to change; /name: too short"
        );
        assert!(errors.has("name", FieldErrorCode::TooShort));
        assert!(!errors.has("name", FieldErrorCode::TooLong));
        assert!(errors.has_field(""));
        assert!(!errors.is_retryable());
    }

    #[test]
    fn field_error_json_shape() {
        let error = FieldError::new("name", "/name", FieldErrorCode::TooShort, "m");
        assert_eq!(
            serde_json::to_value(&error).unwrap(),
            serde_json::json!({"field": "name", "pointer": "/name", "code": "too_short", "message": "m"})
        );
        let unknown: FieldError =
            serde_json::from_str(r#"{"field":"x","code":"brand_new","message":"m"}"#).unwrap();
        assert_eq!(unknown.kind(), None);
        assert_eq!(unknown.pointer, "");
        assert_eq!(error.kind(), Some(FieldErrorCode::TooShort));
    }
}
