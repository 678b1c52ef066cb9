//! A real NATS JetStream cluster: N `nats-server` processes (3 by default)
//! routed to one another, each with its own store folder, client port,
//! cluster port and HTTP monitoring port.
//!
//! Each node gets a configuration file (`n1/nats.conf`, ...) rather than a
//! long command line, so a restarted node comes back with the same name,
//! ports and store. Readiness is read from the monitoring endpoints, never
//! from the log: `GET /healthz?js-enabled-only=true` answers 200 on every
//! node, and the JetStream meta group has a leader that a quorum of the
//! running nodes agrees on and that counts the awaited nodes as current
//! (`GET /jsz`, `meta_cluster`). A single node has no cluster block and no
//! meta group; it is ready when its health check answers 200.
//!
//! Nodes are numbered from 0 in the API and named `n1`, `n2`, ... in the
//! servers (`server_name`), as operators name them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::IoContext;
use crate::folder::Root;
use crate::process::{ServerProcess, log_tail, private_dir};
use crate::{Error, Result};

/// How long a start or a restart waits for the cluster to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// One monitoring request; a frozen node must not hold a poll for long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(50);
const STATE_FILE: &str = "nats.json";
/// The `cluster { name }` of every node.
pub const NATS_CLUSTER_NAME: &str = "testkit";

/// How a cluster is built. Obtained from [`NatsCluster::builder`].
#[derive(Debug, Clone)]
pub struct NatsClusterBuilder {
    nodes: usize,
    client_ports: Vec<u16>,
    dir: Option<PathBuf>,
    binary: Option<PathBuf>,
}

impl Default for NatsClusterBuilder {
    fn default() -> Self {
        NatsClusterBuilder {
            nodes: 3,
            client_ports: Vec::new(),
            dir: None,
            binary: None,
        }
    }
}

impl NatsClusterBuilder {
    /// How many servers (default 3). One server runs JetStream without a
    /// cluster block (streams of one replica, for benchmarks).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// Fixed client ports, one per node (default: free ones), e.g.
    /// `[4222, 4223, 4224]` for `cargo xtask up`. The cluster and monitoring
    /// ports are still free ones. Ignored for a folder that already holds a
    /// cluster (its ports are kept).
    pub fn client_ports(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.client_ports = ports.into_iter().collect();
        self
    }

