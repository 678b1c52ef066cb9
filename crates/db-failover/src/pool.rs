//! One deadpool pool per node, with a manager that logs in with the current
//! credentials, remembers what each connection was opened with, and
//! retires connections from an older credentials generation or from before
//! an eviction when they are next taken from the pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool::managed::{Metrics, RecycleError, RecycleResult};
use deadpool_postgres::{ClientWrapper, ManagerConfig};
use tokio::task::AbortHandle;
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::config::{NodeConfig, Timeouts};
use crate::{Credentials, CredentialsProvider};

/// A node's pool.
pub(crate) type NodePool = deadpool::managed::Pool<PgManager>;

/// A pooled connection and what it was opened with.
#[derive(Debug)]
pub(crate) struct PgConnection {
    /// deadpool-postgres's client (statement cache included).
    pub(crate) client: ClientWrapper,
    /// The credentials generation it logged in with.
    pub(crate) credentials_generation: u64,
    /// The pool's eviction epoch when it was opened.
    pub(crate) opened_in: u64,
    /// `in_hot_standby` as the server reported it at login (PostgreSQL
    /// 14+): `Some(true)` means the node was a standby then.
    pub(crate) hot_standby: Option<bool>,
}

/// Opens and recycles the connections of one node.
pub(crate) struct PgManager {
    /// The node's settings, without login.
    pg: tokio_postgres::Config,
    credentials: Option<CredentialsProvider>,
    /// deadpool-postgres's own manager, for its recycling checks.
    recycler: deadpool_postgres::Manager,
    /// Bumped by every eviction: connections opened in an earlier epoch
    /// are retired.
    epoch: AtomicU64,
    /// Which logins work on this node (shared with its prober).
    pub(crate) login: Arc<NodeLogin>,
    /// The driver tasks of the connections it opened, idle or checked out,
    /// so that a node declared down can have them all cut.
    drivers: Mutex<Vec<AbortHandle>>,
}

impl std::fmt::Debug for PgManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgManager")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl PgManager {
    /// Retires every connection opened before now: idle ones at once
    /// (`Pool::retain`, by the caller), checked-out ones when they come back.
    pub(crate) fn evict(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether `conn` was opened before the last eviction.
    pub(crate) fn is_evicted(&self, conn: &PgConnection) -> bool {
        conn.opened_in < self.epoch.load(Ordering::SeqCst)
    }

    /// Why `conn` must not be reused, if it must not.
    ///
    /// A connection of an older credentials generation is kept while the
    /// newest generation is rejected by this node (a role created on the
    /// primary but not replayed here yet): see [`NodeLogin`].
    pub(crate) fn is_stale(&self, conn: &PgConnection) -> Option<&'static str> {
        if self.is_evicted(conn) {
            return Some("evicted after a topology change");
        }
        let current = self.credentials.as_ref().map_or(0, |c| c.generation());
        if conn.credentials_generation < current && !self.login.is_rejected(current) {
            return Some("opened with rotated-out credentials");
        }
        None
    }

    /// Cuts every connection it opened, checked out ones included (their
    /// queries fail at once as closed): the node was declared down, and a
    /// frozen node would otherwise hold them forever.
    pub(crate) fn abort_connections(&self) {
        let drivers = std::mem::take(&mut *lock(&self.drivers));
        for driver in &drivers {
            driver.abort();
        }
    }
}

impl deadpool::managed::Manager for PgManager {
    type Type = PgConnection;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<PgConnection, tokio_postgres::Error> {
        let opened_in = self.epoch.load(Ordering::SeqCst);
        let opened = login(&self.pg, self.credentials.as_ref(), &self.login).await?;
        {
            let mut drivers = lock(&self.drivers);
            drivers.retain(|d| !d.is_finished());
            drivers.push(opened.driver);
        }
        Ok(PgConnection {
            client: opened.client,
            credentials_generation: opened.credentials_generation,
            opened_in,
            hot_standby: opened.hot_standby,
        })
    }

    async fn recycle(
        &self,
        conn: &mut PgConnection,
        metrics: &Metrics,
    ) -> RecycleResult<tokio_postgres::Error> {
        if let Some(why) = self.is_stale(conn) {
            tracing::debug!(why, "retiring a pooled connection");
            return Err(RecycleError::message(why));
        }
        deadpool::managed::Manager::recycle(&self.recycler, &mut conn.client, metrics).await
    }
}

