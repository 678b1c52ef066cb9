//! Failover benchmark: an open-loop writer (one insert every 10 ms, each with
//! its own deadline) against a [`db_failover::Cluster`] on a real primary
//! with two synchronous-quorum replicas. Each round kills the primary
//! (SIGKILL), promotes the most advanced replica and measures
//!
//! - promotion done → first acknowledged write on the new primary,
//! - fault → first acknowledged write on the new primary,
//!
//! then re-points the other nodes at the new primary (pg_rewind) for the
//! next round. At the end every acknowledged id is read back from the final
//! primary: the number lost must be 0. Optionally it also freezes the
//! primary (SIGSTOP) and measures fault → `NodeDown`.
//!
//! Throughout, every `NodeDown` is checked against what the benchmark did:
//! one for a node that was not killed, restarted or frozen since the
//! cluster last saw it answer (a loaded but healthy node declared down) is
//! a false `NodeDown`, printed when it happens and counted in the summary.
//!
//! `cargo xtask bench failover` (which passes `--bench`) runs the full
//! version: `--rounds N` (default 20), `--freeze-rounds N` (default 10).
//! Without `--bench` (as `cargo test --all-targets` runs it) one quick round
//! runs, still real and still checking that no acknowledged write is lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use db_failover::{Cluster, Config, Event, NodeId, OpOptions};
use testkit::PgCluster;
use tokio::time::{Instant, MissedTickBehavior};

/// Time between two inserts of the open-loop writer.
const TICK: Duration = Duration::from_millis(10);
/// Each insert's own deadline.
const WRITE_DEADLINE: Duration = Duration::from_secs(3);
/// Cap on every wait of the benchmark itself.
const BOUND: Duration = Duration::from_secs(30);

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One acknowledged insert.
#[derive(Clone, Copy)]
struct Ack {
    id: i64,
    at: Instant,
    node: NodeId,
}

/// Which nodes the benchmark has disturbed (killed, restarted, frozen)
/// since the cluster last saw them healthy, and the `NodeDown`s of the
/// others.
struct Downs {
    disturbed: Vec<AtomicBool>,
    /// `(node, error)` of every false `NodeDown`.
    false_downs: Mutex<Vec<(NodeId, String)>>,
    /// Events the watcher missed (broadcast lag): none expected.
    missed: AtomicUsize,
    /// The node the last failover round leaves dead.
    dead: Mutex<Option<testkit::NodeId>>,
}

impl Downs {
    fn new(nodes: usize) -> Downs {
        Downs {
            disturbed: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            false_downs: Mutex::new(Vec::new()),
            missed: AtomicUsize::new(0),
            dead: Mutex::new(None),
        }
    }

    /// Call before killing, restarting or freezing `node`.
    fn disturb(&self, node: testkit::NodeId) {
        self.disturbed[node.0].store(true, Ordering::SeqCst);
    }

