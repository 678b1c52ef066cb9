//! `cargo xtask up | down | reset`: the platform on this machine.
//!
//! The stack lives in one folder (`./.stack`, gitignored), kept between
//! runs: a PostgreSQL primary with one streaming replica (fsync on; on a
//! kept stack the primary is the node the data chooses, see
//! [`testkit::timeline`], so a promotion survives a restart), a real
//! OpenBao server on raft storage (initialised once, unsealed on every `up`,
//! so Transit keys survive restarts) and the service binaries of the
//! workspace. Starting PostgreSQL, OpenBao and NATS is testkit's job, the
//! same code the tests use.
//!
//! By default one gateway keeps its write queue in an embedded redb file.
//! `--gateways N` runs a fleet instead: a 3-node NATS JetStream cluster
//! (data in `nats/`, kept like PostgreSQL's) and N gateways on consecutive
//! ports sharing one write queue on it, sealed with one key that the stack
//! keeps in `gateway-queue.key` (mode 0600, reused by every restart).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use reqwest::Method;
use serde_json::json;
use testkit::{DatabaseEngine, NatsCluster, OpenBao, PgCluster};

use crate::files::{ENV_FILE, PID_FILE, running_pid};
use testkit::workspace_root;

use crate::tools;

/// The store service's port (`--store-port`).
const STORE_PORT: u16 = 3000;
/// The first gateway's port (`--gateway-port`); the others follow it.
const GATEWAY_PORT: u16 = 8080;
/// The gateway crate in `bins/`.
const GATEWAY: &str = "gateway";
/// The client ports of the NATS cluster that `--gateways` starts
/// (`--nats-ports`).
const NATS_PORTS: [u16; 3] = [4222, 4223, 4224];
/// The fleet's write-queue key in the stack folder (base64 of 32 bytes,
/// mode 0600), created by the first `up --gateways` and reused afterwards.
pub(crate) const QUEUE_KEY_FILE: &str = "gateway-queue.key";

const PG_PORTS: [u16; 2] = [15432, 15433];
const BAO_PORT: u16 = 8200;
pub(crate) const DATABASE: &str = "stores";
pub(crate) const APP: &str = "store-service";
/// The gateway's configuration file in the stack folder.
pub(crate) const GATEWAY_CONFIG: &str = "gateway.toml";
/// OpenBao's address and token issuer, for `cargo xtask token`.
const OIDC_FILE: &str = "oidc.json";

/// What `up` was asked for.
pub(crate) struct UpOptions {
    dir: PathBuf,
    services: bool,
    pg_ports: Vec<u16>,
    bao_port: u16,
    /// `--primary pgN`: this node is the primary, whatever the data says.
    primary: Option<testkit::NodeId>,
    /// `--discard-diverged`: rewind nodes whose divergent WAL holds commits.
    discard_diverged: bool,
    /// `--gateways N`: N gateways sharing a write queue on NATS JetStream;
    /// `None`: one gateway on the embedded redb queue.
    gateways: Option<usize>,
    /// `--store-port`: the store service's port.
    store_port: u16,
    /// `--gateway-port`: the first gateway's port.
    gateway_port: u16,
    /// `--nats-ports A,B,C`: the NATS nodes' client ports.
    nats_ports: Vec<u16>,
}

/// `A,B,...` as ports, exactly `count` of them.
fn parse_ports(flag: &str, list: &str, count: usize) -> anyhow::Result<Vec<u16>> {
    let ports: Vec<u16> = list
        .split(',')
        .map(|p| p.trim().parse().with_context(|| format!("bad port `{p}`")))
        .collect::<anyhow::Result<_>>()?;
    if ports.len() != count {
        bail!("{flag} needs {count} comma-separated ports, not `{list}`");
    }
    Ok(ports)
}

/// `--NAME PORT` as a port.
fn parse_port(flag: &str, value: Option<&String>) -> anyhow::Result<u16> {
    let port = value.with_context(|| format!("{flag} needs a port"))?;
    port.parse().with_context(|| format!("bad port `{port}`"))
}

