//! Dynamic database credentials (`<mount>/creds/<role>`) and lease
//! operations.
//!
//! Each read of `creds` creates a database user, so it is never retried once
//! it may have reached the server: only connection failures (nothing sent)
//! and 429 are retried. A read whose answer was lost still created a user;
//! Vault holds its lease and drops the user when the lease expires.

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::client::{Call, Client};
use crate::error::Result;
use crate::json::Answer;
use crate::lease::LeaseManagerBuilder;
use crate::path::ApiPath;
use crate::retry::Idempotence;
use crate::secret::SecretString;

/// The database secrets engine at one mount. From [`Client::database`].
#[derive(Debug, Clone)]
pub struct Database {
    /// The client.
    pub(crate) client: Client,
    /// Where the engine is mounted.
    pub(crate) mount: String,
}

/// A Vault lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The lease id (not a secret: it names the lease).
    pub id: String,
    /// Its TTL when issued or renewed.
    pub duration: Duration,
    /// Whether it may be renewed.
    pub renewable: bool,
}

/// A set of dynamic database credentials. `Debug` hides the password.
#[derive(Clone)]
pub struct DbCredentials {
    /// The user name Vault created.
    pub username: String,
    /// Its password.
    pub password: SecretString,
    /// The lease behind it.
    pub lease: Lease,
}

impl fmt::Debug for DbCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbCredentials")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .field("lease", &self.lease)
            .finish()
    }
}

impl Client {
    /// The database secrets engine mounted at `mount`.
    pub fn database(&self, mount: &str) -> Database {
        Database {
            client: self.clone(),
            mount: mount.trim_matches('/').to_owned(),
        }
    }

    /// Renews lease `lease_id` by `increment`; returns the lease as renewed
    /// (its `duration` may be less than asked near its max TTL).
    pub async fn renew_lease(&self, lease_id: &str, increment: Duration) -> Result<Lease> {
        let path = ApiPath::new("sys/leases/renew")?;
        let body = json!({ "lease_id": lease_id, "increment": increment.as_secs() });
        let call = Call {
            body: Some(&body),
            // The same request twice has the same effect.
            idempotence: Idempotence::Safe,
            ..Call::new("sys.leases.renew", Method::PUT, &path)
        };
        let reply = self.inner.send(call).await?;
        let body = reply.body.unwrap_or_default();
        let answer = Answer::new(path.as_str(), &body);
        Ok(Lease {
            id: answer.str("/lease_id")?.to_owned(),
            duration: answer.ttl("/lease_duration")?,
            renewable: answer.opt_bool("/renewable")?.unwrap_or(false),
        })
    }

    /// Revokes lease `lease_id` (for database credentials: drops the user).
    pub async fn revoke_lease(&self, lease_id: &str) -> Result<()> {
        let path = ApiPath::new("sys/leases/revoke")?;
        let body = json!({ "lease_id": lease_id });
        let call = Call {
            body: Some(&body),
            // The same request twice has the same effect.
            idempotence: Idempotence::Safe,
            ..Call::new("sys.leases.revoke", Method::PUT, &path)
        };
        self.inner.send(call).await.map(drop)
    }
}

impl Database {
    /// Reads new credentials for `role`. Each call creates a database user;
    /// it is not retried once it may have reached the server (see
    /// [`Error::delivery`](crate::Error::delivery)).
    pub async fn creds(&self, role: &str) -> Result<DbCredentials> {
        let path = ApiPath::join(&[&self.mount, "creds", role])?;
        let call = Call {
            idempotence: Idempotence::NotAfterSent,
            ..Call::new("database.creds", Method::GET, &path)
        };
        let reply = self.client.inner.send(call).await?;
        let body = reply.body.unwrap_or_default();
        let answer = Answer::new(path.as_str(), &body);
        Ok(DbCredentials {
            username: answer.str("/data/username")?.to_owned(),
            password: SecretString::from(answer.str("/data/password")?.to_owned()),
            lease: Lease {
                id: answer.str("/lease_id")?.to_owned(),
                duration: answer.ttl("/lease_duration")?,
                renewable: answer.opt_bool("/renewable")?.unwrap_or(false),
            },
        })
    }

    /// A lease manager for `role`: subscribe to its events, then
    /// [`start`](LeaseManagerBuilder::start) it.
    pub fn lease_manager(&self, role: &str) -> LeaseManagerBuilder {
        LeaseManagerBuilder::new(self.clone(), role)
    }
}
