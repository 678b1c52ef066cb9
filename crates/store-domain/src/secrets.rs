//! [`Secrets`]: a store's secret values by key name, never shown by `Debug`.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::body::discard;

/// A store's secrets: key name → value (API keys, Wi-Fi passwords).
///
/// Values are taken verbatim: no trimming, no HTML stripping (a password may
/// hold `<`). `Debug` shows the key names only, so a request logged with
/// `{:?}` does not leak them; `Serialize` writes the values (a client has to
/// send them), so never serialize this into a log.
///
/// Deserializing accepts only an object of strings, and its errors never
/// repeat the input (`"secrets": "hunter2"` is refused without quoting
/// `hunter2`). The rules on key names, value lengths and count are checked
/// by validation ([`CreateStore::validate`](crate::CreateStore::validate)),
/// not here.
#[derive(Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Secrets(BTreeMap<String, String>);

impl Secrets {
    /// No secrets.
    #[must_use]
    pub const fn new() -> Self {
        Self(BTreeMap::new())
    }

    /// Adds (or replaces) one secret, builder style.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(key.into(), value.into());
        self
    }

    /// Adds (or replaces) one secret; returns the value it replaced.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.0.insert(key.into(), value.into())
    }

    /// The value of one secret.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The key names, sorted.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.0.keys().map(String::as_str)
    }

    /// The key names, sorted, as owned strings (what
    /// [`Store::secret_keys`](crate::Store::secret_keys) holds).
    #[must_use]
    pub fn key_names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// Key name and value pairs, sorted by key.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many secrets.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The map inside.
    #[must_use]
    pub fn into_inner(self) -> BTreeMap<String, String> {
        self.0
    }

    /// Reads secrets from a JSON value without ever quoting a value: an
    /// object of strings, else the pointers (`/secrets/KEY`, or `/secrets`
    /// for the whole value) that are not strings.
    pub(crate) fn from_json(value: Value) -> Result<Self, NotStrings> {
        let map = match value {
            Value::Object(map) => map,
            other => {
                discard(other);
                return Err(NotStrings::NotAnObject);
            }
        };
        let mut secrets = BTreeMap::new();
        let mut wrong = Vec::new();
        for (key, value) in map {
            match value {
                Value::String(value) => {
                    secrets.insert(key, value);
                }
                other => {
                    discard(other);
                    wrong.push(key);
                }
            }
        }
        if wrong.is_empty() {
            Ok(Self(secrets))
        } else {
            Err(NotStrings::Values(wrong))
        }
    }
}

/// Why a JSON value is not an object of strings.
#[derive(Debug)]
pub(crate) enum NotStrings {
    /// Not an object at all.
    NotAnObject,
    /// The keys whose values are not strings.
    Values(Vec<String>),
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, Redacted)))
            .finish()
    }
}

/// Stands in for a secret value in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secrets {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through `Value`, so that a refusal is our message, not serde's
        // "invalid type: string \"hunter2\"".
        let value = Value::deserialize(deserializer)?;
        Self::from_json(value)
            .map_err(|_| D::Error::custom("secrets must be an object whose values are all strings"))
    }
}

impl From<BTreeMap<String, String>> for Secrets {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(map)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Secrets {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_keys_not_values() {
        let secrets = Secrets::new()
            .with("WIFI_PASSWORD", "hunter2")
            .with("API_KEY", "sk-live-123");
        let shown = format!("{secrets:?}");
        assert_eq!(
            shown,
            r#"{"API_KEY": <redacted>, "WIFI_PASSWORD": <redacted>}"#
        );
        assert!(!shown.contains("hunter2"));
        assert!(!format!("{secrets:#?}").contains("sk-live-123"));
    }

    #[test]
    fn serializes_values_for_the_wire() {
        let secrets: Secrets = [("A", "1"), ("B", "<b>x</b>")].into_iter().collect();
        assert_eq!(
            serde_json::to_string(&secrets).unwrap(),
            r#"{"A":"1","B":"<b>x</b>"}"#
        );
        let back: Secrets = serde_json::from_str(r#"{"A":"1","B":"<b>x</b>"}"#).unwrap();
        assert_eq!(back, secrets);
        assert_eq!(back.get("B"), Some("<b>x</b>"));
        assert_eq!(back.key_names(), ["A", "B"]);
    }

    #[test]
    fn deserialize_errors_never_quote_input() {
        for bad in [
            r#""hunter2""#,
            r#"["hunter2"]"#,
            r#"{"A": 12345678}"#,
            r#"{"A": {"nested": "hunter2"}}"#,
        ] {
            let err = serde_json::from_str::<Secrets>(bad)
                .unwrap_err()
                .to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(!err.contains("12345678"), "{err}");
            assert!(err.starts_with("secrets must be an object"), "{err}");
        }
    }

    #[test]
    fn from_json_names_non_string_keys() {
        let value = serde_json::json!({"A": "ok", "B": 1, "C": null});
        match Secrets::from_json(value) {
            Err(NotStrings::Values(keys)) => assert_eq!(keys, ["B", "C"]),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            Secrets::from_json(Value::Bool(true)),
            Err(NotStrings::NotAnObject)
        ));
    }
}