impl UpOptions {
    pub(crate) fn parse(args: &[String]) -> anyhow::Result<UpOptions> {
        let mut services = true;
        let mut pg_ports = PG_PORTS.to_vec();
        let mut bao_port = BAO_PORT;
        let mut primary = None;
        let mut discard_diverged = false;
        let mut gateways = None;
        let mut store_port = STORE_PORT;
        let mut gateway_port = GATEWAY_PORT;
        let mut nats_ports = NATS_PORTS.to_vec();
        let mut rest = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--no-services" => services = false,
                "--pg-ports" => {
                    let list = args.next().context("--pg-ports needs PRIMARY,REPLICA")?;
                    pg_ports = parse_ports("--pg-ports", list, 2)?;
                }
                "--gateways" => {
                    let n = args.next().context("--gateways needs a count")?;
                    let n: usize = n
                        .parse()
                        .with_context(|| format!("bad gateway count `{n}`"))?;
                    if n == 0 || n > 100 {
                        bail!("--gateways needs 1 to 100 gateways");
                    }
                    gateways = Some(n);
                }
                "--store-port" => store_port = parse_port(arg, args.next())?,
                "--gateway-port" => gateway_port = parse_port(arg, args.next())?,
                "--nats-ports" => {
                    let list = args.next().context("--nats-ports needs A,B,C")?;
                    nats_ports = parse_ports("--nats-ports", list, 3)?;
                }
                "--discard-diverged" => discard_diverged = true,
                "--primary" => {
                    let node = args.next().context("--primary needs a node (pg0, pg1)")?;
                    let index = node
                        .strip_prefix("pg")
                        .and_then(|n| n.parse().ok())
                        .with_context(|| format!("bad node `{node}` (pg0, pg1)"))?;
                    primary = Some(testkit::NodeId(index));
                }
                "--bao-port" => bao_port = parse_port(arg, args.next())?,
                _ => rest.push(arg.clone()),
            }
        }
        if usize::from(gateway_port) + gateways.unwrap_or(1) - 1 > usize::from(u16::MAX) {
            bail!("--gateway-port {gateway_port}: no room for the gateways' ports above it");
        }
        Ok(UpOptions {
            dir: crate::files::stack_dir(&rest)?,
            services,
            pg_ports,
            bao_port,
            primary,
            discard_diverged,
            gateways,
            store_port,
            gateway_port,
            nats_ports,
        })
    }

    /// The services to start, in order, each whose crate exists in
    /// `bins/`: the store service, then the gateways.
    fn services(&self) -> Vec<Planned> {
        let mut planned = Vec::new();
        if !self.services {
            return planned;
        }
        if service_exists(APP) {
            planned.push(Planned {
                name: APP.to_owned(),
                package: APP,
                port: self.store_port,
            });
        }
        if service_exists(GATEWAY) {
            match self.gateways {
                None => planned.push(Planned {
                    name: GATEWAY.to_owned(),
                    package: GATEWAY,
                    port: self.gateway_port,
                }),
                Some(n) => planned.extend((0..n).map(|i| Planned {
                    name: format!("{GATEWAY}-{}", i + 1),
                    package: GATEWAY,
                    port: self.gateway_port + i as u16,
                })),
            }
        }
        planned
    }
}

/// A service that `up` runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Planned {
    /// Its name in reports (`gateway-2`).
    name: String,
    /// Its crate in `bins/`.
    package: &'static str,
    /// The port it listens on.
    port: u16,
}

