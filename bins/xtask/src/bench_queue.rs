//! `cargo xtask bench queue`: the gateway's write queue during an outage of
//! the store service, on each backend side by side in one run: the
//! embedded redb file, NATS JetStream with one replica (a 1-node cluster)
//! and with three (a 3-node cluster).
//!
//! One throw-away stack (PostgreSQL primary + replica, OpenBao) and one
//! release store service serve every backend. For each backend in turn:
//!
//! 1. a release gateway on that backend (rate limit set high, the stack's
//!    usual stores route: 2 s timeout, `store-service` breaker preset);
//! 2. the store service is frozen (SIGSTOP): connections are accepted by
//!    the kernel, never answered;
//! 3. GETs through the gateway time out until its breaker opens, so that
//!    the writes measured are queued at once, not after a 2 s timeout;
//! 4. `--writes` PUTs of distinct seeded stores (`If-Match: "1"`, an
//!    `Idempotency-Key` each), on `--connections` keep-alive connections,
//!    one client (token subject) per connection: the 202 latency p50/p99
//!    and the writes accepted per second;
//! 5. the store service is thawed (SIGCONT) and the database polled until
//!    every accepted write is applied: `replay_wait_s` is the time to the
//!    first applied write (the gateway replays once its breaker lets calls
//!    through again: up to the preset's 30 s open wait), `replay_per_s`
//!    the accepted writes over the time from the first to the last one
//!    applied.
//!
//! It prints one table and one line per backend to compare runs by:
//!
//! ```text
//! queue: backend=jetstream-r3 writes=N accepted=N accepted_per_s=X p50_ms=A p99_ms=B replay_wait_s=W replay_per_s=R
//! ```
//!
//! Nothing is asserted on the figures; they depend on the machine and on
//! whatever else runs on it (the load average before the run is printed).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use testkit::{NatsCluster, OpenBao, PgCluster};
use tokio::task::JoinSet;

use crate::bench_api::{Service, parse_number, seed, seeded_id, temporary_stack};
use crate::bench_gateway::spawn_logged;
use crate::load::{self, Response, Workload};
use crate::stack::{self, DATABASE, GatewayLimits, GatewayQueue};
use crate::tools;

const USAGE: &str =
    "usage: cargo xtask bench queue [--writes 2000] [--connections 16] [--no-build]";

/// The longest the replay of one backend is waited for.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(300);

/// What `bench queue` was asked for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueueOptions {
    /// Writes sent through the gateway per backend.
    writes: u64,
    /// Keep-alive connections (one client each) sending them.
    connections: usize,
    /// Use the release binaries already built.
    no_build: bool,
}

impl QueueOptions {
    /// Parses `bench queue`'s arguments.
    pub(crate) fn parse(args: &[String]) -> anyhow::Result<QueueOptions> {
        let mut options = QueueOptions {
            writes: 2000,
            connections: 16,
            no_build: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if arg == "--no-build" {
                options.no_build = true;
                continue;
            }
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--writes" => options.writes = parse_number(value()?)?,
                "--connections" => options.connections = parse_number(value()?)?,
                other => bail!("unexpected argument `{other}`\n\n{USAGE}"),
            }
        }
        if options.writes == 0 || options.connections == 0 {
            bail!("--writes and --connections must be at least 1");
        }
        Ok(options)
    }
}

/// One backend of the comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    /// The embedded redb file.
    Redb,
    /// NATS JetStream on a cluster of this many nodes, one replica each.
    JetStream(usize),
}

impl Backend {
    /// Its name in the report.
    fn name(self) -> String {
        match self {
            Backend::Redb => "redb".into(),
            Backend::JetStream(n) => format!("jetstream-r{n}"),
        }
    }
}

/// What one backend measured.
#[derive(Debug, Clone, Default)]
struct Measured {
    /// The backend's name.
    backend: String,
    /// Writes sent.
    writes: u64,
    /// Writes answered 202.
    accepted: u64,
    /// Writes answered otherwise, or lost in transport.
    refused: u64,
    /// The first refusal, for the report.
    first_refusal: Option<String>,
    /// Accepted writes per second of the sending phase.
    accepted_per_s: f64,
    /// The 202 latency's median.
    p50: Duration,
    /// The 202 latency's 99th percentile.
    p99: Duration,
    /// From the thaw to the first applied write.
    replay_wait: Option<Duration>,
    /// Accepted writes per second, first to last applied.
    replay_per_s: Option<f64>,
    /// Writes applied when the replay was last looked at.
    applied: u64,
}

