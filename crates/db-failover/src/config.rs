//! How a [`Cluster`](crate::Cluster) is configured: its nodes, pools,
//! timeouts, probing, read routing and retries.

use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};

use crate::{CredentialsProvider, Error, NodeId, RetryPolicy};

/// Pool size of a node unless set otherwise (the original design's primary
/// pool size).
pub const DEFAULT_MAX_CONNECTIONS: usize = 20;

/// One server: where it is and how big its pool may grow.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NodeConfig {
    /// Host, port, database, TLS mode and startup options of this one
    /// server. User and password come from here unless
    /// [`Config::credentials`] is set. Timeouts and `options` are
    /// overwritten from [`Config::timeouts`].
    pub pg: tokio_postgres::Config,
    /// The most connections its pool opens (default
    /// [`DEFAULT_MAX_CONNECTIONS`]), whatever its role.
    pub max_connections: usize,
}

impl NodeConfig {
    /// A node from a `tokio_postgres::Config` with exactly one host.
    pub fn new(pg: tokio_postgres::Config) -> NodeConfig {
        NodeConfig {
            pg,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// `host:port` (or the socket folder and port), for logs and health.
    pub fn address(&self) -> String {
        let port = self.pg.get_ports().first().copied().unwrap_or(5432);
        match self.pg.get_hosts().first() {
            Some(Host::Tcp(host)) => format!("{host}:{port}"),
            Some(Host::Unix(path)) => format!("{}:{port}", path.display()),
            None => match self.pg.get_hostaddrs().first() {
                Some(addr) => format!("{addr}:{port}"),
                None => format!("?:{port}"),
            },
        }
    }
}

/// Every timeout of the cluster. None may be zero: each bounds a step that
/// could otherwise hang forever (deadpool's own defaults are "no timeout").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timeouts {
    /// TCP connect, and also the whole login (TLS, authentication, startup)
    /// of a new pooled connection: deadpool's create timeout. Default 1 s.
    pub connect: Duration,
    /// `tcp_user_timeout`: how long sent data may stay unacknowledged before
    /// the kernel drops the connection (a black-holed host). Default 2 s.
    pub tcp_user: Duration,
    /// Server-side `statement_timeout` of every pooled connection
    /// (`None`: the server's default). Default 5 s; raise it for batch jobs.
    pub statement: Option<Duration>,
    /// How long a request waits for a free connection in a full pool:
    /// deadpool's wait timeout. Default 1 s.
    pub pool_wait: Duration,
    /// How long recycling an idle connection may take: deadpool's recycle
    /// timeout. Default 1 s.
    pub recycle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(1),
            tcp_user: Duration::from_secs(2),
            statement: Some(Duration::from_secs(5)),
            pool_wait: Duration::from_secs(1),
            recycle: Duration::from_secs(1),
        }
    }
}

/// How nodes are watched.
///
/// Probes of one node may overlap: the next one starts on time even while
/// an earlier one still waits for its answer (at most three at once), so a
/// probe stuck on a frozen connection does not delay the next. A node is
/// down after `failure_threshold` failed probes in a row, or once it has
/// answered none of its probes for `down_after` (counted from the start of
/// the first unanswered one) and none for half of it since the second
/// started (one probe stuck on a broken connection is not enough),
/// whichever comes first. A node whose probes are answered within `timeout` is never
/// down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeSettings {
    /// Time between two probes of a healthy replica (default 1 s).
    pub interval: Duration,
    /// Time between two probes of the healthy primary (default 200 ms):
    /// with `down_after`, how fast a frozen primary is noticed. Never
    /// longer than `interval`.
    pub primary_interval: Duration,
    /// Time between probes of a node that failed its last probe, and of
    /// every node while there is no primary (default 50 ms).
    pub fast_interval: Duration,
    /// A probe's query that takes longer fails (default 500 ms). A probe
    /// that must log in first is bounded by [`Timeouts::connect`] for the
    /// login, then by this for the query: the probe cannot hang.
    pub timeout: Duration,
    /// Consecutive failed probes before a node is down (default 3). A
    /// refused connection fails at once, so a killed node is down after
    /// three probes at the fast interval (about 100 ms).
    pub failure_threshold: u32,
    /// How long a node may leave every probe unanswered before it is down
    /// (default 600 ms), counted from the start of the first unanswered
    /// probe; the second unanswered probe must also have waited half of
    /// it. Never shorter than
    /// `timeout` (a shorter value acts as `timeout`): every probe gets its
    /// whole timeout to answer. `None`: only `failure_threshold` decides
    /// (a frozen node is then down after three timeouts). With the
    /// defaults a frozen primary is down at most `primary_interval` +
    /// `down_after` = 800 ms after it froze.
    pub down_after: Option<Duration>,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            interval: Duration::from_secs(1),
            primary_interval: Duration::from_millis(200),
            fast_interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            failure_threshold: 3,
            down_after: Some(Duration::from_millis(600)),
        }
    }
}

