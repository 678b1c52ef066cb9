//! The checks of each request field: `sanitize` cleans, then `validator`
//! rules run on the cleaned value. Shared by the typed path
//! ([`CreateStore::validate`](crate::CreateStore::validate)) and the JSON path
//! ([`ValidCreate::from_json`](crate::ValidCreate::from_json)).

use std::collections::BTreeMap;

use sanitize::{SanitizeError, clean_json, clean_text};
use serde_json::{Map, Value};
use validator::{Validate, ValidationError};

use crate::Secrets;
use crate::limits::{
    NAME_MAX_CHARS, NAME_MIN_CHARS, SECRET_KEY_MAX_CHARS, SECRET_VALUE_MAX_CHARS, SECRETS_MAX_KEYS,
    config_policy, is_valid_secret_key, name_policy,
};
use crate::validation::{FieldError, FieldErrorCode};

/// The `validator` rule of a cleaned name.
#[derive(Validate)]
struct NameRule<'a> {
    /// The name after `sanitize::clean_text`.
    #[validate(length(min = NAME_MIN_CHARS, max = NAME_MAX_CHARS))]
    name: &'a str,
}

/// The `validator` rule of the set of secrets.
#[derive(Validate)]
struct SecretsRule<'a> {
    /// All secrets of the request.
    #[validate(length(max = SECRETS_MAX_KEYS))]
    secrets: &'a BTreeMap<String, String>,
}

/// The `validator` rules of one secret.
#[derive(Validate)]
struct SecretRule<'a> {
    /// The key name.
    #[validate(custom(function = "secret_key_rule"))]
    key: &'a str,
    /// The value, verbatim.
    #[validate(length(min = 1, max = SECRET_VALUE_MAX_CHARS))]
    value: &'a str,
}

/// The `validator` rule of an expected version.
#[derive(Validate)]
struct VersionRule {
    /// The version the client last saw.
    #[validate(range(min = 1))]
    version: i32,
}

/// `validator` custom rule: [`is_valid_secret_key`].
fn secret_key_rule(key: &str) -> Result<(), ValidationError> {
    if is_valid_secret_key(key) {
        Ok(())
    } else {
        Err(ValidationError::new("invalid_key"))
    }
}

/// The message of every name length error.
fn name_length_message(actual: usize) -> String {
    format!(
        "name must be {NAME_MIN_CHARS} to {NAME_MAX_CHARS} characters long once markup and \
         surrounding spaces are removed; it has {actual}"
    )
}

/// Cleans and checks a store name.
pub(crate) fn check_name(raw: &str) -> Result<String, FieldError> {
    let error = |code, message| FieldError::new("name", "/name", code, message);
    let cleaned = match clean_text(raw, &name_policy()) {
        Ok(cleaned) => cleaned,
        Err(SanitizeError::InputTooLarge { max, .. }) => {
            return Err(error(
                FieldErrorCode::TooLong,
                format!(
                    "name must be {NAME_MIN_CHARS} to {NAME_MAX_CHARS} characters long; \
                     more than {max} bytes are refused before cleaning"
                ),
            ));
        }
        Err(other) => {
            return Err(error(
                sanitize_code(&other),
                format!("name is invalid: {other}"),
            ));
        }
    };
    match (NameRule { name: &cleaned }).validate() {
        Ok(()) => Ok(cleaned),
        Err(_) => {
            let actual = cleaned.chars().count();
            let code = if (actual as u64) < NAME_MIN_CHARS {
                FieldErrorCode::TooShort
            } else {
                FieldErrorCode::TooLong
            };
            Err(error(code, name_length_message(actual)))
        }
    }
}

/// Cleans and checks `config`.
pub(crate) fn check_config(config: Map<String, Value>) -> Result<Map<String, Value>, FieldError> {
    match clean_json(Value::Object(config), &config_policy()) {
        Ok(Value::Object(cleaned)) => Ok(cleaned),
        // `clean_json` keeps the kind of its input; this arm is never taken.
        Ok(_) => Err(FieldError::new(
            "config",
            "/config",
            FieldErrorCode::InvalidType,
            "config must be a JSON object",
        )),
        Err(error) => {
            let pointer = format!("/config{}", sanitize_pointer(&error));
            Err(FieldError::new(
                "config",
                pointer,
                sanitize_code(&error),
                format!("config: {error}"),
            ))
        }
    }
}

