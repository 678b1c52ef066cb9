//! Store secrets through Vault Transit: sealed (batch encrypt) before they
//! reach the database, opened (batch decrypt) only for
//! `GET /api/stores/{id}/secrets`. Only `vault:v<n>:...` ciphertext is
//! stored; plaintext is never logged.

use serde_json::{Map, Value};
use store_domain::Secrets;
use vault_client::{DecryptItem, EncryptItem, ExposeSecret, Transit};

use crate::problem::ApiError;

/// Seals and opens store secrets with one Transit key.
#[derive(Clone, Debug)]
pub struct SecretBox {
    /// The Transit engine, or `None` when Vault is not in use (fallback).
    transit: Option<Transit>,
    /// The key name.
    key: String,
}

impl SecretBox {
    /// A box over `transit` (or none, in fallback mode) with key `key`.
    pub fn new(transit: Option<Transit>, key: impl Into<String>) -> Self {
        Self {
            transit,
            key: key.into(),
        }
    }

    /// Whether Transit is configured.
    pub fn is_available(&self) -> bool {
        self.transit.is_some()
    }

    fn transit(&self) -> Result<&Transit, ApiError> {
        self.transit.as_ref().ok_or_else(|| {
            ApiError::Unavailable("Vault Transit is not in use (fallback mode)".into())
        })
    }

    /// Encrypts every value: key name → ciphertext.
    pub async fn seal(&self, secrets: &Secrets) -> Result<Map<String, Value>, ApiError> {
        if secrets.is_empty() {
            return Ok(Map::new());
        }
        let transit = self.transit()?;
        let items: Vec<EncryptItem<'_>> = secrets
            .iter()
            .map(|(_, value)| EncryptItem {
                plaintext: value.as_bytes(),
                context: None,
                associated_data: None,
            })
            .collect();
        let sealed = transit
            .encrypt_batch(&self.key, &items, None)
            .await
            .map_err(vault_error)?;
        let mut out = Map::new();
        for ((key, _), result) in secrets.iter().zip(sealed) {
            let ciphertext = result.map_err(|e| ApiError::Internal(e.to_string()))?;
            out.insert(key.to_owned(), Value::String(ciphertext));
        }
        Ok(out)
    }

    /// Decrypts every ciphertext of `sealed`.
    pub async fn open(&self, sealed: &Map<String, Value>) -> Result<Secrets, ApiError> {
        let mut secrets = Secrets::new();
        if sealed.is_empty() {
            return Ok(secrets);
        }
        let transit = self.transit()?;
        let pairs: Vec<(&String, &str)> = sealed
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|c| (k, c)))
            .collect();
        let items: Vec<DecryptItem<'_>> = pairs
            .iter()
            .map(|(_, ciphertext)| DecryptItem {
                ciphertext,
                context: None,
                associated_data: None,
            })
            .collect();
        let opened = transit
            .decrypt_batch(&self.key, &items)
            .await
            .map_err(vault_error)?;
        for ((key, _), result) in pairs.iter().zip(opened) {
            let plain = result.map_err(|e| ApiError::Internal(e.to_string()))?;
            let text = String::from_utf8(plain.expose_secret().to_vec())
                .map_err(|_| ApiError::Internal("a decrypted secret is not UTF-8".into()))?;
            secrets.insert(key.as_str(), text);
        }
        Ok(secrets)
    }
}

/// A Vault error as an API error: unavailable when retryable.
fn vault_error(error: vault_client::Error) -> ApiError {
    if error.is_retryable() {
        ApiError::Unavailable(error.to_string())
    } else {
        ApiError::Internal(error.to_string())
    }
}
