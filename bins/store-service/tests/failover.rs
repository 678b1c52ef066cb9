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