/// Checks secrets: how many, each key name, each value. Values are never
/// cleaned or quoted.
pub(crate) fn check_secrets(secrets: Secrets) -> Result<Secrets, Vec<FieldError>> {
    let map = secrets.into_inner();
    let mut errors = Vec::new();
    if (SecretsRule { secrets: &map }).validate().is_err() {
        errors.push(FieldError::new(
            "secrets",
            "/secrets",
            FieldErrorCode::TooManyKeys,
            format!(
                "at most {SECRETS_MAX_KEYS} secrets are allowed; {} were sent",
                map.len()
            ),
        ));
    }
    let mut bad_keys = 0_usize;
    for (key, value) in &map {
        let Err(failed) = (SecretRule { key, value }).validate() else {
            continue;
        };
        let fields = failed.field_errors();
        if fields.contains_key("key") {
            // An invalid key name is not repeated, not even in a pointer.
            bad_keys += 1;
            continue;
        }
        if fields.contains_key("value") {
            let (code, message) = if value.is_empty() {
                (
                    FieldErrorCode::Empty,
                    format!("secret {key} must not be empty"),
                )
            } else {
                (
                    FieldErrorCode::TooLong,
                    format!(
                        "secret {key} must be at most {SECRET_VALUE_MAX_CHARS} characters long"
                    ),
                )
            };
            errors.push(FieldError::new(
                "secrets",
                format!("/secrets/{key}"),
                code,
                message,
            ));
        }
    }
    if bad_keys > 0 {
        errors.push(FieldError::new(
            "secrets",
            "/secrets",
            FieldErrorCode::InvalidKey,
            format!(
                "{bad_keys} secret key name(s) invalid: a key name is 1 to \
                 {SECRET_KEY_MAX_CHARS} characters of A-Z, a-z, 0-9, '_', '.' and '-'"
            ),
        ));
    }
    if errors.is_empty() {
        Ok(Secrets::from(map))
    } else {
        Err(errors)
    }
}

/// Checks an expected version.
pub(crate) fn check_version(version: i32) -> Result<i32, FieldError> {
    match (VersionRule { version }).validate() {
        Ok(()) => Ok(version),
        Err(_) => Err(FieldError::new(
            "version",
            "/version",
            FieldErrorCode::OutOfRange,
            "version must be a whole number of at least 1 (the version you last read)",
        )),
    }
}

/// The field error code for a `sanitize` refusal.
fn sanitize_code(error: &SanitizeError) -> FieldErrorCode {
    match error {
        SanitizeError::InputTooLarge { .. } | SanitizeError::TooLong { .. } => {
            FieldErrorCode::TooLong
        }
        SanitizeError::TooShort { .. } => FieldErrorCode::TooShort,
        SanitizeError::KeyTooLong { .. } => FieldErrorCode::KeyTooLong,
        SanitizeError::TooDeep { .. } => FieldErrorCode::TooDeep,
        SanitizeError::TooManyKeys { .. } => FieldErrorCode::TooManyKeys,
        SanitizeError::ArrayTooLong { .. } => FieldErrorCode::ArrayTooLong,
        SanitizeError::DocumentTooLarge { .. } | SanitizeError::TooLarge { .. } => {
            FieldErrorCode::TooLarge
        }
        SanitizeError::KeyCollision { .. } => FieldErrorCode::KeyCollision,
        _ => FieldErrorCode::Invalid,
    }
}

