//! The primary is killed and the replica promoted during a write loop: the
//! API recovers without a restart, and no acknowledged write is lost
//! (synchronous replication).

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_replica_promoted() {
    let stack = common::stack().await;
    let (old, new) = (stack.pg.primary(), stack.pg.replicas()[0]);
    stack.pg.wait_streaming(new).await.unwrap();
    stack.pg.set_synchronous_standbys(old, 1).await.unwrap();

    let mut acknowledged = Vec::new();
    let mut failed_during_failover = 0;
    let mut successes_after_promotion = 0;
    let mut promoted = false;
    for i in 0..400 {
        if i == 20 {
            stack.pg.kill(old).await.unwrap();
            stack.pg.promote(new).await.unwrap();
            promoted = true;
        }
        let response = stack
            .create(json!({"name": format!("Failover Shop {i}")}))
            .await;
        match response.status() {
            StatusCode::CREATED => {
                let body: Value = response.json().await.unwrap();
                acknowledged.push(body["store"]["id"].as_str().unwrap().to_owned());
                if promoted {
                    successes_after_promotion += 1;
                    if successes_after_promotion == 20 {
                        break;
                    }
                }
            }
            StatusCode::SERVICE_UNAVAILABLE if promoted => {
                failed_during_failover += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!(
                "write {i}: unexpected {other}: {}",
                response.text().await.unwrap()
            ),
        }
    }
    assert_eq!(
        successes_after_promotion, 20,
        "writes did not recover ({failed_during_failover} failed)"
    );

    // Every acknowledged write is on the new primary, read through the API.
    for id in &acknowledged {
        let got = stack
            .http
            .get(stack.url(&format!("/api/stores/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), StatusCode::OK, "acknowledged store {id} lost");
    }
    let ready = stack.http.get(stack.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
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
                | StatusCode::INTERNAL_SERVER_ERROR
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