pub(crate) async fn up(options: UpOptions) -> anyhow::Result<()> {
    // Before the pid file names this process: `cargo xtask failover`
    // signals it, and SIGUSR1's default action would end it.
    let failover_signal =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            .context("listening for SIGUSR1")?;
    let tools = tools::ensure()?;
    let dir = &options.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    claim(dir)?;

    eprintln!(
        "xtask: starting PostgreSQL (primary + streaming replica) in {}",
        dir.join("pg").display()
    );
    let mut builder = PgCluster::builder()
        .dir(dir.join("pg"))
        .bindir(&tools.pg_bindir)
        .ports(options.pg_ports.iter().copied())
        .durable(true)
        .discard_divergent(options.discard_diverged);
    if let Some(node) = options.primary {
        builder = builder.primary(node);
    }
    let pg = match builder.start().await {
        Ok(pg) => pg,
        Err(error @ testkit::Error::Diverged { .. }) => {
            let _ = std::fs::remove_file(dir.join(PID_FILE));
            let testkit::Error::Diverged { node, .. } = &error else {
                unreachable!()
            };
            bail!(
                "starting PostgreSQL: {error}. Nothing was started.\n  \
                 to keep {node}'s transactions, make it the primary: cargo xtask up --primary {node} \
                 (the other node's own transactions after the split are then the ones refused)\n  \
                 to discard them (they are listed above and in the log): cargo xtask up --discard-diverged"
            );
        }
        Err(error) => {
            let _ = std::fs::remove_file(dir.join(PID_FILE));
            return Err(error).context("starting PostgreSQL");
        }
    };
    for line in pg.startup_report() {
        eprintln!("xtask: postgres: {line}");
    }
    eprintln!("xtask: starting OpenBao in {}", dir.join("bao").display());
    let bao = OpenBao::builder()
        .dir(dir.join("bao"))
        .binary(&tools.bao)
        .port(options.bao_port)
        .start()
        .await
        .context("starting OpenBao")?;
    testkit::write_private(&dir.join("bao").join("root-token"), bao.root_token())?;
    write_env_file(dir, &pg, &bao)?;

    pg.create_database(DATABASE).await?;
    // The schema owner applies the migrations: `store-service migrate` when
    // the service is started (as in production), testkit otherwise. Both
    // embed `migrations/` with refinery: one history table.
    let store_service = options.services && service_exists(APP);
    if store_service {
        let binary = build_service(APP, false)?;
        migrate_with_service(&binary, &pg)?;
    } else {
        let mut db = pg.admin_db(pg.primary(), DATABASE).await?;
        let applied = testkit::migrations::apply(&mut db)
            .await
            .context("applying migrations")?;
        eprintln!("xtask: migrations applied this run: {applied:?}");
    }
    let approle = configure_bao(&pg, &bao)
        .await
        .context("configuring OpenBao")?;

    // The fleet's shared write queue: NATS JetStream, 3 nodes.
    let nats = match options.gateways {
        Some(_) => Some(start_nats(dir, &tools, &options.nats_ports).await?),
        None => None,
    };
    let queue = match &nats {
        Some(nats) => GatewayQueue::JetStream {
            urls: nats.urls(),
            replicas: nats.len(),
        },
        None => GatewayQueue::Redb(dir.join("gateway-queue.redb")),
    };
    let queue_key = match &nats {
        Some(_) => Some(queue_key(dir)?),
        None => None,
    };
    let store_url = format!("http://127.0.0.1:{}", options.store_port);
    configure_gateway(dir, &bao, &GatewayLimits::default(), &store_url, &queue)
        .await
        .context("configuring OpenBao's token issuer for the gateway")?;

    let planned = options.services();
    let mut children = Vec::new();
    let env = ServiceEnv {
        dir,
        tools: &tools,
        pg: &pg,
        bao: &bao,
        approle: &approle,
        store_url: &store_url,
        queue_key: queue_key.as_deref(),
    };
    if let Err(error) = start_services(&planned, &env, &mut children).await {
        stop_services(children).await;
        return Err(error);
    }

    let ports: Vec<(&str, u16)> = planned.iter().map(|s| (s.name.as_str(), s.port)).collect();
    crate::status::write_topology(dir, &pg, bao.addr(), &ports, nats.as_ref())?;
    print_summary(dir, &pg, &bao, nats.as_ref(), &planned);
    eprintln!("xtask: stack ready; Ctrl-C stops it");
    let outcome = wait_for_stop(&mut children, failover_signal, |children| {
        let store = children
            .iter()
            .find(|(service, _)| service.package == APP)
            .map(|(service, _)| service.port);
        let (pg, bao, ports, nats) = (&pg, &bao, &ports, nats.as_ref());
        async move {
            if crate::failover::run(dir, pg, point_bao_at_primary(pg, bao), store)
                .await
                .is_ok()
            {
                write_env_file(dir, pg, bao)?;
                crate::status::write_topology(dir, pg, bao.addr(), ports, nats)?;
            }
            Ok(())
        }
    })
    .await;

    eprintln!("xtask: stopping");
    stop_services(children).await;
    if let Some(nats) = nats {
        for i in 0..nats.len() {
            nats.stop(i)
                .await
                .with_context(|| format!("stopping NATS {}", nats.server_name(i)))?;
        }
        eprintln!("xtask: NATS stopped");
    }
    bao.stop().await?;
    pg.shutdown().await?;
    let _ = std::fs::remove_file(dir.join(PID_FILE));
    eprintln!("xtask: stopped; data kept in {}", dir.display());
    outcome
}

/// What every service `up` starts is given.
struct ServiceEnv<'a> {
    /// The stack folder.
    dir: &'a Path,
    /// The servers' binaries.
    tools: &'a tools::Tools,
    /// The PostgreSQL cluster.
    pg: &'a PgCluster,
    /// OpenBao.
    bao: &'a OpenBao,
    /// The store service's AppRole.
    approle: &'a testkit::AppRoleCredentials,
    /// The store service's URL.
    store_url: &'a str,
    /// The fleet's write-queue key (JetStream only).
    queue_key: Option<&'a str>,
}