impl ProbeSettings {
    /// The silence after which a node is down: `down_after`, but never
    /// shorter than `timeout`.
    pub(crate) fn silence_limit(&self) -> Option<Duration> {
        self.down_after.map(|d| d.max(self.timeout))
    }
}

/// How `read()` picks a replica among those that qualify.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Balance {
    /// One after the other (default).
    #[default]
    RoundRobin,
    /// The one with the fewest connections in use; ties go round robin.
    LeastBusy,
}

/// What `read()` does when no replica qualifies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Read from the primary (default).
    #[default]
    Primary,
    /// Fail with [`Error::NoReplica`].
    Fail,
}

/// Read routing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadSettings {
    /// Round robin or least busy.
    pub balance: Balance,
    /// Fall back to the primary or fail.
    pub fallback: Fallback,
    /// A replica further behind the primary than this many bytes of WAL is
    /// skipped (default 16 MiB; `None`: no bound).
    pub max_lag_bytes: Option<u64>,
    /// A replica that has not replayed WAL the primary wrote longer ago
    /// than this is skipped (default 10 s; `None`: no bound). Measured
    /// against the primary's positions seen by the prober, so an idle
    /// primary does not make replicas look late.
    pub max_lag: Option<Duration>,
    /// How long `read_after` waits for a replica to replay up to the token
    /// before it reads from the primary instead (default `None`: go to the
    /// primary at once).
    pub read_after_wait: Option<Duration>,
}

impl Default for ReadSettings {
    fn default() -> Self {
        ReadSettings {
            balance: Balance::RoundRobin,
            fallback: Fallback::Primary,
            max_lag_bytes: Some(16 * 1024 * 1024),
            max_lag: Some(Duration::from_secs(10)),
            read_after_wait: None,
        }
    }
}

/// The whole configuration of a [`Cluster`](crate::Cluster).
///
/// Which node is the primary is never configured: it is found by probing,
/// so the order of the nodes does not matter.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The servers, primary and replicas alike. [`NodeId`] `n` is the `n`th.
    pub nodes: Vec<NodeConfig>,
    /// Where logins come from; `None` uses the user and password of each
    /// node's URL.
    pub credentials: Option<CredentialsProvider>,
    /// Every timeout.
    pub timeouts: Timeouts,
    /// Probing.
    pub probe: ProbeSettings,
    /// Read routing.
    pub reads: ReadSettings,
    /// Retries of operations and of connection acquisition.
    pub retry: RetryPolicy,
    /// How an idle pooled connection is checked before reuse (default
    /// `Fast`: only whether it is closed).
    pub recycling: deadpool_postgres::RecyclingMethod,
}

impl Config {
    /// A configuration for `nodes`, everything else default.
    pub fn new(nodes: Vec<NodeConfig>) -> Config {
        Config {
            nodes,
            credentials: None,
            timeouts: Timeouts::default(),
            probe: ProbeSettings::default(),
            reads: ReadSettings::default(),
            retry: RetryPolicy::default(),
            recycling: deadpool_postgres::RecyclingMethod::Fast,
        }
    }

    /// Nodes from a libpq URL or key/value string, one node per host:
    /// `postgres://user:pw@db1:5432,db2:5432,db3:5433/app`.
    ///
    /// Ports pair with hosts by position; a single port applies to every
    /// host. `target_session_attrs` and `load_balance_hosts` are ignored:
    /// roles are probed and routing is this crate's job.
    ///
    /// TLS is not supported yet: `sslmode=require` is rejected by
    /// [`Config::validate`] (and so by `Cluster::connect`) rather than
    /// silently connecting in plain text; `verify-ca`/`verify-full` do not
    /// parse.
    pub fn from_url(url: &str) -> Result<Config, Error> {
        let pg = tokio_postgres::Config::from_str(url)
            .map_err(|e| Error::Config(format!("unparsable URL: {e}")))?;
        Ok(Config::new(split_hosts(&pg)?))
    }

