//! Failover against a real cluster: a killed primary and a promoted
//! replica, an old primary back as a standby, a frozen primary.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{
    BOUND, config, connect, most_advanced_replica, node, port, start, wait_event, wait_readable,
    wait_until, whereami,
};
use db_failover::{Connection, Error, Event, OpFuture, OpOptions};
use tokio_postgres::error::SqlState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_and_replica_promoted_loses_no_acknowledged_write() {
    let pg = start(2).await;
    let old = pg.primary();
    // Commits wait for one standby: an acknowledged write survives the
    // primary's crash on the most advanced replica.
    pg.set_synchronous_standbys(old, 1).await.unwrap();
    let cluster = connect(config(&pg)).await;
    let mut events = cluster.events();

    let acked: Arc<Mutex<Vec<(i64, u16)>>> = Arc::default();
    let unknown = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (cluster, acked, unknown, stop) = (
            cluster.clone(),
            acked.clone(),
            unknown.clone(),
            stop.clone(),
        );
        async move {
            let mut id = 0i64;
            while !stop.load(Ordering::SeqCst) {
                id += 1;
                let result = cluster
                    .write_op_with(
                        OpOptions::new().deadline(Duration::from_secs(10)),
                        move |conn| {
                            Box::pin(async move {
                                conn.execute("INSERT INTO items (id) VALUES ($1)", &[&id])
                                    .await?;
                                whereami(conn).await
                            })
                        },
                    )
                    .await;
                match result {
                    Ok(written) => {
                        let (port, in_recovery) = written.value;
                        assert!(!in_recovery, "write {id} acknowledged by a standby");
                        acked.lock().unwrap().push((id, port));
                    }
                    Err(e) if e.is_outcome_unknown() => {
                        unknown.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => panic!("write {id} failed: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let acked_count = || acked.lock().unwrap().len();
    wait_until("20 writes before the fault", || {
        let n = acked_count();
        async move { n >= 20 }
    })
    .await;

    pg.kill(old).await.unwrap();
    let promoted = most_advanced_replica(&pg).await;
    // The new primary has no streaming standby yet: commit asynchronously.
    pg.set_synchronous_standbys(promoted, 0).await.unwrap();
    pg.promote(promoted).await.unwrap();
    let new_port = port(&pg, promoted);

    let on_new = || {
        acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p)| *p == new_port)
            .count()
    };
    wait_until("20 writes on the new primary", || {
        let n = on_new();
        async move { n >= 20 }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();

    let elected = wait_event(&mut events, "FailoverCompleted", |e| {
        matches!(e, Event::FailoverCompleted { .. })
    })
    .await;
    let Event::FailoverCompleted { from, to, duration } = elected else {
        unreachable!()
    };
    assert_eq!((from, to), (node(old), node(promoted)));
    println!("failover completed in {duration:?} (measured by the cluster)");
    assert_eq!(cluster.primary_node(), Some(node(promoted)));

    // Every acknowledged id is on the new primary, and every one was
    // acknowledged by the old primary or the new one.
    let acked = acked.lock().unwrap().clone();
    let old_port = port(&pg, old);
    assert!(acked.iter().all(|(_, p)| *p == old_port || *p == new_port));
    let ids: Vec<i64> = acked.iter().map(|(id, _)| *id).collect();
    let found: i64 = pg
        .admin(promoted)
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM items WHERE id = ANY($1)", &[&ids])
        .await
        .unwrap()
        .get(0);
    assert_eq!(found as usize, ids.len(), "acknowledged writes lost");
    println!(
        "{} writes acknowledged, {} with an unknown outcome, none lost",
        ids.len(),
        unknown.load(Ordering::SeqCst)
    );
}

/// Inserts `id`, returns the server port, counts SQLSTATE 25006 answers.
fn insert_counting_read_only(
    id: i64,
    read_only_errors: Arc<AtomicUsize>,
) -> impl for<'c> FnMut(&'c mut Connection) -> OpFuture<'c, u16> {
    move |conn| {
        let read_only_errors = read_only_errors.clone();
        Box::pin(async move {
            let result = conn
                .query_one(
                    "INSERT INTO items (id) VALUES ($1) RETURNING inet_server_port()",
                    &[&id],
                )
                .await;
            match result {
                Ok(row) => Ok(u16::try_from(row.get::<_, i32>(0)).unwrap_or(0)),
                Err(e) => {
                    if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
                        read_only_errors.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e)
                }
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_primary_back_as_standby_is_detected_on_its_first_read_only_error() {
    let pg = start(1).await;
    let old = pg.primary();
    let new = pg.replicas()[0];
    let mut config = config(&pg);
    // Probes only at start and on trouble: the cluster keeps believing in
    // the old primary until live traffic says otherwise.
    config.probe.interval = Duration::from_secs(3600);
    config.probe.primary_interval = Duration::from_secs(3600);
    let cluster = connect(config).await;
    let mut events = cluster.events();

    let read_only_errors = Arc::new(AtomicUsize::new(0));
    let insert = |id| insert_counting_read_only(id, read_only_errors.clone());
    let first = cluster.write_op(insert(1)).await.unwrap();
    assert_eq!(first.value, port(&pg, old));

    // Failover behind the cluster's back, and the old primary returns as a
    // standby that still answers `SELECT 1`.
    pg.stop(old).await.unwrap();
    pg.promote(new).await.unwrap();
    pg.restart_as_standby(old).await.unwrap();
    assert_eq!(cluster.primary_node(), Some(node(old)), "not probed since");

    let written = cluster.write_op(insert(2)).await.unwrap();
    // Detected on its first 25006, or before any write was sent when the
    // new connection's login already reported `in_hot_standby = on`.
    let read_only = read_only_errors.load(Ordering::SeqCst);
    assert!(read_only <= 1, "{read_only} writes reached the old primary");
    assert_eq!(written.node, node(new));
    assert_eq!(written.value, port(&pg, new));
    wait_event(
        &mut events,
        "PrimaryLost",
        |e| matches!(e, Event::PrimaryLost { node: n, .. } if *n == node(old)),
    )
    .await;
    wait_event(
        &mut events,
        "PrimaryElected",
        |e| matches!(e, Event::PrimaryElected { node: n, .. } if *n == node(new)),
    )
    .await;
    // The old primary's pooled connections were evicted.
    assert_eq!(cluster.health().nodes[old.0].pool.size, 0);

    for id in 3..13 {
        let written = cluster.write_op(insert(id)).await.unwrap();
        assert_eq!(written.value, port(&pg, new));
    }
    assert_eq!(
        read_only_errors.load(Ordering::SeqCst),
        read_only,
        "no write was routed to the old primary again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_primary_is_detected_by_timeouts() {
    let pg = start(1).await;
    let primary = pg.primary();
    let replica = pg.replicas()[0];
    let cluster = connect(config(&pg)).await;
    wait_readable(&cluster, 1).await;
    let mut events = cluster.events();

    let frozen_at = tokio::time::Instant::now();
    pg.freeze(primary).await.unwrap();
    wait_event(
        &mut events,
        "NodeDown",
        |e| matches!(e, Event::NodeDown { node: n, .. } if *n == node(primary)),
    )
    .await;
    // Reported, not asserted: the figure belongs in docs/BENCHMARKS.md.
    println!("frozen primary down after {:?}", frozen_at.elapsed());
    let health = cluster.health();
    assert_eq!(health.primary, None);
    assert!(!health.nodes[primary.0].up);
    let error = health.nodes[primary.0]
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(error.contains("timed out"), "{error}");

    // Writes give up at their deadline instead of hanging; reads go on.
    let err = cluster
        .write_op_with(
            OpOptions::new().deadline(Duration::from_millis(500)),
            |conn| Box::pin(async move { whereami(conn).await }),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::DeadlineExceeded { last: Some(last), .. } if matches!(**last, Error::NoPrimary { .. })),
        "{err}"
    );
    assert!(err.is_retryable() && !err.is_outcome_unknown());
    let (p, _) = cluster
        .read_op(|conn| Box::pin(async move { whereami(conn).await }))
        .await
        .unwrap();
    assert_eq!(p, port(&pg, replica));

    pg.thaw(primary).await.unwrap();
    wait_event(
        &mut events,
        "PrimaryElected",
        |e| matches!(e, Event::PrimaryElected { node: n, .. } if *n == node(primary)),
    )
    .await;
    let written = cluster
        .write_op(|conn| Box::pin(async move { whereami(conn).await }))
        .await
        .unwrap();
    assert_eq!(written.value, (port(&pg, primary), false));
}

/// A server that accepts connections and never answers (a frozen node:
/// the kernel still completes the handshake). Each new connection checks
/// whether an earlier one is still open: on loopback a client's close is
/// in the server's receive queue before its next connection arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_never_answers_is_logged_into_by_one_probe_at_a_time() {
    let pg = start(0).await;
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let black_hole_port = black_hole.local_addr().unwrap().port();
    let mut config = db_failover::Config::from_url(&format!(
        "postgres://{}:{}@127.0.0.1:{},127.0.0.1:{black_hole_port}/postgres",
        testkit::SUPERUSER,
        pg.superuser_password(),
        port(&pg, pg.primary()),
    ))
    .unwrap();
    config.timeouts.connect = Duration::from_millis(300);
    let cluster = connect(config).await;

    let mut open: Vec<tokio::net::TcpStream> = Vec::new();
    let mut overlapping = 0;
    for _ in 0..4 {
        let (stream, _) = tokio::time::timeout(BOUND, black_hole.accept())
            .await
            .expect("the prober keeps trying the silent node")
            .unwrap();
        open.retain(|earlier| {
            let mut buf = [0u8; 256];
            loop {
                match earlier.try_read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => continue, // its startup message
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
        });
        overlapping += open.len();
        open.push(stream);
    }
    assert_eq!(
        overlapping, 0,
        "a probe logged in while another login to the same node was pending"
    );
    let health = cluster.health();
    assert!(!health.nodes[1].up);
    let error = health.nodes[1].last_error.clone().unwrap_or_default();
    assert!(error.contains("login timed out"), "{error}");
    assert!(health.is_ready(), "the answering primary stays elected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_connection_on_a_frozen_node_fails_once_the_node_is_down() {
    let pg = start(1).await;
    let primary = pg.primary();
    let cluster = connect(config(&pg)).await;
    let mut events = cluster.events();
    let conn = cluster.write().await.unwrap();
    whereami(&conn).await.unwrap();

    // The kernel keeps ACKing for a stopped process on the same host: no
    // TCP timeout fires and statement_timeout cannot run. Only the cluster
    // declaring the node down can end the query.
    pg.freeze(primary).await.unwrap();
    let query = tokio::spawn(async move {
        let result = conn.query_one("SELECT 1", &[]).await.map(|_| ());
        (result, conn.commit_token().await)
    });
    wait_event(
        &mut events,
        "NodeDown",
        |e| matches!(e, Event::NodeDown { node: n, .. } if *n == node(primary)),
    )
    .await;
    let (result, token) = tokio::time::timeout(BOUND, query)
        .await
        .expect("the checked-out connection was cut when its node went down")
        .unwrap();
    assert!(result.is_err(), "a query on a frozen node cannot succeed");
    let token = token.unwrap_err();
    assert!(token.is_retryable(), "{token}");

    pg.thaw(primary).await.unwrap();
    wait_event(
        &mut events,
        "PrimaryElected",
        |e| matches!(e, Event::PrimaryElected { node: n, .. } if *n == node(primary)),
    )
    .await;
    cluster
        .write_op(|conn| Box::pin(async move { whereami(conn).await }))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_transaction_on_the_real_primary_does_not_demote_it() {
    let pg = start(1).await;
    let primary = pg.primary();
    let cluster = connect(config(&pg)).await;
    let generation = cluster.generation();
    let mut events = cluster.events();

    let err = cluster
        .write_op(|conn| {
            Box::pin(async move {
                conn.batch_execute("BEGIN READ ONLY; INSERT INTO items (id) VALUES (99); COMMIT")
                    .await
            })
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Query { source, .. }
            if source.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION)),
        "{err}"
    );
    assert!(!err.is_retryable() && !err.is_outcome_unknown());

    // Still the primary, nothing flapped, and the connection is usable.
    let written = cluster
        .write_op(|conn| {
            Box::pin(async move {
                conn.execute("INSERT INTO items (id) VALUES (100)", &[])
                    .await?;
                whereami(conn).await
            })
        })
        .await
        .unwrap();
    assert_eq!(written.value, (port(&pg, primary), false));
    assert_eq!(cluster.primary_node(), Some(node(primary)));
    assert_eq!(cluster.generation(), generation);
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(
                event,
                Event::PrimaryLost { .. } | Event::PrimaryElected { .. }
            ),
            "{event:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reads_resume_on_replicas_after_a_failover() {
    let pg = start(2).await;
    let old = pg.primary();
    let cluster = connect(config(&pg)).await;
    let mut events = cluster.events();
    for id in 0..50i64 {
        cluster
            .write_op(move |conn| {
                Box::pin(async move {
                    conn.execute("INSERT INTO items (id) VALUES ($1)", &[&id])
                        .await
                })
            })
            .await
            .unwrap();
    }
    pg.kill(old).await.unwrap();
    let promoted = most_advanced_replica(&pg).await;
    pg.promote(promoted).await.unwrap();
    wait_event(
        &mut events,
        "PrimaryElected",
        |e| matches!(e, Event::PrimaryElected { node: n, .. } if *n == node(promoted)),
    )
    .await;
    let other = pg
        .replicas()
        .into_iter()
        .find(|&r| r != promoted && r != old)
        .expect("a third node");
    // The remaining replica is repointed at the new primary and follows
    // its timeline: lag is measured against the new primary's positions
    // only, so it becomes readable again.
    pg.restart_as_standby(other).await.unwrap();
    wait_readable(&cluster, 1).await;
    let (p, in_recovery) = cluster
        .read_op(|conn| Box::pin(async move { whereami(conn).await }))
        .await
        .unwrap();
    assert!(in_recovery);
    assert_eq!(p, port(&pg, other));
}
