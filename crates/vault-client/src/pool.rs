//! deadpool-postgres with rotating credentials (feature `deadpool`).
//!
//! - [`CredentialsConnect`] opens every new connection with the credentials
//!   current at that moment (read from the lease manager's `watch` channel).
//!   If a rotation happens while it connects, it connects again with the new
//!   set, so no connection is ever born with stale credentials.
//! - [`RotationHooks`] remembers the credentials generation each connection
//!   was opened with (a `post_create` hook asks the server for the
//!   connection's user once) and retires, in a `pre_recycle` hook, every
//!   connection whose generation is older than the current one when it
//!   comes back out of the pool; deadpool hands out (or opens) another one
//!   instead. Callers never see an error for it. [`pool_builder`] installs
//!   both.
//!
//! Together they rotate credentials under load without a failed request, as
//! long as the old user outlives the connections in use (the lease manager
//! rotates a margin before expiry).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};

pub use deadpool_postgres;
use deadpool_postgres::{
    ClientWrapper, Connect, Hook, HookError, Manager, ManagerConfig, Pool, PoolBuilder,
    StatementCache,
};
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

/// The credentials generation of each open connection, keyed by the address
/// of its statement cache (one per connection, alive as long as it is).
type Opened = HashMap<usize, (Weak<StatementCache>, u64)>;

/// A pair of deadpool hooks that retire connections by credentials
/// generation rather than by time: `post_create` records the generation a
/// new connection was opened with (it asks the server for `current_user`
/// once, and compares it with the published user names), `pre_recycle`
/// retires a connection whose generation is older than the current one. A
/// connection that finished connecting after a rotation with the old user
/// is therefore retired too, which a timestamp comparison
/// ([`retire_rotated`]) misses.
#[derive(Debug, Clone)]
pub struct RotationHooks {
    /// The published credentials.
    credentials: watch::Receiver<Credentials>,
    /// The generation of each open connection.
    opened: Arc<Mutex<Opened>>,
}

impl RotationHooks {
    /// Hooks for connections opened with `credentials`.
    pub fn new(credentials: watch::Receiver<Credentials>) -> Self {
        RotationHooks {
            credentials,
            opened: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The `post_create` hook: records the new connection's generation.
    pub fn post_create(&self) -> Hook {
        let hooks = self.clone();
        Hook::async_fn(move |client: &mut ClientWrapper, _metrics| {
            let hooks = hooks.clone();
            Box::pin(async move {
                let row = client
                    .query_one("SELECT current_user::text", &[])
                    .await
                    .map_err(HookError::Backend)?;
                let user: String = row.try_get(0).map_err(HookError::Backend)?;
                let generation = {
                    let current = hooks.credentials.borrow();
                    // Not the current user: opened with an older set (0 is
                    // older than every published generation).
                    if current.username == user {
                        current.generation
                    } else {
                        0
                    }
                };
                let cache = &client.statement_cache;
                let mut opened = hooks.opened.lock().unwrap_or_else(PoisonError::into_inner);
                opened.retain(|_, (alive, _)| alive.strong_count() > 0);
                opened.insert(
                    Arc::as_ptr(cache) as usize,
                    (Arc::downgrade(cache), generation),
                );
                Ok(())
            })
        })
    }

    /// The `pre_recycle` hook: retires a connection opened with an older
    /// generation than the current one (or whose generation is unknown).
    pub fn pre_recycle(&self) -> Hook {
        let hooks = self.clone();
        Hook::sync_fn(move |client: &mut ClientWrapper, _metrics| {
            let current = hooks.credentials.borrow().generation;
            let key = Arc::as_ptr(&client.statement_cache) as usize;
            let mut opened = hooks.opened.lock().unwrap_or_else(PoisonError::into_inner);
            let generation = opened.get(&key).map(|(_, generation)| *generation);
            if generation.is_some_and(|generation| generation >= current) {
                return Ok(());
            }
            opened.remove(&key);
            Err(HookError::Message(
                "opened with credentials that have since been rotated".into(),
            ))
        })
    }
}

/// A `pre_recycle` hook that retires connections opened before the current
/// credentials were published. It compares times, so a connection that
/// finished connecting with the old user just after a rotation escapes it:
/// prefer [`RotationHooks`] (which [`pool_builder`] installs).
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
/// a rotation ([`RotationHooks`]: each connection's generation is compared
/// with the current one). Set the pool size and timeouts on it, then `build()`.
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
    let hooks = RotationHooks::new(credentials);
    Pool::builder(manager)
        .post_create(hooks.post_create())
        .pre_recycle(hooks.pre_recycle())
}
