//! A real PostgreSQL cluster: one primary and N streaming replicas.
//!
//! Each node is a `postgres` server started from the binaries of the
//! machine's PostgreSQL (see [`crate::binaries::postgres_bindir`]), on a port
//! of its own, with a private Unix socket folder. Authentication is real:
//!
//! | connection | who | method |
//! |---|---|---|
//! | Unix socket (private folder, mode 0700) | `postgres` (setup superuser) | `trust` |
//! | Unix socket | anyone else | `scram-sha-256` |
//! | TCP 127.0.0.1 | everyone, replication included | `scram-sha-256` |
//!
//! so a test that logs in with a password (a Vault-issued one, say) proves
//! that the password is right.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use crate::error::{IoContext, PgContext};
use crate::folder::Root;
use crate::process::{RunAs, ServerProcess, private_dir, run_checked};
use crate::{Error, Result};

/// The setup superuser: reachable with `trust` on the private socket only.
pub const SUPERUSER: &str = "postgres";
/// The role replicas stream as (scram-sha-256 over TCP).
pub const REPLICATION_USER: &str = "replicator";

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STREAMING_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const STATE_FILE: &str = "cluster.json";

/// Which node of a [`PgCluster`]: an index, stable for the cluster's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pg{}", self.0)
    }
}

/// How a cluster is built. Obtained from [`PgCluster::builder`].
#[derive(Debug, Clone)]
pub struct PgClusterBuilder {
    replicas: usize,
    dir: Option<PathBuf>,
    ports: Vec<u16>,
    durable: bool,
    bindir: Option<PathBuf>,
    primary: Option<NodeId>,
    discard_divergent: bool,
}

impl Default for PgClusterBuilder {
    fn default() -> Self {
        PgClusterBuilder {
            replicas: 1,
            dir: None,
            ports: Vec::new(),
            durable: false,
            bindir: None,
            primary: None,
            discard_divergent: false,
        }
    }
}

impl PgClusterBuilder {
    /// The number of streaming replicas (default 1).
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Keep the cluster in `dir` instead of a temporary folder that is removed
    /// on drop. A folder that already holds a cluster is reused as it is:
    /// its nodes are started with their data, ports and passwords.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Fixed ports, primary first (default: free ports). Ignored for a
    /// folder that already holds a cluster, which keeps its own.
    pub fn ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.ports = ports.into_iter().collect();
        self
    }

    /// For a folder that already holds a cluster: make `node` the primary
    /// instead of the node the data chooses (the newest timeline, then the
    /// furthest WAL; see [`crate::timeline`]).
    pub fn primary(mut self, node: NodeId) -> Self {
        self.primary = Some(node);
        self
    }

    /// For a folder that already holds a cluster: rewind nodes whose
    /// divergent WAL holds committed transactions (they are reported in
    /// [`PgCluster::startup_report`], then discarded). Without it such a
    /// start fails with [`Error::Diverged`] before anything runs.
    pub fn discard_divergent(mut self, discard: bool) -> Self {
        self.discard_divergent = discard;
        self
    }

    /// `true` keeps `fsync` on, as a real deployment must; tests leave it
    /// off (the default) because they never survive a power cut anyway.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// The folder of PostgreSQL's server binaries (default:
    /// [`crate::postgres_bindir`]).
    pub fn bindir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bindir = Some(dir.into());
        self
    }

    /// Initialises (or reuses) and starts the cluster, and waits until every
    /// replica streams from the primary.
    pub async fn start(self) -> Result<PgCluster> {
        let started = Instant::now();
        let bindir = match &self.bindir {
            Some(dir) => dir.clone(),
            None => crate::binaries::postgres_bindir()?,
        };
        let run_as = RunAs::for_servers()?;
        let (root, kept) = Root::open(self.dir.as_deref(), "testkit-pg-", STATE_FILE)?;
        private_dir(run_as, root.path())?;
        let state = if kept {
            root.load(STATE_FILE)?
        } else {
            let mut ports = self.ports.clone();
            while ports.len() < self.replicas + 1 {
                ports.push(crate::free_port()?);
            }
            State {
                ports,
                superuser_password: crate::random_secret(),
                replication_password: crate::random_secret(),
                durable: self.durable,
            }
        };
        let nodes = state
            .ports
            .iter()
            .enumerate()
            .map(|(i, &port)| PgNode::new(root.path(), NodeId(i), port))
            .collect();
        let cluster = PgCluster {
            bindir,
            run_as,
            nodes,
            primary: StdMutex::new(NodeId(0)),
            report: StdMutex::new(Vec::new()),
            state,
            root,
        };
        if kept {
            cluster
                .start_existing(self.primary, self.discard_divergent)
                .await?;
        } else {
            cluster.initialise().await?;
        }
        tracing::info!(elapsed = ?started.elapsed(), nodes = cluster.nodes.len(), "PostgreSQL cluster up");
        Ok(cluster)
    }
}

