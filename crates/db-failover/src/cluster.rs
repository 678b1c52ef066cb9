//! The cluster handle: routing of writes and reads, connections, retried
//! operations, and the shared state the probers update.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool::managed::{Object, TimeoutType};
use deadpool_postgres::ClientWrapper;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::PgLsn;

use crate::backoff::{Deadline, pause};
use crate::classify::{Failure, classify};
use crate::config::{Balance, Fallback};
use crate::events::ProbeReport;
use crate::health::{Health, NodeHealth, PoolStats};
use crate::pool::{NodeLogin, NodePool, PgManager};
use crate::probe::Prober;
use crate::topology::{Change, Rules, Topology, View};
use crate::{CommitToken, Config, Error, Event, Lsn, NodeId, PoolError, Role, metrics};

/// How many events a slow receiver may fall behind before losing some.
const EVENT_CAPACITY: usize = 256;
/// How often `read_after` re-reads a replica's replay position while it
/// waits for it to reach the token.
const CATCH_UP_POLL: Duration = Duration::from_millis(10);

/// A boxed future, as operations return them.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the closure of an operation returns: a future borrowing the
/// connection, resolving to its result.
pub type OpFuture<'c, T> = BoxFuture<'c, Result<T, tokio_postgres::Error>>;

/// How one operation is run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpOptions {
    /// Overall deadline, attempts, back-off and the wait for a primary
    /// included (default: [`RetryPolicy::deadline`](crate::RetryPolicy::deadline)).
    pub deadline: Option<Duration>,
    /// The caller promises that running the operation twice has the same
    /// effect as running it once (an upsert keyed by a request id, say): a
    /// write whose outcome is unknown is then retried instead of failing
    /// with [`Error::OutcomeUnknown`].
    pub idempotent: bool,
}

impl OpOptions {
    /// Default options.
    pub fn new() -> OpOptions {
        OpOptions::default()
    }

    /// Sets the overall deadline.
    pub fn deadline(mut self, deadline: Duration) -> OpOptions {
        self.deadline = Some(deadline);
        self
    }

    /// Marks the operation idempotent (see [`OpOptions::idempotent`]).
    pub fn idempotent(mut self, idempotent: bool) -> OpOptions {
        self.idempotent = idempotent;
        self
    }
}

/// A committed write: the closure's value, where it ran and the token for
/// reading it back.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Written<T> {
    /// What the closure returned.
    pub value: T,
    /// The primary it committed on.
    pub node: NodeId,
    /// For [`Cluster::read_after`] and [`Cluster::read_op_after`].
    pub token: CommitToken,
}

/// State shared by the cluster handle, its connections and its probers.
pub(crate) struct Shared {
    pub(crate) config: Config,
    addresses: Vec<String>,
    pools: Vec<NodePool>,
    topology: Mutex<Topology>,
    view: watch::Sender<View>,
    events: broadcast::Sender<Event>,
    wake: Vec<Arc<Notify>>,
    round_robin: AtomicUsize,
    /// The newest credentials generation reported refused.
    refused_generation: AtomicU64,
}

impl Shared {
    fn topology(&self) -> MutexGuard<'_, Topology> {
        // A panic while holding the lock leaves a consistent state: every
        // mutation is a handful of field writes.
        self.topology.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one observation, then broadcasts its events, evicts pools
    /// and publishes the new view.
    fn apply(&self, observe: impl FnOnce(&mut Topology, Instant) -> Change) {
        let now = Instant::now();
        let (change, lags) = {
            let mut topology = self.topology();
            let change = observe(&mut topology, now);
            // Under the lock, view first: whoever receives an event already
            // routes by the view that event describes, and events arrive in
            // order.
            let view = topology.view();
            self.view.send_if_modified(|current| {
                if *current == view {
                    false
                } else {
                    *current = view;
                    true
                }
            });
            for event in &change.events {
                self.log(event);
                // Recorded before the event goes out: whoever sees the
                // event sees the metric.
                if let Event::FailoverCompleted { duration, .. } = event {
                    metrics::failover(*duration);
                }
                let _ = self.events.send(event.clone());
            }
            let lags: Vec<_> = topology
                .nodes()
                .iter()
                .map(|n| (n.up, n.lag_bytes, n.lag))
                .collect();
            (change, lags)
        };
        for event in &change.events {
            if let Event::NodeDown { node, .. } = event {
                // Checked-out connections too: on a frozen node their
                // requests would otherwise wait forever.
                self.pools[node.0].manager().abort_connections();
            }
        }
        for &node in &change.evict {
            let pool = &self.pools[node];
            pool.manager().evict();
            let removed = pool.retain(|_, _| false).removed.len();
            tracing::debug!(node = %self.addresses[node], removed, "evicted pooled connections");
        }
        for (address, (up, bytes, lag)) in self.addresses.iter().zip(lags) {
            metrics::node(address, up == Some(true), bytes, lag);
        }
        if change.reprobe {
            self.reprobe();
        }
    }

