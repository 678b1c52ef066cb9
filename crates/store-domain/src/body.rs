//! Reading a request body given as a `serde_json::Value`, member by member,
//! so that every wrong member is reported (not only the first, as
//! `Deserialize` does) and no value is ever quoted back.

use serde_json::{Map, Value};

use crate::limits::is_valid_secret_key;
use crate::secrets::NotStrings;
use crate::validation::{Collector, FieldError, FieldErrorCode};
use crate::{Secrets, StoreStatus};

/// How many characters of an unknown member's name an error shows.
const SHOWN_KEY_CHARS: usize = 64;

/// The members of a body object, once unknown ones are reported and removed.
/// `None` when the body is not an object.
pub(crate) fn members(
    body: Value,
    known: &[&str],
    errors: &mut Collector,
) -> Option<Map<String, Value>> {
    let mut map = match body {
        Value::Object(map) => map,
        other => {
            discard(other);
            errors.push(FieldError::new(
                "",
                "",
                FieldErrorCode::InvalidType,
                "the request body must be a JSON object",
            ));
            return None;
        }
    };
    let unknown: Vec<String> = map
        .keys()
        .filter(|key| !known.contains(&key.as_str()))
        .cloned()
        .collect();
    for key in unknown {
        if let Some(value) = map.remove(&key) {
            discard(value);
        }
        let shown: String = key.chars().take(SHOWN_KEY_CHARS).collect();
        errors.push(FieldError::new(
            shown,
            pointer_to(&key),
            FieldErrorCode::UnknownField,
            format!("unknown field; the fields are {}", known.join(", ")),
        ));
    }
    Some(map)
}

/// A string member. Missing or `null`: `None`, and a `required` error when
/// `required`.
pub(crate) fn string(
    map: &mut Map<String, Value>,
    key: &str,
    required: bool,
    errors: &mut Collector,
) -> Option<String> {
    match map.remove(key) {
        Some(Value::String(s)) => Some(s),
        None | Some(Value::Null) => {
            if required {
                errors.push(FieldError::new(
                    key,
                    pointer_to(key),
                    FieldErrorCode::Required,
                    format!("{key} is required"),
                ));
            }
            None
        }
        Some(other) => {
            discard(other);
            errors.push(wrong_type(key, "a string"));
            None
        }
    }
}

/// An object member; missing or `null` is `None`.
pub(crate) fn object(
    map: &mut Map<String, Value>,
    key: &str,
    errors: &mut Collector,
) -> Option<Map<String, Value>> {
    match map.remove(key)? {
        Value::Object(object) => Some(object),
        Value::Null => None,
        other => {
            discard(other);
            errors.push(wrong_type(key, "a JSON object"));
            None
        }
    }
}

/// The `secrets` member: an object of strings; missing or `null` is `None`.
pub(crate) fn secrets(map: &mut Map<String, Value>, errors: &mut Collector) -> Option<Secrets> {
    let value = map.remove("secrets")?;
    if value.is_null() {
        return None;
    }
    match Secrets::from_json(value) {
        Ok(secrets) => Some(secrets),
        Err(NotStrings::NotAnObject) => {
            errors.push(wrong_type("secrets", "an object of strings"));
            None
        }
        Err(NotStrings::Values(keys)) => {
            let mut unnamed = 0_usize;
            for key in keys {
                if is_valid_secret_key(&key) {
                    errors.push(FieldError::new(
                        "secrets",
                        format!("/secrets/{key}"),
                        FieldErrorCode::InvalidType,
                        format!("secret {key} must be a string"),
                    ));
                } else {
                    unnamed += 1;
                }
            }
            if unnamed > 0 {
                errors.push(FieldError::new(
                    "secrets",
                    "/secrets",
                    FieldErrorCode::InvalidType,
                    format!("{unnamed} secret value(s) with invalid key names are not strings"),
                ));
            }
            None
        }
    }
}

/// The `status` member; missing or `null` is `None`.
pub(crate) fn status(map: &mut Map<String, Value>, errors: &mut Collector) -> Option<StoreStatus> {
    match map.remove("status")? {
        Value::String(s) => match s.parse() {
            Ok(status) => Some(status),
            Err(_) => {
                errors.push(FieldError::new(
                    "status",
                    "/status",
                    FieldErrorCode::InvalidValue,
                    "status must be one of PROVISIONING, ACTIVE, DECOMMISSIONED",
                ));
                None
            }
        },
        Value::Null => None,
        other => {
            discard(other);
            errors.push(wrong_type("status", "a string"));
            None
        }
    }
}

