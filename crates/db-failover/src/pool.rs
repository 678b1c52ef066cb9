//! One deadpool pool per node, with a manager that logs in with the current
//! credentials, remembers what each connection was opened with, and
//! retires connections from an older credentials generation or from before
//! an eviction when they are next taken from the pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use deadpool::managed::{Metrics, RecycleError, RecycleResult};
use deadpool_postgres::{ClientWrapper, ManagerConfig};
use tokio_postgres::NoTls;

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
    pub(crate) fn is_stale(&self, conn: &PgConnection) -> Option<&'static str> {
        if self.is_evicted(conn) {
            return Some("evicted after a topology change");
        }
        let current = self.credentials.as_ref().map_or(0, |c| c.generation());
        if conn.credentials_generation < current {
            return Some("opened with rotated-out credentials");
        }
        None
    }
}

impl deadpool::managed::Manager for PgManager {
    type Type = PgConnection;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<PgConnection, tokio_postgres::Error> {
        let opened_in = self.epoch.load(Ordering::SeqCst);
        let credentials = self.credentials.as_ref().map(CredentialsProvider::current);
        let (client, _) = connect(&self.pg, credentials.as_ref()).await?;
        Ok(PgConnection {
            client,
            credentials_generation: credentials.map_or(0, |c| c.generation()),
            opened_in,
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

/// Opens one connection with `credentials` (or the config's own login),
/// spawns its driver and reports `in_hot_standby` when the server sent it.
///
/// Only the TCP connect is bounded here (`connect_timeout`); callers bound
/// the whole login (deadpool's create timeout, the probe timeout).
pub(crate) async fn connect(
    pg: &tokio_postgres::Config,
    credentials: Option<&Credentials>,
) -> Result<(ClientWrapper, Option<bool>), tokio_postgres::Error> {
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
    Ok((ClientWrapper::new(client, task), hot_standby))
}

/// Builds the pool of one node.
pub(crate) fn build(
    node: &NodeConfig,
    timeouts: &Timeouts,
    credentials: Option<CredentialsProvider>,
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
