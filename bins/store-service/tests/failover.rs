//! The primary is killed, with writes in flight (one of them certainly:
//! held on a table lock across the kill), and the replica promoted:
//! the API recovers without a restart, answers 503 (never 500) for the
//! writes the failure caught, and loses no acknowledged write
//! (synchronous replication).

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_replica_promoted() {
    let stack = Arc::new(common::stack().await);
    let (old, new) = (stack.pg.primary(), stack.pg.replicas()[0]);
    stack.pg.wait_streaming(new).await.unwrap();
    stack.pg.set_synchronous_standbys(old, 1).await.unwrap();

    // Writers loop without pause, so the kill lands with writes in flight
    // (sent, not yet answered). Each stops after 10 successes once the new
    // primary is in place.
    const WRITERS: usize = 6;
    let promoted = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (stack, promoted, started) = (
                Arc::clone(&stack),
                Arc::clone(&promoted),
                Arc::clone(&started),
            );
            tokio::spawn(async move {
                let (mut acknowledged, mut failed, mut after) = (Vec::new(), 0, 0);
                for i in 0.. {
                    assert!(i < 2_000, "writer {w} never recovered ({failed} failed)");
                    started.fetch_add(1, Ordering::Relaxed);
                    let response = stack
                        .create(json!({"name": format!("Failover Shop {w}-{i}")}))
                        .await;
                    match response.status() {
                        StatusCode::CREATED => {
                            let body: Value = response.json().await.unwrap();
                            acknowledged.push(body["store"]["id"].as_str().unwrap().to_owned());
                            if promoted.load(Ordering::Relaxed) {
                                after += 1;
                                if after == 10 {
                                    return (acknowledged, failed);
                                }
                            }
                        }
                        // The node died under the request: its outcome is
                        // unknown to the client, never a 500.
                        StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT => {
                            failed += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => panic!(
                            "writer {w} write {i}: unexpected {other}: {}",
                            response.text().await.unwrap()
                        ),
                    }
                }
                unreachable!()
            })
        })
        .collect();
    while started.load(Ordering::Relaxed) < 60 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // One write certainly in flight at the kill: a lock the test holds on
    // the table keeps its UPDATE waiting on the primary (seen waiting in
    // pg_stat_activity) until the primary dies under it. It is a PUT, the
    // only UPDATE in flight: the writers' INSERTs wait on the same lock and
    // must not be mistaken for it.
    let held_store = stack.create(json!({"name": "Held across the kill"})).await;
    assert_eq!(held_store.status(), StatusCode::CREATED);
    let held_store: Value = held_store.json().await.unwrap();
    let held_url = stack.url(&format!(
        "/api/stores/{}",
        held_store["store"]["id"].as_str().unwrap()
    ));
    let blocker = stack.pg.admin_db(old, "stores").await.unwrap();
    blocker
        .batch_execute("BEGIN; LOCK TABLE stores IN SHARE MODE")
        .await
        .unwrap();
    let held = tokio::spawn({
        let stack = Arc::clone(&stack);
        async move {
            let response = stack
                .http
                .put(held_url)
                .json(&json!({"name": "Renamed across the kill", "version": 1}))
                .send()
                .await
                .unwrap();
            let status = response.status();
            (status, response.text().await.unwrap_or_default())
        }
    });
    let watcher = stack.pg.admin_db(old, "stores").await.unwrap();
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE stores %'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            !held.is_finished(),
            "the held write was answered before the kill"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stack.pg.kill(old).await.unwrap();
    drop((blocker, watcher));
    stack.pg.promote(new).await.unwrap();
    promoted.store(true, Ordering::Relaxed);
    // The write the kill caught: its outcome is unknown, so 503 or 504
    // (never a 201 the client cannot trust, never a 500).
    let (status, body) = held.await.unwrap();
    assert!(
        status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT,
        "the write in flight when the primary died: {status}: {body}"
    );

    let mut acknowledged = Vec::new();
    let mut failed = 0;
    for writer in writers {
        let (ids, failures) = writer.await.unwrap();
        acknowledged.extend(ids);
        failed += failures;
    }

    eprintln!(
        "{} acknowledged, {failed} failed during the failover",
        acknowledged.len()
    );
    // Every acknowledged write is on the new primary, read through the API.
    for id in &acknowledged {
        let got = stack
            .http
            .get(stack.url(&format!("/api/stores/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.status(),
            StatusCode::OK,
            "acknowledged store {id} lost ({failed} writes failed during the failover)"
        );
    }
    // Ready again on the new primary (a probe of the old one may still be
    // timing out under load, so within a bound rather than at once).
    testkit::eventually(
        "/ready to answer 200 after the failover",
        Duration::from_secs(30),
        || {
            let ready = stack.http.get(stack.url("/ready")).send();
            async move { (ready.await.ok()?.status() == StatusCode::OK).then_some(()) }
        },
    )
    .await
    .unwrap();
}

/// Writes with an `Idempotency-Key`, each retried with its key until it
/// succeeds, while the primary is killed and the replica promoted: every
/// retry gets a fresh success or the replay of the first, never a key
/// stuck in progress, and every key makes exactly one store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_writes_happen_exactly_once_across_a_failover() {
    let stack = common::stack().await;
    let (old, new) = (stack.pg.primary(), stack.pg.replicas()[0]);
    stack.pg.wait_streaming(new).await.unwrap();
    stack.pg.set_synchronous_standbys(old, 1).await.unwrap();

    const WRITES: usize = 30;
    let mut ids = Vec::new();
    let mut retried = 0;
    for i in 0..WRITES {
        if i == 5 {
            stack.pg.kill(old).await.unwrap();
            stack.pg.promote(new).await.unwrap();
        }
        let key = format!("failover-key-{i}");
        let mut attempts = 0;
        let id = loop {
            attempts += 1;
            assert!(attempts <= 200, "{key} never settled");
            let response = stack
                .http
                .post(stack.url("/api/stores"))
                .header("idempotency-key", &key)
                .json(&json!({"name": format!("Keyed Shop {i}")}))
                .send()
                .await
                .unwrap();
            match response.status() {
                StatusCode::CREATED => {
                    let body: Value = response.json().await.unwrap();
                    break body["store"]["id"].as_str().unwrap().to_owned();
                }
                // Down, or (at most briefly) the key held by the attempt
                // that was in flight: retry with the same key.
                StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
                | StatusCode::CONFLICT => {
                    retried += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => panic!(
                    "{key}: unexpected {other}: {}",
                    response.text().await.unwrap()
                ),
            }
        };
        ids.push(id);
    }

    // Exactly one store per key, on the new primary.
    let admin = stack.pg.admin_db(new, "stores").await.unwrap();
    let row = admin
        .query_one(
            "SELECT count(*), count(DISTINCT name) FROM stores WHERE name LIKE 'Keyed Shop %'",
            &[],
        )
        .await
        .unwrap();
    let (stores, names): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        (stores, names),
        (WRITES as i64, WRITES as i64),
        "{retried} retries"
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), WRITES);
    // Every key is answered: a replay now gives each its first store.
    let replay = stack
        .http
        .post(stack.url("/api/stores"))
        .header("idempotency-key", "failover-key-0")
        .json(&json!({"name": "Keyed Shop 0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), StatusCode::CREATED);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
}