/// The JSON pointer (inside the cleaned document) a `sanitize` refusal names.
fn sanitize_pointer(error: &SanitizeError) -> &str {
    match error {
        SanitizeError::InputTooLarge { field: path, .. }
        | SanitizeError::TooLong { field: path, .. }
        | SanitizeError::TooShort { field: path, .. }
        | SanitizeError::KeyTooLong { path, .. }
        | SanitizeError::TooDeep { path, .. }
        | SanitizeError::TooManyKeys { path, .. }
        | SanitizeError::ArrayTooLong { path, .. }
        | SanitizeError::TooLarge { path, .. }
        | SanitizeError::ForbiddenKey { path, .. }
        | SanitizeError::KeyCollision { path, .. } => path,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn name_code(raw: &str) -> Result<String, &'static str> {
        check_name(raw).map_err(|e| FieldErrorCode::from_code(&e.code).unwrap().as_str())
    }

    #[test]
    fn name_is_cleaned_then_measured() {
        // (input, expected)
        let cases: [(&str, Result<&str, &str>); 9] = [
            ("Corner Shop", Ok("Corner Shop")),
            ("   Corner Shop  ", Ok("Corner Shop")),
            ("abc", Ok("abc")),
            ("ab", Err("too_short")),
            ("  ab  ", Err("too_short")),
            ("<b>ab</b>", Err("too_short")),
            ("<script>alert(1)</script>", Err("too_short")),
            ("<i>Bob</i>'s", Ok("Bob's")),
            ("", Err("too_short")),
        ];
        for (input, expected) in cases {
            assert_eq!(name_code(input), expected.map(str::to_owned), "{input:?}");
        }
    }

    #[test]
    fn name_bounds_are_in_characters() {
        let hundred = "é".repeat(100);
        assert_eq!(name_code(&hundred), Ok(hundred.clone()));
        assert_eq!(name_code(&"é".repeat(101)), Err("too_long"));
        // 100 characters of text inside markup count as 100.
        assert_eq!(
            name_code(&format!("<p>{}</p>", "x".repeat(100))),
            Ok("x".repeat(100))
        );
        // Past the raw bound, refused before cleaning.
        assert_eq!(name_code(&"x".repeat(10_000)), Err("too_long"));
    }

    #[test]
    fn name_messages_give_counts_not_input() {
        let err = check_name("<b>zq</b>").unwrap_err();
        assert_eq!(err.field, "name");
        assert_eq!(err.pointer, "/name");
        assert!(err.message.ends_with("it has 2"), "{}", err.message);
        assert!(!err.message.contains("zq"));
    }

    #[test]
    fn config_is_cleaned() {
        let Value::Object(config) = json!({
            "title": "<b>Hi</b>",
            "__proto__": {"admin": true},
            "nested": [{"constructor": {"x": 1}, "ok": "line\nbreak"}]
        }) else {
            unreachable!()
        };
        let cleaned = check_config(config).unwrap();
        assert_eq!(
            Value::Object(cleaned),
            json!({"title": "Hi", "nested": [{"ok": "line\nbreak"}]})
        );
    }

    #[test]
    fn config_errors_point_into_config() {
        let mut deep = json!(1);
        for _ in 0..20 {
            deep = json!({ "d": deep });
        }
        let Value::Object(config) = deep else {
            unreachable!()
        };
        let err = check_config(config).unwrap_err();
        assert_eq!(err.code, "too_deep");
        assert_eq!(err.field, "config");
        assert!(err.pointer.starts_with("/config/d/d/"), "{}", err.pointer);

        let Value::Object(config) = json!({"long": "x".repeat(3000)}) else {
            unreachable!()
        };
        let err = check_config(config).unwrap_err();
        assert_eq!(
            (err.code.as_str(), err.pointer.as_str()),
            ("too_long", "/config/long")
        );
    }

    #[test]
    fn secrets_rules() {
        let ok = Secrets::new()
            .with("WIFI", "p<ss>&word ")
            .with("API.key-1", "x");
        assert_eq!(check_secrets(ok.clone()), Ok(ok));

        let bad = Secrets::new()
            .with("EMPTY", "")
            .with("LONG", "x".repeat(4097))
            .with("bad key", "hunter2")
            .with("also/bad", "hunter3");
        let errors = check_secrets(bad).unwrap_err();
        let got: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.pointer.as_str(), e.code.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("/secrets/EMPTY", "empty"),
                ("/secrets/LONG", "too_long"),
                ("/secrets", "invalid_key")
            ]
        );
        for error in &errors {
            assert!(!error.message.contains("hunter"), "{}", error.message);
            assert!(!error.message.contains("bad key"), "{}", error.message);
        }
    }

    #[test]
    fn at_most_32_secrets() {
        let secrets: Secrets = (0..33).map(|i| (format!("K{i}"), "v")).collect();
        let errors = check_secrets(secrets).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].code, "too_many_keys");
        let secrets: Secrets = (0..32).map(|i| (format!("K{i}"), "v")).collect();
        assert!(check_secrets(secrets).is_ok());
    }

    #[test]
    fn version_is_positive() {
        assert_eq!(check_version(1), Ok(1));
        assert_eq!(check_version(i32::MAX), Ok(i32::MAX));
        for bad in [0, -1, i32::MIN] {
            assert_eq!(check_version(bad).unwrap_err().code, "out_of_range");
        }
    }
}
