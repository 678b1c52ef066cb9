//! Helpers shared by the integration tests: a real cluster from testkit, a
//! cluster handle on it, and bounded waits.

#![allow(dead_code)] // each test binary uses a different subset

use std::sync::Arc;
use std::time::Duration;

use db_failover::{Cluster, Config, Event, NodeId};
use testkit::PgCluster;
use tokio::sync::broadcast;

/// Generous bound for anything the tests wait for: never asserted as a
/// duration, only a cap so a broken build fails instead of hanging.
pub(crate) const BOUND: Duration = Duration::from_secs(20);

/// A primary with `replicas` streaming replicas, and a table `items`.
pub(crate) async fn start(replicas: usize) -> Arc<PgCluster> {
    let pg = PgCluster::start(replicas).await.expect("cluster starts");
    let admin = pg.admin(pg.primary()).await.expect("admin connection");
    admin
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, body text NOT NULL DEFAULT '');
             GRANT ALL ON items TO PUBLIC;",
        )
        .await
        .expect("create table");
    Arc::new(pg)
}

/// A libpq multi-host URL naming every node, as the superuser.
pub(crate) fn url(pg: &PgCluster) -> String {
    let hosts: Vec<String> = pg
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    format!(
        "postgres://{}:{}@{}/postgres",
        testkit::SUPERUSER,
        pg.superuser_password(),
        hosts.join(",")
    )
}

/// The default configuration for `pg`.
pub(crate) fn config(pg: &PgCluster) -> Config {
    Config::from_url(&url(pg)).expect("valid URL")
}

/// A cluster handle with `config`, once a primary is elected
/// (`Cluster::connect` only waits until each node was probed once,
/// successfully or not). Tests that need replicas too wait with
/// [`wait_readable`].
pub(crate) async fn connect(config: Config) -> Cluster {
    let cluster = Cluster::connect(config).await.expect("cluster handle");
    wait_until("a primary elected", || {
        let ready = cluster.health().is_ready();
        async move { ready }
    })
    .await;
    cluster
}

/// Waits until `replicas` replicas are readable (up, answering, within the
/// lag bounds) and there is a primary, up to [`BOUND`].
pub(crate) async fn wait_readable(cluster: &Cluster, replicas: usize) {
    wait_until("a primary and every replica readable", || {
        let health = cluster.health();
        let ready = health.is_ready() && health.readable_replicas().count() == replicas;
        async move { ready }
    })
    .await;
}

/// testkit's node id for our node id (same order: the URL lists nodes in
/// testkit's order).
pub(crate) fn pg_node(node: NodeId) -> testkit::NodeId {
    testkit::NodeId(node.0)
}

/// Our node id for testkit's.
pub(crate) fn node(id: testkit::NodeId) -> NodeId {
    NodeId(id.0)
}

/// Waits for the first event that `want` accepts, up to [`BOUND`].
pub(crate) async fn wait_event(
    events: &mut broadcast::Receiver<Event>,
    what: &str,
    mut want: impl FnMut(&Event) -> bool,
) -> Event {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(event) if want(&event) => return event,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event channel closed"),
            }
        }
    };
    match tokio::time::timeout(BOUND, wait).await {
        Ok(event) => event,
        Err(_) => panic!("no {what} event within {BOUND:?}"),
    }
}

/// Polls `check` every 25 ms until it holds, up to [`BOUND`].
pub(crate) async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < BOUND,
            "{what} did not happen within {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `inet_server_port()` and `pg_is_in_recovery()` of a connection.
pub(crate) async fn whereami(
    client: &tokio_postgres::Client,
) -> Result<(u16, bool), tokio_postgres::Error> {
    let row = client
        .query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[])
        .await?;
    let port: i32 = row.get(0);
    Ok((u16::try_from(port).unwrap_or(0), row.get(1)))
}

/// The port of a testkit node.
pub(crate) fn port(pg: &PgCluster, id: testkit::NodeId) -> u16 {
    pg.node(id).port()
}

/// The replica that received the most WAL: the one to promote so that no
/// commit acknowledged under synchronous replication is lost.
pub(crate) async fn most_advanced_replica(pg: &PgCluster) -> testkit::NodeId {
    let mut best = None;
    for id in pg.replicas() {
        let Ok(admin) = pg.admin(id).await else {
            continue;
        };
        let Ok(row) = admin
            .query_one("SELECT pg_last_wal_receive_lsn()", &[])
            .await
        else {
            continue;
        };
        let lsn: Option<tokio_postgres::types::PgLsn> = row.get(0);
        let lsn = lsn.map(u64::from).unwrap_or(0);
        if best.is_none_or(|(_, b)| lsn > b) {
            best = Some((id, lsn));
        }
    }
    best.map(|(id, _)| id).expect("a replica answers")
}