    /// The database refused the credentials of `generation` on `node`
    /// (rotating ones only): [`Event::CredentialsRefused`], once per
    /// generation.
    fn credentials_refused(&self, node: usize, generation: u64) {
        if generation == 0
            || self
                .refused_generation
                .fetch_max(generation, Ordering::SeqCst)
                >= generation
        {
            return;
        }
        let event = Event::CredentialsRefused {
            node: NodeId(node),
            generation,
        };
        self.log(&event);
        let _ = self.events.send(event);
    }

    /// Reports credentials `node` accepted and then refused (its pool's or
    /// prober's last login), if any.
    fn report_revoked(&self, node: usize) {
        if let Some(generation) = self.pools[node].manager().login.take_revoked() {
            self.credentials_refused(node, generation);
        }
    }

    /// Whether `error` on `conn` is a statement denied (42501) to rotating
    /// credentials; sends [`Event::CredentialsRefused`] when it is.
    fn denied(&self, conn: &Connection, error: &tokio_postgres::Error) -> bool {
        let generation = conn.credentials_generation();
        let denied = generation > 0 && error.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE);
        if denied {
            self.credentials_refused(conn.node.0, generation);
        }
        denied
    }

    /// A statement error on `conn`: [`Error::CredentialsRefused`] when it
    /// was denied to rotating credentials, else [`Error::Query`].
    fn statement_error(&self, conn: &Connection, source: tokio_postgres::Error) -> Error {
        if self.denied(conn, &source) {
            return Error::CredentialsRefused {
                node: conn.node,
                generation: conn.credentials_generation(),
                source,
            };
        }
        Error::Query {
            node: conn.node,
            source,
        }
    }

    fn log(&self, event: &Event) {
        match event {
            Event::CredentialsRefused { node, generation } => {
                tracing::warn!(node = %self.addresses[node.0], generation, "database credentials refused");
            }
            Event::NodeDown { node, error } => {
                tracing::warn!(node = %self.addresses[node.0], %error, "node down");
            }
            Event::PrimaryLost { node, generation } => {
                tracing::warn!(node = %self.addresses[node.0], generation, "primary lost");
            }
            Event::SplitBrain { primaries, chosen } => {
                tracing::error!(?primaries, chosen = %self.addresses[chosen.0], "split brain");
            }
            other => tracing::info!(event = ?other, "cluster event"),
        }
    }

    /// A probe of `node` that started at `started` finished.
    pub(crate) fn observe_probe(
        &self,
        node: usize,
        started: Instant,
        outcome: Result<ProbeReport, String>,
    ) {
        match &outcome {
            Ok(report) => metrics::probe(&self.addresses[node], Some(report.latency)),
            Err(error) => {
                metrics::probe(&self.addresses[node], None);
                tracing::debug!(node = %self.addresses[node], %error, "probe failed");
            }
        }
        self.report_revoked(node);
        self.apply(|t, now| t.probe_finished(node, started, outcome, now));
    }

    /// A probe of `node` starts now.
    pub(crate) fn probe_started(&self, node: usize, now: Instant) {
        self.apply(|t, _| t.probe_started(node, now));
    }

    /// Whether `node` has been silent too long by now.
    pub(crate) fn check_silence(&self, node: usize) {
        self.apply(|t, now| t.check_silence(node, now));
    }

    /// When `node`'s silence would make it down (see
    /// `Topology::silence_deadline`).
    pub(crate) fn silence_deadline(&self, node: usize) -> Option<Instant> {
        self.topology().silence_deadline(node)
    }

    /// The time from one probe start of `node` to the next, as things
    /// stand: fast while it fails or there is no primary, the primary
    /// interval for the primary, the slow one otherwise.
    pub(crate) fn probe_interval(&self, node: usize) -> Duration {
        let settings = &self.config.probe;
        let topology = self.topology();
        if topology.wants_fast_probe(node) {
            settings.fast_interval
        } else if topology.primary() == Some(node) {
            settings.primary_interval.min(settings.interval)
        } else {
            settings.interval
        }
    }

    /// Live traffic to `node` failed with `failure`.
    fn report(&self, node: usize, failure: Failure) {
        match failure {
            Failure::ReadOnly => {
                tracing::warn!(node = %self.addresses[node], "read-only answer from the primary");
                self.apply(|t, now| t.read_only(node, now));
            }
            Failure::Connection => {
                self.topology().trouble(node, Instant::now());
            }
            Failure::Statement => {}
        }
        if failure.is_topology_signal() {
            self.reprobe();
        }
    }

    /// Wakes every prober for an immediate probe.
    fn reprobe(&self) {
        for wake in &self.wake {
            wake.notify_one();
        }
    }

    fn current_view(&self) -> View {
        self.view.borrow().clone()
    }
}

