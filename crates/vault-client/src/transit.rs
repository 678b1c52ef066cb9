//! Transit: encryption as a service. Plaintext is bytes in this API and
//! base64 on the wire; decrypted plaintext and data keys come back as
//! [`SecretBytes`].

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::client::{Call, Client};
use crate::error::{Error, Result};
use crate::json::Answer;
use crate::path::ApiPath;
use crate::retry::Idempotence;
use crate::secret::{SecretBytes, SecretString};

/// A Transit engine at one mount. From [`Client::transit`].
#[derive(Debug, Clone)]
pub struct Transit {
    /// The client.
    client: Client,
    /// Where the engine is mounted.
    mount: String,
}

/// Options of one encryption.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncryptOptions<'a> {
    /// Encrypt with this key version (default: the latest).
    pub key_version: Option<u64>,
    /// Key derivation context (keys created with `derived = true`).
    pub context: Option<&'a [u8]>,
    /// Additional authenticated data (AEAD key types): not encrypted, but
    /// decryption fails unless the same bytes are given.
    pub associated_data: Option<&'a [u8]>,
}

/// Options of one decryption.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecryptOptions<'a> {
    /// Key derivation context.
    pub context: Option<&'a [u8]>,
    /// The additional authenticated data given at encryption.
    pub associated_data: Option<&'a [u8]>,
}

/// One item of a batch encryption.
#[derive(Clone, Copy, Default)]
pub struct EncryptItem<'a> {
    /// The plaintext.
    pub plaintext: &'a [u8],
    /// Key derivation context.
    pub context: Option<&'a [u8]>,
    /// Additional authenticated data.
    pub associated_data: Option<&'a [u8]>,
}

impl fmt::Debug for EncryptItem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptItem")
            .field("plaintext", &"[REDACTED]")
            .field("context", &self.context.map(|c| c.len()))
            .finish_non_exhaustive()
    }
}

/// One item of a batch decryption.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecryptItem<'a> {
    /// The ciphertext (`vault:v1:...`).
    pub ciphertext: &'a str,
    /// Key derivation context.
    pub context: Option<&'a [u8]>,
    /// Additional authenticated data.
    pub associated_data: Option<&'a [u8]>,
}

/// Why one item of a batch failed (the others are unaffected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("batch item {index}: {message}")]
pub struct ItemError {
    /// The item's position in the batch.
    pub index: usize,
    /// Vault's message.
    pub message: String,
}

/// What kind of data key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKeyKind {
    /// The key and its encrypted copy.
    Plaintext,
    /// Only the encrypted copy (decrypt it later with [`Transit::decrypt`]).
    Wrapped,
}

/// A generated data key.
#[derive(Debug, Clone)]
pub struct DataKey {
    /// The key encrypted by the Transit key: store this.
    pub ciphertext: String,
    /// The key itself ([`DataKeyKind::Plaintext`] only): use it, never
    /// store it.
    pub plaintext: Option<SecretBytes>,
    /// The Transit key version that encrypted it.
    pub key_version: u64,
}

/// A Transit key's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The key's name.
    pub name: String,
    /// Its type (`aes256-gcm96`, ...).
    pub key_type: String,
    /// The latest version.
    pub latest_version: u64,
    /// The oldest version that may decrypt.
    pub min_decryption_version: u64,
    /// The oldest version that may encrypt (0: the latest).
    pub min_encryption_version: u64,
    /// Whether the key uses key derivation (needs a context).
    pub derived: bool,
    /// Whether it may be deleted.
    pub deletion_allowed: bool,
}