    /// Keep the nodes' stores, configurations and logs in `dir` (reused
    /// with its ports when it already holds a cluster) instead of a
    /// temporary folder removed on drop.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The `nats-server` binary (default: [`crate::nats_server_binary`]).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Writes the configurations, starts every node and waits until the
    /// cluster is ready (see the module documentation).
    pub async fn start(self) -> Result<NatsCluster> {
        let started = Instant::now();
        if self.nodes == 0 {
            return Err(Error::Usage(
                "a NATS cluster needs at least one node".into(),
            ));
        }
        if !self.client_ports.is_empty() && self.client_ports.len() != self.nodes {
            return Err(Error::Usage(format!(
                "{} client ports for {} NATS nodes",
                self.client_ports.len(),
                self.nodes
            )));
        }
        let bin = match &self.binary {
            Some(path) => path.clone(),
            None => crate::binaries::nats_server_binary()?,
        };
        let (root, existing) = Root::open(self.dir.as_deref(), "testkit-nats-", STATE_FILE)?;
        private_dir(None, root.path())?;
        let ports: Vec<NodePorts> = if existing {
            root.load(STATE_FILE)?
        } else {
            let clustered = self.nodes > 1;
            let ports = (0..self.nodes)
                .map(|i| {
                    Ok(NodePorts {
                        client: match self.client_ports.get(i) {
                            Some(&port) => port,
                            None => crate::free_port()?,
                        },
                        cluster: if clustered {
                            Some(crate::free_port()?)
                        } else {
                            None
                        },
                        http: crate::free_port()?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            root.save(STATE_FILE, &ports)?;
            ports
        };
        if ports.len() != self.nodes {
            return Err(Error::Usage(format!(
                "{} holds a cluster of {} NATS nodes, not {}",
                root.path().display(),
                ports.len(),
                self.nodes
            )));
        }
        let mut nodes = Vec::with_capacity(ports.len());
        for (i, node_ports) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let dir = root.path().join(&name);
            private_dir(None, &dir)?;
            let store = dir.join("store");
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .filter_map(|(_, other)| other.cluster)
                .map(|port| format!("nats-route://127.0.0.1:{port}"))
                .collect();
            let config = dir.join("nats.conf");
            let text = node_config(&name, node_ports, &store, &routes);
            std::fs::write(&config, text).context(|| format!("writing {}", config.display()))?;
            nodes.push(NatsNode {
                name,
                ports: *node_ports,
                config,
                log: dir.join("nats.log"),
                store,
                process: Mutex::new(None),
                frozen: AtomicBool::new(false),
            });
        }
        let cluster = NatsCluster {
            bin,
            nodes,
            http: crate::http_client()?,
            root,
        };
        for node in &cluster.nodes {
            *node.process.lock().await = Some(cluster.spawn(node)?);
        }
        let all: Vec<usize> = (0..cluster.len()).collect();
        cluster
            .wait_until_joined("the NATS cluster to be ready", &all)
            .await?;
        tracing::info!(elapsed = ?started.elapsed(), urls = ?cluster.urls(), "NATS up");
        Ok(cluster)
    }
}

/// A node's configuration file.
fn node_config(name: &str, ports: &NodePorts, store: &Path, routes: &[String]) -> String {
    let quoted = |text: &str| serde_json::Value::from(text).to_string();
    let mut text = format!(
        "# Written by testkit.\nserver_name: {name}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{http}\"\n\njetstream {{\n  store_dir: {store}\n}}\n",
        client = ports.client,
        http = ports.http,
        store = quoted(&store.display().to_string()),
    );
    if let Some(cluster) = ports.cluster {
        let routes: Vec<String> = routes.iter().map(|r| quoted(r)).collect();
        text.push_str(&format!(
            "\ncluster {{\n  name: {NATS_CLUSTER_NAME}\n  listen: \"127.0.0.1:{cluster}\"\n  routes: [\n    {}\n  ]\n}}\n",
            routes.join("\n    ")
        ));
    }
    text
}

/// One node's ports, kept in the state file of a kept folder.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct NodePorts {
    client: u16,
    /// None for a single server (no cluster block).
    cluster: Option<u16>,
    http: u16,
}

struct NatsNode {
    name: String,
    ports: NodePorts,
    config: PathBuf,
    log: PathBuf,
    store: PathBuf,
    process: Mutex<Option<ServerProcess>>,
    /// Set by `freeze`, cleared by `thaw` and `restart`: a frozen node is
    /// not asked anything (it would only time out).
    frozen: AtomicBool,
}

impl fmt::Debug for NatsNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsNode")
            .field("name", &self.name)
            .field("ports", &self.ports)
            .field("frozen", &self.frozen.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The JetStream meta group as one node sees it (`meta_cluster` of
/// `GET /jsz`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct MetaCluster {
    /// The cluster name.
    #[serde(default)]
    pub name: String,
    /// The `server_name` this node believes leads the meta group (empty
    /// when it knows none). A follower may report a dead leader for a few
    /// seconds: see [`NatsCluster::meta_leader`] for an agreed answer.
    #[serde(default)]
    pub leader: String,
    /// The size of the meta group.
    #[serde(default)]
    pub cluster_size: usize,
    /// The other peers. Only the leader's view says which are current.
    #[serde(default)]
    pub replicas: Vec<MetaPeer>,
}

/// A peer of the meta group, as [`MetaCluster::replicas`] lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct MetaPeer {
    /// Its `server_name`.
    pub name: String,
    /// Whether it is caught up with the leader (meaningful in the leader's
    /// view only).
    #[serde(default)]
    pub current: bool,
    /// Whether the reporting node considers it gone.
    #[serde(default)]
    pub offline: bool,
}

/// A NATS JetStream cluster (or single server), killed on drop.
///
/// Every method takes `&self`, so a test can share the cluster (in an
/// `Arc`) with the code it exercises and still inject faults. Node indices
/// start at 0; a wrong index panics (a bug in the test).
pub struct NatsCluster {
    bin: PathBuf,
    nodes: Vec<NatsNode>,
    http: reqwest::Client,
    // Last: dropped after the nodes' processes are killed.
    root: Root,
}

impl fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsCluster")
            .field("root", &self.root.path())
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl NatsCluster {
    /// Three JetStream servers in a cluster, in a temporary folder, on free
    /// ports.
    pub async fn start() -> Result<NatsCluster> {
        NatsCluster::builder().start().await
    }

    /// A builder for other shapes (one node, fixed client ports, a kept
    /// folder).
    pub fn builder() -> NatsClusterBuilder {
        NatsClusterBuilder::default()
    }

    /// How many nodes the cluster has (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The folder that holds the nodes' stores, configurations and logs.
    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    /// `nats://127.0.0.1:PORT` of every node, for a client that should
    /// fail over between them.
    pub fn urls(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.url(i)).collect()
    }

    /// `nats://127.0.0.1:PORT` of node `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.node(i).ports.client)
    }