    /// Waits until the cluster sees every node the benchmark has not left
    /// dead up and answering, then counts them as undisturbed again.
    async fn settle(&self, cluster: &Cluster) -> Result<()> {
        let dead = *self.dead.lock().unwrap_or_else(|e| e.into_inner());
        let alive = |i: usize| dead.is_none_or(|d| d.0 != i);
        wait_for("every live node up and answering", || {
            let health = cluster.health();
            health
                .nodes
                .iter()
                .enumerate()
                .all(|(i, n)| !alive(i) || (n.up && n.reachable && n.consecutive_failures == 0))
        })
        .await?;
        for (i, flag) in self.disturbed.iter().enumerate() {
            if alive(i) {
                flag.store(false, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    fn false_count(&self) -> usize {
        self.false_downs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// Checks every `NodeDown` against [`Downs::disturbed`].
async fn watch_downs(downs: Arc<Downs>, mut events: tokio::sync::broadcast::Receiver<Event>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(Event::NodeDown { node, error }) => {
                if !downs.disturbed[node.0].load(Ordering::SeqCst) {
                    println!(
                        "FALSE NodeDown: {node} was neither killed, restarted nor frozen: {error}"
                    );
                    downs
                        .false_downs
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((node, error));
                }
            }
            Ok(_) => {}
            Err(RecvError::Lagged(n)) => {
                downs
                    .missed
                    .fetch_add(usize::try_from(n).unwrap_or(usize::MAX), Ordering::SeqCst);
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// What the writer saw.
#[derive(Default)]
struct Log {
    acks: Mutex<Vec<Ack>>,
    by_standby: AtomicUsize,
    outcome_unknown: AtomicUsize,
    /// Other errors by variant (deadline passed, no primary...).
    other_errors: Mutex<BTreeMap<String, usize>>,
}

impl Log {
    fn first_ack_on(&self, node: NodeId, after: Instant) -> Option<Instant> {
        let acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        acks.iter()
            .filter(|a| a.node == node && a.at >= after)
            .map(|a| a.at)
            .min()
    }

    fn count_on(&self, node: NodeId, after: Instant) -> usize {
        let acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        acks.iter()
            .filter(|a| a.node == node && a.at >= after)
            .count()
    }
}

struct Args {
    full: bool,
    rounds: usize,
    freeze_rounds: usize,
}

fn args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let value = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    Args {
        full,
        rounds: if full { value("--rounds", 20) } else { 1 },
        freeze_rounds: if full {
            value("--freeze-rounds", 10)
        } else {
            0
        },
    }
}

fn main() -> Result<()> {
    // `RUST_LOG=db_failover=debug` shows what the cluster does each round.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let args = args();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let pg = Arc::new(PgCluster::start(2).await?);
    pg.admin(pg.primary())
        .await?
        .batch_execute("CREATE TABLE items (id bigint PRIMARY KEY)")
        .await?;
    pg.set_synchronous_standbys(pg.primary(), 1).await?;
    let hosts: Vec<String> = pg
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let url = format!(
        "postgres://{}:{}@{}/postgres",
        testkit::SUPERUSER,
        pg.superuser_password(),
        hosts.join(",")
    );
    let cluster = Cluster::connect(Config::from_url(&url)?).await?;
    let mut events = cluster.events();
    let downs = Arc::new(Downs::new(pg.nodes().len()));
    let watcher = tokio::spawn(watch_downs(downs.clone(), cluster.events()));
    downs.settle(&cluster).await?;

    let log = Arc::new(Log::default());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(open_loop_writer(cluster.clone(), log.clone(), stop.clone()));

    let mut after_promotion = Vec::new();
    let mut after_fault = Vec::new();
    for round in 0..args.rounds {
        let last = round + 1 == args.rounds;
        let (promoted_to_ack, fault_to_ack) =
            failover_round(&pg, &cluster, &log, &downs, last).await?;
        println!(
            "round {:>2}: promotion → first write {:>7.1} ms, fault → first write {:>7.1} ms",
            round + 1,
            ms(promoted_to_ack),
            ms(fault_to_ack)
        );
        after_promotion.push(promoted_to_ack);
        after_fault.push(fault_to_ack);
    }

    let mut detection = Vec::new();
    for round in 0..args.freeze_rounds {
        let detected = freeze_round(&pg, &cluster, &log, &downs, &mut events).await?;
        println!(
            "freeze {:>2}: fault → NodeDown {:>7.1} ms",
            round + 1,
            ms(detected)
        );
        detection.push(detected);
    }

    stop.store(true, Ordering::SeqCst);
    writer.await??;
    watcher.abort();
    let lost = lost_writes(&pg, &log).await?;
    let acked = log.acks.lock().unwrap_or_else(|e| e.into_inner()).len();

    println!();
    println!(
        "db-failover failover benchmark ({} mode): {} failover round(s), writer every {:?}, deadline {:?} per write",
        if args.full { "full" } else { "smoke" },
        args.rounds,
        TICK,
        WRITE_DEADLINE
    );
    summary(
        "promotion done → first acknowledged write",
        &mut after_promotion,
    );
    summary("fault → first acknowledged write", &mut after_fault);
    if !detection.is_empty() {
        summary("SIGSTOP → NodeDown (black-holed primary)", &mut detection);
    }
    println!(
        "false NodeDown (a node neither killed, restarted nor frozen): {}, events missed by the check: {}",
        downs.false_count(),
        downs.missed.load(Ordering::SeqCst),
    );
    println!(
        "writes: {acked} acknowledged, {lost} acknowledged but lost, {} acknowledged by a standby, {} outcome unknown, other errors: {:?}",
        log.by_standby.load(Ordering::SeqCst),
        log.outcome_unknown.load(Ordering::SeqCst),
        log.other_errors.lock().unwrap_or_else(|e| e.into_inner()),
    );
    if lost != 0 || log.by_standby.load(Ordering::SeqCst) != 0 {
        return Err(format!("{lost} acknowledged writes lost").into());
    }
    Ok(())
}

/// One insert every `TICK`, each in its own task with its own deadline,
/// whether or not the previous ones finished.
async fn open_loop_writer(cluster: Cluster, log: Arc<Log>, stop: Arc<AtomicBool>) -> Result<()> {
    let next_id = Arc::new(AtomicI64::new(0));
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut tasks = tokio::task::JoinSet::new();
    while !stop.load(Ordering::SeqCst) {
        ticks.tick().await;
        let id = next_id.fetch_add(1, Ordering::SeqCst) + 1;
        let (cluster, log) = (cluster.clone(), log.clone());
        tasks.spawn(async move {
            let result = cluster
                .write_op_with(OpOptions::new().deadline(WRITE_DEADLINE), move |conn| {
                    Box::pin(async move {
                        let row = conn
                            .query_one(
                                "INSERT INTO items (id) VALUES ($1) RETURNING pg_is_in_recovery()",
                                &[&id],
                            )
                            .await?;
                        Ok(row.get::<_, bool>(0))
                    })
                })
                .await;
            let at = Instant::now();
            match result {
                Ok(written) => {
                    if written.value {
                        log.by_standby.fetch_add(1, Ordering::SeqCst);
                    }
                    log.acks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Ack {
                            id,
                            at,
                            node: written.node,
                        });
                }
                Err(e) if e.is_outcome_unknown() => {
                    log.outcome_unknown.fetch_add(1, Ordering::SeqCst);
                }
                Err(e) => {
                    let debug = format!("{e:?}");
                    let kind = debug
                        .split([' ', '{', '('])
                        .next()
                        .unwrap_or("?")
                        .to_owned();
                    *log.other_errors
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(kind)
                        .or_default() += 1;
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Kills the primary, promotes the most advanced replica, measures, and
/// (unless `last`) re-points the other nodes at the new primary.
async fn failover_round(
    pg: &PgCluster,
    cluster: &Cluster,
    log: &Log,
    downs: &Downs,
    last: bool,
) -> Result<(Duration, Duration)> {
    let old = pg.primary();
    let warm = Instant::now();
    wait_for("20 writes before the fault", || {
        log.count_on(NodeId(old.0), warm) >= 20
    })
    .await?;

    let fault_at = Instant::now();
    downs.disturb(old);
    pg.kill(old).await?;
    let new = most_advanced_replica(pg).await?;
    let watcher = pg.admin(new).await?;
    // The other nodes do not stream from it yet: commit asynchronously
    // until they do.
    pg.set_synchronous_standbys(new, 0).await?;
    let promoting = pg.promote(new);
    let promoted_at = async {
        loop {
            let row = watcher.query_one("SELECT pg_is_in_recovery()", &[]).await?;
            if !row.get::<_, bool>(0) {
                return Ok::<_, tokio_postgres::Error>(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let (promoted, promoted_at) = tokio::join!(promoting, promoted_at);
    promoted?;
    let promoted_at = promoted_at?;
    let new_node = NodeId(new.0);
    wait_for("a write on the new primary", || {
        log.first_ack_on(new_node, fault_at).is_some()
    })
    .await?;
    let first = log.first_ack_on(new_node, fault_at).unwrap_or(promoted_at);
    let result = (
        first.saturating_duration_since(promoted_at),
        first.saturating_duration_since(fault_at),
    );
    if last {
        // The old primary stays dead for the freeze rounds.
        *downs.dead.lock().unwrap_or_else(|e| e.into_inner()) = Some(old);
        wait_for("more writes on the new primary", || {
            log.count_on(new_node, first) >= 20
        })
        .await?;
        return Ok(result);
    }
    // Re-point the others (pg_rewind where needed), then commit
    // synchronously again once both stream.
    for node in pg.replicas() {
        downs.disturb(node);
        pg.restart_as_standby(node).await?;
    }
    pg.set_synchronous_standbys(new, 1).await?;
    wait_quorum(pg).await?;
    downs.settle(cluster).await?;
    Ok(result)
}

/// Freezes the primary and measures until the cluster reports it down;
/// thaws it and waits until it is primary again.
async fn freeze_round(
    pg: &PgCluster,
    cluster: &Cluster,
    log: &Log,
    downs: &Downs,
    events: &mut tokio::sync::broadcast::Receiver<Event>,
) -> Result<Duration> {
    let primary = pg.primary();
    let node = NodeId(primary.0);
    let warm = Instant::now();
    wait_for("writes before the freeze", || {
        log.count_on(node, warm) >= 20
    })
    .await?;
    while events.try_recv().is_ok() {}
    let fault_at = Instant::now();
    downs.disturb(primary);
    pg.freeze(primary).await?;
    let down = tokio::time::timeout(BOUND, async {
        loop {
            match events.recv().await {
                Ok(Event::NodeDown { node: n, .. }) if n == node => return Ok(Instant::now()),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await??;
    pg.thaw(primary).await?;
    wait_for("the thawed primary to be elected again", || {
        cluster.primary_node() == Some(node)
    })
    .await?;
    downs.settle(cluster).await?;
    Ok(down.saturating_duration_since(fault_at))
}

/// The replica that received the most WAL.
async fn most_advanced_replica(pg: &PgCluster) -> Result<testkit::NodeId> {
    let mut best: Option<(testkit::NodeId, u64)> = None;
    for id in pg.replicas() {
        let admin = pg.admin(id).await?;
        let row = admin
            .query_one("SELECT pg_last_wal_receive_lsn()", &[])
            .await?;
        let lsn: Option<tokio_postgres::types::PgLsn> = row.get(0);
        let lsn = lsn.map(u64::from).unwrap_or(0);
        if best.is_none_or(|(_, b)| lsn > b) {
            best = Some((id, lsn));
        }
    }
    best.map(|(id, _)| id).ok_or_else(|| "no replica".into())
}

/// Waits until both standbys are in the synchronous quorum and have
/// flushed everything the primary had written when the quorum was back.
async fn wait_quorum(pg: &PgCluster) -> Result<()> {
    let primary = pg.admin(pg.primary()).await?;
    let started = Instant::now();
    let target: tokio_postgres::types::PgLsn = primary
        .query_one("SELECT pg_current_wal_lsn()", &[])
        .await?
        .get(0);
    loop {
        let rows = primary
            .query(
                "SELECT sync_state, flush_lsn >= $1 FROM pg_stat_replication",
                &[&target],
            )
            .await?;
        let ready = rows.len() == pg.replicas().len()
            && rows.iter().all(|r| {
                r.get::<_, String>(0) == "quorum" && r.get::<_, Option<bool>>(1) == Some(true)
            });
        if ready {
            return Ok(());
        }
        if started.elapsed() > BOUND {
            return Err("standbys never joined the synchronous quorum".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Acknowledged ids missing on the final primary.
async fn lost_writes(pg: &PgCluster, log: &Log) -> Result<usize> {
    let ids: Vec<i64> = log
        .acks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|a| a.id)
        .collect();
    let found: i64 = pg
        .admin(pg.primary())
        .await?
        .query_one("SELECT count(*) FROM items WHERE id = ANY($1)", &[&ids])
        .await?
        .get(0);
    Ok(ids
        .len()
        .saturating_sub(usize::try_from(found).unwrap_or(0)))
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > BOUND {
            return Err(format!("timed out waiting for {what}").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn summary(what: &str, values: &mut [Duration]) {
    values.sort();
    println!(
        "{what}: n = {}, p50 = {:.1} ms, p95 = {:.1} ms, p99 = {:.1} ms, max = {:.1} ms",
        values.len(),
        ms(percentile(values, 50)),
        ms(percentile(values, 95)),
        ms(percentile(values, 99)),
        ms(values.last().copied().unwrap_or_default()),
    );
}