/// Starts the `planned` services into `children`, each once it is built
/// and the one before it is ready: the store service first, then the
/// gateways one at a time, so that the first of a fleet creates the
/// shared queue's stream and buckets before the others open them.
async fn start_services(
    planned: &[Planned],
    env: &ServiceEnv<'_>,
    children: &mut Vec<(Planned, Child)>,
) -> anyhow::Result<()> {
    let mut binaries: Vec<(&str, PathBuf)> = Vec::new();
    for service in planned {
        let binary = match binaries.iter().find(|(p, _)| *p == service.package) {
            Some((_, binary)) => binary.clone(),
            None => {
                let binary = build_service(service.package, false)?;
                binaries.push((service.package, binary.clone()));
                binary
            }
        };
        let mut cmd = service_command(&binary, service.port, env.pg, env.bao, env.approle);
        cmd.env("STORE_SERVICE_URL", env.store_url);
        cmd.env("GATEWAY_CONFIG", env.dir.join(GATEWAY_CONFIG));
        if service.package == GATEWAY
            && let Some(key) = env.queue_key
        {
            cmd.env("GATEWAY_QUEUE_KEY", key);
        }
        cmd.envs(env.tools.env());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", service.name))?;
        eprintln!(
            "xtask: {} started on http://127.0.0.1:{}",
            service.name, service.port
        );
        children.push((service.clone(), child));
        let (_, child) = children.last_mut().context("the child just started")?;
        wait_ready(([127, 0, 0, 1], service.port).into(), child)
            .await
            .with_context(|| format!("waiting for {}", service.name))?;
        eprintln!("xtask: {} ready", service.name);
    }
    Ok(())
}

/// Stops `children` (SIGTERM), last started first, and waits for each.
async fn stop_services(children: Vec<(Planned, Child)>) {
    for (service, mut child) in children.into_iter().rev() {
        let _ = rustix::process::kill_process(pid_of(&child), rustix::process::Signal::TERM);
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        eprintln!("xtask: {} stopped", service.name);
    }
}

/// Starts (or restarts, on a kept stack) the 3-node NATS JetStream cluster
/// in `<dir>/nats` with the client ports `ports`.
async fn start_nats(
    dir: &Path,
    tools: &tools::Tools,
    ports: &[u16],
) -> anyhow::Result<NatsCluster> {
    let nats_dir = dir.join("nats");
    eprintln!(
        "xtask: starting NATS JetStream (3 nodes) in {}",
        nats_dir.display()
    );
    let nats = NatsCluster::builder()
        .nodes(3)
        .client_ports(ports.iter().copied())
        .dir(&nats_dir)
        .binary(&tools.nats_server)
        .start()
        .await
        .context("starting NATS JetStream")?;
    if nats.client_ports() != ports {
        eprintln!(
            "xtask: NATS keeps the client ports of its first run: {:?}",
            nats.client_ports()
        );
    }
    Ok(nats)
}

/// The fleet's write-queue key (base64 of 32 bytes): the one in
/// `<dir>/gateway-queue.key`, else a new random one written there with mode
/// 0600, so that every restart opens the writes queued before it.
pub(crate) fn queue_key(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(QUEUE_KEY_FILE);
    let engine = base64::engine::general_purpose::STANDARD;
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let key = text.trim().to_owned();
            let bytes = engine
                .decode(&key)
                .with_context(|| format!("{} is not base64", path.display()))?;
            if bytes.len() != 32 {
                bail!("{} holds {} bytes, not 32", path.display(), bytes.len());
            }
            Ok(key)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut bytes))
                .context("reading 32 random bytes from /dev/urandom")?;
            let key = engine.encode(bytes);
            testkit::write_private(&path, &format!("{key}\n"))?;
            Ok(key)
        }
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Records this process as the stack's owner, refusing to run a second
/// `up` on the same folder.
fn claim(dir: &Path) -> anyhow::Result<()> {
    let pid_file = dir.join(PID_FILE);
    if let Some(pid) = running_pid(&pid_file) {
        bail!(
            "a stack is already running from {} (pid {pid}); stop it with `cargo xtask down`",
            dir.display()
        );
    }
    std::fs::write(&pid_file, std::process::id().to_string())
        .with_context(|| format!("writing {}", pid_file.display()))
}

pub(crate) async fn configure_bao(
    pg: &PgCluster,
    bao: &OpenBao,
) -> anyhow::Result<testkit::AppRoleCredentials> {
    bao.enable_kv2("secret").await?;
    point_bao_at_primary(pg, bao).await?;
    bao.enable_transit("transit").await?;
    bao.create_transit_key("transit", testkit::STORE_TRANSIT_KEY)
        .await?;
    // The production policy (deploy/vault/policies), as the tests use it.
    let policy = testkit::workspace_file(testkit::STORE_SERVICE_POLICY_FILE)?;
    bao.write_policy(APP, &policy).await?;
    let approle = bao
        .enable_approle(APP, &[APP], Duration::from_secs(3600))
        .await?;
    // Check the setup end to end: the policy really issues credentials.
    bao.call(Method::GET, &format!("database/creds/{APP}"), None)
        .await
        .context("issuing a first set of database credentials")?;
    Ok(approle)
}

