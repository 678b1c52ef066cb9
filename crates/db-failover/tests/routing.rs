//! Routing against a real primary and streaming replicas: where reads and
//! writes go, lag, read-your-writes, fallback, least busy, split brain.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{config, connect, node, port, start, wait_event, wait_readable, wait_until, whereami};
use db_failover::{Balance, Error, Event, Fallback, OpOptions, Role};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_replicas_and_writes_to_the_primary() {
    let pg = start(2).await;
    let cluster = connect(config(&pg)).await;
    wait_readable(&cluster, 2).await;
    let primary_port = port(&pg, pg.primary());
    let replica_ports: BTreeSet<u16> = pg.replicas().iter().map(|&r| port(&pg, r)).collect();
    assert_eq!(cluster.primary_node(), Some(node(pg.primary())));

    let mut read_from = BTreeSet::new();
    for _ in 0..20 {
        let (port, in_recovery) = cluster
            .read_op(|conn| Box::pin(async move { whereami(conn).await }))
            .await
            .unwrap();
        assert!(in_recovery, "a read went to a node not in recovery");
        assert!(replica_ports.contains(&port), "read from {port}");
        read_from.insert(port);
    }
    assert_eq!(read_from, replica_ports, "round robin uses every replica");

    for i in 0..10i64 {
        let written = cluster
            .write_op(move |conn| {
                Box::pin(async move {
                    conn.execute("INSERT INTO items (id) VALUES ($1)", &[&i])
                        .await?;
                    whereami(conn).await
                })
            })
            .await
            .unwrap();
        assert_eq!(written.value, (primary_port, false));
        assert_eq!(written.node, node(pg.primary()));
        assert!(written.token.lsn().is_some());
    }

    // Raw connections are routed the same way.
    let conn = cluster.write().await.unwrap();
    assert_eq!(conn.role(), Role::Primary);
    assert_eq!(whereami(&conn).await.unwrap(), (primary_port, false));
    let conn = cluster.read().await.unwrap();
    assert_eq!(conn.role(), Role::Standby);
    let (port, in_recovery) = whereami(&conn).await.unwrap();
    assert!(in_recovery && replica_ports.contains(&port));

    let health = cluster.health();
    assert!(health.is_ready());
    assert_eq!(health.readable_replicas().count(), 2);
    assert!(health.nodes.iter().all(|n| n.up));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replica_is_skipped_until_it_catches_up() {
    let pg = start(2).await;
    let mut config = config(&pg);
    config.reads.max_lag_bytes = Some(256 * 1024);
    config.reads.max_lag = None;
    let cluster = connect(config).await;
    wait_readable(&cluster, 2).await;
    let mut events = cluster.events();
    let paused = pg.replicas()[0];
    let healthy = pg.replicas()[1];

    let admin = pg.admin(paused).await.unwrap();
    admin
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    // About 2 MB of WAL the paused replica will not replay.
    pg.admin(pg.primary())
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO items (id, body) SELECT g, repeat('x', 1000) FROM generate_series(1, 2000) g",
        )
        .await
        .unwrap();
    let event = wait_event(
        &mut events,
        "LagExceeded",
        |e| matches!(e, Event::LagExceeded { node: n, .. } if *n == node(paused)),
    )
    .await;
    let Event::LagExceeded { lag_bytes, .. } = event else {
        unreachable!()
    };
    assert!(lag_bytes.unwrap_or(0) > 256 * 1024, "{lag_bytes:?}");
    // The healthy replica may have looked late too while the insert was
    // streaming: wait until it is readable again.
    wait_until("the healthy replica is readable", || {
        let health = cluster.health();
        async move {
            let readable: Vec<_> = health.readable_replicas().map(|n| n.id).collect();
            readable == [node(healthy)] && health.nodes[paused.0].lagging
        }
    })
    .await;

    for _ in 0..10 {
        let (p, _) = cluster
            .read_op(|conn| Box::pin(async move { whereami(conn).await }))
            .await
            .unwrap();
        assert_eq!(p, port(&pg, healthy), "the lagging replica served a read");
    }

    admin
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    wait_event(
        &mut events,
        "LagRecovered",
        |e| matches!(e, Event::LagRecovered { node: n } if *n == node(paused)),
    )
    .await;
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        let (p, _) = cluster
            .read_op(|conn| Box::pin(async move { whereami(conn).await }))
            .await
            .unwrap();
        seen.insert(p);
    }
    assert!(
        seen.contains(&port(&pg, paused)),
        "back in rotation: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_uses_a_replica_only_once_it_has_the_write() {
    let pg = start(1).await;
    let replica = pg.replicas()[0];
    let mut config = config(&pg);
    config.reads.read_after_wait = Some(Duration::from_secs(5));
    let cluster = connect(config).await;
    wait_readable(&cluster, 1).await;

    let admin = pg.admin(replica).await.unwrap();
    admin
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let written = cluster
        .write_op(|conn| {
            Box::pin(async move {
                conn.execute("INSERT INTO items (id, body) VALUES (1, 'mine')", &[])
                    .await
            })
        })
        .await
        .unwrap();
    let token = written.token;

    // A plain read may go to the replica, which does not have the row yet.
    let (plain_port, plain_rows) = cluster
        .read_op(|conn| {
            Box::pin(async move {
                let (p, _) = whereami(conn).await?;
                let rows = conn.query("SELECT 1 FROM items WHERE id = 1", &[]).await?;
                Ok((p, rows.len()))
            })
        })
        .await
        .unwrap();
    assert_eq!((plain_port, plain_rows), (port(&pg, replica), 0));

    // With the token: the replica cannot serve it within the wait (replay
    // is paused), so the primary does, and the row is there.
    let waiting = tokio::spawn({
        let cluster = cluster.clone();
        async move {
            cluster
                .read_op_after(&token, |conn| {
                    Box::pin(async move {
                        let (p, _) = whereami(conn).await?;
                        let body: String = conn
                            .query_one("SELECT body FROM items WHERE id = 1", &[])
                            .await?
                            .get(0);
                        Ok((p, body))
                    })
                })
                .await
        }
    });
    // While it waits, replay resumes: the replica catches up and serves it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    let (p, body) = waiting.await.unwrap().unwrap();
    assert_eq!(body, "mine");
    assert_eq!(
        p,
        port(&pg, replica),
        "served by the replica after it caught up"
    );

    // Without waiting, a token the replica has not reached goes to the primary.
    admin
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let mut config = common::config(&pg);
    config.reads.read_after_wait = None;
    let impatient = connect(config).await;
    let written = impatient
        .write_op(|conn| {
            Box::pin(async move {
                conn.execute("INSERT INTO items (id, body) VALUES (2, 'again')", &[])
                    .await
            })
        })
        .await
        .unwrap();
    let conn = impatient.read_after(&written.token).await.unwrap();
    assert_eq!(conn.role(), Role::Primary);
    assert_eq!(
        whereami(&conn).await.unwrap(),
        (port(&pg, pg.primary()), false)
    );
    admin
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_replicas_down_reads_fall_back_to_the_primary_or_fail() {
    let pg = start(2).await;
    let cluster = connect(config(&pg)).await;
    let mut strict_config = config(&pg);
    strict_config.reads.fallback = Fallback::Fail;
    let strict = connect(strict_config).await;
    wait_readable(&cluster, 2).await;
    wait_readable(&strict, 2).await;
    let mut events = cluster.events();

    for replica in pg.replicas() {
        pg.kill(replica).await.unwrap();
    }
    let mut down = BTreeSet::new();
    while down.len() < 2 {
        if let Event::NodeDown { node, .. } = wait_event(&mut events, "NodeDown", |e| {
            matches!(e, Event::NodeDown { .. })
        })
        .await
        {
            down.insert(node);
        }
    }
    let replicas: BTreeSet<_> = pg.replicas().into_iter().map(node).collect();
    assert_eq!(down, replicas);
    for _ in 0..5 {
        let (p, in_recovery) = cluster
            .read_op(|conn| Box::pin(async move { whereami(conn).await }))
            .await
            .unwrap();
        assert_eq!((p, in_recovery), (port(&pg, pg.primary()), false));
    }
    let conn = cluster.read().await.unwrap();
    assert_eq!(
        conn.role(),
        Role::Primary,
        "a fallback read is routed as primary"
    );

    wait_until("the strict handle sees both replicas down", || {
        let health = strict.health();
        async move { health.readable_replicas().count() == 0 }
    })
    .await;
    let err = strict
        .read_op_with(
            OpOptions::new().deadline(Duration::from_millis(300)),
            None,
            |conn| Box::pin(async move { whereami(conn).await }),
        )
        .await
        .unwrap_err();
    let no_replica = match &err {
        Error::NoReplica => true,
        Error::DeadlineExceeded {
            last: Some(last), ..
        } => matches!(**last, Error::NoReplica),
        _ => false,
    };
    assert!(no_replica, "{err}");
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_busy_avoids_the_replica_in_use() {
    let pg = start(2).await;
    let mut config = config(&pg);
    config.reads.balance = Balance::LeastBusy;
    let cluster = connect(config).await;
    wait_readable(&cluster, 2).await;
    let held = cluster.read().await.unwrap();
    let busy = held.node();
    for _ in 0..6 {
        let conn = cluster.read().await.unwrap();
        assert_ne!(conn.node(), busy, "least busy picked the replica in use");
    }
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_prefers_the_higher_timeline() {
    let pg = start(1).await;
    let old = pg.primary();
    let promoted = pg.replicas()[0];
    let cluster = connect(config(&pg)).await;
    let mut events = cluster.events();

    // Promote the replica while the primary still runs: two primaries.
    pg.promote(promoted).await.unwrap();
    cluster.reprobe();
    let event = wait_event(&mut events, "SplitBrain", |e| {
        matches!(e, Event::SplitBrain { .. })
    })
    .await;
    let Event::SplitBrain { primaries, chosen } = event else {
        unreachable!()
    };
    assert_eq!(chosen, node(promoted));
    assert_eq!(primaries.len(), 2);
    let timeline = |n| {
        primaries
            .iter()
            .find(|(id, _)| *id == node(n))
            .and_then(|(_, t)| *t)
    };
    assert!(timeline(promoted) > timeline(old), "{primaries:?}");

    assert_eq!(cluster.primary_node(), Some(node(promoted)));
    let written = cluster
        .write_op(|conn| Box::pin(async move { whereami(conn).await }))
        .await
        .unwrap();
    assert_eq!(written.value, (port(&pg, promoted), false));
}