    /// The client port of every node.
    pub fn client_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.ports.client).collect()
    }

    /// The HTTP monitoring address of node `i`, e.g. `http://127.0.0.1:8222`.
    pub fn monitor_url(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.node(i).ports.http)
    }

    /// The `server_name` of node `i` (`n1` for node 0).
    pub fn server_name(&self, i: usize) -> &str {
        &self.node(i).name
    }

    /// The index of the node called `name`, if any.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The log file of node `i`.
    pub fn log(&self, i: usize) -> &Path {
        &self.node(i).log
    }

    /// The JetStream store folder of node `i`.
    pub fn store_dir(&self, i: usize) -> &Path {
        &self.node(i).store
    }

    /// Kills node `i` (SIGKILL): a crash. Bring it back with
    /// [`NatsCluster::restart`].
    pub async fn kill(&self, i: usize) -> Result<()> {
        let node = self.node(i);
        if let Some(mut process) = node.process.lock().await.take() {
            process.kill();
        }
        node.frozen.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Stops node `i` cleanly (SIGTERM, thawed first if frozen).
    pub async fn stop(&self, i: usize) -> Result<()> {
        let node = self.node(i);
        if let Some(mut process) = node.process.lock().await.take() {
            process.stop(Signal::TERM, STOP_TIMEOUT).await?;
        }
        node.frozen.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Freezes node `i` (SIGSTOP), returning once every thread of it is
    /// stopped: connections are accepted by the kernel but never answered,
    /// and the node neither votes nor sends heartbeats. Undo with
    /// [`NatsCluster::thaw`].
    pub async fn freeze(&self, i: usize) -> Result<()> {
        self.signal(i, Signal::STOP).await?;
        self.node(i).frozen.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Resumes a frozen node (SIGCONT).
    pub async fn thaw(&self, i: usize) -> Result<()> {
        self.signal(i, Signal::CONT).await?;
        self.node(i).frozen.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Freezes every running node (a full outage that keeps the sockets).
    pub async fn freeze_all(&self) -> Result<()> {
        for i in self.running().await {
            self.freeze(i).await?;
        }
        Ok(())
    }

    /// Thaws every frozen node.
    pub async fn thaw_all(&self) -> Result<()> {
        for i in 0..self.len() {
            if self.node(i).frozen.load(Ordering::Relaxed) {
                self.thaw(i).await?;
            }
        }
        Ok(())
    }

    /// Whether node `i` has a server process (frozen counts).
    pub async fn is_running(&self, i: usize) -> bool {
        match self.node(i).process.lock().await.as_mut() {
            Some(process) => process.try_exited().is_none(),
            None => false,
        }
    }

    /// Starts node `i` again (stopping it first if it runs) with the same
    /// configuration, ports and store, and waits until it is healthy and,
    /// in a cluster, counted as current by the meta leader.
    pub async fn restart(&self, i: usize) -> Result<()> {
        let node = self.node(i);
        {
            let mut process = node.process.lock().await;
            if let Some(mut running) = process.take() {
                running.stop(Signal::TERM, STOP_TIMEOUT).await?;
            }
            node.frozen.store(false, Ordering::Relaxed);
            *process = Some(self.spawn(node)?);
        }
        self.wait_until_joined(&format!("NATS {} to rejoin", node.name), &[i])
            .await
    }

    /// Waits until every running, unfrozen node is healthy and, in a
    /// cluster, the meta leader counts each of them as current.
    pub async fn wait_ready(&self) -> Result<()> {
        let live = self.live().await;
        self.wait_until_joined("the running NATS nodes to be ready", &live)
            .await
    }

    /// Node `i`'s view of the JetStream meta group (`GET /jsz`), `None` for
    /// a single server (it has no meta group).
    pub async fn meta_cluster(&self, i: usize) -> Result<Option<MetaCluster>> {
        #[derive(Deserialize)]
        struct Jsz {
            meta_cluster: Option<MetaCluster>,
        }
        let url = format!("{}/jsz", self.monitor_url(i));
        let monitor = |source| Error::Monitor {
            url: url.clone(),
            source,
        };
        let jsz: Jsz = self
            .http
            .get(&url)
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(monitor)?
            .json()
            .await
            .map_err(monitor)?;
        Ok(jsz.meta_cluster)
    }

    /// The node that leads the JetStream meta group, when a quorum of the
    /// cluster's running, unfrozen nodes (the leader among them) names it.
    /// Followers keep naming a dead leader for a few seconds, so one node's
    /// word is not enough. A single server is its own leader.
    pub async fn meta_leader(&self) -> Option<usize> {
        let live = self.live().await;
        if self.len() == 1 {
            return live.first().copied();
        }
        let mut views = Vec::new();
        for &i in &live {
            if let Ok(Some(meta)) = self.meta_cluster(i).await {
                views.push((i, meta.leader));
            }
        }
        self.agreed_leader(&views)
    }

    /// The leader named by a quorum of `views` (node, the leader it names),
    /// which must itself be among them naming itself.
    fn agreed_leader(&self, views: &[(usize, String)]) -> Option<usize> {
        let quorum = self.len() / 2 + 1;
        views.iter().find_map(|(i, leader)| {
            let named_self = *leader == self.node(*i).name;
            let votes = views.iter().filter(|(_, other)| other == leader).count();
            (named_self && votes >= quorum).then_some(*i)
        })
    }

    /// The node that leads the stream `name`, when a quorum of the running,
    /// unfrozen nodes (the leader among them) names it (`GET
    /// /jsz?streams=true`). A single server leads every stream.
    pub async fn stream_leader(&self, name: &str) -> Option<usize> {
        #[derive(Deserialize)]
        struct Jsz {
            #[serde(default)]
            account_details: Vec<Account>,
        }
        #[derive(Deserialize)]
        struct Account {
            #[serde(default)]
            stream_detail: Vec<StreamDetail>,
        }
        #[derive(Deserialize)]
        struct StreamDetail {
            name: String,
            cluster: Option<StreamCluster>,
        }
        #[derive(Deserialize)]
        struct StreamCluster {
            leader: Option<String>,
        }
        let live = self.live().await;
        if self.len() == 1 {
            return live.first().copied();
        }
        let mut views = Vec::new();
        for &i in &live {
            let url = format!("{}/jsz?streams=true", self.monitor_url(i));
            let Ok(response) = self.http.get(&url).timeout(PROBE_TIMEOUT).send().await else {
                continue;
            };
            let Ok(jsz) = response.json::<Jsz>().await else {
                continue;
            };
            let leader = jsz
                .account_details
                .into_iter()
                .flat_map(|a| a.stream_detail)
                .find(|s| s.name == name)
                .and_then(|s| s.cluster?.leader);
            if let Some(leader) = leader {
                views.push((i, leader));
            }
        }
        self.agreed_leader(&views)
    }

    /// Whether node `i` answers `GET /healthz?js-enabled-only=true` with 200.
    pub async fn is_healthy(&self, i: usize) -> bool {
        let url = format!("{}/healthz?js-enabled-only=true", self.monitor_url(i));
        self.http
            .get(url)
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
    }

    fn node(&self, i: usize) -> &NatsNode {
        self.nodes.get(i).unwrap_or_else(|| {
            panic!(
                "NATS node {i} does not exist (the cluster has {})",
                self.len()
            )
        })
    }

    fn spawn(&self, node: &NatsNode) -> Result<ServerProcess> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c").arg(&node.config);
        ServerProcess::spawn(format!("nats-server {}", node.name), cmd, &node.log)
    }

    async fn signal(&self, i: usize, signal: Signal) -> Result<()> {
        let node = self.node(i);
        match node.process.lock().await.as_ref() {
            Some(process) => process.signal(signal),
            None => Err(Error::Usage(format!("NATS {} is not running", node.name))),
        }
    }

    /// The nodes that have a server process.
    async fn running(&self) -> Vec<usize> {
        let mut running = Vec::new();
        for i in 0..self.len() {
            if self.is_running(i).await {
                running.push(i);
            }
        }
        running
    }

    /// The running nodes that are not frozen.
    async fn live(&self) -> Vec<usize> {
        let mut live = self.running().await;
        live.retain(|&i| !self.node(i).frozen.load(Ordering::Relaxed));
        live
    }

    /// Polls until [`NatsCluster::joined`] holds for `nodes`; fails at once
    /// with the log's tail when a node's process exits.
    async fn wait_until_joined(&self, what: &str, nodes: &[usize]) -> Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            for node in &self.nodes {
                let mut process = node.process.lock().await;
                if let Some(running) = process.as_mut()
                    && running.try_exited().is_some()
                {
                    let error = running.exited_error();
                    *process = None;
                    return Err(error);
                }
            }
            let last = match self.joined(nodes).await {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            if tokio::time::Instant::now() >= deadline {
                let logs: Vec<String> = nodes
                    .iter()
                    .map(|&i| {
                        let log = self.log(i);
                        format!("{}:\n{}", log.display(), log_tail(log, 15))
                    })
                    .collect();
                return Err(Error::Timeout {
                    what: format!("{what} (last: {last}); logs:\n{}", logs.join("\n")),
                    after: READY_TIMEOUT,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// `Ok` when every node of `nodes` is healthy and, in a cluster, an
    /// agreed meta leader counts each of them (but itself) as current in a
    /// meta group of the cluster's size; otherwise what is missing.
    async fn joined(&self, nodes: &[usize]) -> std::result::Result<(), String> {
        for &i in nodes {
            if !self.is_healthy(i).await {
                return Err(format!("{} is not healthy", self.node(i).name));
            }
        }
        if self.len() == 1 {
            return Ok(());
        }
        let leader = self
            .meta_leader()
            .await
            .ok_or_else(|| "no agreed JetStream meta leader".to_owned())?;
        let meta = self
            .meta_cluster(leader)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the leader has no meta group".to_owned())?;
        if meta.cluster_size != self.len() {
            return Err(format!(
                "the meta group has {} peers, not {}",
                meta.cluster_size,
                self.len()
            ));
        }
        for &i in nodes {
            let name = &self.node(i).name;
            if i != leader
                && !meta
                    .replicas
                    .iter()
                    .any(|peer| &peer.name == name && peer.current && !peer.offline)
            {
                return Err(format!(
                    "leader {} does not count {name} as current",
                    meta.leader
                ));
            }
        }
        Ok(())
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.get_mut().take() {
                process.kill();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clustered_node_routes_to_the_others() {
        let ports = NodePorts {
            client: 4222,
            cluster: Some(6222),
            http: 8222,
        };
        let routes = [
            "nats-route://127.0.0.1:6223".to_owned(),
            "nats-route://127.0.0.1:6224".to_owned(),
        ];
        let text = node_config("n1", &ports, Path::new("/tmp/n1/store"), &routes);
        assert!(text.contains("server_name: n1\n"), "{text}");
        assert!(text.contains("listen: \"127.0.0.1:4222\""), "{text}");
        assert!(text.contains("http: \"127.0.0.1:8222\""), "{text}");
        assert!(text.contains("store_dir: \"/tmp/n1/store\""), "{text}");
        assert!(text.contains("listen: \"127.0.0.1:6222\""), "{text}");
        assert!(text.contains("\"nats-route://127.0.0.1:6223\""), "{text}");
        assert!(text.contains("\"nats-route://127.0.0.1:6224\""), "{text}");
        assert!(!text.contains("6222\"\n    "), "no route to itself: {text}");
    }

    #[test]
    fn a_single_server_has_no_cluster_block() {
        let ports = NodePorts {
            client: 4222,
            cluster: None,
            http: 8222,
        };
        let text = node_config("n1", &ports, Path::new("/tmp/n1/store"), &[]);
        assert!(!text.contains("cluster"), "{text}");
        assert!(text.contains("jetstream {"), "{text}");
    }
}