impl Client {
    /// The Transit engine mounted at `mount`.
    pub fn transit(&self, mount: &str) -> Transit {
        Transit {
            client: self.clone(),
            mount: mount.trim_matches('/').to_owned(),
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

fn unb64(path: &str, field: &str, text: &str) -> Result<SecretBytes> {
    BASE64
        .decode(text)
        .map(SecretBytes::from)
        .map_err(|_| Error::MissingField {
            path: path.to_owned(),
            field: field.to_owned(),
            expected: "base64",
        })
}

/// The key version in a ciphertext's `vault:v<N>:` prefix.
pub fn ciphertext_version(ciphertext: &str) -> Option<u64> {
    let rest = ciphertext.strip_prefix("vault:v")?;
    let (number, _) = rest.split_once(':')?;
    number.parse().ok()
}

impl Transit {
    fn path(&self, action: &str, key: &str) -> Result<ApiPath> {
        ApiPath::join(&[&self.mount, action, key])
    }

    /// A POST that may run twice (encryption, decryption, rewrap, data
    /// keys and key creation change nothing on a second run).
    async fn post(&self, op: &'static str, path: &ApiPath, body: &Value) -> Result<Value> {
        let call = Call {
            body: Some(body),
            idempotence: Idempotence::Safe,
            ..Call::new(op, Method::POST, path)
        };
        Ok(self.client.inner.send(call).await?.body.unwrap_or_default())
    }

    /// Creates key `key` of `key_type` (e.g. `aes256-gcm96`); creating an
    /// existing key changes nothing.
    pub async fn create_key(&self, key: &str, key_type: &str) -> Result<()> {
        let path = self.path("keys", key)?;
        self.post("transit.create_key", &path, &json!({ "type": key_type }))
            .await
            .map(drop)
    }

    /// Adds a new version of `key`; new encryptions use it. Not retried once
    /// it may have reached Vault (a second run would add another version).
    pub async fn rotate_key(&self, key: &str) -> Result<()> {
        let path = ApiPath::join(&[&self.mount, "keys", key, "rotate"])?;
        let body = json!({});
        // Never retried once it may have reached Vault: a second run would
        // add a second version.
        let call = Call {
            body: Some(&body),
            idempotence: Idempotence::NotAfterSent,
            ..Call::new("transit.rotate_key", Method::POST, &path)
        };
        self.client.inner.send(call).await.map(drop)
    }

    /// The key's settings.
    pub async fn key_info(&self, key: &str) -> Result<KeyInfo> {
        let path = self.path("keys", key)?;
        let reply = self
            .client
            .inner
            .send(Call::new("transit.key_info", Method::GET, &path))
            .await?;
        let body = reply.body.unwrap_or_default();
        let answer = Answer::new(path.as_str(), &body);
        Ok(KeyInfo {
            name: answer.str("/data/name")?.to_owned(),
            key_type: answer.str("/data/type")?.to_owned(),
            latest_version: answer.u64("/data/latest_version")?,
            min_decryption_version: answer.u64("/data/min_decryption_version")?,
            min_encryption_version: answer.opt_u64("/data/min_encryption_version")?.unwrap_or(0),
            derived: answer.opt_bool("/data/derived")?.unwrap_or(false),
            deletion_allowed: answer.opt_bool("/data/deletion_allowed")?.unwrap_or(false),
        })
    }

    /// Encrypts `plaintext` with `key`; returns the ciphertext
    /// (`vault:v<N>:...`).
    pub async fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        options: EncryptOptions<'_>,
    ) -> Result<String> {
        let path = self.path("encrypt", key)?;
        let mut body = Map::new();
        body.insert("plaintext".into(), b64(plaintext).into());
        if let Some(version) = options.key_version {
            body.insert("key_version".into(), version.into());
        }
        insert_b64(&mut body, "context", options.context);
        insert_b64(&mut body, "associated_data", options.associated_data);
        let reply = self
            .post("transit.encrypt", &path, &Value::Object(body))
            .await?;
        Ok(Answer::new(path.as_str(), &reply)
            .str("/data/ciphertext")?
            .to_owned())
    }

    /// Decrypts `ciphertext` with `key`.
    pub async fn decrypt(
        &self,
        key: &str,
        ciphertext: &str,
        options: DecryptOptions<'_>,
    ) -> Result<SecretBytes> {
        let path = self.path("decrypt", key)?;
        let mut body = Map::new();
        body.insert("ciphertext".into(), ciphertext.into());
        insert_b64(&mut body, "context", options.context);
        insert_b64(&mut body, "associated_data", options.associated_data);
        let reply = self
            .post("transit.decrypt", &path, &Value::Object(body))
            .await?;
        let text = Answer::new(path.as_str(), &reply).str("/data/plaintext")?;
        unb64(path.as_str(), "/data/plaintext", text)
    }

    /// Encrypts many items in one request. Each item succeeds or fails on
    /// its own: the result has one entry per item, in order.
    pub async fn encrypt_batch(
        &self,
        key: &str,
        items: &[EncryptItem<'_>],
        key_version: Option<u64>,
    ) -> Result<Vec<Result<String, ItemError>>> {
        let path = self.path("encrypt", key)?;
        let input: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut entry = Map::new();
                entry.insert("plaintext".into(), b64(item.plaintext).into());
                insert_b64(&mut entry, "context", item.context);
                insert_b64(&mut entry, "associated_data", item.associated_data);
                Value::Object(entry)
            })
            .collect();
        let mut body = json!({ "batch_input": input });
        if let Some(version) = key_version {
            body["key_version"] = version.into();
        }
        let results = self
            .batch("transit.encrypt_batch", &path, &body, items.len())
            .await?;
        let answer_path = path.to_string();
        Ok(results
            .into_iter()
            .map(|item| {
                item.and_then(|(index, value)| {
                    value
                        .get("ciphertext")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| ItemError {
                            index,
                            message: format!("{answer_path}: no ciphertext in the item's answer"),
                        })
                })
            })
            .collect())
    }