/// Aborts the probers when the last handle goes.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A PostgreSQL primary and its replicas behind one handle.
///
/// Cheap to clone; the background probers stop when the last clone is
/// dropped. See the crate documentation for routing, retries and events.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
    _tasks: Arc<Tasks>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.shared.addresses)
            .field("view", &self.shared.current_view())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Validates `config`, creates the pools (empty: connections open on
    /// demand), starts one prober per node and waits until each node was
    /// probed once (at most the connect and probe timeouts plus one second).
    ///
    /// Unreachable nodes are not an error: the cluster may start during an
    /// outage, and [`Cluster::health`] says what is up.
    pub async fn connect(config: Config) -> Result<Cluster, Error> {
        config.validate()?;
        let logins: Vec<Arc<NodeLogin>> = config.nodes.iter().map(|_| Arc::default()).collect();
        let mut pools = Vec::with_capacity(config.nodes.len());
        for (node, login) in config.nodes.iter().zip(&logins) {
            pools.push(crate::pool::build(
                node,
                &config.timeouts,
                config.credentials.clone(),
                login.clone(),
                config.recycling.clone(),
            )?);
        }
        let rules = Rules {
            failure_threshold: config.probe.failure_threshold,
            down_after: config.probe.silence_limit(),
            max_lag_bytes: config.reads.max_lag_bytes,
            max_lag: config.reads.max_lag,
        };
        let topology = Topology::new(config.nodes.len(), rules);
        let (view, _) = watch::channel(topology.view());
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let wake: Vec<Arc<Notify>> = config.nodes.iter().map(|_| Arc::default()).collect();
        let probers: Vec<Prober> = config
            .nodes
            .iter()
            .zip(logins)
            .map(|(n, login)| {
                Prober::new(
                    crate::pool::node_pg_config(n, &config.timeouts),
                    config.credentials.clone(),
                    login,
                    config.timeouts.connect,
                )
            })
            .collect();
        let shared = Arc::new(Shared {
            addresses: config.nodes.iter().map(|n| n.address()).collect(),
            config,
            pools,
            topology: Mutex::new(topology),
            view,
            events,
            wake,
            round_robin: AtomicUsize::new(0),
            refused_generation: AtomicU64::new(0),
        });
        let tasks = probers
            .into_iter()
            .enumerate()
            .map(|(node, prober)| {
                tokio::spawn(crate::probe::run(
                    shared.clone(),
                    node,
                    prober,
                    shared.wake[node].clone(),
                ))
            })
            .collect();
        let cluster = Cluster {
            shared,
            _tasks: Arc::new(Tasks(tasks)),
        };
        let mut view = cluster.shared.view.subscribe();
        let config = &cluster.shared.config;
        let settle = config
            .timeouts
            .connect
            .saturating_add(config.probe.timeout)
            .saturating_add(Duration::from_secs(1));
        let _ = tokio::time::timeout(settle, view.wait_for(|v| v.settled)).await;
        Ok(cluster)
    }

    /// Typed events (node up/down, primary lost/elected, failover, lag,
    /// split brain) from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// The current topology generation: it changes whenever the primary or
    /// the set of up nodes does.
    pub fn generation(&self) -> u64 {
        self.shared.view.borrow().generation
    }

    /// The node writes go to now, if any.
    pub fn primary_node(&self) -> Option<NodeId> {
        self.shared.view.borrow().primary.map(NodeId)
    }

    /// The address (`host:port`) of `node`.
    pub fn address(&self, node: NodeId) -> Option<&str> {
        self.shared.addresses.get(node.0).map(String::as_str)
    }

    /// Asks every prober to probe now.
    pub fn reprobe(&self) {
        self.shared.reprobe();
    }

    /// A snapshot for a readiness endpoint: per node its role, up/down,
    /// lag and pool, plus the primary and generation.
    pub fn health(&self) -> Health {
        let topology = self.shared.topology();
        let nodes = topology
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let status = self.shared.pools[i].status();
                NodeHealth {
                    id: NodeId(i),
                    address: self.shared.addresses[i].clone(),
                    role: n.role,
                    up: n.up == Some(true),
                    consecutive_failures: n.failures,
                    reachable: n.reachable,
                    timeline: n.timeline,
                    lsn: n.current_lsn.or(n.replay_lsn),
                    lag_bytes: n.lag_bytes,
                    lag: n.lag,
                    lagging: n.lagging,
                    probe_latency: n.probe_latency,
                    last_error: n.last_error.clone(),
                    pool: PoolStats {
                        max_size: status.max_size,
                        size: status.size,
                        available: status.available,
                        waiting: status.waiting,
                    },
                }
            })
            .collect();
        Health {
            generation: topology.generation(),
            primary: topology.primary().map(NodeId),
            nodes,
        }
    }

    /// A connection to the current primary.
    ///
    /// Waits for a primary (during a failover) and retries failed
    /// connection attempts with back-off, all within the retry deadline:
    /// nothing has been sent yet, so this is always safe. Errors on the
    /// connection afterwards are the caller's; pass them to
    /// [`Connection::report`] so the cluster reacts at once.
    pub async fn write(&self) -> Result<Connection, Error> {
        let deadline = Deadline::after(self.shared.config.retry.deadline);
        let mut attempt = 0;
        loop {
            let generation = self.generation();
            match self.primary_connection(&deadline).await {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    self.pause_or_give_up(e, &mut attempt, &deadline, generation)
                        .await?
                }
            }
        }
    }

    /// A connection to a replica that qualifies (up, answering, within the
    /// lag bounds), round robin or least busy; when none does, the primary
    /// or [`Error::NoReplica`] as configured.
    pub async fn read(&self) -> Result<Connection, Error> {
        let deadline = Deadline::after(self.shared.config.retry.deadline);
        let mut attempt = 0;
        loop {
            let generation = self.generation();
            match self.read_connection(None, &deadline).await {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    self.pause_or_give_up(e, &mut attempt, &deadline, generation)
                        .await?
                }
            }
        }
    }

    /// A connection that sees the write behind `token`: a qualifying
    /// replica whose replay position (read on the connection itself) has
    /// reached the token, after waiting up to
    /// [`ReadSettings::read_after_wait`](crate::ReadSettings::read_after_wait)
    /// for one; otherwise the primary, whatever the fallback setting.
    pub async fn read_after(&self, token: &CommitToken) -> Result<Connection, Error> {
        let deadline = Deadline::after(self.shared.config.retry.deadline);
        let mut attempt = 0;
        loop {
            let generation = self.generation();
            match self.read_connection(Some(token), &deadline).await {
                Ok(conn) => return Ok(conn),
                Err(e) => {
                    self.pause_or_give_up(e, &mut attempt, &deadline, generation)
                        .await?
                }
            }
        }
    }

    /// Runs a write on the primary with the default options; see
    /// [`Cluster::write_op_with`].
    pub async fn write_op<T, F>(&self, f: F) -> Result<Written<T>, Error>
    where
        F: for<'c> FnMut(&'c mut Connection) -> OpFuture<'c, T>,
        T: Send,
    {
        self.write_op_with(OpOptions::default(), f).await
    }

    /// Runs `f` on a primary connection and returns its value with a
    /// [`CommitToken`].
    ///
    /// Retried (with back-off, within the deadline) when no statement was
    /// sent or nothing was written: no primary yet, connection failures,
    /// SQLSTATE 25006 from a node that turned out to be a standby. Once the
    /// closure has sent its statements, a broken connection, a server going
    /// away or the deadline make the outcome unknown: that is
    /// [`Error::OutcomeUnknown`], never a silent retry, unless
    /// `options.idempotent` is set. A statement error on a working
    /// connection is [`Error::Query`], not retried.
    pub async fn write_op_with<T, F>(
        &self,
        options: OpOptions,
        mut f: F,
    ) -> Result<Written<T>, Error>
    where
        F: for<'c> FnMut(&'c mut Connection) -> OpFuture<'c, T>,
        T: Send,
    {
        let deadline = Deadline::after(
            options
                .deadline
                .unwrap_or(self.shared.config.retry.deadline),
        );
        let mut attempt = 0;
        loop {
            let generation = self.generation();
            let mut conn = match self.primary_connection(&deadline).await {
                Ok(conn) => conn,
                Err(e) => {
                    self.pause_or_give_up(e, &mut attempt, &deadline, generation)
                        .await?;
                    continue;
                }
            };
            let node = conn.node;
            let outcome = tokio::time::timeout_at(deadline.instant(), f(&mut conn)).await;
            let error = match outcome {
                Ok(Ok(value)) => {
                    let token = conn.token_after_write(&deadline).await;
                    return Ok(Written { value, node, token });
                }
                Ok(Err(e)) => match classify(&e, conn.is_closed()) {
                    Failure::ReadOnly => {
                        // A read-only transaction on a real primary (`BEGIN
                        // READ ONLY`, default_transaction_read_only) is the
                        // caller's error, not a demotion.
                        match conn.in_recovery(&deadline).await {
                            Some(false) => return Err(Error::Query { node, source: e }),
                            Some(true) => self.shared.report(node.0, Failure::ReadOnly),
                            // No answer: suspect, not demoted; the probes
                            // decide. Nothing was written either way.
                            None => self.shared.report(node.0, Failure::Connection),
                        }
                        Error::ReadOnly {
                            node,
                            source: Some(e),
                        }
                    }
                    Failure::Connection => {
                        self.shared.report(node.0, Failure::Connection);
                        if !options.idempotent {
                            return Err(Error::OutcomeUnknown {
                                node,
                                reason: "the connection failed while the write was in flight"
                                    .into(),
                                source: Some(e),
                            });
                        }
                        Error::Connection { node, source: e }
                    }
                    Failure::Statement => match self.shared.statement_error(&conn, e) {
                        // Denied: nothing written; new credentials come.
                        refused @ Error::CredentialsRefused { .. } => refused,
                        other => return Err(other),
                    },
                },
                Err(_) => {
                    self.shared.report(node.0, Failure::Connection);
                    conn.discard();
                    if options.idempotent {
                        return Err(Error::DeadlineExceeded {
                            deadline: deadline.budget(),
                            attempts: attempt + 1,
                            last: None,
                        });
                    }
                    return Err(Error::OutcomeUnknown {
                        node,
                        reason: format!(
                            "the deadline of {:?} passed while the write was in flight",
                            deadline.budget()
                        ),
                        source: None,
                    });
                }
            };
            drop(conn);
            self.pause_or_give_up(error, &mut attempt, &deadline, generation)
                .await?;
        }
    }

    /// Runs a read with the default options; see [`Cluster::read_op_with`].
    pub async fn read_op<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: for<'c> FnMut(&'c mut Connection) -> OpFuture<'c, T>,
        T: Send,
    {
        self.read_op_with(OpOptions::default(), None, f).await
    }

    /// Runs a read that must see the write behind `token`.
    pub async fn read_op_after<T, F>(&self, token: &CommitToken, f: F) -> Result<T, Error>
    where
        F: for<'c> FnMut(&'c mut Connection) -> OpFuture<'c, T>,
        T: Send,
    {
        self.read_op_with(OpOptions::default(), Some(token), f)
            .await
    }

    /// Runs `f` on a replica (or the primary, see [`Cluster::read`] and
    /// [`Cluster::read_after`]). Reads are retried on connection failures
    /// until the deadline: `f` must not write.
    pub async fn read_op_with<T, F>(
        &self,
        options: OpOptions,
        token: Option<&CommitToken>,
        mut f: F,
    ) -> Result<T, Error>
    where
        F: for<'c> FnMut(&'c mut Connection) -> OpFuture<'c, T>,
        T: Send,
    {
        let deadline = Deadline::after(
            options
                .deadline
                .unwrap_or(self.shared.config.retry.deadline),
        );
        let mut attempt = 0;
        loop {
            let generation = self.generation();
            let mut conn = match self.read_connection(token, &deadline).await {
                Ok(conn) => conn,
                Err(e) => {
                    self.pause_or_give_up(e, &mut attempt, &deadline, generation)
                        .await?;
                    continue;
                }
            };
            let node = conn.node;
            let error = match tokio::time::timeout_at(deadline.instant(), f(&mut conn)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => match classify(&e, conn.is_closed()) {
                    Failure::ReadOnly if conn.role == Role::Primary => {
                        match conn.in_recovery(&deadline).await {
                            Some(false) => return Err(Error::Query { node, source: e }),
                            Some(true) => self.shared.report(node.0, Failure::ReadOnly),
                            None => self.shared.report(node.0, Failure::Connection),
                        }
                        Error::ReadOnly {
                            node,
                            source: Some(e),
                        }
                    }
                    Failure::Connection => {
                        self.shared.report(node.0, Failure::Connection);
                        Error::Connection { node, source: e }
                    }
                    Failure::ReadOnly | Failure::Statement => {
                        match self.shared.statement_error(&conn, e) {
                            refused @ Error::CredentialsRefused { .. } => refused,
                            other => return Err(other),
                        }
                    }
                },
                Err(_) => {
                    self.shared.report(node.0, Failure::Connection);
                    conn.discard();
                    return Err(Error::DeadlineExceeded {
                        deadline: deadline.budget(),
                        attempts: attempt + 1,
                        last: None,
                    });
                }
            };
            drop(conn);
            self.pause_or_give_up(error, &mut attempt, &deadline, generation)
                .await?;
        }
    }

    /// After a failed attempt: `Err` when the error is final or the
    /// deadline has passed, otherwise a full-jitter pause, cut short when
    /// the topology generation moves past `seen` (a new primary was
    /// elected: no reason to wait longer).
    async fn pause_or_give_up(
        &self,
        error: Error,
        attempt: &mut u32,
        deadline: &Deadline,
        seen: u64,
    ) -> Result<(), Error> {
        *attempt += 1;
        if !error.is_retryable() {
            return Err(error);
        }
        let give_up = |error: Error, attempts: u32| Error::DeadlineExceeded {
            deadline: deadline.budget(),
            attempts,
            last: Some(Box::new(error)),
        };
        tracing::debug!(%error, attempt = *attempt, "retrying");
        let mut view = self.shared.view.subscribe();
        let new_generation = async move {
            let _ = view.wait_for(|v| v.generation != seen).await;
        };
        let policy = &self.shared.config.retry;
        let mut rng = fastrand::Rng::new();
        if pause(policy, *attempt - 1, deadline, &mut rng, new_generation).await {
            Ok(())
        } else {
            Err(give_up(error, *attempt))
        }
    }

    /// One try at a primary connection: waits (within the deadline) for a
    /// primary to exist, then takes a connection from its pool.
    async fn primary_connection(&self, deadline: &Deadline) -> Result<Connection, Error> {
        let started = Instant::now();
        let mut view = self.shared.view.subscribe();
        let view = match tokio::time::timeout_at(
            deadline.instant(),
            view.wait_for(|v| v.primary.is_some()),
        )
        .await
        {
            Ok(Ok(view)) => view.clone(),
            _ => {
                return Err(Error::NoPrimary {
                    waited: started.elapsed(),
                });
            }
        };
        let Some(primary) = view.primary else {
            return Err(Error::NoPrimary {
                waited: started.elapsed(),
            });
        };
        self.acquire(primary, Role::Primary, view.generation, deadline)
            .await
    }

    /// One try at a read connection: qualifying replicas in balance order,
    /// then the fallback.
    async fn read_connection(
        &self,
        token: Option<&CommitToken>,
        deadline: &Deadline,
    ) -> Result<Connection, Error> {
        let view = self.shared.current_view();
        let wait_until = token
            .and(self.shared.config.reads.read_after_wait)
            .map(|wait| Instant::now() + wait.min(deadline.remaining()));
        let want = token.map(|t| t.lsn());
        if want != Some(None) {
            for node in self.replica_order(&view.readable) {
                let conn = match self
                    .acquire(node, Role::Standby, view.generation, deadline)
                    .await
                {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::debug!(%e, "replica unavailable, trying the next");
                        continue;
                    }
                };
                match token.and_then(CommitToken::lsn) {
                    None => return Ok(conn),
                    Some(lsn) => {
                        if conn.has_replayed(lsn, wait_until, deadline).await {
                            return Ok(conn);
                        }
                    }
                }
            }
        }
        if token.is_none() && self.shared.config.reads.fallback == Fallback::Fail {
            return Err(Error::NoReplica);
        }
        self.primary_connection(deadline).await
    }

    /// The readable replicas in the order to try them.
    fn replica_order(&self, readable: &[usize]) -> Vec<usize> {
        if readable.is_empty() {
            return Vec::new();
        }
        let start = self.shared.round_robin.fetch_add(1, Ordering::Relaxed) % readable.len();
        let mut order: Vec<usize> = readable[start..]
            .iter()
            .chain(&readable[..start])
            .copied()
            .collect();
        if self.shared.config.reads.balance == Balance::LeastBusy {
            // Stable: equally busy replicas keep the round-robin order.
            order.sort_by_key(|&node| {
                let status = self.shared.pools[node].status();
                status.size.saturating_sub(status.available)
            });
        }
        order
    }

    /// Takes a connection from `node`'s pool within the deadline.
    async fn acquire(
        &self,
        node: usize,
        role: Role,
        generation: u64,
        deadline: &Deadline,
    ) -> Result<Connection, Error> {
        let remaining = deadline.remaining();
        let t = &self.shared.config.timeouts;
        let timeouts = deadpool::managed::Timeouts {
            wait: Some(t.pool_wait.min(remaining)),
            create: Some(t.connect.min(remaining)),
            recycle: Some(t.recycle.min(remaining)),
        };
        let pool = &self.shared.pools[node];
        let started = Instant::now();
        let result = pool.timeout_get(&timeouts).await;
        metrics::acquired(
            &self.shared.addresses[node],
            started.elapsed(),
            pool.status(),
        );
        match result {
            Ok(object) => {
                let conn = Connection {
                    object: Some(object),
                    node: NodeId(node),
                    role,
                    generation,
                    shared: self.shared.clone(),
                };
                if role == Role::Primary && conn.object_hot_standby() == Some(true) {
                    // It logged in as a standby: nothing was sent yet. The
                    // probes say what the node is now.
                    conn.discard();
                    self.shared.reprobe();
                    return Err(Error::ReadOnly {
                        node: NodeId(node),
                        source: None,
                    });
                }
                if conn.is_closed() {
                    // Closed between recycling and now: nothing was sent.
                    drop(conn);
                    self.shared.report(node, Failure::Connection);
                    return Err(Error::Acquire {
                        node: NodeId(node),
                        source: PoolError::Closed,
                    });
                }
                Ok(conn)
            }
            Err(source) => {
                self.shared.report_revoked(node);
                if pool_error_is_node_failure(&source) {
                    self.shared.report(node, Failure::Connection);
                }
                Err(Error::Acquire {
                    node: NodeId(node),
                    source,
                })
            }
        }
    }
}