/// The node's `tokio_postgres::Config` with the cluster's timeouts applied.
pub(crate) fn node_pg_config(node: &NodeConfig, timeouts: &Timeouts) -> tokio_postgres::Config {
    let mut pg = node.pg.clone();
    pg.connect_timeout(timeouts.connect)
        .tcp_user_timeout(timeouts.tcp_user)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5))
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(3);
    if let Some(statement) = timeouts.statement {
        let mut options = pg.get_options().unwrap_or_default().to_owned();
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c statement_timeout={}", statement.as_millis()));
        pg.options(options);
    }
    pg
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a few field writes: a panic cannot leave a
    // half-done state behind.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which logins work on one node, shared by its pool and its prober.
///
/// A rotation publishes new credentials as soon as the role exists on the
/// primary; a replica may not have replayed it yet (or never will while its
/// replay is paused) and rejects the login with SQLSTATE 28P01/28000. That
/// is not a node failure: the node keeps using the newest generation that
/// did log in on it until the new one works (the prober tries it again at
/// every probe).
#[derive(Debug, Default)]
pub(crate) struct NodeLogin {
    state: Mutex<LoginState>,
}

#[derive(Debug, Default)]
struct LoginState {
    /// The newest credentials that logged in on this node.
    last_good: Option<Credentials>,
    /// A generation this node rejected and that has not worked since.
    rejected: Option<u64>,
    /// A generation that logged in here and then was refused (revoked:
    /// the user dropped), not yet reported.
    revoked: Option<u64>,
}

impl NodeLogin {
    /// `credentials` logged in.
    pub(crate) fn succeeded(&self, credentials: &Credentials) {
        let mut state = lock(&self.state);
        if state
            .last_good
            .as_ref()
            .is_none_or(|c| c.generation() <= credentials.generation())
        {
            state.last_good = Some(credentials.clone());
        }
        if state
            .rejected
            .is_some_and(|g| g <= credentials.generation())
        {
            state.rejected = None;
        }
    }

    /// `generation` was refused by the server's authentication: returns
    /// the older credentials to use instead, if any worked before.
    pub(crate) fn refused(&self, generation: u64) -> Option<Credentials> {
        let mut state = lock(&self.state);
        let previous = state
            .last_good
            .clone()
            .filter(|c| c.generation() < generation)?;
        state.rejected = Some(generation);
        Some(previous)
    }

    /// `credentials` were refused outright: when they are the ones that
    /// last logged in here, they were revoked (a replica that has not
    /// replayed a new role refuses only logins it never accepted).
    pub(crate) fn refused_outright(&self, credentials: &Credentials) {
        let mut state = lock(&self.state);
        if state
            .last_good
            .as_ref()
            .is_some_and(|c| c.generation() == credentials.generation())
        {
            state.revoked = Some(credentials.generation());
        }
    }

    /// The revoked generation not reported yet, if any (once).
    pub(crate) fn take_revoked(&self) -> Option<u64> {
        lock(&self.state).revoked.take()
    }

    /// Whether `generation` was refused and has not worked since.
    pub(crate) fn is_rejected(&self, generation: u64) -> bool {
        lock(&self.state).rejected == Some(generation)
    }
}

/// Whether `err` is the server refusing the login itself (wrong password,
/// unknown role, no `pg_hba.conf` entry), as opposed to a failing node.
pub(crate) fn is_auth_failure(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|code| {
        *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
    })
}

/// A freshly opened connection.
pub(crate) struct Opened {
    /// The client, its driver task attached.
    pub(crate) client: ClientWrapper,
    /// `in_hot_standby` at login, when the server reported it.
    pub(crate) hot_standby: Option<bool>,
    /// The credentials generation it logged in with.
    pub(crate) credentials_generation: u64,
    /// Aborts its driver task (and so every request in flight on it).
    pub(crate) driver: AbortHandle,
}

