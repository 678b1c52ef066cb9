//! Secret values: wrapped so that `Debug` never shows them, and wiped from
//! memory when dropped.
//!
//! Strings (tokens, passwords, secret ids) are [`SecretString`] and bytes
//! (Transit plaintext, data keys) are [`SecretBytes`], both from the
//! [`secrecy`] crate: their `Debug` prints `[REDACTED]`, they have no
//! `Display`, and reading them takes an explicit
//! [`expose_secret`](ExposeSecret::expose_secret). Secret maps (KV data) are
//! [`SecretData`].

use std::fmt;

use secrecy::zeroize::Zeroize;
pub use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

/// Secret bytes (Transit plaintext and data keys): `Debug` prints
/// `[REDACTED]`, zeroed on drop.
pub type SecretBytes = secrecy::SecretSlice<u8>;

/// The data of a KV secret: a JSON object whose values are secret.
///
/// `Debug` shows the field names only. The values are wiped from memory on
/// drop. Read them with [`SecretData::get_str`] or [`SecretData::expose`].
///
/// ```
/// use vault_client::SecretData;
///
/// let data = SecretData::from_value(serde_json::json!({ "password": "s3cret" }))?;
/// assert_eq!(data.get_str("password"), Some("s3cret"));
/// assert!(!format!("{data:?}").contains("s3cret"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct SecretData {
    /// The fields.
    map: Map<String, Value>,
}

impl SecretData {
    /// Wraps a JSON object.
    pub fn new(map: Map<String, Value>) -> Self {
        SecretData { map }
    }

    /// Wraps a JSON value, which must be an object.
    pub fn from_value(value: Value) -> Result<Self, crate::Error> {
        match value {
            Value::Object(map) => Ok(SecretData { map }),
            _ => Err(crate::Error::InvalidArgument(
                "secret data must be a JSON object".into(),
            )),
        }
    }

    /// A string field.
    pub fn get_str(&self, field: &str) -> Option<&str> {
        self.map.get(field).and_then(Value::as_str)
    }

    /// A field of any JSON type.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.map.get(field)
    }

    /// The field names.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The whole object. Don't log it.
    pub fn expose(&self) -> &Map<String, Value> {
        &self.map
    }

    /// Inserts a field (for building data to write).
    pub fn insert(&mut self, field: impl Into<String>, value: impl Into<Value>) {
        self.map.insert(field.into(), value.into());
    }
}

impl fmt::Debug for SecretData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretData")
            .field("fields", &self.map.keys().collect::<Vec<_>>())
            .field("values", &"[REDACTED]")
            .finish()
    }
}

impl From<Map<String, Value>> for SecretData {
    fn from(map: Map<String, Value>) -> Self {
        SecretData::new(map)
    }
}

impl Zeroize for SecretData {
    fn zeroize(&mut self) {
        fn wipe(value: &mut Value) {
            match value {
                Value::String(s) => s.zeroize(),
                Value::Array(items) => items.iter_mut().for_each(wipe),
                Value::Object(map) => map.values_mut().for_each(wipe),
                _ => {}
            }
        }
        self.map.values_mut().for_each(wipe);
        self.map.clear();
    }
}

impl Drop for SecretData {
    fn drop(&mut self) {
        self.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_names_not_values() {
        let mut data = SecretData::default();
        data.insert("password", "hunter2");
        data.insert("nested", serde_json::json!({ "k": ["hunter3"] }));
        let shown = format!("{data:?} {data:#?}");
        assert!(shown.contains("password"));
        assert!(!shown.contains("hunter"), "{shown}");
        let token = SecretString::from("s.abcdef".to_owned());
        assert!(!format!("{token:?}").contains("abcdef"));
        let bytes = SecretBytes::from(b"plaintext".to_vec());
        assert!(!format!("{bytes:?}").contains("112"));
    }

    #[test]
    fn zeroize_wipes_every_string() {
        let mut data = SecretData::from_value(serde_json::json!({
            "a": "x", "b": { "c": ["y"] }
        }))
        .unwrap();
        data.zeroize();
        assert!(data.is_empty());
        assert!(SecretData::from_value(serde_json::json!([1])).is_err());
    }
}