    /// Decrypts many items in one request, each on its own.
    pub async fn decrypt_batch(
        &self,
        key: &str,
        items: &[DecryptItem<'_>],
    ) -> Result<Vec<Result<SecretBytes, ItemError>>> {
        let path = self.path("decrypt", key)?;
        let input: Vec<Value> = items
            .iter()
            .map(|item| {
                let mut entry = Map::new();
                entry.insert("ciphertext".into(), item.ciphertext.into());
                insert_b64(&mut entry, "context", item.context);
                insert_b64(&mut entry, "associated_data", item.associated_data);
                Value::Object(entry)
            })
            .collect();
        let body = json!({ "batch_input": input });
        let results = self
            .batch("transit.decrypt_batch", &path, &body, items.len())
            .await?;
        Ok(results
            .into_iter()
            .map(|item| {
                item.and_then(|(index, value)| {
                    value
                        .get("plaintext")
                        .and_then(Value::as_str)
                        .and_then(|text| BASE64.decode(text).ok())
                        .map(SecretBytes::from)
                        .ok_or_else(|| ItemError {
                            index,
                            message: "no valid plaintext in the item's answer".into(),
                        })
                })
            })
            .collect())
    }

    /// Sends a batch and splits `data.batch_results` per item. Vault answers
    /// 400 when some items failed, still with every item's result.
    async fn batch(
        &self,
        op: &'static str,
        path: &ApiPath,
        body: &Value,
        count: usize,
    ) -> Result<Vec<Result<(usize, Value), ItemError>>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let call = Call {
            body: Some(body),
            answer_statuses: &[400],
            idempotence: Idempotence::Safe,
            ..Call::new(op, Method::POST, path)
        };
        let reply = self.client.inner.send(call).await?;
        let body = reply.body.unwrap_or_default();
        let answer = Answer::new(path.as_str(), &body);
        let results = match answer.array("/data/batch_results") {
            Ok(results) => results,
            // A 400 without per-item results: the whole request was refused.
            Err(_) if reply.status == 400 => {
                return Err(Error::Api {
                    method: "POST",
                    path: path.to_string(),
                    status: 400,
                    errors: crate::json::error_strings(Some(&body)),
                    retry_after: None,
                });
            }
            Err(missing) => return Err(missing),
        };
        if results.len() != count {
            return Err(Error::MissingField {
                path: path.to_string(),
                field: "/data/batch_results".into(),
                expected: "one result per item",
            });
        }
        Ok(results
            .iter()
            .enumerate()
            .map(
                |(index, item)| match item.get("error").and_then(Value::as_str) {
                    Some(message) if !message.is_empty() => Err(ItemError {
                        index,
                        message: message.chars().take(300).collect(),
                    }),
                    _ => Ok((index, item.clone())),
                },
            )
            .collect())
    }

    /// Re-encrypts `ciphertext` with the latest key version (or
    /// `key_version`) without revealing the plaintext.
    pub async fn rewrap(
        &self,
        key: &str,
        ciphertext: &str,
        key_version: Option<u64>,
        context: Option<&[u8]>,
    ) -> Result<String> {
        let path = self.path("rewrap", key)?;
        let mut body = Map::new();
        body.insert("ciphertext".into(), ciphertext.into());
        if let Some(version) = key_version {
            body.insert("key_version".into(), version.into());
        }
        insert_b64(&mut body, "context", context);
        let reply = self
            .post("transit.rewrap", &path, &Value::Object(body))
            .await?;
        Ok(Answer::new(path.as_str(), &reply)
            .str("/data/ciphertext")?
            .to_owned())
    }

