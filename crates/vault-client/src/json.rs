//! Reading fields out of Vault's JSON answers.
//!
//! Fields are read by JSON pointer with an explicit type, and a missing or
//! mistyped field is [`Error::MissingField`] naming the pointer only. (serde's
//! own messages quote the offending value, which may be a secret, so they are
//! never used on answers.)

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The longest TTL the client believes from a server: 10 years. Longer
/// TTLs are treated as this long (no Vault default comes near it).
pub(crate) const MAX_TTL: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// `seconds` as a TTL, capped at [`MAX_TTL`].
pub(crate) fn capped_ttl(seconds: u64) -> Duration {
    Duration::from_secs(seconds.min(MAX_TTL.as_secs()))
}

/// `now + ttl`, never overflowing: the TTL is capped at [`MAX_TTL`] and, if
/// even that does not fit, the result saturates at `now + MAX_TTL` or `now`.
pub(crate) fn instant_after(now: tokio::time::Instant, ttl: Duration) -> tokio::time::Instant {
    now.checked_add(ttl.min(MAX_TTL)).unwrap_or(now)
}

/// `now + ttl` on the wall clock, never overflowing (see [`instant_after`]).
pub(crate) fn system_time_after(
    now: std::time::SystemTime,
    ttl: Duration,
) -> std::time::SystemTime {
    now.checked_add(ttl.min(MAX_TTL)).unwrap_or(now)
}

/// A parsed answer and the path it came from, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Answer<'a> {
    /// The API path.
    pub(crate) path: &'a str,
    /// The whole JSON body.
    pub(crate) body: &'a Value,
}

impl<'a> Answer<'a> {
    pub(crate) fn new(path: &'a str, body: &'a Value) -> Self {
        Answer { path, body }
    }

    fn missing(&self, field: &str, expected: &'static str) -> Error {
        Error::MissingField {
            path: self.path.to_owned(),
            field: field.to_owned(),
            expected,
        }
    }

    pub(crate) fn str(&self, pointer: &str) -> Result<&'a str> {
        self.body
            .pointer(pointer)
            .and_then(Value::as_str)
            .ok_or_else(|| self.missing(pointer, "a string"))
    }

    pub(crate) fn opt_str(&self, pointer: &str) -> Result<Option<&'a str>> {
        match self.body.pointer(pointer) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.missing(pointer, "a string")),
        }
    }

    pub(crate) fn u64(&self, pointer: &str) -> Result<u64> {
        self.body
            .pointer(pointer)
            .and_then(Value::as_u64)
            .ok_or_else(|| self.missing(pointer, "a non-negative integer"))
    }

    /// A TTL in seconds, capped at [`MAX_TTL`] so that a hostile or broken
    /// server cannot make later `Instant`/`SystemTime` arithmetic overflow.
    pub(crate) fn ttl(&self, pointer: &str) -> Result<Duration> {
        Ok(capped_ttl(self.u64(pointer)?))
    }

    pub(crate) fn opt_u64(&self, pointer: &str) -> Result<Option<u64>> {
        match self.body.pointer(pointer) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.missing(pointer, "a non-negative integer")),
        }
    }

    pub(crate) fn bool(&self, pointer: &str) -> Result<bool> {
        self.body
            .pointer(pointer)
            .and_then(Value::as_bool)
            .ok_or_else(|| self.missing(pointer, "a boolean"))
    }

    pub(crate) fn opt_bool(&self, pointer: &str) -> Result<Option<bool>> {
        match self.body.pointer(pointer) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.missing(pointer, "a boolean")),
        }
    }

    pub(crate) fn object(&self, pointer: &str) -> Result<&'a Map<String, Value>> {
        self.body
            .pointer(pointer)
            .and_then(Value::as_object)
            .ok_or_else(|| self.missing(pointer, "an object"))
    }

    pub(crate) fn array(&self, pointer: &str) -> Result<&'a Vec<Value>> {
        self.body
            .pointer(pointer)
            .and_then(Value::as_array)
            .ok_or_else(|| self.missing(pointer, "an array"))
    }

    /// A list of strings (e.g. `data.keys` of a LIST).
    pub(crate) fn strings(&self, pointer: &str) -> Result<Vec<String>> {
        self.array(pointer)?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| self.missing(pointer, "an array of strings"))
            })
            .collect()
    }

    /// A string map of strings (e.g. `custom_metadata`); null is empty.
    pub(crate) fn string_map(
        &self,
        pointer: &str,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        match self.body.pointer(pointer) {
            None | Some(Value::Null) => Ok(Default::default()),
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    v.as_str()
                        .map(|s| (k.clone(), s.to_owned()))
                        .ok_or_else(|| self.missing(pointer, "an object of strings"))
                })
                .collect(),
            Some(_) => Err(self.missing(pointer, "an object of strings")),
        }
    }
}

/// Parses a body as JSON; an empty body is `None`.
pub(crate) fn parse(path: &str, bytes: &[u8]) -> Result<Option<Value>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| Error::Decode {
            path: path.to_owned(),
            // Category, line and column only: never the content.
            reason: format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ),
        })
}

/// Vault's `errors` list from an error body, each truncated, at most 8.
pub(crate) fn error_strings(body: Option<&Value>) -> Vec<String> {
    body.and_then(|b| b.get("errors"))
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .take(8)
                .filter_map(Value::as_str)
                .map(|s| {
                    let mut s: String = s.chars().take(300).collect();
                    s.retain(|c| !c.is_control() || c == ' ');
                    s
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn missing_and_mistyped_fields_name_the_field_not_the_value() {
        let body = json!({ "data": { "password": "hunter2", "ttl": "soon" } });
        let answer = Answer::new("database/creds/app", &body);
        assert_eq!(answer.str("/data/password").unwrap(), "hunter2");
        let err = answer.u64("/data/password").unwrap_err();
        assert!(matches!(err, Error::MissingField { .. }));
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(answer.str("/data/username").is_err());
        assert_eq!(answer.opt_u64("/data/nope").unwrap(), None);
        assert!(answer.opt_u64("/data/ttl").is_err());
        assert!(answer.object("/data/password").is_err());
    }

    #[test]
    fn malformed_json_is_a_decode_error_without_content() {
        for body in [
            &b"{\"data\": {\"password\": \"hunter2\""[..],
            b"<html>hunter2</html>",
            b"\xff\xfe",
            b"{\"a\":1}}",
        ] {
            let err = parse("kv/data/x", body).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        assert_eq!(parse("x", b"  \n").unwrap(), None);
        assert!(parse("x", b"{}").unwrap().is_some());
    }

    #[test]
    fn error_strings_are_bounded() {
        let long = "x".repeat(1000);
        let body = json!({ "errors": [long, 5, "permission denied"] });
        let errors = error_strings(Some(&body));
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].len(), 300);
        assert_eq!(error_strings(None), Vec::<String>::new());
    }
}