/// Whether a pool error says the node may be failing (as opposed to the
/// pool being busy).
fn pool_error_is_node_failure(error: &PoolError) -> bool {
    match error {
        PoolError::Backend(e) => classify(e, true) != Failure::Statement,
        PoolError::Timeout(TimeoutType::Create | TimeoutType::Recycle) => true,
        PoolError::Timeout(TimeoutType::Wait) => false,
        _ => false,
    }
}

/// A pooled connection to one node, routed as primary or replica.
///
/// Dereferences to deadpool-postgres's `ClientWrapper` (statement cache,
/// `transaction()`) and through it to `tokio_postgres::Client`. Dropping it
/// returns it to its pool, unless it broke or was evicted meanwhile: then it
/// is closed, and a broken one makes the cluster re-probe.
pub struct Connection {
    /// `Some` until dropped or discarded.
    object: Option<Object<PgManager>>,
    node: NodeId,
    role: Role,
    generation: u64,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("node", &self.node)
            .field("role", &self.role)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The node it is connected to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// What it was routed as: `Primary` for writes (and read fallbacks),
    /// `Standby` for replica reads.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The topology generation it was routed in.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The token for the writes this connection committed so far: the
    /// primary's WAL insert position now.
    ///
    /// Bounded on the client side by the statement timeout (or the retry
    /// deadline when there is none) plus one second, so a frozen node
    /// cannot hold it forever: past that it is [`Error::DeadlineExceeded`]
    /// and the cluster re-probes.
    pub async fn commit_token(&self) -> Result<CommitToken, Error> {
        let limit = self.client_limit();
        let row = match tokio::time::timeout(
            limit,
            self.query_one("SELECT pg_current_wal_insert_lsn()", &[]),
        )
        .await
        {
            Ok(row) => row.map_err(|e| self.error(e))?,
            Err(_) => {
                self.shared.report(self.node.0, Failure::Connection);
                return Err(Error::DeadlineExceeded {
                    deadline: limit,
                    attempts: 1,
                    last: None,
                });
            }
        };
        let lsn: PgLsn = row.try_get(0).map_err(|e| self.error(e))?;
        Ok(CommitToken::new(Lsn::from(lsn), self.generation))
    }