/// `cargo xtask bench queue`.
pub(crate) async fn run(options: QueueOptions) -> anyhow::Result<()> {
    let tools = tools::ensure()?;
    let (store_bin, gateway_bin) = crate::bench_gateway::release_binaries(options.no_build)?;
    let (pg, bao) = temporary_stack(&tools).await?;
    let outcome = measure_all(&options, &tools, (&store_bin, &gateway_bin), &pg, &bao).await;
    let _ = bao.stop().await;
    let _ = pg.shutdown().await;
    outcome
}

/// Thaws (SIGCONT) the process it names when dropped, so that an error
/// never leaves the store service frozen (a frozen process cannot be
/// stopped with SIGTERM).
struct Frozen(rustix::process::Pid);

impl Frozen {
    /// Freezes the process `pid` (SIGSTOP).
    fn freeze(pid: u32) -> anyhow::Result<Frozen> {
        let pid = rustix::process::Pid::from_raw(pid as i32).context("bad pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::STOP)
            .context("freezing the store service")?;
        Ok(Frozen(pid))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(self.0, rustix::process::Signal::CONT);
    }
}

async fn measure_all(
    options: &QueueOptions,
    tools: &tools::Tools,
    (store_bin, gateway_bin): (&Path, &Path),
    pg: &PgCluster,
    bao: &OpenBao,
) -> anyhow::Result<()> {
    let dir = pg.dir().join("bench-queue");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    pg.create_database(DATABASE).await?;
    stack::migrate_with_service(store_bin, pg)?;
    let approle = stack::configure_bao(pg, bao)
        .await
        .context("configuring OpenBao")?;
    let backends = [Backend::Redb, Backend::JetStream(1), Backend::JetStream(3)];
    // Distinct stores for every backend: each write is a store's version 2.
    seed(pg, 1, options.writes * backends.len() as u64).await?;
    let queue_key = stack::queue_key(&dir)?;

    let store_port = testkit::free_port()?;
    let store_addr: SocketAddr = ([127, 0, 0, 1], store_port).into();
    let mut cmd = stack::service_command(store_bin, store_port, pg, bao, &approle);
    cmd.env("RUST_LOG", "warn").envs(tools.env());
    let mut store = spawn_logged(cmd, &dir, "store-service")?;
    stack::wait_ready(store_addr, &mut store.child).await?;

    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "xtask: load average before the run: {} ({cores} cores)",
        loadavg.trim()
    );

    let mut results = Vec::new();
    for (i, backend) in backends.into_iter().enumerate() {
        let first_row = 1 + i as u64 * options.writes;
        let env = BackendEnv {
            dir: &dir,
            tools,
            gateway_bin,
            bao,
            pg,
            store: &store,
            store_addr,
            queue_key: &queue_key,
        };
        let measured = measure(options, backend, first_row, &env)
            .await
            .with_context(|| format!("measuring {}", backend.name()))?;
        eprintln!("{}", summary_line(&measured));
        results.push(measured);
    }
    print_table(&results);
    for measured in &results {
        println!("{}", summary_line(measured));
    }
    Ok(())
}

/// What every backend's run shares.
struct BackendEnv<'a> {
    /// The bench's folder.
    dir: &'a Path,
    /// The servers' binaries.
    tools: &'a tools::Tools,
    /// The release gateway.
    gateway_bin: &'a Path,
    /// OpenBao (the token issuer).
    bao: &'a OpenBao,
    /// PostgreSQL (to see the writes applied).
    pg: &'a PgCluster,
    /// The store service.
    store: &'a Service,
    /// Its address.
    store_addr: SocketAddr,
    /// The queue key of every gateway.
    queue_key: &'a str,
}