    /// Re-encrypts many ciphertexts, each on its own.
    pub async fn rewrap_batch(
        &self,
        key: &str,
        ciphertexts: &[&str],
    ) -> Result<Vec<Result<String, ItemError>>> {
        let path = self.path("rewrap", key)?;
        let input: Vec<Value> = ciphertexts
            .iter()
            .map(|c| json!({ "ciphertext": c }))
            .collect();
        let body = json!({ "batch_input": input });
        let results = self
            .batch("transit.rewrap_batch", &path, &body, ciphertexts.len())
            .await?;
        Ok(results
            .into_iter()
            .map(|item| {
                item.and_then(|(index, value)| {
                    value
                        .get("ciphertext")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| ItemError {
                            index,
                            message: "no ciphertext in the item's answer".into(),
                        })
                })
            })
            .collect())
    }

    /// The HMAC of `input` under `key` (`vault:v<N>:<base64>`), with the
    /// key's latest version or `key_version`, and `algorithm` (`sha2-256`
    /// when `None`). Deterministic for a given key version: pin
    /// `key_version` to get the same value after the key is rotated.
    /// The value is returned as a [`SecretString`] because callers use it
    /// as key material.
    pub async fn hmac(
        &self,
        key: &str,
        input: &[u8],
        key_version: Option<u64>,
        algorithm: Option<&str>,
    ) -> Result<SecretString> {
        let path = match algorithm {
            Some(algorithm) => ApiPath::join(&[&self.mount, "hmac", key, algorithm])?,
            None => self.path("hmac", key)?,
        };
        let mut body = Map::new();
        body.insert("input".into(), b64(input).into());
        if let Some(version) = key_version {
            body.insert("key_version".into(), version.into());
        }
        let reply = self
            .post("transit.hmac", &path, &Value::Object(body))
            .await?;
        let hmac = Answer::new(path.as_str(), &reply).str("/data/hmac")?;
        Ok(SecretString::from(hmac.to_owned()))
    }

    /// Generates a data key of `bits` (128, 256 or 512; default 256)
    /// encrypted by `key` (envelope encryption).
    pub async fn data_key(
        &self,
        key: &str,
        kind: DataKeyKind,
        bits: Option<u32>,
        context: Option<&[u8]>,
    ) -> Result<DataKey> {
        if let Some(bits) = bits
            && !matches!(bits, 128 | 256 | 512)
        {
            return Err(Error::InvalidArgument(format!(
                "data key bits must be 128, 256 or 512, got {bits}"
            )));
        }
        let kind_segment = match kind {
            DataKeyKind::Plaintext => "plaintext",
            DataKeyKind::Wrapped => "wrapped",
        };
        let path = ApiPath::join(&[&self.mount, "datakey", kind_segment, key])?;
        let mut body = Map::new();
        if let Some(bits) = bits {
            body.insert("bits".into(), bits.into());
        }
        insert_b64(&mut body, "context", context);
        let reply = self
            .post("transit.data_key", &path, &Value::Object(body))
            .await?;
        let answer = Answer::new(path.as_str(), &reply);
        let plaintext = match kind {
            DataKeyKind::Plaintext => Some(unb64(
                path.as_str(),
                "/data/plaintext",
                answer.str("/data/plaintext")?,
            )?),
            DataKeyKind::Wrapped => None,
        };
        let ciphertext = answer.str("/data/ciphertext")?.to_owned();
        let key_version = match answer.opt_u64("/data/key_version")? {
            Some(version) => version,
            None => ciphertext_version(&ciphertext).ok_or_else(|| Error::MissingField {
                path: path.to_string(),
                field: "/data/key_version".into(),
                expected: "a key version",
            })?,
        };
        Ok(DataKey {
            ciphertext,
            plaintext,
            key_version,
        })
    }
}

fn insert_b64(map: &mut Map<String, Value>, field: &str, bytes: Option<&[u8]>) {
    if let Some(bytes) = bytes {
        map.insert(field.to_owned(), b64(bytes).into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ciphertext_versions() {
        assert_eq!(ciphertext_version("vault:v1:abc"), Some(1));
        assert_eq!(ciphertext_version("vault:v12:abc"), Some(12));
        for bad in ["vault:v:abc", "v1:abc", "vault:vx:abc", "vault:v1"] {
            assert_eq!(ciphertext_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_hides_plaintext() {
        let item = EncryptItem {
            plaintext: b"card 4111",
            ..EncryptItem::default()
        };
        assert!(!format!("{item:?}").contains("4111"));
        assert!(unb64("p", "/f", "!!!").is_err());
    }
}