    /// Tells the cluster about an error this connection returned, so that
    /// a failing server is acted on at once (the retried operations do
    /// this themselves).
    ///
    /// A read-only answer (25006) only triggers a re-probe here: it may
    /// come from `BEGIN READ ONLY` or `default_transaction_read_only` on a
    /// real primary, so the probes, not the error, decide whether the node
    /// is a standby now.
    pub fn report(&self, error: &tokio_postgres::Error) {
        match classify(error, self.is_closed()) {
            Failure::ReadOnly => {
                if self.role == Role::Primary {
                    self.shared.reprobe();
                }
            }
            Failure::Statement => {
                // A denial sends Event::CredentialsRefused.
                self.shared.denied(self, error);
            }
            failure => self.shared.report(self.node.0, failure),
        }
    }

    /// The client-side limit for one statement of the crate's own: the
    /// statement timeout (or the retry deadline) plus a second.
    fn client_limit(&self) -> Duration {
        let config = &self.shared.config;
        config
            .timeouts
            .statement
            .unwrap_or(config.retry.deadline)
            .saturating_add(Duration::from_secs(1))
    }

    /// `in_hot_standby` as the server reported it at this connection's
    /// login.
    /// The credentials generation it logged in with (0: fixed ones).
    fn credentials_generation(&self) -> u64 {
        self.object.as_ref().map_or(0, |o| o.credentials_generation)
    }