/// Logs in to a node with the provider's newest credentials, or with the
/// last ones that worked on this node when the newest are refused there
/// (see [`NodeLogin`]). While the newest generation is known to be refused,
/// the older one is used directly; the prober keeps retrying the new one.
pub(crate) async fn login(
    pg: &tokio_postgres::Config,
    provider: Option<&CredentialsProvider>,
    node: &NodeLogin,
) -> Result<Opened, tokio_postgres::Error> {
    let Some(provider) = provider else {
        return connect(pg, None).await;
    };
    let current = provider.current();
    if node.is_rejected(current.generation())
        && let Some(previous) = node.refused(current.generation())
    {
        let opened = connect(pg, Some(&previous)).await?;
        node.succeeded(&previous);
        return Ok(opened);
    }
    login_with(pg, current, node).await
}

/// Logs in with `credentials`, falling back to the last ones that worked
/// on this node when the server refuses them.
async fn login_with(
    pg: &tokio_postgres::Config,
    credentials: Credentials,
    node: &NodeLogin,
) -> Result<Opened, tokio_postgres::Error> {
    match connect(pg, Some(&credentials)).await {
        Ok(opened) => {
            node.succeeded(&credentials);
            Ok(opened)
        }
        Err(e) if is_auth_failure(&e) => {
            node.refused_outright(&credentials);
            let Some(previous) = node.refused(credentials.generation()) else {
                return Err(e);
            };
            tracing::warn!(
                user = credentials.username(),
                generation = credentials.generation(),
                previous = previous.generation(),
                "new credentials refused by this node (not replicated here yet?): \
                 using the previous generation"
            );
            let opened = connect(pg, Some(&previous)).await?;
            node.succeeded(&previous);
            Ok(opened)
        }
        Err(e) => Err(e),
    }
}

/// Opens one connection with `credentials` (or the config's own login),
/// spawns its driver and reports `in_hot_standby` when the server sent it.
///
/// Only the TCP connect is bounded here (`connect_timeout`); callers bound
/// the whole login (deadpool's create timeout, the probe timeout).
pub(crate) async fn connect(
    pg: &tokio_postgres::Config,
    credentials: Option<&Credentials>,
) -> Result<Opened, tokio_postgres::Error> {
    let mut pg = pg.clone();
    if let Some(c) = credentials {
        pg.user(c.username()).password(c.password().expose());
    }
    let (client, connection) = pg.connect(NoTls).await?;
    let hot_standby = connection.parameter("in_hot_standby").map(|v| v == "on");
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection ended: {e}");
        }
    });
    let driver = task.abort_handle();
    Ok(Opened {
        client: ClientWrapper::new(client, task),
        hot_standby,
        credentials_generation: credentials.map_or(0, Credentials::generation),
        driver,
    })
}

/// Builds the pool of one node.
pub(crate) fn build(
    node: &NodeConfig,
    timeouts: &Timeouts,
    credentials: Option<CredentialsProvider>,
    login: Arc<NodeLogin>,
    recycling: deadpool_postgres::RecyclingMethod,
) -> Result<NodePool, crate::Error> {
    let pg = node_pg_config(node, timeouts);
    let recycler = deadpool_postgres::Manager::from_config(
        pg.clone(),
        NoTls,
        ManagerConfig {
            recycling_method: recycling,
        },
    );
    let manager = PgManager {
        pg,
        credentials,
        recycler,
        epoch: AtomicU64::new(0),
        login,
        drivers: Mutex::default(),
    };
    NodePool::builder(manager)
        .max_size(node.max_connections)
        .wait_timeout(Some(timeouts.pool_wait))
        .create_timeout(Some(timeouts.connect))
        .recycle_timeout(Some(timeouts.recycle))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| crate::Error::Config(format!("pool of {}: {e}", node.address())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_rotation_keeps_the_previous_login_until_the_new_one_works() {
        let node = NodeLogin::default();
        assert_eq!(node.refused(1), None, "nothing to fall back to");
        let v1 = Credentials::new("app_v1", "one", 1);
        let v2 = Credentials::new("app_v2", "two", 2);
        node.succeeded(&v1);
        assert!(!node.is_rejected(2));
        assert_eq!(node.refused(2), Some(v1.clone()));
        assert!(node.is_rejected(2));
        // An older login working again changes nothing.
        node.succeeded(&v1);
        assert!(node.is_rejected(2));
        node.succeeded(&v2);
        assert!(!node.is_rejected(2));
        assert_eq!(node.refused(3), Some(v2));
    }
}