/// One backend: its gateway, the outage, the writes, the replay.
async fn measure(
    options: &QueueOptions,
    backend: Backend,
    first_row: u64,
    env: &BackendEnv<'_>,
) -> anyhow::Result<Measured> {
    let name = backend.name();
    eprintln!("xtask: {name}: starting");
    let dir = env.dir.join(&name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let nats = match backend {
        Backend::Redb => None,
        Backend::JetStream(nodes) => Some(
            NatsCluster::builder()
                .nodes(nodes)
                .dir(dir.join("nats"))
                .binary(&env.tools.nats_server)
                .start()
                .await
                .context("starting NATS")?,
        ),
    };
    let queue = match &nats {
        None => GatewayQueue::Redb(dir.join("gateway-queue.redb")),
        Some(nats) => GatewayQueue::JetStream {
            urls: nats.urls(),
            replicas: nats.len(),
        },
    };
    let (config, issuer) = stack::configure_gateway(
        &dir,
        env.bao,
        &GatewayLimits {
            per_second: 10_000_000,
            burst: 10_000_000,
        },
        &format!("http://{}", env.store_addr),
        &queue,
    )
    .await?;
    let gateway_port = testkit::free_port()?;
    let gateway_addr: SocketAddr = ([127, 0, 0, 1], gateway_port).into();
    let mut cmd = Command::new(env.gateway_bin);
    cmd.env("GATEWAY_CONFIG", &config)
        .env("PORT", gateway_port.to_string())
        .env("HOST", "127.0.0.1")
        .env("STORE_SERVICE_URL", format!("http://{}", env.store_addr))
        .env("GATEWAY_QUEUE_KEY", env.queue_key)
        .env("RUST_LOG", "warn");
    let mut gateway = spawn_logged(cmd, &dir, "gateway")?;
    stack::wait_ready(gateway_addr, &mut gateway.child).await?;

    // One client per connection: the per-subject cap on queued writes
    // (1,000) is a client's, not the bench's.
    let client = testkit::OidcClient::new(env.bao.addr(), env.bao.root_token())?;
    let mut authorizations = Vec::new();
    for i in 0..options.connections {
        let token = client
            .subject_token(
                &issuer,
                &format!("queue-bench-{i}"),
                "stores:read stores:write",
            )
            .await
            .context("a token for the gateway")?;
        authorizations.push(Arc::<str>::from(format!(
            "Authorization: Bearer {token}\r\n"
        )));
    }

    let frozen = Frozen::freeze(env.store.child.id())?;
    open_breaker(gateway_addr, &authorizations[0], first_row).await?;

    // The writes: rows first_row.., dealt to the connections in turn.
    let mut workloads: Vec<QueuedPuts> = authorizations
        .iter()
        .map(|authorization| QueuedPuts {
            authorization: Arc::clone(authorization),
            label: name.clone(),
            rows: Vec::new(),
        })
        .collect();
    for (k, row) in (first_row..first_row + options.writes).rev().enumerate() {
        workloads[k % options.connections].rows.push(row);
    }
    eprintln!(
        "xtask: {name}: {} writes on {} connections, store service frozen",
        options.writes, options.connections
    );
    let report = load::run(gateway_addr, workloads, Duration::from_secs(600)).await?;
    let mut measured = Measured {
        backend: name.clone(),
        writes: options.writes,
        accepted: report.ok,
        refused: report.errors,
        first_refusal: report.first_error.clone(),
        accepted_per_s: report.rate(),
        p50: report.quantile(0.50),
        p99: report.quantile(0.99),
        ..Measured::default()
    };

    // The replay, from the thaw.
    drop(frozen);
    let thawed = Instant::now();
    eprintln!("xtask: {name}: store service thawed, waiting for the replay");
    let db = env.pg.admin_db(env.pg.primary(), DATABASE).await?;
    let mut first_applied = None;
    loop {
        let applied: i64 = db
            .query_one(
                "SELECT count(*) FROM stores WHERE config->>'queued' = $1",
                &[&name],
            )
            .await
            .context("counting the applied writes")?
            .get(0);
        let applied = u64::try_from(applied).unwrap_or(0);
        measured.applied = applied;
        if applied > 0 && first_applied.is_none() {
            first_applied = Some(Instant::now());
        }
        if applied >= measured.accepted {
            let done = Instant::now();
            if let Some(first) = first_applied {
                measured.replay_wait = Some(first - thawed);
                let secs = (done - first).as_secs_f64().max(0.001);
                measured.replay_per_s = Some(applied as f64 / secs);
            }
            break;
        }
        if thawed.elapsed() > REPLAY_TIMEOUT {
            eprintln!(
                "xtask: {name}: {applied} of {} accepted writes applied after {} s; giving up",
                measured.accepted,
                REPLAY_TIMEOUT.as_secs()
            );
            measured.replay_wait = first_applied.map(|first| first - thawed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(gateway);
    if let Some(nats) = nats {
        for i in 0..nats.len() {
            let _ = nats.stop(i).await;
        }
    }
    Ok(measured)
}

/// Sends GETs through the gateway, 12 at a time, until its breaker is
/// open (a GET answered within 500 ms while the store service is frozen),
/// at most 10 rounds.
async fn open_breaker(
    gateway: SocketAddr,
    authorization: &Arc<str>,
    row: u64,
) -> anyhow::Result<()> {
    let get = format!(
        "GET /api/stores/{} HTTP/1.1\r\nHost: 127.0.0.1\r\n{authorization}\r\n",
        seeded_id(row)
    )
    .into_bytes();
    for _ in 0..10 {
        let started = Instant::now();
        let _ = load::once(gateway, &get).await;
        if started.elapsed() < Duration::from_millis(500) {
            return Ok(());
        }
        let mut gets = JoinSet::new();
        for _ in 0..12 {
            let get = get.clone();
            gets.spawn(async move { load::once(gateway, &get).await });
        }
        while gets.join_next().await.is_some() {}
    }
    bail!("the gateway's breaker did not open while the store service was frozen")
}

/// One connection's writes: `PUT` of each of its rows, based on version 1.
struct QueuedPuts {
    /// Its client's `Authorization` header line.
    authorization: Arc<str>,
    /// The backend's name, written into each store's config.
    label: String,
    /// The rows still to write, last first.
    rows: Vec<u64>,
}

impl Workload for QueuedPuts {
    fn request(&mut self) -> Vec<u8> {
        let row = self.rows.pop().unwrap_or(1);
        let headers = format!(
            "{}If-Match: \"1\"\r\nIdempotency-Key: queue-bench-{}-{row}\r\n",
            self.authorization, self.label
        );
        let body = format!("{{\"config\": {{\"queued\": \"{}\"}}}}", self.label);
        load::with_json(
            "PUT",
            &format!("/api/stores/{}", seeded_id(row)),
            &headers,
            &body,
        )
    }

    fn response(&mut self, response: &Response) -> bool {
        response.status == 202
    }

    fn done(&self) -> bool {
        self.rows.is_empty()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_table(results: &[Measured]) {
    println!();
    println!(
        "{:<14} {:>7} {:>9} {:>8} {:>11} {:>8} {:>8} {:>14} {:>10}",
        "backend",
        "writes",
        "accepted",
        "refused",
        "accepted/s",
        "p50 ms",
        "p99 ms",
        "replay wait s",
        "replay/s"
    );
    for m in results {
        println!(
            "{:<14} {:>7} {:>9} {:>8} {:>11.0} {:>8.1} {:>8.1} {:>14} {:>10}",
            m.backend,
            m.writes,
            m.accepted,
            m.refused,
            m.accepted_per_s,
            ms(m.p50),
            ms(m.p99),
            m.replay_wait
                .map_or("-".into(), |w| format!("{:.1}", w.as_secs_f64())),
            m.replay_per_s.map_or("-".into(), |r| format!("{r:.0}")),
        );
    }
    for m in results {
        if let Some(refusal) = &m.first_refusal {
            println!("{}: first refusal: {refusal}", m.backend);
        }
        if m.replay_per_s.is_none() {
            println!(
                "{}: replay incomplete: {} of {} accepted writes applied",
                m.backend, m.applied, m.accepted
            );
        }
    }
    println!();
}

fn summary_line(m: &Measured) -> String {
    format!(
        "queue: backend={} writes={} accepted={} accepted_per_s={:.0} p50_ms={:.1} p99_ms={:.1} replay_wait_s={} replay_per_s={}",
        m.backend,
        m.writes,
        m.accepted,
        m.accepted_per_s,
        ms(m.p50),
        ms(m.p99),
        m.replay_wait
            .map_or("-".into(), |w| format!("{:.1}", w.as_secs_f64())),
        m.replay_per_s.map_or("-".into(), |r| format!("{r:.0}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options() {
        let default = QueueOptions::parse(&[]).unwrap();
        assert_eq!((default.writes, default.connections), (2000, 16));
        let set = QueueOptions::parse(&args(&[
            "--writes",
            "50",
            "--connections",
            "4",
            "--no-build",
        ]))
        .unwrap();
        assert_eq!((set.writes, set.connections, set.no_build), (50, 4, true));
        assert!(QueueOptions::parse(&args(&["--writes", "0"])).is_err());
        assert!(QueueOptions::parse(&args(&["--what"])).is_err());
    }

    #[test]
    fn each_write_is_a_put_with_its_own_idempotency_key() {
        let mut puts = QueuedPuts {
            authorization: "Authorization: Bearer t\r\n".into(),
            label: "redb".into(),
            rows: vec![2, 1],
        };
        let first = String::from_utf8(puts.request()).unwrap();
        assert!(first.starts_with(&format!("PUT /api/stores/{} ", seeded_id(1))));
        assert!(first.contains("Idempotency-Key: queue-bench-redb-1\r\n"));
        assert!(first.contains("If-Match: \"1\"\r\n"));
        assert!(first.ends_with("{\"config\": {\"queued\": \"redb\"}}"));
        assert!(!puts.done());
        let _ = puts.request();
        assert!(puts.done());
    }

    #[test]
    fn the_summary_line_names_the_backend() {
        let line = summary_line(&Measured {
            backend: Backend::JetStream(3).name(),
            writes: 10,
            accepted: 10,
            accepted_per_s: 100.0,
            p50: Duration::from_millis(5),
            p99: Duration::from_millis(20),
            replay_wait: Some(Duration::from_secs(2)),
            replay_per_s: Some(50.0),
            ..Measured::default()
        });
        assert_eq!(
            line,
            "queue: backend=jetstream-r3 writes=10 accepted=10 accepted_per_s=100 p50_ms=5.0 p99_ms=20.0 replay_wait_s=2.0 replay_per_s=50"
        );
    }
}
