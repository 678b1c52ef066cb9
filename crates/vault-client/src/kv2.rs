//! KV version 2: versioned secrets with check-and-set, patch, metadata,
//! soft delete / undelete / destroy, and list.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Call, Client};
use crate::error::{Error, Result};
use crate::fallback::Source;
use crate::json::Answer;
use crate::path::ApiPath;
use crate::retry::Idempotence;
use crate::secret::SecretData;

/// A KV v2 engine at one mount. From [`Client::kv2`].
#[derive(Debug, Clone)]
pub struct Kv2 {
    /// The client.
    client: Client,
    /// Where the engine is mounted.
    mount: String,
}

/// A secret as read.
#[derive(Debug, Clone)]
pub struct KvSecret {
    /// The fields (values redacted in `Debug`).
    pub data: SecretData,
    /// The version's metadata (`None` for KV v1 and the environment
    /// fallback).
    pub version: Option<KvVersion>,
    /// Where the value came from: Vault, or a fallback.
    pub source: Source,
}

/// One version's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvVersion {
    /// The version number.
    pub version: u64,
    /// When it was written (RFC 3339).
    pub created_time: String,
    /// When it was soft-deleted (RFC 3339), or empty.
    pub deletion_time: String,
    /// Whether it was destroyed.
    pub destroyed: bool,
    /// The secret's custom metadata.
    pub custom_metadata: BTreeMap<String, String>,
}

/// A secret's metadata (all versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvMetadata {
    /// The latest version.
    pub current_version: u64,
    /// The oldest version kept.
    pub oldest_version: u64,
    /// Versions kept (0: the mount's setting).
    pub max_versions: u64,
    /// Whether every write must use check-and-set.
    pub cas_required: bool,
    /// When the secret was created (RFC 3339).
    pub created_time: String,
    /// When it was last written (RFC 3339).
    pub updated_time: String,
    /// Custom metadata.
    pub custom_metadata: BTreeMap<String, String>,
    /// Each version's state, by number.
    pub versions: BTreeMap<u64, KvVersionState>,
}

/// A version's state in [`KvMetadata`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvVersionState {
    /// When it was written.
    pub created_time: String,
    /// When it was soft-deleted, or empty.
    pub deletion_time: String,
    /// Whether it was destroyed.
    pub destroyed: bool,
}

/// Settings of [`Kv2::write_metadata`]; `None` leaves a setting unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataSettings {
    /// Versions to keep.
    pub max_versions: Option<u64>,
    /// Require check-and-set on every write.
    pub cas_required: Option<bool>,
    /// Soft-delete versions this long after they are written.
    pub delete_version_after: Option<Duration>,
    /// Custom metadata (replaces the old map).
    pub custom_metadata: Option<BTreeMap<String, String>>,
}

impl Client {
    /// The KV v2 engine mounted at `mount`.
    pub fn kv2(&self, mount: &str) -> Kv2 {
        Kv2 {
            client: self.clone(),
            mount: mount.trim_matches('/').to_owned(),
        }
    }
}

impl Kv2 {
    fn path(&self, area: &str, name: &str) -> Result<ApiPath> {
        ApiPath::join(&[&self.mount, area, name])
    }

    /// Reads the latest version, through the fallback chain: if Vault is
    /// unavailable, the last value read (not older than the configured
    /// maximum age), then environment variables; [`KvSecret::source`] says
    /// which. A deleted or missing secret is an error (404), never a
    /// fallback.
    pub async fn read(&self, name: &str) -> Result<KvSecret> {
        let path = self.path("data", name)?;
        let result = self.read_from_vault(&path, None).await;
        self.client
            .with_fallback(&path, name.trim_matches('/'), result)
            .await
    }

    /// Reads version `version` (no fallback).
    pub async fn read_version(&self, name: &str, version: u64) -> Result<KvSecret> {
        let path = self.path("data", name)?;
        self.read_from_vault(&path, Some(version)).await
    }

    async fn read_from_vault(&self, path: &ApiPath, version: Option<u64>) -> Result<KvSecret> {
        let query: Vec<(&str, String)> = version
            .map(|v| vec![("version", v.to_string())])
            .unwrap_or_default();
        let call = Call {
            query: &query,
            ..Call::new("kv2.read", Method::GET, path)
        };
        let reply = self.client.inner.send(call).await?;
        let body = reply.body.unwrap_or_default();
        let answer = Answer::new(path.as_str(), &body);
        let data = SecretData::new(answer.object("/data/data")?.clone());
        let version = version_from(&answer, "/data/metadata")?;
        Ok(KvSecret {
            data,
            version: Some(version),
            source: Source::Vault,
        })
    }

    /// Writes a new version (`data` must be a JSON object). Not retried once
    /// it may have reached Vault (a second run would add a second version):
    /// on a timeout or 5xx, read the metadata to learn whether it was written.
    pub async fn write(&self, name: &str, data: &Value) -> Result<KvVersion> {
        self.write_inner(name, data, None).await
    }

