//! testkit's PostgreSQL cluster against the real server: streaming,
//! authentication, promote, kill, freeze, restart as standby.

use std::time::{Duration, Instant};

use testkit::{NodeId, PgCluster};
use tokio_postgres::NoTls;

async fn tcp(
    cluster: &PgCluster,
    node: NodeId,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = cluster
        .node(node)
        .config(testkit::SUPERUSER, password, "postgres")
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn in_recovery(cluster: &PgCluster, node: NodeId) -> bool {
    let client = cluster.admin(node).await.expect("admin connection");
    client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("query")
        .get(0)
}

/// Waits (bounded) until `node` sees `count` rows in `t`.
async fn wait_rows(cluster: &PgCluster, node: NodeId, count: i64) {
    let client = cluster.admin(node).await.expect("admin connection");
    let mut last = String::new();
    for _ in 0..400 {
        match client.query_one("SELECT count(*) FROM t", &[]).await {
            Ok(row) if row.get::<_, i64>(0) == count => return,
            Ok(row) => last = format!("{} rows", row.get::<_, i64>(0)),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let log = testkit::log_tail(cluster.node(node).log(), 20);
    panic!("{node} never saw {count} rows (last: {last}); its log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_streams_with_real_authentication() {
    let started = Instant::now();
    let cluster = PgCluster::start(1).await.expect("cluster starts");
    // The budget is reported, not asserted: figures come from measurements.
    println!(
        "budget: primary + 1 streaming replica up in {:?} (target 5 s)",
        started.elapsed()
    );

    let primary = cluster.primary();
    let replica = cluster.replicas()[0];
    assert!(!in_recovery(&cluster, primary).await);
    assert!(in_recovery(&cluster, replica).await);

    let admin = cluster.admin(primary).await.unwrap();
    admin
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();
    wait_rows(&cluster, replica, 2).await;

    // TCP needs the real password (scram-sha-256), on both nodes.
    let password = cluster.superuser_password().to_owned();
    for node in [primary, replica] {
        let client = tcp(&cluster, node, &password)
            .await
            .expect("right password logs in");
        let port: i32 = client
            .query_one("SELECT inet_server_port()", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(port as u16, cluster.node(node).port());
        let err = tcp(&cluster, node, "wrong")
            .await
            .expect_err("wrong password is refused");
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
            "{err}"
        );
    }
    // The replica refuses writes like any hot standby.
    let on_replica = cluster.admin(replica).await.unwrap();
    let err = on_replica
        .batch_execute("INSERT INTO t VALUES (3)")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_promote_and_old_primary_rejoins_as_standby() {
    let cluster = PgCluster::start(1).await.expect("cluster starts");
    let old = cluster.primary();
    let new = cluster.replicas()[0];
    let admin = cluster.admin(old).await.unwrap();
    admin
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    wait_rows(&cluster, new, 1).await;

    cluster.kill(old).await.unwrap();
    assert!(!cluster.is_running(old).await);
    assert!(
        cluster.admin(old).await.is_err(),
        "a killed node accepts nothing"
    );

    cluster.promote(new).await.unwrap();
    assert_eq!(cluster.primary(), new);
    assert!(!in_recovery(&cluster, new).await);
    let writer = cluster.admin(new).await.unwrap();
    writer
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();

    // The old primary comes back as a standby of the new one (pg_rewind)
    // and receives what was written after the failover.
    cluster.restart_as_standby(old).await.unwrap();
    assert!(in_recovery(&cluster, old).await);
    writer
        .batch_execute("INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    wait_rows(&cluster, old, 3).await;
    assert_eq!(cluster.replicas(), vec![old]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_black_holes_a_node_until_thawed() {
    let cluster = PgCluster::start(1).await.expect("cluster starts");
    let replica = cluster.replicas()[0];
    let password = cluster.superuser_password().to_owned();
    let live = tcp(&cluster, replica, &password).await.unwrap();

    cluster.freeze(replica).await.unwrap();
    // An open connection hangs: its backend is stopped too.
    let hung = tokio::time::timeout(Duration::from_secs(1), live.query_one("SELECT 1", &[])).await;
    assert!(hung.is_err(), "a frozen node must not answer");
    // A new connection cannot complete its handshake either (the kernel
    // accepts the TCP connection; nobody answers the startup message).
    let config = cluster
        .node(replica)
        .config(testkit::SUPERUSER, &password, "postgres");
    let connecting = tokio::time::timeout(Duration::from_secs(1), config.connect(NoTls)).await;
    assert!(
        connecting.is_err(),
        "a handshake with a frozen node must hang"
    );

    cluster.thaw(replica).await.unwrap();
    let answer: i32 =
        tokio::time::timeout(Duration::from_secs(10), live.query_one("SELECT 1", &[]))
            .await
            .expect("answers again after thaw")
            .unwrap()
            .get(0);
    assert_eq!(answer, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_then_start_keeps_data_and_kept_folders_are_reused() {
    let dir = tempfile::tempdir().unwrap();
    let ports;
    {
        let cluster = PgCluster::builder()
            .replicas(0)
            .dir(dir.path().join("pg"))
            .start()
            .await
            .unwrap();
        ports = cluster.node(NodeId(0)).port();
        let admin = cluster.admin(NodeId(0)).await.unwrap();
        admin
            .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (7)")
            .await
            .unwrap();
        cluster.stop(NodeId(0)).await.unwrap();
        assert!(!cluster.is_running(NodeId(0)).await);
        cluster.start_node(NodeId(0)).await.unwrap();
        wait_rows(&cluster, NodeId(0), 1).await;
        cluster.shutdown().await.unwrap();
    }
    // A second cluster on the same folder finds the data, port and passwords.
    let again = PgCluster::builder()
        .dir(dir.path().join("pg"))
        .start()
        .await
        .unwrap();
    assert_eq!(again.node(NodeId(0)).port(), ports);
    wait_rows(&again, NodeId(0), 1).await;
    let password = again.superuser_password().to_owned();
    tcp(&again, NodeId(0), &password)
        .await
        .expect("kept password still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_cluster_leaves_no_process_behind() {
    let cluster = PgCluster::start(1).await.expect("cluster starts");
    let dir = cluster.dir().to_owned();
    let pids: Vec<i32> = cluster
        .nodes()
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(n.data_dir().join("postmaster.pid")).unwrap();
            text.lines().next().unwrap().trim().parse().unwrap()
        })
        .collect();
    cluster.freeze(NodeId(1)).await.unwrap(); // even a frozen node goes
    drop(cluster);
    for pid in pids {
        let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
        assert!(!proc_dir.exists(), "postmaster {pid} outlived its cluster");
    }
    assert!(!dir.exists(), "the temporary folder is removed");
}

/// Waits (bounded) until every standby of the primary has `sync_state`.
async fn wait_sync_state(cluster: &PgCluster, state: &str) {
    let primary = cluster.admin(cluster.primary()).await.unwrap();
    let mut last = Vec::new();
    for _ in 0..400 {
        let rows = primary
            .query("SELECT sync_state FROM pg_stat_replication", &[])
            .await
            .unwrap();
        last = rows.iter().map(|r| r.get::<_, String>(0)).collect();
        if last.len() == cluster.replicas().len() && last.iter().all(|s| s == state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("standbys never all became {state}: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_standbys_can_be_switched_on_primary_and_standby() {
    let cluster = PgCluster::start(2).await.expect("cluster starts");
    let primary = cluster.primary();
    let standby = cluster.replicas()[0];
    cluster.set_synchronous_standbys(primary, 1).await.unwrap();
    wait_sync_state(&cluster, "quorum").await;
    let admin = cluster.admin(primary).await.unwrap();
    admin
        .batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .await
        .expect("a quorum of one standby acknowledges the commit");
    let show = |client: tokio_postgres::Client| async move {
        client
            .query_one("SHOW synchronous_standby_names", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(show(admin).await, "ANY 1 (pg1, pg2)");

    // On a standby too, ready for its promotion.
    cluster.set_synchronous_standbys(standby, 1).await.unwrap();
    let on_standby = cluster.admin(standby).await.unwrap();
    assert_eq!(show(on_standby).await, "ANY 1 (pg0, pg2)");

    cluster.set_synchronous_standbys(primary, 0).await.unwrap();
    wait_sync_state(&cluster, "async").await;
}