/// The `version` member as an `i32` (the range rule is checked later);
/// missing or `null` is `None`.
pub(crate) fn version(map: &mut Map<String, Value>, errors: &mut Collector) -> Option<i32> {
    let out_of_range = |errors: &mut Collector| {
        errors.push(FieldError::new(
            "version",
            "/version",
            FieldErrorCode::OutOfRange,
            "version is out of range",
        ));
        None
    };
    match map.remove("version")? {
        Value::Number(n) => {
            if let Some(v) = n.as_i64() {
                i32::try_from(v).map_or_else(|_| out_of_range(errors), Some)
            } else if n.is_u64() {
                out_of_range(errors)
            } else if let Some(whole) = n.as_f64().filter(|f| f.fract() == 0.0) {
                // `3.0` is a whole number (JSON Schema's `integer`, which
                // the OpenAPI document states); its range is checked as
                // any other's.
                if (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&whole) {
                    #[allow(clippy::cast_possible_truncation)]
                    Some(whole as i32)
                } else {
                    out_of_range(errors)
                }
            } else {
                errors.push(wrong_type("version", "a whole number"));
                None
            }
        }
        Value::Null => None,
        other => {
            discard(other);
            errors.push(wrong_type("version", "a whole number"));
            None
        }
    }
}

/// Drops a JSON value without recursion, so that a value nested thousands
/// of levels deep (which only a program can build: `serde_json` refuses to
/// parse past 128 levels) cannot overflow the stack.
pub(crate) fn discard(value: Value) {
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// A member of the wrong JSON type.
fn wrong_type(key: &str, expected: &str) -> FieldError {
    FieldError::new(
        key,
        pointer_to(key),
        FieldErrorCode::InvalidType,
        format!("{key} must be {expected}"),
    )
}

/// The JSON pointer (RFC 6901) of a top-level member.
pub(crate) fn pointer_to(key: &str) -> String {
    let mut pointer = String::with_capacity(key.len() + 1);
    pointer.push('/');
    for c in key.chars() {
        match c {
            '~' => pointer.push_str("~0"),
            '/' => pointer.push_str("~1"),
            c => pointer.push(c),
        }
    }
    pointer
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn pointers_escape() {
        assert_eq!(pointer_to("name"), "/name");
        assert_eq!(pointer_to("a/b~c"), "/a~1b~0c");
        assert_eq!(pointer_to(""), "/");
    }

    #[test]
    fn unknown_members_are_listed_and_removed() {
        let mut errors = Collector::default();
        let long = "k".repeat(100);
        let map = members(
            json!({"name": "x", "admin": true, long.clone(): 1}),
            &["name"],
            &mut errors,
        )
        .unwrap();
        assert_eq!(map.len(), 1);
        let errors = errors.finish(Some(())).unwrap_err();
        assert!(errors.has("admin", FieldErrorCode::UnknownField));
        assert!(errors.has(&"k".repeat(64), FieldErrorCode::UnknownField));
    }

    #[test]
    fn versions() {
        let cases = [
            (json!(3), Some(3), None),
            (json!(null), None, None),
            (json!(-4), Some(-4), None),
            (json!(1.5), None, Some("invalid_type")),
            (json!(3.0), Some(3), None),
            (json!(-0.0), Some(0), None),
            (json!(1e10), None, Some("out_of_range")),
            (json!(-1e300), None, Some("out_of_range")),
            (json!("3"), None, Some("invalid_type")),
            (json!(4_000_000_000_u64), None, Some("out_of_range")),
            (json!(u64::MAX), None, Some("out_of_range")),
        ];
        for (value, expected, code) in cases {
            let mut errors = Collector::default();
            let mut map = Map::new();
            map.insert("version".into(), value.clone());
            assert_eq!(version(&mut map, &mut errors), expected, "{value}");
            let found = errors
                .finish(Some(()))
                .err()
                .map(|e| e.errors()[0].code.clone());
            assert_eq!(found.as_deref(), code, "{value}");
        }
    }
}