    /// Nodes from one URL each: the primary first, then the replicas. The
    /// order is a hint for humans only; roles are probed.
    pub fn from_urls<'a>(
        primary: &'a str,
        replicas: impl IntoIterator<Item = &'a str>,
    ) -> Result<Config, Error> {
        let mut nodes = Vec::new();
        for url in std::iter::once(primary).chain(replicas) {
            let pg = tokio_postgres::Config::from_str(url)
                .map_err(|e| Error::Config(format!("unparsable URL: {e}")))?;
            nodes.extend(split_hosts(&pg)?);
        }
        Ok(Config::new(nodes))
    }

    /// Sets the credentials provider.
    pub fn with_credentials(mut self, credentials: CredentialsProvider) -> Config {
        self.credentials = Some(credentials);
        self
    }

    /// Sets every node's pool size.
    pub fn with_max_connections(mut self, max: usize) -> Config {
        for node in &mut self.nodes {
            node.max_connections = max;
        }
        self
    }

    /// Sets one node's pool size (ignored for an unknown node).
    pub fn with_node_max_connections(mut self, node: NodeId, max: usize) -> Config {
        if let Some(n) = self.nodes.get_mut(node.0) {
            n.max_connections = max;
        }
        self
    }

    /// Checks what would otherwise fail later or hang.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |what: &str| Err(Error::Config(what.to_owned()));
        if self.nodes.is_empty() {
            return bad("no nodes");
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let hosts = node.pg.get_hosts().len().max(node.pg.get_hostaddrs().len());
            if hosts != 1 {
                return Err(Error::Config(format!(
                    "node{i} has {hosts} hosts; give each node exactly one"
                )));
            }
            match node.pg.get_ssl_mode() {
                SslMode::Disable | SslMode::Prefer => {}
                mode => {
                    return Err(Error::Config(format!(
                        "node{i} asks for sslmode={mode:?}, but TLS is not supported yet: \
                         connections are plain TCP (use sslmode=disable or prefer, or \
                         a TLS-terminating proxy)"
                    )));
                }
            }
            if node.max_connections == 0 {
                return Err(Error::Config(format!("node{i} has a pool of size 0")));
            }
            if self.credentials.is_none() && node.pg.get_user().is_none() {
                return Err(Error::Config(format!(
                    "node{i} has no user and no credentials provider is set"
                )));
            }
        }
        let t = &self.timeouts;
        for (name, value) in [
            ("timeouts.connect", t.connect),
            ("timeouts.tcp_user", t.tcp_user),
            ("timeouts.pool_wait", t.pool_wait),
            ("timeouts.recycle", t.recycle),
            ("probe.interval", self.probe.interval),
            ("probe.primary_interval", self.probe.primary_interval),
            ("probe.fast_interval", self.probe.fast_interval),
            ("probe.timeout", self.probe.timeout),
            ("retry.deadline", self.retry.deadline),
        ] {
            if value.is_zero() {
                return Err(Error::Config(format!("{name} is zero")));
            }
        }
        if t.statement.is_some_and(|d| d.is_zero()) {
            return bad("timeouts.statement is zero (use None for the server default)");
        }
        if self.probe.failure_threshold == 0 {
            return bad("probe.failure_threshold is zero");
        }
        // Doubling and full jitter are fixed: only `base <= cap` can fail.
        if self.retry.backoff().validate().is_err() {
            return bad("retry.base is larger than retry.cap");
        }
        Ok(())
    }
}