/// Points OpenBao at the current primary: the addresses in
/// `secret/store-service/database`, and the database secrets engine's
/// connection (it creates and renews the services' users there). At every
/// `up` and after a failover.
pub(crate) async fn point_bao_at_primary(pg: &PgCluster, bao: &OpenBao) -> anyhow::Result<()> {
    let primary = pg.node(pg.primary());
    let replicas: Vec<u16> = pg
        .replicas()
        .into_iter()
        .map(|id| pg.node(id).port())
        .collect();
    let database = json!({
        "host": "127.0.0.1",
        "primary_port": primary.port(),
        "replica_ports": replicas,
        "dbname": DATABASE,
    });
    // enable_kv2 waited for the new mount's upgrade, so this write is safe.
    bao.kv_put("secret", "store-service/database", database)
        .await?;
    bao.configure_database(
        pg,
        &DatabaseEngine {
            role: APP.into(),
            database: DATABASE.into(),
            ..DatabaseEngine::default()
        },
    )
    .await?;
    Ok(())
}

/// Where the gateways' write queue lives.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GatewayQueue {
    /// The embedded redb file at this path: one gateway.
    Redb(PathBuf),
    /// One queue on NATS JetStream, shared by every gateway that names
    /// these servers (and holds the same `GATEWAY_QUEUE_KEY`).
    JetStream {
        /// The servers' client URLs.
        urls: Vec<String>,
        /// The stream's replicas (1, 3 or 5).
        replicas: usize,
    },
}

impl GatewayQueue {
    /// The `[degraded]` section of `gateway.toml` for this queue.
    fn config_section(&self) -> String {
        match self {
            GatewayQueue::Redb(path) => {
                format!("[degraded]\nqueue_path = \"{}\"\n", path.display())
            }
            GatewayQueue::JetStream { urls, replicas } => {
                let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
                format!(
                    "[degraded]\n\
                     queue_backend = \"jetstream\"\n\n\
                     # One queue for every gateway of the stack (GATEWAY_QUEUE_KEY: the\n\
                     # stack folder's {QUEUE_KEY_FILE}).\n\
                     [degraded.jetstream]\n\
                     urls = [{urls}]\n\
                     replicas = {replicas}\n\
                     prefix = \"gateway\"\n\
                     publish_timeout = \"15s\"\n\
                     lease = \"30s\"\n",
                    urls = urls.join(", "),
                )
            }
        }
    }
}

/// The gateway's token buckets (the benchmark sets them high).
pub(crate) struct GatewayLimits {
    /// Tokens per second per client.
    pub(crate) per_second: u32,
    /// Bucket size.
    pub(crate) burst: u32,
}

impl Default for GatewayLimits {
    fn default() -> Self {
        GatewayLimits {
            per_second: 50,
            burst: 100,
        }
    }
}

/// Configures OpenBao's identity token issuer (ES256 key `gateway`, role
/// `api` putting the entity's `scope` metadata into 1 h tokens), writes
/// `<dir>/gateway.toml` (JWKS, issuer, audience, the store service at
/// `store_url`, the write queue `queue`) and `<dir>/oidc.json` for `cargo
/// xtask token`. Returns the configuration file's path and the issuer.
pub(crate) async fn configure_gateway(
    dir: &Path,
    bao: &OpenBao,
    limits: &GatewayLimits,
    store_url: &str,
    queue: &GatewayQueue,
) -> anyhow::Result<(PathBuf, testkit::OidcIssuer)> {
    let issuer = bao
        .configure_oidc_issuer("gateway", "api", Duration::from_secs(3600))
        .await?;
    let config = format!(
        "# Written by `cargo xtask up` (see bins/gateway/gateway.example.toml).\n\
         [auth]\n\
         jwks_url = \"{jwks}\"\n\
         issuer = \"{iss}\"\n\
         audiences = [\"{aud}\"]\n\n\
         [rate_limit]\n\
         per_second = {per_second}\n\
         burst = {burst}\n\n\
         [upstreams]\n\
         store = \"{store_url}\"\n\n\
         # The default stores route, with a 2 s timeout so that an outage\n\
         # (README: \"An outage\") shows quickly.\n\
         [[routes]]\n\
         name = \"stores\"\n\
         prefix = \"/api/stores\"\n\
         upstream = \"{store_url}\"\n\
         timeout = \"2s\"\n\
         breaker = {{ preset = \"store-service\" }}\n\
         scopes = {{ GET = [\"stores:read\"], HEAD = [\"stores:read\"], POST = [\"stores:write\"], PUT = [\"stores:write\"], PATCH = [\"stores:write\"] }}\n\
         segment_scopes = {{ secrets = [\"stores:secrets\"] }}\n\
         sensitive_segments = [\"secrets\"]\n\
         openapi = \"/openapi.json\"\n\n\
         {degraded}",
        degraded = queue.config_section(),
        jwks = issuer.jwks_url,
        iss = issuer.issuer,
        aud = issuer.client_id,
        per_second = limits.per_second,
        burst = limits.burst,
    );
    let path = dir.join(GATEWAY_CONFIG);
    std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    let oidc = json!({ "addr": bao.addr(), "issuer": issuer });
    testkit::write_private(&dir.join(OIDC_FILE), &oidc.to_string())?;
    Ok((path, issuer))
}

