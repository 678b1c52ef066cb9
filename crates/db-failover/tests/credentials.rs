//! Rotating credentials under load against a real cluster: new logins are
//! created as real scram roles, pushed through a watch channel, and a
//! steady query loop never fails.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use common::{start, wait_readable, wait_until};
use db_failover::{Cluster, Config, Credentials, CredentialsProvider};
use testkit::{PgCluster, quote_ident, quote_literal};
use tokio::sync::watch;

/// Creates login `name` with `password` on the primary and waits until
/// every replica has replayed it (so it can log in everywhere: the
/// rotation contract says publish only then).
async fn create_login(pg: &PgCluster, name: &str, password: &str) {
    pg.admin(pg.primary())
        .await
        .unwrap()
        .batch_execute(&format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            quote_ident(name),
            quote_literal(password)
        ))
        .await
        .unwrap();
    for replica in pg.replicas() {
        let admin = pg.admin(replica).await.unwrap();
        wait_until("the role reaches the replica", || {
            let admin = &admin;
            async move {
                admin
                    .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
                    .await
                    .unwrap()
                    .is_some()
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_rotated_under_a_steady_query_loop_fail_no_query() {
    let pg = start(1).await;
    create_login(&pg, "app_v1", "first-secret").await;
    let (publish, receiver) = watch::channel(Credentials::new("app_v1", "first-secret", 1));
    let hosts: Vec<String> = pg
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    // No user in the URL: every login comes from the provider.
    let mut config = Config::from_url(&format!("postgres://{}/postgres", hosts.join(",")))
        .unwrap()
        .with_credentials(CredentialsProvider::watch(receiver));
    // Room for probes on a loaded machine: a node wrongly declared down has
    // its connections cut, and this test is about logins, not timeouts.
    config.probe.timeout = Duration::from_secs(2);
    let cluster = Cluster::connect(config).await.unwrap();
    wait_readable(&cluster, 1).await;

    // (when the pair started, user of the write, user of the read)
    let users: Arc<Mutex<Vec<(Instant, String, String)>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for worker in 0..4i64 {
        let (cluster, users, failures, stop) = (
            cluster.clone(),
            users.clone(),
            failures.clone(),
            stop.clone(),
        );
        loops.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let id = worker * 1_000_000 + i;
                let started = Instant::now();
                let write = cluster
                    .write_op(move |conn| {
                        Box::pin(async move {
                            let row = conn
                                .query_one(
                                    "INSERT INTO items (id, body) VALUES ($1, current_user) RETURNING body",
                                    &[&id],
                                )
                                .await?;
                            Ok(row.get::<_, String>(0))
                        })
                    })
                    .await;
                let read = cluster
                    .read_op(|conn| {
                        Box::pin(async move {
                            let row = conn.query_one("SELECT current_user::text", &[]).await?;
                            Ok(row.get::<_, String>(0))
                        })
                    })
                    .await;
                match (write, read) {
                    (Ok(w), Ok(r)) => users.lock().unwrap().push((started, w.value, r)),
                    (w, r) => {
                        let mut failures = failures.lock().unwrap();
                        if let Err(e) = w {
                            failures.push(format!("write: {e}"));
                        }
                        if let Err(e) = r {
                            failures.push(format!("read: {e}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }

    let saw = |user: &'static str| {
        let users = users.clone();
        move || {
            let seen = users
                .lock()
                .unwrap()
                .iter()
                .any(|(_, w, r)| w == user && r == user);
            async move { seen }
        }
    };
    wait_until("queries as app_v1", saw("app_v1")).await;
    let mut published = Vec::new();
    for (generation, name, password) in [
        (2, "app_v2", "second-secret"),
        (3, "app_v3", "third-secret"),
    ] {
        create_login(&pg, name, password).await;
        publish.send_replace(Credentials::new(name, password, generation));
        published.push((Instant::now(), name));
        wait_until("writes and reads as the new user", saw(name)).await;
        // Keep querying a little with the new login.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.await.unwrap();
    }

    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "failed queries: {failures:?}");
    let users = users.lock().unwrap();
    let seen: BTreeSet<&str> = users.iter().map(|(_, w, _)| w.as_str()).collect();
    assert_eq!(seen, BTreeSet::from(["app_v1", "app_v2", "app_v3"]));
    // A query that started after a rotation never used an older login: the
    // pool retired every connection of the older generations.
    let generation = |user: &str| user.trim_start_matches("app_v").parse::<u32>().unwrap();
    for &(rotated_at, name) in &published {
        for (started, w, r) in users.iter() {
            if *started > rotated_at {
                assert!(
                    generation(w) >= generation(name) && generation(r) >= generation(name),
                    "({w}, {r}) after the rotation to {name}"
                );
            }
        }
    }
    println!(
        "{} query pairs across two rotations, none failed",
        users.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_a_paused_replica_has_not_replayed_does_not_mark_it_down() {
    let pg = start(1).await;
    let replica = pg.replicas()[0];
    create_login(&pg, "app_v1", "first-secret").await;
    let (publish, receiver) = watch::channel(Credentials::new("app_v1", "first-secret", 1));
    let hosts: Vec<String> = pg
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let mut config = Config::from_url(&format!("postgres://{}/postgres", hosts.join(",")))
        .unwrap()
        .with_credentials(CredentialsProvider::watch(receiver));
    // Keep the paused replica readable, and give probes room on a loaded
    // machine: this test is about logins, not timeouts.
    config.reads.max_lag = None;
    config.reads.max_lag_bytes = None;
    config.probe.timeout = Duration::from_secs(2);
    let cluster = Cluster::connect(config).await.unwrap();
    wait_readable(&cluster, 1).await;
    let mut events = cluster.events();
    let replica_port = i32::from(pg.node(replica).port());

    // The replica stops replaying: the new role exists on the primary only,
    // and the rotation is published at once (as vault-client's lease
    // manager does).
    pg.admin(replica)
        .await
        .unwrap()
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    pg.admin(pg.primary())
        .await
        .unwrap()
        .batch_execute("CREATE ROLE app_v2 LOGIN PASSWORD 'second-secret'")
        .await
        .unwrap();
    publish.send_replace(Credentials::new("app_v2", "second-secret", 2));

    // Well past failure_threshold probes at the fast interval and a few
    // regular probes: every query works, reads on the replica as app_v1.
    let mut replica_reads = 0;
    for i in 0..120i64 {
        let written = cluster
            .write_op(move |conn| {
                Box::pin(async move {
                    let row = conn
                        .query_one(
                            "INSERT INTO items (id, body) VALUES ($1, current_user) RETURNING body",
                            &[&i],
                        )
                        .await?;
                    Ok(row.get::<_, String>(0))
                })
            })
            .await
            .unwrap();
        assert_eq!(written.value, "app_v2");
        let (port, user) = cluster.read_op(|conn| Box::pin(who(conn))).await.unwrap();
        if port == replica_port {
            assert_eq!(user, "app_v1", "the replica does not know app_v2 yet");
            replica_reads += 1;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(replica_reads > 0, "reads kept going to the replica");
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, db_failover::Event::NodeDown { .. }),
            "{event:?}"
        );
    }
    let health = cluster.health();
    assert!(health.nodes[replica.0].up);
    assert_eq!(health.readable_replicas().count(), 1);

    // Once the replica replays the role, it is used there too.
    pg.admin(replica)
        .await
        .unwrap()
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    wait_until("reads on the replica as app_v2", || {
        let cluster = cluster.clone();
        async move {
            matches!(
                cluster.read_op(|conn| Box::pin(who(conn))).await,
                Ok((port, user)) if port == replica_port && user == "app_v2"
            )
        }
    })
    .await;
}

/// The server port and the user of a connection.
async fn who(client: &tokio_postgres::Client) -> Result<(i32, String), tokio_postgres::Error> {
    let row = client
        .query_one("SELECT inet_server_port(), current_user::text", &[])
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Revoked early (an operator's `vault lease revoke`: the user loses its
/// grants and is dropped) under a steady write loop: the cluster reports
/// the refused generation once, the source publishes new credentials, and
/// no write fails (the denied statements wrote nothing and were retried).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_revoked_under_load_are_reported_and_replaced_with_no_failed_write() {
    let pg = start(0).await;
    pg.admin(pg.primary())
        .await
        .unwrap()
        .batch_execute(
            "CREATE ROLE app_group NOLOGIN;
             REVOKE ALL ON items FROM PUBLIC;
             GRANT ALL ON items TO app_group;
             CREATE ROLE app_v1 LOGIN PASSWORD 'first-secret' IN ROLE app_group;",
        )
        .await
        .unwrap();
    let (publish, receiver) = watch::channel(Credentials::new("app_v1", "first-secret", 1));
    let url = format!(
        "postgres://127.0.0.1:{}/postgres",
        pg.node(pg.primary()).port()
    );
    let mut config = Config::from_url(&url)
        .unwrap()
        .with_credentials(CredentialsProvider::watch(receiver));
    config.probe.timeout = Duration::from_secs(2);
    let cluster = Cluster::connect(config).await.unwrap();
    wait_readable(&cluster, 0).await;

    // The credentials' source: new ones for each refused generation.
    let mut events = cluster.events();
    let admin = pg.admin(pg.primary()).await.unwrap();
    let refused: Arc<Mutex<Vec<u64>>> = Arc::default();
    let source = {
        let refused = refused.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if let db_failover::Event::CredentialsRefused { generation, .. } = event {
                    refused.lock().unwrap().push(generation);
                    let next = generation + 1;
                    admin
                        .batch_execute(&format!(
                            "CREATE ROLE app_v{next} LOGIN PASSWORD 'secret-{next}' IN ROLE app_group"
                        ))
                        .await
                        .unwrap();
                    publish.send_replace(Credentials::new(
                        format!("app_v{next}"),
                        format!("secret-{next}"),
                        next,
                    ));
                }
            }
        })
    };

    let users: Arc<Mutex<Vec<String>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for worker in 0..4i64 {
        let (cluster, users, failures, stop) = (
            cluster.clone(),
            users.clone(),
            failures.clone(),
            stop.clone(),
        );
        loops.push(tokio::spawn(async move {
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let id = worker * 1_000_000 + i;
                let write = cluster
                    .write_op(move |conn| {
                        Box::pin(async move {
                            let row = conn
                                .query_one(
                                    "INSERT INTO items (id, body) VALUES ($1, current_user) RETURNING body",
                                    &[&id],
                                )
                                .await?;
                            Ok(row.get::<_, String>(0))
                        })
                    })
                    .await;
                match write {
                    Ok(w) => users.lock().unwrap().push(w.value),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    let saw = |user: &'static str| {
        let users = users.clone();
        move || {
            let seen = users.lock().unwrap().iter().any(|u| u == user);
            async move { seen }
        }
    };
    wait_until("writes as app_v1", saw("app_v1")).await;
    // What Vault's revocation statements do.
    pg.admin(pg.primary())
        .await
        .unwrap()
        .batch_execute("REVOKE app_group FROM app_v1; DROP ROLE app_v1;")
        .await
        .unwrap();
    wait_until("writes as app_v2", saw("app_v2")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        l.await.unwrap();
    }
    source.abort();

    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "failed writes: {failures:?}");
    assert_eq!(
        *refused.lock().unwrap(),
        vec![1],
        "reported once, for generation 1"
    );
}

/// Revoked while idle, then every connection cut (a restarted or frozen
/// node): the prober's new login is refused with credentials that worked
/// there, which is reported as well, so the node is not lost for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_revoked_while_idle_are_reported_by_the_prober() {
    let pg = start(0).await;
    let admin = pg.admin(pg.primary()).await.unwrap();
    admin
        .batch_execute("CREATE ROLE app_v1 LOGIN PASSWORD 'first-secret'")
        .await
        .unwrap();
    let (publish, receiver) = watch::channel(Credentials::new("app_v1", "first-secret", 1));
    let url = format!(
        "postgres://127.0.0.1:{}/postgres",
        pg.node(pg.primary()).port()
    );
    let cluster = Cluster::connect(
        Config::from_url(&url)
            .unwrap()
            .with_credentials(CredentialsProvider::watch(receiver)),
    )
    .await
    .unwrap();
    wait_readable(&cluster, 0).await;
    let mut events = cluster.events();

    admin
        .batch_execute(
            "DROP ROLE app_v1;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE backend_type = 'client backend' AND pid <> pg_backend_pid();",
        )
        .await
        .unwrap();
    let generation = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(db_failover::Event::CredentialsRefused { generation, .. }) =
                events.recv().await
            {
                return generation;
            }
        }
    })
    .await
    .expect("the refusal is reported");
    assert_eq!(generation, 1);

    admin
        .batch_execute("CREATE ROLE app_v2 LOGIN PASSWORD 'second-secret'")
        .await
        .unwrap();
    publish.send_replace(Credentials::new("app_v2", "second-secret", 2));
    // A primary again, written to with the new login (an attempt may still
    // meet a connection the termination cut: its outcome is unknown, and
    // this statement writes nothing, so it is simply tried again).
    wait_until("a write as app_v2", || {
        let cluster = cluster.clone();
        async move {
            let written = cluster
                .write_op(|conn| {
                    Box::pin(async move {
                        let row = conn.query_one("SELECT current_user::text", &[]).await?;
                        Ok(row.get::<_, String>(0))
                    })
                })
                .await;
            match written {
                Ok(user) => {
                    assert_eq!(user.value, "app_v2");
                    true
                }
                Err(e) if e.is_retryable() || e.is_outcome_unknown() => false,
                Err(e) => panic!("no write with the new login: {e}"),
            }
        }
    })
    .await;
}