/// One `NodeConfig` per host of `pg`, each with everything else copied.
fn split_hosts(pg: &tokio_postgres::Config) -> Result<Vec<NodeConfig>, Error> {
    let hosts = pg.get_hosts();
    let ports = pg.get_ports();
    if hosts.is_empty() {
        return Err(Error::Config("the URL names no host".into()));
    }
    if ports.len() > 1 && ports.len() != hosts.len() {
        return Err(Error::Config(format!(
            "{} hosts but {} ports",
            hosts.len(),
            ports.len()
        )));
    }
    let hostaddrs = pg.get_hostaddrs();
    let mut nodes = Vec::with_capacity(hosts.len());
    for (i, host) in hosts.iter().enumerate() {
        let mut one = tokio_postgres::Config::new();
        match host {
            Host::Tcp(name) => one.host(name),
            Host::Unix(path) => one.host_path(path),
        };
        if hostaddrs.len() == hosts.len() {
            one.hostaddr(hostaddrs[i]);
        }
        one.port(match ports.len() {
            0 => 5432,
            1 => ports[0],
            _ => ports[i],
        });
        if let Some(user) = pg.get_user() {
            one.user(user);
        }
        if let Some(password) = pg.get_password() {
            one.password(password);
        }
        if let Some(db) = pg.get_dbname() {
            one.dbname(db);
        }
        if let Some(options) = pg.get_options() {
            one.options(options);
        }
        if let Some(name) = pg.get_application_name() {
            one.application_name(name);
        }
        one.ssl_mode(pg.get_ssl_mode())
            .channel_binding(pg.get_channel_binding())
            .keepalives(pg.get_keepalives())
            .keepalives_idle(pg.get_keepalives_idle());
        if let Some(interval) = pg.get_keepalives_interval() {
            one.keepalives_interval(interval);
        }
        if let Some(retries) = pg.get_keepalives_retries() {
            one.keepalives_retries(retries);
        }
        nodes.push(NodeConfig::new(one));
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_host_url_gives_one_node_per_host() {
        let config = Config::from_url(
            "postgres://app:s3cret@db1:5432,db2:5433,[::1]:5434/store?application_name=svc",
        )
        .unwrap();
        let addresses: Vec<String> = config.nodes.iter().map(NodeConfig::address).collect();
        assert_eq!(addresses, ["db1:5432", "db2:5433", "::1:5434"]);
        for node in &config.nodes {
            assert_eq!(node.pg.get_user(), Some("app"));
            assert_eq!(node.pg.get_password(), Some(&b"s3cret"[..]));
            assert_eq!(node.pg.get_dbname(), Some("store"));
            assert_eq!(node.pg.get_application_name(), Some("svc"));
            assert_eq!(node.max_connections, DEFAULT_MAX_CONNECTIONS);
        }
        config.validate().unwrap();
    }

    #[test]
    fn tls_is_rejected_until_supported() {
        let config = Config::from_url("postgres://u:p@a,b/d?sslmode=require").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("TLS is not supported yet"), "{err}");
        for mode in ["disable", "prefer"] {
            Config::from_url(&format!("postgres://u:p@a/d?sslmode={mode}"))
                .unwrap()
                .validate()
                .unwrap();
        }
        assert!(Config::from_url("postgres://u:p@a/d?sslmode=verify-full").is_err());
    }

    #[test]
    fn single_port_applies_to_every_host_and_key_value_works() {
        let config = Config::from_url("host=a,b port=6000 user=u dbname=d").unwrap();
        let addresses: Vec<String> = config.nodes.iter().map(NodeConfig::address).collect();
        assert_eq!(addresses, ["a:6000", "b:6000"]);
        let config = Config::from_url("postgres://u@a,b/d").unwrap();
        let addresses: Vec<String> = config.nodes.iter().map(NodeConfig::address).collect();
        assert_eq!(addresses, ["a:5432", "b:5432"]);
    }

    #[test]
    fn explicit_urls_and_pool_sizes() {
        let config = Config::from_urls(
            "postgres://u:p@primary:5432/d",
            ["postgres://u:p@r1:5432/d", "postgres://u:p@r2:5432/d"],
        )
        .unwrap()
        .with_max_connections(5)
        .with_node_max_connections(NodeId(0), 20);
        let sizes: Vec<usize> = config.nodes.iter().map(|n| n.max_connections).collect();
        assert_eq!(sizes, [20, 5, 5]);
        assert_eq!(config.nodes[2].address(), "r2:5432");
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let config = Config::from_url("postgres://u@h/d").unwrap();
        assert_eq!(config.probe.interval, Duration::from_secs(1));
        assert_eq!(config.probe.failure_threshold, 3);
        assert_eq!(config.probe.primary_interval, Duration::from_millis(200));
        assert_eq!(config.probe.down_after, Some(Duration::from_millis(600)));
        assert_eq!(
            config.probe.silence_limit(),
            Some(Duration::from_millis(600))
        );
        let mut slow = config.probe;
        slow.timeout = Duration::from_secs(2);
        assert_eq!(
            slow.silence_limit(),
            Some(Duration::from_secs(2)),
            "every probe gets its whole timeout"
        );
        assert_eq!(config.retry.base, Duration::from_millis(100));
        assert_eq!(config.retry.cap, Duration::from_secs(2));
        assert!(config.timeouts.connect > Duration::ZERO);
        assert!(config.timeouts.pool_wait > Duration::ZERO);
        assert!(config.timeouts.recycle > Duration::ZERO);
        assert_eq!(config.reads.fallback, Fallback::Primary);
    }

    #[test]
    fn validation_rejects_what_would_hang_or_fail() {
        let base = || Config::from_url("postgres://u@h/d").unwrap();
        let cases: Vec<(Config, &str)> = vec![
            (Config::new(vec![]), "no nodes"),
            (
                {
                    let mut c = base();
                    c.timeouts.pool_wait = Duration::ZERO;
                    c
                },
                "pool_wait",
            ),
            (
                {
                    let mut c = base();
                    c.probe.failure_threshold = 0;
                    c
                },
                "failure_threshold",
            ),
            (base().with_max_connections(0), "size 0"),
            (
                Config::new(vec![NodeConfig::new(
                    tokio_postgres::Config::from_str("host=h").unwrap(),
                )]),
                "no user",
            ),
            (
                Config::new(vec![NodeConfig::new(
                    tokio_postgres::Config::from_str("host=a,b user=u").unwrap(),
                )]),
                "2 hosts",
            ),
        ];
        for (config, expected) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
        assert!(Config::from_url("postgres://u@a,b:1:2/d").is_err());
        assert!(Config::from_url("host=a,b,c port=1,2 user=u").is_err());
    }
}
