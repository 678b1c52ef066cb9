//! KV version 1: unversioned secrets.

use reqwest::Method;
use serde_json::Value;

use crate::client::{Call, Client};
use crate::error::{Error, Result};
use crate::fallback::Source;
use crate::json::Answer;
use crate::kv2::KvSecret;
use crate::path::ApiPath;
use crate::retry::Idempotence;
use crate::secret::SecretData;

/// A KV v1 engine at one mount. From [`Client::kv1`].
#[derive(Debug, Clone)]
pub struct Kv1 {
    /// The client.
    client: Client,
    /// Where the engine is mounted.
    mount: String,
}

impl Client {
    /// The KV v1 engine mounted at `mount`.
    pub fn kv1(&self, mount: &str) -> Kv1 {
        Kv1 {
            client: self.clone(),
            mount: mount.trim_matches('/').to_owned(),
        }
    }
}

impl Kv1 {
    /// Reads a secret, through the same fallback chain as
    /// [`Kv2::read`](crate::Kv2::read).
    pub async fn read(&self, name: &str) -> Result<KvSecret> {
        let path = ApiPath::join(&[&self.mount, name])?;
        let result = async {
            let reply = self
                .client
                .inner
                .send(Call::new("kv1.read", Method::GET, &path))
                .await?;
            let body = reply.body.unwrap_or_default();
            let data = Answer::new(path.as_str(), &body).object("/data")?.clone();
            Ok(KvSecret {
                data: SecretData::new(data),
                version: None,
                source: Source::Vault,
            })
        }
        .await;
        self.client
            .with_fallback(&path, name.trim_matches('/'), result)
            .await
    }

    /// Writes a secret (`data` must be a JSON object), replacing it whole.
    pub async fn write(&self, name: &str, data: &Value) -> Result<()> {
        if !data.is_object() {
            return Err(Error::InvalidArgument(
                "KV data must be a JSON object".into(),
            ));
        }
        let path = ApiPath::join(&[&self.mount, name])?;
        let call = Call {
            body: Some(data),
            // The same request twice has the same effect.
            idempotence: Idempotence::Safe,
            ..Call::new("kv1.write", Method::POST, &path)
        };
        self.client.inner.send(call).await?;
        self.client.inner.cache.forget(path.as_str());
        Ok(())
    }

    /// Deletes a secret.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let path = ApiPath::join(&[&self.mount, name])?;
        self.client.inner.cache.forget(path.as_str());
        self.client
            .inner
            .send(Call::new("kv1.delete", Method::DELETE, &path))
            .await
            .map(drop)
    }

    /// The names under `prefix`; empty if none.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let path = if prefix.trim_matches('/').is_empty() {
            ApiPath::new(&self.mount)?
        } else {
            ApiPath::join(&[&self.mount, prefix])?
        };
        self.client.inner.list(&path, "kv1.list").await
    }
}
