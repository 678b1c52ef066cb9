//! Rotating credentials under load against a real cluster: new logins are
//! created as real scram roles, pushed through a watch channel, and a
//! steady query loop never fails.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use common::{start, wait_until};
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
    let config = Config::from_url(&format!("postgres://{}/postgres", hosts.join(",")))
        .unwrap()
        .with_credentials(CredentialsProvider::watch(receiver));
    let cluster = Cluster::connect(config).await.unwrap();
    assert!(cluster.health().is_ready());

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
