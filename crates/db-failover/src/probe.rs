//! The background prober: one task per node that asks the node what it is
//! (role, timeline, WAL positions) every probe interval (shorter for the
//! primary), faster while something is wrong, and at once when live traffic
//! reports trouble.
//!
//! Probes of one node overlap: the next starts on time even while an
//! earlier one waits for its answer (at most [`MAX_IN_FLIGHT`] at once), so
//! a probe stuck on a frozen node does not delay the next, and the node's
//! silence is judged on time (`Topology::check_silence`). Only one probe
//! connection is kept; a probe that finds it in use opens its own, kept
//! afterwards only if the slot is free. But only one probe of a node
//! logs in at a time: no probe starts while another is still connecting.
//! Logins cost CPU on both ends (SCRAM), and on a starved machine
//! overlapping logins that each time out would keep it starved, so the
//! node would never be seen up again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::ClientWrapper;
use tokio::sync::Notify;
use tokio::task::JoinSet;
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

/// Probes of one node in flight at most: with the defaults (a probe every
/// 200 ms, each bounded by 500 ms) a frozen primary has three.
const MAX_IN_FLIGHT: usize = 3;

/// Probes one node.
pub(crate) struct Prober {
    pg: tokio_postgres::Config,
    credentials: Option<CredentialsProvider>,
    /// Which logins work on this node (shared with its pool).
    login: Arc<NodeLogin>,
    /// The idle probe connection, taken by a probe while it runs.
    connection: Mutex<Option<ProbeConnection>>,
    /// Bounds a probe's login (the pool's connect timeout).
    connect_timeout: Duration,
    /// A probe is logging in: no other starts until it is done.
    connecting: AtomicBool,
}

/// Clears [`Prober::connecting`] when the login ends, however it ends
/// (a probe timed out is dropped mid-login).
struct Connecting<'a>(&'a AtomicBool);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Prober {
    pub(crate) fn new(
        pg: tokio_postgres::Config,
        credentials: Option<CredentialsProvider>,
        login: Arc<NodeLogin>,
        connect_timeout: Duration,
    ) -> Self {
        Prober {
            pg,
            credentials,
            login,
            connection: Mutex::new(None),
            connect_timeout,
            connecting: AtomicBool::new(false),
        }
    }

    /// Whether a probe is logging in (the next must wait for it).
    pub(crate) fn is_connecting(&self) -> bool {
        self.connecting.load(Ordering::Acquire)
    }

    /// One probe: its login, if it needs one, bounded by the connect
    /// timeout, then its query bounded by `timeout`. A failed or timed-out
    /// probe drops its connection (it may be hung) so the next probe starts
    /// afresh.
    pub(crate) async fn probe(&self, timeout: Duration) -> Result<ProbeReport, String> {
        let mut connection = match self.take_connection() {
            Some(connection) => connection,
            None => self.log_in().await?,
        };
        let started = Instant::now();
        match tokio::time::timeout(timeout, self.query(&mut connection)).await {
            Ok(Ok(mut report)) => {
                report.latency = started.elapsed();
                let mut connection = Some(connection);
                // After a rotation, the new login is tried outside the
                // probe's budget: a refused or slow login is not a failed
                // probe, the old connection just stays.
                match tokio::time::timeout(timeout, self.rotate(&mut connection)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!("new login failed, keeping the old one: {e}"),
                    Err(_) => tracing::debug!("new login timed out, keeping the old one"),
                }
                self.put_back(connection);
                Ok(report)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("probe timed out after {timeout:?}")),
        }
    }

    /// A new probe connection, bounded by the connect timeout; marks the
    /// node as [connecting](Prober::is_connecting) meanwhile.
    async fn log_in(&self) -> Result<ProbeConnection, String> {
        self.connecting.store(true, Ordering::Release);
        let _connecting = Connecting(&self.connecting);
        let login = async {
            let opened = login(&self.pg, self.credentials.as_ref(), &self.login).await?;
            ProbeConnection::new(opened).await
        };
        match tokio::time::timeout(self.connect_timeout, login).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "probe login timed out after {:?}",
                self.connect_timeout
            )),
        }
    }

    /// The idle probe connection, if there is one and it is not closed.
    fn take_connection(&self) -> Option<ProbeConnection> {
        let mut slot = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        slot.take().filter(|c| !c.client.is_closed())
    }

    /// Keeps `connection` for the next probe, unless another probe already
    /// put one back (then it is closed).
    fn put_back(&self, connection: Option<ProbeConnection>) {
        let mut slot = self.connection.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = connection;
        }
    }

    /// The probe's query on `connection` (opened by [`Prober::probe`]).
    async fn query(
        &self,
        connection: &mut ProbeConnection,
    ) -> Result<ProbeReport, tokio_postgres::Error> {
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
    async fn rotate(
        &self,
        connection: &mut Option<ProbeConnection>,
    ) -> Result<(), tokio_postgres::Error> {
        let (Some(provider), Some(current_connection)) = (&self.credentials, &*connection) else {
            return Ok(());
        };
        let current = provider.current();
        if current_connection.credentials_generation >= current.generation() {
            return Ok(());
        }
        match crate::pool::connect(&self.pg, Some(&current)).await {
            Ok(opened) => {
                self.login.succeeded(&current);
                *connection = Some(ProbeConnection::new(opened).await?);
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
/// is aborted then, and its probes with it).
///
/// A probe starts when the last one started an interval ago (the fast,
/// primary or slow one, as the topology says now), or a fast interval
/// after a wake-up, provided fewer than [`MAX_IN_FLIGHT`] are running and
/// none is logging in.
/// Between probes the loop also wakes when the node's silence reaches
/// its limit, so a frozen node is found down on time rather than at its
/// next probe.
pub(crate) async fn run(shared: Arc<Shared>, node: usize, prober: Prober, wake: Arc<Notify>) {
    let settings = shared.config.probe;
    let prober = Arc::new(prober);
    let mut probes: JoinSet<(Instant, Result<ProbeReport, String>)> = JoinSet::new();
    let mut last_start: Option<Instant> = None;
    let mut woken = false;
    loop {
        let interval = if woken {
            settings.fast_interval.min(shared.probe_interval(node))
        } else {
            shared.probe_interval(node)
        };
        let due = last_start.map(|at| at + interval);
        let room = probes.len() < MAX_IN_FLIGHT && !prober.is_connecting();
        if room && due.is_none_or(|due| due <= Instant::now()) {
            let started = Instant::now();
            shared.probe_started(node, started);
            let prober = prober.clone();
            probes.spawn(async move { (started, prober.probe(settings.timeout).await) });
            last_start = Some(started);
            woken = false;
            continue;
        }
        let silence = shared.silence_deadline(node);
        // Answers first: one that arrived together with the silence
        // deadline (a starved runtime) still counts.
        tokio::select! {
            biased;
            Some(joined) = probes.join_next() => {
                let (started, outcome) = match joined {
                    Ok(finished) => finished,
                    // Only a panic (the set is never aborted while the loop
                    // runs): count it as a failed probe.
                    Err(e) => (last_start.unwrap_or_else(Instant::now), Err(format!("probe task failed: {e}"))),
                };
                shared.observe_probe(node, started, outcome);
            }
            _ = tokio::time::sleep_until(silence.unwrap_or_else(Instant::now)), if silence.is_some() => {
                shared.check_silence(node);
            }
            _ = wake.notified() => woken = true,
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if room => {}
        }
    }
}