/// What a kept cluster remembers between runs (mode 0600, beside the nodes).
#[derive(serde::Serialize, serde::Deserialize)]
struct State {
    ports: Vec<u16>,
    superuser_password: String,
    replication_password: String,
    durable: bool,
}

/// One server of a cluster.
pub struct PgNode {
    id: NodeId,
    port: u16,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log: PathBuf,
    process: Mutex<Option<ServerProcess>>,
}

impl fmt::Debug for PgNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgNode")
            .field("id", &self.id)
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

impl PgNode {
    fn new(root: &Path, id: NodeId, port: u16) -> PgNode {
        PgNode {
            id,
            port,
            data_dir: root.join(id.to_string()),
            socket_dir: root.join(format!("{id}.sock")),
            log: root.join(format!("{id}.log")),
            process: Mutex::new(None),
        }
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Its TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Its server log.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// A libpq URL for `user` over TCP (scram-sha-256).
    pub fn url(&self, user: &str, password: &str, dbname: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            encode(user),
            encode(password),
            self.port,
            encode(dbname)
        )
    }

    /// A `tokio_postgres::Config` for `user` over TCP, with a short connect
    /// timeout so a frozen node shows up as an error rather than a hang.
    pub fn config(&self, user: &str, password: &str, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .password(password)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(5));
        config
    }

    fn admin_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(SUPERUSER)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(5));
        config
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A primary and its streaming replicas, stopped (killed) on drop.
///
/// Every method takes `&self`, so a test can share the cluster (in an `Arc`)
/// with the code it exercises and still inject faults.
pub struct PgCluster {
    bindir: PathBuf,
    run_as: Option<RunAs>,
    nodes: Vec<PgNode>,
    primary: StdMutex<NodeId>,
    /// What the start of a kept cluster decided, one line each.
    report: StdMutex<Vec<String>>,
    state: State,
    // Last: dropped after the nodes' processes are killed.
    root: Root,
}

impl fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCluster")
            .field("root", &self.root.path())
            .field("nodes", &self.nodes)
            .field("primary", &self.primary())
            .finish_non_exhaustive()
    }
}

impl PgCluster {
    /// A cluster in a temporary folder with `replicas` streaming replicas,
    /// on free ports, `fsync` off.
    pub async fn start(replicas: usize) -> Result<PgCluster> {
        PgCluster::builder().replicas(replicas).start().await
    }

    /// A builder for other shapes (kept folder, fixed ports, durable).
    pub fn builder() -> PgClusterBuilder {
        PgClusterBuilder::default()
    }

    /// The folder that holds the nodes.
    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    /// All nodes, primary or not.
    pub fn nodes(&self) -> &[PgNode] {
        &self.nodes
    }

    /// One node. Panics on an id that does not belong to this cluster
    /// (a bug in the test, not a runtime condition).
    pub fn node(&self, id: NodeId) -> &PgNode {
        &self.nodes[id.0]
    }