    /// Writes a new version only if the current one is `cas` (0: only if the
    /// secret does not exist). A mismatch is [`Error::CasMismatch`]. Not
    /// retried once it may have reached Vault (a retry of a write that
    /// succeeded would report a mismatch).
    pub async fn write_cas(&self, name: &str, data: &Value, cas: u64) -> Result<KvVersion> {
        self.write_inner(name, data, Some(cas)).await
    }

    async fn write_inner(&self, name: &str, data: &Value, cas: Option<u64>) -> Result<KvVersion> {
        if !data.is_object() {
            return Err(Error::InvalidArgument(
                "KV data must be a JSON object".into(),
            ));
        }
        let path = self.path("data", name)?;
        let body = match cas {
            Some(cas) => json!({ "data": data, "options": { "cas": cas } }),
            None => json!({ "data": data }),
        };
        let call = Call {
            body: Some(&body),
            ..Call::new("kv2.write", Method::POST, &path)
        };
        let reply = self.client.inner.send(call).await?;
        let body = reply.body.unwrap_or_default();
        let version = version_from(&Answer::new(path.as_str(), &body), "/data")?;
        self.client.inner.cache.forget(path.as_str());
        Ok(version)
    }

    /// Merges `patch` into the latest version (JSON merge patch: a `null`
    /// removes a field), writing a new version.
    pub async fn patch(&self, name: &str, patch: &Value) -> Result<KvVersion> {
        if !patch.is_object() {
            return Err(Error::InvalidArgument(
                "a KV patch must be a JSON object".into(),
            ));
        }
        let path = self.path("data", name)?;
        let body = json!({ "data": patch });
        let call = Call {
            body: Some(&body),
            content_type: "application/merge-patch+json",
            ..Call::new("kv2.patch", Method::PATCH, &path)
        };
        let reply = self.client.inner.send(call).await?;
        let body = reply.body.unwrap_or_default();
        self.client.inner.cache.forget(path.as_str());
        version_from(&Answer::new(path.as_str(), &body), "/data")
    }

    /// The secret's metadata.
    pub async fn metadata(&self, name: &str) -> Result<KvMetadata> {
        let path = self.path("metadata", name)?;
        let reply = self
            .client
            .inner
            .send(Call::new("kv2.metadata", Method::GET, &path))
            .await?;
        let body = reply.body.unwrap_or_default();
        let answer = Answer::new(path.as_str(), &body);
        let mut versions = BTreeMap::new();
        for (number, state) in answer.object("/data/versions")? {
            let number: u64 = number.parse().map_err(|_| Error::MissingField {
                path: path.to_string(),
                field: "/data/versions".into(),
                expected: "version numbers as keys",
            })?;
            let state = Answer::new(path.as_str(), state);
            versions.insert(
                number,
                KvVersionState {
                    created_time: state
                        .opt_str("/created_time")?
                        .unwrap_or_default()
                        .to_owned(),
                    deletion_time: state
                        .opt_str("/deletion_time")?
                        .unwrap_or_default()
                        .to_owned(),
                    destroyed: state.opt_bool("/destroyed")?.unwrap_or(false),
                },
            );
        }
        Ok(KvMetadata {
            current_version: answer.u64("/data/current_version")?,
            oldest_version: answer.opt_u64("/data/oldest_version")?.unwrap_or(0),
            max_versions: answer.opt_u64("/data/max_versions")?.unwrap_or(0),
            cas_required: answer.opt_bool("/data/cas_required")?.unwrap_or(false),
            created_time: answer
                .opt_str("/data/created_time")?
                .unwrap_or_default()
                .to_owned(),
            updated_time: answer
                .opt_str("/data/updated_time")?
                .unwrap_or_default()
                .to_owned(),
            custom_metadata: answer.string_map("/data/custom_metadata")?,
            versions,
        })
    }

    /// Changes the secret's metadata settings.
    pub async fn write_metadata(&self, name: &str, settings: &MetadataSettings) -> Result<()> {
        let path = self.path("metadata", name)?;
        let mut body = serde_json::Map::new();
        if let Some(max) = settings.max_versions {
            body.insert("max_versions".into(), max.into());
        }
        if let Some(cas) = settings.cas_required {
            body.insert("cas_required".into(), cas.into());
        }
        if let Some(after) = settings.delete_version_after {
            body.insert(
                "delete_version_after".into(),
                format!("{}s", after.as_secs()).into(),
            );
        }
        if let Some(custom) = &settings.custom_metadata {
            body.insert("custom_metadata".into(), json!(custom));
        }
        let body = Value::Object(body);
        let call = Call {
            body: Some(&body),
            // The same request twice has the same effect.
            idempotence: Idempotence::Safe,
            ..Call::new("kv2.write_metadata", Method::POST, &path)
        };
        self.client.inner.send(call).await.map(drop)
    }