    fn object_hot_standby(&self) -> Option<bool> {
        self.object.as_ref().and_then(|o| o.hot_standby)
    }

    /// After a 25006 on a connection routed as primary: whether the node
    /// really is in recovery (`SELECT pg_is_in_recovery()` on the same
    /// connection). A read-only transaction on a real primary is
    /// `Some(false)`; `None` when there is no answer within the client
    /// limit and the operation's deadline.
    ///
    /// A transaction the 25006 left open (aborted) is rolled back first: it
    /// could not commit anyway, and the connection goes back to the pool.
    async fn in_recovery(&self, deadline: &Deadline) -> Option<bool> {
        let limit = self.client_limit().min(deadline.remaining());
        let answer = tokio::time::timeout(limit, async {
            // Outside a transaction this is only a warning.
            self.batch_execute("ROLLBACK").await?;
            self.query_one("SELECT pg_is_in_recovery()", &[]).await
        })
        .await;
        match answer {
            Ok(Ok(row)) => row.try_get::<_, bool>(0).ok(),
            _ => None,
        }
    }

    /// Closes the connection instead of returning it to the pool (after a
    /// timeout its state is unknown).
    pub fn discard(mut self) {
        if let Some(object) = self.object.take() {
            drop(Object::take(object));
        }
    }