    /// The node this cluster last made primary (node 0 at first, then the
    /// last node passed to [`PgCluster::promote`]).
    pub fn primary(&self) -> NodeId {
        *self.primary.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What starting a kept cluster decided, one line each: which node
    /// became primary and why, how each other node rejoined it, and what
    /// was discarded. Empty for a new cluster.
    pub fn startup_report(&self) -> Vec<String> {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every node but the primary.
    pub fn replicas(&self) -> Vec<NodeId> {
        let primary = self.primary();
        self.nodes
            .iter()
            .map(|n| n.id)
            .filter(|&id| id != primary)
            .collect()
    }

    /// The password of the [`SUPERUSER`] for TCP logins.
    pub fn superuser_password(&self) -> &str {
        &self.state.superuser_password
    }

    /// A superuser URL for `node` over TCP.
    pub fn superuser_url(&self, node: NodeId, dbname: &str) -> String {
        self.node(node)
            .url(SUPERUSER, &self.state.superuser_password, dbname)
    }

    /// A superuser connection to `node` over its private Unix socket.
    pub async fn admin(&self, node: NodeId) -> Result<Client> {
        self.admin_db(node, "postgres").await
    }

    /// A superuser connection to database `dbname` on `node`.
    pub async fn admin_db(&self, node: NodeId, dbname: &str) -> Result<Client> {
        connect(
            &self.node(node).admin_config(dbname),
            &format!("{node} as {SUPERUSER}"),
        )
        .await
    }

    /// Creates database `name` on the primary unless it exists.
    pub async fn create_database(&self, name: &str) -> Result<()> {
        let client = self.admin(self.primary()).await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .pg_context(|| format!("looking up database {name}"))?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
                .await
                .pg_context(|| format!("creating database {name}"))?;
        }
        Ok(())
    }

    /// Stops `node` cleanly (fast shutdown), thawing it first if frozen.
    pub async fn stop(&self, node: NodeId) -> Result<()> {
        let mut process = self.node(node).process.lock().await;
        if let Some(mut running) = process.take() {
            running.stop(Signal::INT, STOP_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Kills `node` and all its backends at once (SIGKILL): a crash, no
    /// shutdown checkpoint. Restart it with [`PgCluster::start_node`] (crash
    /// recovery) or [`PgCluster::restart_as_standby`].
    pub async fn kill(&self, node: NodeId) -> Result<()> {
        if let Some(mut running) = self.node(node).process.lock().await.take() {
            running.kill();
        }
        Ok(())
    }

    /// Freezes `node` and its backends (SIGSTOP): connections and packets
    /// are accepted by the kernel but nothing answers, like a black-holed
    /// host. Undo with [`PgCluster::thaw`].
    pub async fn freeze(&self, node: NodeId) -> Result<()> {
        self.signal(node, Signal::STOP).await
    }

    /// Resumes a frozen node (SIGCONT).
    pub async fn thaw(&self, node: NodeId) -> Result<()> {
        self.signal(node, Signal::CONT).await
    }

    async fn signal(&self, node: NodeId, signal: Signal) -> Result<()> {
        match self.node(node).process.lock().await.as_ref() {
            Some(process) => process.signal(signal),
            None => Err(Error::Usage(format!("{node} is not running"))),
        }
    }

    /// Whether `node` has a server process running (frozen counts).
    pub async fn is_running(&self, node: NodeId) -> bool {
        let mut process = self.node(node).process.lock().await;
        match process.as_mut() {
            Some(p) => p.try_exited().is_none(),
            None => false,
        }
    }

    /// Starts a stopped node with the data it has (as primary or standby,
    /// whatever its data directory says) and waits until it accepts
    /// connections. A running node is left alone.
    pub async fn start_node(&self, node: NodeId) -> Result<()> {
        let node = self.node(node);
        let mut process = node.process.lock().await;
        if let Some(running) = process.as_mut()
            && running.try_exited().is_none()
        {
            return Ok(());
        }
        private_dir(self.run_as, &node.socket_dir)?;
        let mut cmd = Command::new(self.bindir.join("postgres"));
        cmd.arg("-D")
            .arg(&node.data_dir)
            .arg("-p")
            .arg(node.port.to_string())
            .arg("-k")
            .arg(&node.socket_dir)
            .arg("-c")
            .arg(format!("cluster_name={}", node.id));
        RunAs::apply(self.run_as, &mut cmd);
        let mut running = ServerProcess::spawn(format!("PostgreSQL {}", node.id), cmd, &node.log)?;
        let started = tokio::time::Instant::now();
        loop {
            if running.try_exited().is_some() {
                return Err(running.exited_error());
            }
            match connect(&node.admin_config("postgres"), "probe").await {
                Ok(_) => break,
                Err(_) if started.elapsed() < READY_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Err(e) => {
                    tracing::error!(node = %node.id, "not ready: {e}");
                    return Err(Error::Timeout {
                        what: format!(
                            "{} to accept connections; last lines of {}:\n{}",
                            node.id,
                            node.log.display(),
                            crate::process::log_tail(&node.log, 15)
                        ),
                        after: READY_TIMEOUT,
                    });
                }
            }
        }
        *process = Some(running);
        Ok(())
    }

    /// Promotes standby `node` (`pg_promote`, waiting for it) and records it
    /// as the cluster's primary. The other standbys keep following the old
    /// primary until [`PgCluster::restart_as_standby`] re-points them.
    pub async fn promote(&self, node: NodeId) -> Result<()> {
        let client = self.admin(node).await?;
        let promoted: bool = client
            .query_one("SELECT pg_promote(true, 60)", &[])
            .await
            .pg_context(|| format!("promoting {node}"))?
            .get(0);
        if !promoted {
            return Err(Error::Timeout {
                what: format!("{node} to finish promotion"),
                after: Duration::from_secs(60),
            });
        }
        *self.primary.lock().unwrap_or_else(|e| e.into_inner()) = node;
        Ok(())
    }

    /// The first half of a controlled switchover: picks the replica that
    /// has replayed the most WAL, stops the primary cleanly (fencing it: no
    /// write can be acknowledged by it any more, and its shutdown
    /// checkpoint goes to the replicas), waits until that replica has
    /// replayed everything the primary wrote, and promotes it. Returns
    /// (old primary, new primary). If the replica does not catch up, the
    /// old primary is started again and nothing changed. Rejoin the old
    /// primary with [`PgCluster::restart_as_standby`].
    pub async fn fence_and_promote(&self) -> Result<(NodeId, NodeId)> {
        let old = self.primary();
        let mut best: Option<(NodeId, u64)> = None;
        for id in self.replicas() {
            let Ok(client) = self.admin(id).await else {
                continue;
            };
            let replayed = replayed(&client, id).await?;
            if best.is_none_or(|(_, b)| replayed > b) {
                best = Some((id, replayed));
            }
        }
        let (new, _) =
            best.ok_or_else(|| Error::Usage("no reachable replica to promote".into()))?;
        self.stop(old).await?;
        let control = crate::timeline::control_value(
            &self.bindir,
            self.run_as,
            &self.node(old).data_dir,
            "Latest checkpoint location:",
        )
        .await?;
        let last: crate::timeline::Lsn = control
            .parse()
            .map_err(|e: String| Error::Usage(format!("{old}: {e}")))?;
        let client = self.admin(new).await?;
        let started = tokio::time::Instant::now();
        loop {
            if replayed(&client, new).await? > last.0 {
                break;
            }
            if started.elapsed() > STREAMING_TIMEOUT {
                self.start_node(old).await?;
                return Err(Error::Timeout {
                    what: format!("{new} to replay {old}'s WAL up to {last} (nothing was changed)"),
                    after: STREAMING_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.promote(new).await?;
        Ok((old, new))
    }

    /// An unplanned failover, as an orchestrator does it after a crash:
    /// kills the primary (SIGKILL, nothing flushed), picks the replica that
    /// received the most WAL (with synchronous commit, one that holds every
    /// acknowledged commit) and promotes it (`pg_promote` replays what it
    /// received first). Returns (old primary, new primary); the other
    /// standbys still follow the dead node until
    /// [`PgCluster::restart_as_standby`] re-points them.
    pub async fn kill_and_promote(&self) -> Result<(NodeId, NodeId)> {
        let old = self.primary();
        self.kill(old).await?;
        let mut best: Option<(NodeId, u64)> = None;
        for id in self.replicas() {
            let Ok(client) = self.admin(id).await else {
                continue;
            };
            let received = received(&client, id).await?;
            if best.is_none_or(|(_, b)| received > b) {
                best = Some((id, received));
            }
        }
        let (new, _) =
            best.ok_or_else(|| Error::Usage("no reachable replica to promote".into()))?;
        self.promote(new).await?;
        Ok((old, new))
    }

    /// Where each node stands now: (node, `pg_is_in_recovery()`), `None`
    /// for a node that does not answer.
    pub async fn roles(&self) -> Vec<(NodeId, Option<bool>)> {
        let mut roles = Vec::new();
        for node in &self.nodes {
            let role = match self.admin(node.id).await {
                Ok(client) => client
                    .query_one("SELECT pg_is_in_recovery()", &[])
                    .await
                    .ok()
                    .map(|row| row.get(0)),
                Err(_) => None,
            };
            roles.push((node.id, role));
        }
        roles
    }

    /// Turns `node` into a streaming standby of the current primary: stops it
    /// (if running), rewinds its data with `pg_rewind` when its timeline
    /// diverged (an old primary), points `primary_conninfo` at the current
    /// primary, starts it and waits until it streams.
    pub async fn restart_as_standby(&self, node: NodeId) -> Result<()> {
        let primary = self.primary();
        if node == primary {
            return Err(Error::Usage(format!(
                "{node} is the primary; promote another node first"
            )));
        }
        self.stop(node).await?;
        self.rewind(node, primary).await?;
        self.write_standby_config(node, primary)?;
        self.start_node(node).await?;
        self.wait_streaming(node).await
    }

    /// `pg_rewind` of stopped `node` from running `primary` (a target that
    /// was not shut down cleanly is recovered first by pg_rewind itself).
    async fn rewind(&self, node: NodeId, primary: NodeId) -> Result<()> {
        // A just-promoted primary writes its new timeline to pg_control only
        // at its next checkpoint; without one pg_rewind sees one timeline
        // and wrongly decides that no rewind is needed.
        self.admin(primary)
            .await?
            .batch_execute("CHECKPOINT")
            .await
            .pg_context(|| format!("checkpoint on {primary}"))?;
        let target = self.node(node);
        let source = self.node(primary);
        let mut cmd = Command::new(self.bindir.join("pg_rewind"));
        cmd.arg("--target-pgdata")
            .arg(&target.data_dir)
            .arg("--source-server")
            .arg(format!(
                "host={} port={} user={SUPERUSER} dbname=postgres",
                source.socket_dir.display(),
                source.port
            ));
        RunAs::apply(self.run_as, &mut cmd);
        run_checked(cmd, &format!("pg_rewind {node} from {primary}")).await?;
        Ok(())
    }

    /// Waits until standby `node` streams from the current primary
    /// (`pg_stat_replication.state = 'streaming'`).
    pub async fn wait_streaming(&self, node: NodeId) -> Result<()> {
        let primary = self.admin(self.primary()).await?;
        let name = node.to_string();
        let started = tokio::time::Instant::now();
        loop {
            let streaming = primary
                .query_opt(
                    "SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'",
                    &[&name],
                )
                .await
                .pg_context(|| "reading pg_stat_replication".into())?
                .is_some();
            if streaming {
                return Ok(());
            }
            if started.elapsed() > STREAMING_TIMEOUT {
                let log = &self.node(node).log;
                return Err(Error::Timeout {
                    what: format!(
                        "{node} to stream from {}; last lines of {}:\n{}",
                        self.primary(),
                        log.display(),
                        crate::process::log_tail(log, 15)
                    ),
                    after: STREAMING_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Makes commits on `node` wait until `count` standbys (any of the
    /// cluster's other nodes) have flushed them:
    /// `synchronous_standby_names = 'ANY count (pg1, pg2, ...)'`, or
    /// asynchronous commits with `count` 0. Written with `ALTER SYSTEM` and
    /// reloaded, so it works on a standby as well (ready for its promotion)
    /// and survives restarts of the node.
    pub async fn set_synchronous_standbys(&self, node: NodeId, count: usize) -> Result<()> {
        let value = if count == 0 {
            String::new()
        } else {
            let others: Vec<String> = self
                .nodes
                .iter()
                .map(|n| n.id)
                .filter(|&id| id != node)
                .map(|id| id.to_string())
                .collect();
            format!("ANY {count} ({})", others.join(", "))
        };
        let client = self.admin(node).await?;
        client
            .batch_execute(&format!(
                "ALTER SYSTEM SET synchronous_standby_names = {}",
                quote_literal(&value)
            ))
            .await
            .pg_context(|| format!("setting synchronous_standby_names on {node}"))?;
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .pg_context(|| format!("reloading the configuration of {node}"))?;
        Ok(())
    }

    /// Stops every node cleanly (fast shutdown, a checkpoint each): what a
    /// kept cluster wants at the end of a run. Dropping kills instead.
    pub async fn shutdown(&self) -> Result<()> {
        // Standbys first, so the primary's walsenders see them leave.
        let primary = self.primary();
        for id in self.replicas() {
            self.stop(id).await?;
        }
        self.stop(primary).await
    }

    async fn initialise(&self) -> Result<()> {
        let root = self.root.path();
        let primary = &self.nodes[0];
        let pwfile = root.join("superuser.pw");
        crate::write_private(&pwfile, &self.state.superuser_password)?;
        RunAs::chown(self.run_as, &pwfile)?;
        let mut cmd = Command::new(self.bindir.join("initdb"));
        cmd.arg("-D")
            .arg(&primary.data_dir)
            .args([
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-instructions",
            ])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()));
        if !self.state.durable {
            cmd.arg("--no-sync");
        }
        RunAs::apply(self.run_as, &mut cmd);
        let initdb = run_checked(cmd, "initdb").await;
        let _ = std::fs::remove_file(&pwfile);
        initdb?;
        self.write_config(primary)?;
        self.write_passfile()?;
        self.root.save(STATE_FILE, &self.state)?;
        self.start_node(primary.id).await?;
        let admin = self.admin(primary.id).await?;
        admin
            .batch_execute(&format!(
                "CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN PASSWORD {}",
                quote_literal(&self.state.replication_password)
            ))
            .await
            .pg_context(|| "creating the replication role".into())?;
        for node in &self.nodes[1..] {
            self.base_backup(node).await?;
            self.start_node(node.id).await?;
        }
        for node in &self.nodes[1..] {
            self.wait_streaming(node.id).await?;
        }
        Ok(())
    }

    /// Starts a kept cluster on the primary its data chooses (or `forced`),
    /// every other node following it: as it is when it holds no WAL the
    /// primary lacks, rewound when it does (refused, before anything runs,
    /// when that WAL holds commits and `discard` is not set), from a fresh
    /// base backup when a rewind fails.
    async fn start_existing(&self, forced: Option<NodeId>, discard: bool) -> Result<()> {
        let mut wals = Vec::new();
        for node in &self.nodes {
            wals.push(
                crate::timeline::read_node(&self.bindir, self.run_as, node.id, &node.data_dir)
                    .await?,
            );
        }
        let chosen = match forced {
            Some(id) => wals
                .iter()
                .find(|w| w.node == id)
                .ok_or_else(|| Error::Usage(format!("no node {id} in this cluster")))?,
            None => crate::timeline::choose(&wals)
                .ok_or_else(|| Error::Usage("a cluster without nodes".into()))?,
        };
        let others: Vec<String> = wals
            .iter()
            .filter(|w| w.node != chosen.node)
            .map(ToString::to_string)
            .collect();
        let mut report = vec![format!(
            "primary {}: {} (others: {})",
            chosen.node,
            match forced {
                Some(_) => format!("chosen by the caller, {chosen}"),
                None => format!("the newest timeline with the furthest WAL, {chosen}"),
            },
            others.join("; ")
        )];
        // Decide every node before starting any.
        let mut plans = Vec::new();
        for wal in wals.iter().filter(|w| w.node != chosen.node) {
            let point = crate::timeline::common_point(&wal.path, &chosen.path);
            let node = self.node(wal.node);
            let diverged = crate::timeline::divergence(
                &self.bindir,
                self.run_as,
                &node.data_dir,
                &wal.path,
                point,
            )
            .await?;
            if !diverged.commits.is_empty() && !discard {
                return Err(Error::Diverged {
                    node: wal.node.to_string(),
                    primary: chosen.node.to_string(),
                    from: point.to_string(),
                    commits: diverged.commits,
                });
            }
            plans.push((wal.node, diverged));
        }
        let primary = chosen.node;
        *self.primary.lock().unwrap_or_else(|e| e.into_inner()) = primary;
        self.start_node(primary).await?;
        for (id, diverged) in &plans {
            let (id, node) = (*id, self.node(*id));
            if diverged.records == 0 {
                self.write_standby_config(id, primary)?;
                report.push(format!(
                    "{id} follows {primary}: no WAL past {}",
                    diverged.from
                ));
            } else {
                let discarded = if diverged.commits.is_empty() {
                    "no commit among them".to_owned()
                } else {
                    format!(
                        "DISCARDED {} committed transaction(s): {}",
                        diverged.commits.len(),
                        diverged.commits.join(", ")
                    )
                };
                match self.rewind(id, primary).await {
                    Ok(()) => report.push(format!(
                        "{id} rewound (pg_rewind) onto {primary}: {} WAL record(s) past {}, {discarded}",
                        diverged.records, diverged.from
                    )),
                    Err(error) => {
                        tracing::warn!(%error, node = %id, "pg_rewind failed: a fresh base backup instead");
                        std::fs::remove_dir_all(&node.data_dir)
                            .context(|| format!("removing {}", node.data_dir.display()))?;
                        self.base_backup(node).await?;
                        report.push(format!(
                            "{id} rebuilt from a base backup of {primary} (pg_rewind failed): {} WAL record(s) past {}, {discarded}",
                            diverged.records, diverged.from
                        ));
                    }
                }
                self.write_standby_config(id, primary)?;
            }
            self.start_node(id).await?;
        }
        for (id, _) in &plans {
            self.wait_streaming(*id).await?;
        }
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = report;
        Ok(())
    }

    async fn base_backup(&self, node: &PgNode) -> Result<()> {
        let source = self.node(self.primary());
        let mut cmd = Command::new(self.bindir.join("pg_basebackup"));
        cmd.arg("-D")
            .arg(&node.data_dir)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &source.port.to_string(),
                "-U",
                REPLICATION_USER,
            ])
            .args(["-X", "stream", "-c", "fast", "--no-password"])
            .env("PGPASSFILE", self.passfile());
        if !self.state.durable {
            cmd.arg("--no-sync");
        }
        RunAs::apply(self.run_as, &mut cmd);
        run_checked(cmd, &format!("pg_basebackup {}", node.id)).await?;
        self.write_standby_config(node.id, source.id)
    }

    /// standby.signal plus a `primary_conninfo` that streams from `primary`
    /// over TCP as the replication role (scram, password from the passfile).
    fn write_standby_config(&self, node: NodeId, primary: NodeId) -> Result<()> {
        let node = self.node(node);
        let source = self.node(primary);
        let signal = node.data_dir.join("standby.signal");
        std::fs::write(&signal, "").context(|| format!("writing {}", signal.display()))?;
        RunAs::chown(self.run_as, &signal)?;
        let auto = node.data_dir.join("postgresql.auto.conf");
        let old = std::fs::read_to_string(&auto).unwrap_or_default();
        let mut text: String = old
            .lines()
            .filter(|l| !l.trim_start().starts_with("primary_conninfo"))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(&format!(
            "primary_conninfo = 'host=127.0.0.1 port={} user={REPLICATION_USER} passfile=''{}'' application_name={} connect_timeout=2'\n",
            source.port,
            self.passfile().display(),
            node.id
        ));
        std::fs::write(&auto, text).context(|| format!("writing {}", auto.display()))?;
        RunAs::chown(self.run_as, &auto)
    }

    fn passfile(&self) -> PathBuf {
        self.root.path().join("pgpass")
    }

    fn write_passfile(&self) -> Result<()> {
        let path = self.passfile();
        crate::write_private(
            &path,
            &format!(
                "127.0.0.1:*:*:{REPLICATION_USER}:{}\n",
                self.state
                    .replication_password
                    .replace('\\', "\\\\")
                    .replace(':', "\\:")
            ),
        )?;
        RunAs::chown(self.run_as, &path)
    }

    fn write_config(&self, primary: &PgNode) -> Result<()> {
        let fsync = if self.state.durable { "on" } else { "off" };
        let conf = format!(
            "# Written by testkit. Port, socket folder and cluster_name are set per node on the command line.
listen_addresses = '127.0.0.1'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
max_connections = 100
shared_buffers = '32MB'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = '256MB'
wal_log_hints = on
hot_standby = on
hot_standby_feedback = on
wal_receiver_status_interval = '1s'
wal_retrieve_retry_interval = '500ms'
fsync = {fsync}
logging_collector = off
log_line_prefix = '%m [%p] %q%a '
log_min_messages = warning
"
        );
        let path = primary.data_dir.join("testkit.conf");
        std::fs::write(&path, conf).context(|| format!("writing {}", path.display()))?;
        RunAs::chown(self.run_as, &path)?;
        let main = primary.data_dir.join("postgresql.conf");
        let mut text =
            std::fs::read_to_string(&main).context(|| format!("reading {}", main.display()))?;
        text.push_str("\ninclude 'testkit.conf'\n");
        std::fs::write(&main, text).context(|| format!("writing {}", main.display()))?;
        let hba = primary.data_dir.join("pg_hba.conf");
        std::fs::write(
            &hba,
            "# Written by testkit: trust only for the setup superuser on the private socket.
local all         postgres trust
local replication postgres trust
local all         all      scram-sha-256
host  all         all      127.0.0.1/32 scram-sha-256
host  replication all      127.0.0.1/32 scram-sha-256
",
        )
        .context(|| format!("writing {}", hba.display()))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.get_mut().take() {
                process.kill();
            }
        }
    }
}

/// How far standby `node` (through `client`) has replayed WAL (0: not
/// yet).
async fn replayed(client: &Client, node: NodeId) -> Result<u64> {
    let replayed: Option<i64> = client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint",
            &[],
        )
        .await
        .pg_context(|| format!("reading the replay position of {node}"))?
        .get(0);
    Ok(replayed.unwrap_or(0).max(0) as u64)
}

/// How much WAL standby `node` has received (flushed to its disk), replayed
/// or not.
async fn received(client: &Client, node: NodeId) -> Result<u64> {
    let received: Option<i64> = client
        .query_one(
            "SELECT pg_wal_lsn_diff(coalesce(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), '0/0')::bigint",
            &[],
        )
        .await
        .pg_context(|| format!("reading the receive position of {node}"))?
        .get(0);
    Ok(received.unwrap_or(0).max(0) as u64)
}

async fn connect(config: &tokio_postgres::Config, what: &str) -> Result<Client> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .pg_context(|| format!("connecting to {what}"))?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped or the server goes away.
        let _ = connection.await;
    });
    Ok(client)
}

/// Quotes an SQL identifier.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