    /// Soft-deletes the latest version (undo with [`Kv2::undelete`]).
    pub async fn delete_latest(&self, name: &str) -> Result<()> {
        let path = self.path("data", name)?;
        self.client.inner.cache.forget(path.as_str());
        self.client
            .inner
            .send(Call::new("kv2.delete", Method::DELETE, &path))
            .await
            .map(drop)
    }

    /// Soft-deletes `versions`.
    pub async fn delete_versions(&self, name: &str, versions: &[u64]) -> Result<()> {
        self.versions_op("delete", "kv2.delete_versions", name, versions)
            .await
    }

    /// Restores soft-deleted `versions`.
    pub async fn undelete(&self, name: &str, versions: &[u64]) -> Result<()> {
        self.versions_op("undelete", "kv2.undelete", name, versions)
            .await
    }

    /// Destroys `versions` for good.
    pub async fn destroy(&self, name: &str, versions: &[u64]) -> Result<()> {
        self.versions_op("destroy", "kv2.destroy", name, versions)
            .await
    }

    /// Deletes the secret, all its versions and its metadata.
    pub async fn delete_all(&self, name: &str) -> Result<()> {
        let path = self.path("metadata", name)?;
        self.client
            .inner
            .cache
            .forget(self.path("data", name)?.as_str());
        self.client
            .inner
            .send(Call::new("kv2.delete_all", Method::DELETE, &path))
            .await
            .map(drop)
    }

    async fn versions_op(
        &self,
        area: &str,
        op: &'static str,
        name: &str,
        versions: &[u64],
    ) -> Result<()> {
        if versions.is_empty() {
            return Err(Error::InvalidArgument("no version given".into()));
        }
        let path = self.path(area, name)?;
        self.client
            .inner
            .cache
            .forget(self.path("data", name)?.as_str());
        let body = json!({ "versions": versions });
        let call = Call {
            body: Some(&body),
            // Deleting, undeleting or destroying twice is the same as once.
            idempotence: Idempotence::Safe,
            ..Call::new(op, Method::POST, &path)
        };
        self.client.inner.send(call).await.map(drop)
    }

    /// The names under `prefix` (folders end with `/`); empty if none.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let path = if prefix.trim_matches('/').is_empty() {
            ApiPath::join(&[&self.mount, "metadata"])?
        } else {
            self.path("metadata", prefix)?
        };
        self.client.inner.list(&path, "kv2.list").await
    }
}

fn version_from(answer: &Answer<'_>, at: &str) -> Result<KvVersion> {
    Ok(KvVersion {
        version: answer.u64(&format!("{at}/version"))?,
        created_time: answer
            .opt_str(&format!("{at}/created_time"))?
            .unwrap_or_default()
            .to_owned(),
        deletion_time: answer
            .opt_str(&format!("{at}/deletion_time"))?
            .unwrap_or_default()
            .to_owned(),
        destroyed: answer
            .opt_bool(&format!("{at}/destroyed"))?
            .unwrap_or(false),
        custom_metadata: answer.string_map(&format!("{at}/custom_metadata"))?,
    })
}

impl Client {
    /// Applies the fallback chain to a read's result: a value from Vault is
    /// kept as last known good; an unavailability error is answered from the
    /// cache, then the environment, reporting which.
    pub(crate) async fn with_fallback(
        &self,
        path: &ApiPath,
        relative: &str,
        result: Result<KvSecret>,
    ) -> Result<KvSecret> {
        let inner = &self.inner;
        let error = match result {
            Ok(secret) => {
                if inner.config.fallback.last_known_good_max_age.is_some() {
                    inner
                        .cache
                        .put(path.as_str(), &secret.data, secret.version.as_ref());
                }
                return Ok(secret);
            }
            Err(error) if error.is_unavailable() => error,
            Err(error) => return Err(error),
        };
        let cause = error.to_string();
        let fallback = &inner.config.fallback;
        let served = if let Some(max_age) = fallback.last_known_good_max_age
            && let Some((kept, age)) = inner.cache.get(path.as_str(), max_age)
        {
            Some(KvSecret {
                data: kept.data,
                version: kept.version,
                source: Source::LastKnownGood { age, cause },
            })
        } else if let Some(prefix) = &fallback.env_prefix
            && let Some((data, variables)) =
                crate::fallback::from_env(inner.config.environment.as_ref(), prefix, relative)
        {
            Some(KvSecret {
                data,
                version: None,
                source: Source::Environment { variables, cause },
            })
        } else {
            None
        };
        match served {
            Some(secret) => {
                tracing::warn!(
                    path = path.as_str(),
                    source = ?secret.source,
                    "Vault unavailable; read served from a fallback"
                );
                crate::metrics::fallback(secret.source.metric_label());
                inner.emit(crate::Event::Fallback {
                    path: path.to_string(),
                    source: secret.source.clone(),
                });
                Ok(secret)
            }
            None => Err(error),
        }
    }
}