/// `cargo xtask token [--scope "..."] [--subject NAME] [--dir DIR]`: a
/// fresh token from the running stack's issuer, on stdout. With
/// `--subject`, the token's `sub` is NAME's own (the same for every token of
/// NAME, whatever the scope, as long as the stack's OpenBao data is kept),
/// so that two clients can be tried; without it, each scope string is a
/// client of its own.
pub(crate) async fn token(args: &[String]) -> anyhow::Result<()> {
    let mut scope = "stores:read stores:write".to_owned();
    let mut subject = None;
    let mut rest = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--scope" => scope = args.next().context("--scope needs a value")?.clone(),
            "--subject" => subject = Some(args.next().context("--subject needs a NAME")?.clone()),
            _ => rest.push(arg.clone()),
        }
    }
    if let Some(name) = &subject {
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
            bail!("--subject `{name}`: use 1 to 64 lowercase ASCII letters, digits, `-` or `_`");
        }
    }
    let dir = crate::files::stack_dir(&rest)?;
    let oidc_path = dir.join(OIDC_FILE);
    let text = std::fs::read_to_string(&oidc_path).with_context(|| {
        format!(
            "reading {} (is `cargo xtask up` running?)",
            oidc_path.display()
        )
    })?;
    let oidc: serde_json::Value = serde_json::from_str(&text).context("parsing oidc.json")?;
    let addr = oidc["addr"].as_str().context("oidc.json without addr")?;
    let issuer: testkit::OidcIssuer =
        serde_json::from_value(oidc["issuer"].clone()).context("oidc.json without issuer")?;
    let root = std::fs::read_to_string(dir.join("bao").join("root-token"))
        .context("reading the OpenBao root token")?;
    let client = testkit::OidcClient::new(addr, root.trim())?;
    let token = match &subject {
        Some(subject) => client.subject_token(&issuer, subject, &scope).await,
        None => client.token(&issuer, &scope).await,
    }
    .context("asking OpenBao for a token (is the stack running?)")?;
    println!("{token}");
    Ok(())
}