    fn error(&self, source: tokio_postgres::Error) -> Error {
        match classify(&source, self.is_closed()) {
            Failure::Connection => Error::Connection {
                node: self.node,
                source,
            },
            _ => Error::Query {
                node: self.node,
                source,
            },
        }
    }

    /// The token after a successful write; a primary-only token if the
    /// position cannot be read in time.
    async fn token_after_write(&self, deadline: &Deadline) -> CommitToken {
        let budget = deadline.remaining().max(Duration::from_millis(100));
        match tokio::time::timeout(budget, self.commit_token()).await {
            Ok(Ok(token)) => token,
            _ => CommitToken::primary_only(self.generation),
        }
    }

    /// Whether this replica has replayed `lsn`, polling until `wait_until`.
    async fn has_replayed(
        &self,
        lsn: Lsn,
        wait_until: Option<Instant>,
        deadline: &Deadline,
    ) -> bool {
        loop {
            let replayed = tokio::time::timeout_at(
                deadline.instant(),
                self.query_one("SELECT pg_last_wal_replay_lsn()", &[]),
            )
            .await;
            match replayed {
                Ok(Ok(row)) => match row.try_get::<_, Option<PgLsn>>(0) {
                    Ok(Some(replayed)) if Lsn::from(replayed) >= lsn => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                },
                _ => return false,
            }
            match wait_until {
                Some(until) if Instant::now() + CATCH_UP_POLL <= until => {
                    tokio::time::sleep(CATCH_UP_POLL).await;
                }
                _ => return false,
            }
        }
    }

    fn wrapper(&self) -> &ClientWrapper {
        match &self.object {
            Some(object) => &object.client,
            // `object` is only taken by `discard` and `drop`, which consume
            // or end the connection.
            None => unreachable!("connection used after discard"),
        }
    }
}

impl Deref for Connection {
    type Target = ClientWrapper;

    fn deref(&self) -> &ClientWrapper {
        self.wrapper()
    }
}

impl DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut ClientWrapper {
        match &mut self.object {
            Some(object) => &mut object.client,
            None => unreachable!("connection used after discard"),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(object) = self.object.take() else {
            return;
        };
        let closed = object.client.is_closed();
        let stale = self.shared.pools[self.node.0].manager().is_stale(&object);
        if closed || stale.is_some() {
            drop(Object::take(object));
        }
        if closed {
            self.shared.report(self.node.0, Failure::Connection);
        }
    }
}
