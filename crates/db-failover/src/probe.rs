//! The background prober: one task per node that asks the node what it is
//! (role, timeline, WAL positions) every probe interval, faster while
//! something is wrong, and at once when live traffic reports trouble.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::ClientWrapper;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_postgres::Statement;
use tokio_postgres::types::PgLsn;

use crate::cluster::Shared;
use crate::events::ProbeReport;
use crate::pool::{NodeLogin, Opened, is_auth_failure, login};
use crate::{CredentialsProvider, Lsn, Role};

/// One round trip: the role, and the WAL position that matters for it. A
/// primary's timeline is the first 8 hex digits of its current WAL file
/// name (`pg_control` only learns a new timeline at the next checkpoint).
const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn() END, \
    pg_last_wal_replay_lsn(), \
    CASE WHEN pg_is_in_recovery() THEN NULL \
         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END";

/// The probe connection of one node (not pooled: probes must not wait
/// behind application traffic for a connection).
struct ProbeConnection {
    client: ClientWrapper,
    statement: Statement,
    credentials_generation: u64,
    /// `in_hot_standby` from the startup parameters, until first used.
    fresh_role: Option<Role>,
}

/// Probes one node.
pub(crate) struct Prober {
    pg: tokio_postgres::Config,
    credentials: Option<CredentialsProvider>,
    /// Which logins work on this node (shared with its pool).
    login: Arc<NodeLogin>,
    connection: Option<ProbeConnection>,
}

impl Prober {
    pub(crate) fn new(
        pg: tokio_postgres::Config,
        credentials: Option<CredentialsProvider>,
        login: Arc<NodeLogin>,
    ) -> Self {
        Prober {
            pg,
            credentials,
            login,
            connection: None,
        }
    }

    /// One probe, bounded by `timeout` from connect to answer. A failed or
    /// timed-out probe drops the connection (it may be hung) so the next
    /// probe starts afresh.
    pub(crate) async fn probe(&mut self, timeout: Duration) -> Result<ProbeReport, String> {
        let started = Instant::now();
        match tokio::time::timeout(timeout, self.probe_unbounded()).await {
            Ok(Ok(mut report)) => {
                report.latency = started.elapsed();
                // After a rotation, the new login is tried outside the
                // probe's budget: a refused or slow login is not a failed
                // probe, the old connection just stays.
                match tokio::time::timeout(timeout, self.rotate()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!("new login failed, keeping the old one: {e}"),
                    Err(_) => tracing::debug!("new login timed out, keeping the old one"),
                }
                Ok(report)
            }
            Ok(Err(e)) => {
                self.connection = None;
                Err(e.to_string())
            }
            Err(_) => {
                self.connection = None;
                Err(format!("probe timed out after {timeout:?}"))
            }
        }
    }

    async fn probe_unbounded(&mut self) -> Result<ProbeReport, tokio_postgres::Error> {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.client.is_closed())
        {
            self.connection = None;
        }
        let connection = match &mut self.connection {
            Some(c) => c,
            None => {
                let opened = login(&self.pg, self.credentials.as_ref(), &self.login).await?;
                self.connection.insert(ProbeConnection::new(opened).await?)
            }
        };
        let row = connection
            .client
            .query_one(&connection.statement, &[])
            .await?;
        let in_recovery: bool = row.try_get(0)?;
        let queried = if in_recovery {
            Role::Standby
        } else {
            Role::Primary
        };
        // PostgreSQL 14+ reports `in_hot_standby` at login: a snapshot of the
        // role at that moment, cross-checked on the first probe. The query
        // ran later, so it wins if a promotion happened in between.
        if let Some(at_login) = connection.fresh_role.take()
            && at_login != queried
        {
            tracing::debug!(%at_login, now = %queried, "role changed since login");
        }
        let role = queried;
        let current: Option<PgLsn> = row.try_get(1)?;
        let replay: Option<PgLsn> = row.try_get(2)?;
        let timeline: Option<i32> = row.try_get(3)?;
        Ok(ProbeReport {
            role,
            timeline: timeline.and_then(|t| u32::try_from(t).ok()),
            current_lsn: current.map(Lsn::from),
            replay_lsn: replay.map(Lsn::from),
            latency: Duration::ZERO,
        })
    }
}

impl Prober {
    /// After a rotation, logs in with the new credentials and replaces the
    /// probe connection. When this node refuses them (the role was not
    /// replayed here yet), the old connection stays: a refused login is
    /// not a failed probe, and the next probe tries again.
    ///
    /// Runs after a successful probe; any error leaves the old connection.
    async fn rotate(&mut self) -> Result<(), tokio_postgres::Error> {
        let (Some(provider), Some(connection)) = (&self.credentials, &self.connection) else {
            return Ok(());
        };
        let current = provider.current();
        if connection.credentials_generation >= current.generation() {
            return Ok(());
        }
        match crate::pool::connect(&self.pg, Some(&current)).await {
            Ok(opened) => {
                self.login.succeeded(&current);
                self.connection = Some(ProbeConnection::new(opened).await?);
                Ok(())
            }
            Err(e) if is_auth_failure(&e) => {
                if self.login.refused(current.generation()).is_some() {
                    tracing::debug!(
                        generation = current.generation(),
                        "new credentials refused here for now: probing with the old login"
                    );
                    Ok(())
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }
}

impl ProbeConnection {
    async fn new(opened: Opened) -> Result<ProbeConnection, tokio_postgres::Error> {
        let statement = opened.client.prepare(PROBE_SQL).await?;
        Ok(ProbeConnection {
            client: opened.client,
            statement,
            credentials_generation: opened.credentials_generation,
            fresh_role: opened
                .hot_standby
                .map(|on| if on { Role::Standby } else { Role::Primary }),
        })
    }
}

/// The probe loop of `node`: runs until the cluster is dropped (the task
/// is aborted then).
pub(crate) async fn run(shared: Arc<Shared>, node: usize, mut prober: Prober, wake: Arc<Notify>) {
    let settings = shared.config.probe;
    loop {
        let started = Instant::now();
        let outcome = prober.probe(settings.timeout).await;
        shared.observe_probe(node, outcome);
        let interval = if shared.wants_fast_probe(node) {
            settings.fast_interval
        } else {
            settings.interval
        };
        // Intervals run from probe start to probe start: a probe that timed
        // out has already waited longer than the fast interval.
        let pause = interval.saturating_sub(started.elapsed());
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = wake.notified() => {}
        }
    }
}