/// Polls `GET /ready` at `addr` until it answers 200, for at most 120 s;
/// fails at once if `child` exits first.
pub(crate) async fn wait_ready(
    addr: std::net::SocketAddr,
    child: &mut Child,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().context("checking the service process")? {
            bail!("the service at {addr} exited before it was ready: {status}");
        }
        let ready = crate::load::once(addr, &crate::load::get("/ready")).await;
        if matches!(ready, Ok(ref r) if r.status == 200) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the service at {addr} was not ready within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The command that runs a service `binary` on `port` against the stack:
/// Vault AppRole login, database credentials from Vault, primary and
/// replicas.
pub(crate) fn service_command(
    binary: &Path,
    port: u16,
    pg: &PgCluster,
    bao: &OpenBao,
    approle: &testkit::AppRoleCredentials,
) -> Command {
    let replicas: Vec<String> = pg
        .replicas()
        .into_iter()
        .map(|id| format!("127.0.0.1:{}", pg.node(id).port()))
        .collect();
    let mut cmd = Command::new(binary);
    cmd.env("PORT", port.to_string())
        .env("BAO_ADDR", bao.addr())
        .env("BAO_ROLE_ID", &approle.role_id)
        .env("BAO_SECRET_ID", &approle.secret_id)
        .env(
            "DB_PRIMARY",
            format!("127.0.0.1:{}", pg.node(pg.primary()).port()),
        )
        .env("DB_REPLICAS", replicas.join(","))
        .env("DB_NAME", DATABASE);
    cmd
}

/// Whether `bins/<name>` exists in the workspace.
fn service_exists(name: &str) -> bool {
    workspace_root()
        .join("bins")
        .join(name)
        .join("Cargo.toml")
        .is_file()
}

/// `cargo build -p <name>` (with `--release` when `release`); returns the
/// binary's path.
pub(crate) fn build_service(name: &str, release: bool) -> anyhow::Result<PathBuf> {
    eprintln!(
        "xtask: building {name}{}",
        if release { " (release)" } else { "" }
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut args = vec!["build", "--quiet", "-p", name];
    if release {
        args.push("--release");
    }
    let status = Command::new(&cargo)
        .args(&args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("building {name}"))?;
    if !status.success() {
        bail!("cargo build -p {name} failed: {status}");
    }
    Ok(service_binary(name, release))
}

/// Where `cargo build -p <name>` puts the binary (release or debug).
pub(crate) fn service_binary(name: &str, release: bool) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let profile = if release { "release" } else { "debug" };
    target.join(profile).join(name)
}

/// `<binary> migrate` (store-service) with the owner's (superuser's)
/// credentials.
pub(crate) fn migrate_with_service(binary: &Path, pg: &PgCluster) -> anyhow::Result<()> {
    eprintln!("xtask: applying migrations with `{APP} migrate`");
    let status = Command::new(binary)
        .arg("migrate")
        .env(
            "MIGRATION_DATABASE_URL",
            pg.superuser_url(pg.primary(), DATABASE),
        )
        .env("LOG_FORMAT", "text")
        .status()
        .with_context(|| format!("running {APP} migrate"))?;
    if !status.success() {
        bail!("{APP} migrate failed: {status}");
    }
    Ok(())
}

/// The walkthrough `up` prints when store-service runs on `port`.
fn walkthrough(port: u16) -> String {
    const TEXT: &str = r#"walkthrough (store-service):
  # create a store (its secret is encrypted by Vault Transit before it is stored)
  ID=$(curl -s http://127.0.0.1:PORT/api/stores -H 'Content-Type: application/json' \
    -H 'Idempotency-Key: demo-1' \
    -d '{"name": "Corner Shop", "config": {"theme": "dark"}, "secrets": {"WIFI_PASSWORD": "hunter2"}}' \
    | sed -E 's/.*"id":"([^"]+)".*/\1/')
  # read it: ETag "1"
  curl -si http://127.0.0.1:PORT/api/stores/$ID
  # activate it, with optimistic locking through If-Match
  curl -si -X PUT http://127.0.0.1:PORT/api/stores/$ID -H 'Content-Type: application/json' \
    -H 'If-Match: "1"' -d '{"status": "ACTIVE"}'
  # the same again is stale: 412, "error": "CONCURRENCY_ERROR", application/problem+json
  curl -si -X PUT http://127.0.0.1:PORT/api/stores/$ID -H 'Content-Type: application/json' \
    -H 'If-Match: "1"' -d '{"status": "ACTIVE"}'
  # the audit trail, then the decrypted secrets
  curl -s http://127.0.0.1:PORT/api/stores/$ID/history
  curl -s http://127.0.0.1:PORT/api/stores/$ID/secrets
  # a page of stores, readiness, metrics, the OpenAPI document
  curl -si 'http://127.0.0.1:PORT/api/stores?limit=10'
  curl -s http://127.0.0.1:PORT/ready
  curl -s http://127.0.0.1:PORT/metrics | grep http_requests_total
  curl -s http://127.0.0.1:PORT/openapi.json | head -c 300"#;
    TEXT.replace("PORT", &port.to_string())
}

/// `.stack/env.sh` (mode 0600): `source` it for psql and bao; it names the
/// current primary.
fn write_env_file(dir: &Path, pg: &PgCluster, bao: &OpenBao) -> anyhow::Result<()> {
    let text = format!(
        "# Written by `cargo xtask up`: local development only.\n\
         export PGHOST=127.0.0.1 PGPORT={port} PGUSER=postgres PGDATABASE={DATABASE}\n\
         export PGPASSWORD='{pg_password}'\n\
         export BAO_ADDR={addr}\n\
         export BAO_TOKEN='{token}'\n",
        port = pg.node(pg.primary()).port(),
        pg_password = pg.superuser_password(),
        addr = bao.addr(),
        token = bao.root_token(),
    );
    testkit::write_private(&dir.join(ENV_FILE), &text)?;
    Ok(())
}

fn print_summary(
    dir: &Path,
    pg: &PgCluster,
    bao: &OpenBao,
    nats: Option<&NatsCluster>,
    services: &[Planned],
) {
    let env = dir.join(ENV_FILE);
    println!();
    println!(
        "PostgreSQL primary  127.0.0.1:{}  (database {DATABASE})",
        pg.node(pg.primary()).port()
    );
    for id in pg.replicas() {
        println!(
            "PostgreSQL replica  127.0.0.1:{}  (streaming)",
            pg.node(id).port()
        );
    }
    println!("OpenBao             {}", bao.addr());
    if let Some(nats) = nats {
        for i in 0..nats.len() {
            println!(
                "NATS {:<14} {}  (JetStream; monitoring {})",
                nats.server_name(i),
                nats.url(i),
                nats.monitor_url(i)
            );
        }
    }
    for service in services {
        println!("{:<19} http://127.0.0.1:{}", service.name, service.port);
    }
    let gateways: Vec<&Planned> = services.iter().filter(|s| s.package == GATEWAY).collect();
    if nats.is_some() && !gateways.is_empty() {
        println!(
            "                    ({} gateways, one write queue on NATS JetStream, key in {})",
            gateways.len(),
            dir.join(QUEUE_KEY_FILE).display()
        );
    }
    println!();
    println!(
        "credentials:  source {}   (then: psql, bao kv get secret/store-service/database)",
        env.display()
    );
    let curl = match services.first() {
        Some(service) => format!("curl -s http://127.0.0.1:{}/api/stores", service.port),
        None => format!(
            "curl -s -H \"X-Vault-Token: $(cat {})\" {}/v1/secret/data/store-service/database",
            dir.join("bao").join("root-token").display(),
            bao.addr()
        ),
    };
    println!("try:          {curl}");
    if let Some(gateway) = gateways.first() {
        println!();
        println!(
            "through the gateway (a token from OpenBao's issuer, scopes in the `scope` claim):"
        );
        println!("  TOKEN=$(cargo xtask token --scope \"stores:read stores:write\")");
        println!(
            "  curl -si http://127.0.0.1:{}/api/stores -H \"Authorization: Bearer $TOKEN\"",
            gateway.port
        );
        println!("  # or with storectl (bins/storectl/README.md):");
        println!("  export STORECTL_URL=http://127.0.0.1:{}", gateway.port);
        println!(
            "  export STORECTL_TOKEN=$(cargo xtask token --scope \"stores:read stores:write stores:secrets\")"
        );
        println!("  cargo run -q -p storectl -- list");
        println!(
            "  cargo run -q -p storectl -- create \"Corner Shop\" --secret WIFI_PASSWORD=hunter2"
        );
        if let Some(other) = gateways.get(1) {
            println!(
                "  # the same queue behind every gateway: a write's GET /api/requests/ID works on any"
            );
            println!(
                "  curl -si http://127.0.0.1:{}/api/stores -H \"Authorization: Bearer $TOKEN\"",
                other.port
            );
        }
    }
    if let Some(store) = services.iter().find(|s| s.package == APP) {
        println!();
        println!("{}", walkthrough(store.port));
    }
    println!();
}

/// Waits for Ctrl-C or SIGTERM (`cargo xtask down`), or for a service to
/// exit on its own, which is an error; on SIGUSR1 (`cargo xtask failover`)
/// runs `failover` and goes on waiting.
async fn wait_for_stop<F, Fut>(
    children: &mut [(Planned, Child)],
    mut usr1: tokio::signal::unix::Signal,
    failover: F,
) -> anyhow::Result<()>
where
    F: Fn(&[(Planned, Child)]) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("listening for SIGTERM")?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = usr1.recv() => failover(children).await?,
            _ = tick.tick() => {
                for (service, child) in children.iter_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        bail!("{} exited on its own: {status}", service.name);
                    }
                }
            }
        }
    }
}

