//! deadpool-postgres with rotating credentials (feature `deadpool`).
//!
//! - [`CredentialsConnect`] opens every new connection with the credentials
//!   current at that moment (read from the lease manager's `watch` channel).
//!   If a rotation happens while it connects, it connects again with the new
//!   set, so no connection is ever born with stale credentials.
//! - [`retire_rotated`] is a `pre_recycle` hook: a connection opened before
//!   the current set was published is dropped when it comes back out of the
//!   pool, and deadpool hands out (or opens) another one instead. Callers
//!   never see an error for it.
//!
//! Together they rotate credentials under load without a failed request, as
//! long as the old user outlives the connections in use (the lease manager
//! rotates a margin before expiry).

use std::future::Future;
use std::pin::Pin;

pub use deadpool_postgres;
use deadpool_postgres::{Connect, Hook, HookError, Manager, ManagerConfig, Pool, PoolBuilder};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client as PgClient, Config as PgConfig, Error as PgError, Socket};

use crate::lease::Credentials;
use crate::secret::ExposeSecret;

type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(PgClient, JoinHandle<()>), PgError>> + Send + 'a>>;

/// A deadpool-postgres [`Connect`] that logs in with the current
/// credentials of a [`LeaseManager`](crate::LeaseManager).
#[derive(Debug, Clone)]
pub struct CredentialsConnect<T> {
    /// The TLS connector (`tokio_postgres::NoTls` or a rustls one).
    tls: T,
    /// The credentials.
    credentials: watch::Receiver<Credentials>,
}

impl<T> CredentialsConnect<T> {
    /// Connects with `tls`, logging in with `credentials`.
    pub fn new(tls: T, credentials: watch::Receiver<Credentials>) -> Self {
        CredentialsConnect { tls, credentials }
    }
}

impl<T> Connect for CredentialsConnect<T>
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn connect(&self, pg_config: &PgConfig) -> ConnectFuture<'_> {
        let base = pg_config.clone();
        Box::pin(async move {
            // At most one reconnect per rotation seen while connecting; three
            // rotations during one handshake would be absurd.
            let mut attempts = 0;
            loop {
                attempts += 1;
                let creds = self.credentials.borrow().clone();
                let mut config = base.clone();
                config
                    .user(&creds.username)
                    .password(creds.password.expose_secret().as_bytes());
                let result = config.connect(self.tls.clone()).await;
                let rotated = self.credentials.borrow().generation != creds.generation;
                match result {
                    Ok((client, connection)) => {
                        if rotated && attempts < 3 {
                            drop(client);
                            continue;
                        }
                        let task = tokio::spawn(async move {
                            if let Err(e) = connection.await {
                                tracing::debug!(error = %e, "PostgreSQL connection closed");
                            }
                        });
                        return Ok((client, task));
                    }
                    Err(_) if rotated && attempts < 3 => continue,
                    Err(e) => return Err(e),
                }
            }
        })
    }
}

/// A `pre_recycle` hook that retires connections opened before the current
/// credentials were published.
pub fn retire_rotated(credentials: watch::Receiver<Credentials>) -> Hook {
    Hook::sync_fn(move |_client, metrics| {
        let published = credentials.borrow().published_at;
        if metrics.created < published {
            Err(HookError::Message(
                "opened with credentials that have since been rotated".into(),
            ))
        } else {
            Ok(())
        }
    })
}

/// A pool builder whose connections use `credentials` and are retired after
/// a rotation. Set the pool size and timeouts on it, then `build()`.
///
/// ```no_run
/// # async fn demo(manager: vault_client::LeaseManager) -> Result<(), Box<dyn std::error::Error>> {
/// let mut pg = tokio_postgres::Config::new();
/// pg.host("127.0.0.1").port(5432).dbname("stores");
/// let pool = vault_client::pool::pool_builder(
///     pg,
///     tokio_postgres::NoTls,
///     manager.credentials(),
///     deadpool_postgres::ManagerConfig::default(),
/// )
/// .max_size(8)
/// .build()?;
/// let client = pool.get().await?;
/// client.query_one("SELECT 1", &[]).await?;
/// # Ok(())
/// # }
/// ```
pub fn pool_builder<T>(
    pg_config: PgConfig,
    tls: T,
    credentials: watch::Receiver<Credentials>,
    manager_config: ManagerConfig,
) -> PoolBuilder
where
    T: MakeTlsConnect<Socket> + Clone + Sync + Send + 'static,
    T::Stream: Sync + Send,
    T::TlsConnect: Sync + Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let connect = CredentialsConnect::new(tls, credentials.clone());
    let manager = Manager::from_connect(pg_config, connect, manager_config);
    Pool::builder(manager).pre_recycle(retire_rotated(credentials))
}