pub(crate) fn pid_of(child: &Child) -> rustix::process::Pid {
    rustix::process::Pid::from_raw(child.id() as i32).unwrap_or(rustix::process::Pid::INIT)
}

/// Stops the stack that `up` runs from `dir`: SIGTERM to the `up` process,
/// which shuts everything down cleanly, then waits for it to finish.
pub(crate) async fn down(dir: &Path) -> anyhow::Result<()> {
    let pid_file = dir.join(PID_FILE);
    let Some(pid) = running_pid(&pid_file) else {
        eprintln!("xtask: no stack running from {}", dir.display());
        return Ok(());
    };
    let pid = rustix::process::Pid::from_raw(pid).context("bad pid")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        .with_context(|| format!("signalling xtask up (pid {})", pid.as_raw_nonzero()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while running_pid(&pid_file).is_some() {
        if tokio::time::Instant::now() > deadline {
            bail!(
                "xtask up (pid {}) did not stop within 90 s",
                pid.as_raw_nonzero()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("xtask: stack stopped");
    Ok(())
}

/// `down`, then deletes the stack's folder.
pub(crate) async fn reset(dir: &Path) -> anyhow::Result<()> {
    down(dir).await?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("deleting {}", dir.display()))?;
        eprintln!("xtask: deleted {}", dir.display());
    }
    Ok(())
}
