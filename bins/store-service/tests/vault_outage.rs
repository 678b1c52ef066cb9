//! OpenBao stopped: the service keeps serving with its current credentials
//! (secrets, which need Transit, answer 503), and recovers when it returns.

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_stopped_then_restarted() {
    let stack = common::stack().await;
    let created = stack
        .create(json!({"name": "Outage Shop", "secrets": {"K": "v1"}}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let body: Value = created.json().await.unwrap();
    let id = body["store"]["id"].as_str().unwrap().to_owned();

    stack.bao.stop().await.unwrap();
    for i in 0..20 {
        let created = stack
            .create(json!({"name": format!("During Outage {i}")}))
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
        let got = stack
            .http
            .get(stack.url(&format!("/api/stores/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), StatusCode::OK);
    }
    let ready = stack.http.get(stack.url("/ready")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        StatusCode::OK,
        "current credentials are still valid"
    );
    let secrets = stack
        .http
        .get(stack.url(&format!("/api/stores/{id}/secrets")))
        .send()
        .await
        .unwrap();
    assert_eq!(secrets.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: Value = secrets.json().await.unwrap();
    assert_eq!(problem["error"], "SERVICE_UNAVAILABLE");

    stack.bao.restart().await.unwrap();
    let mut recovered = false;
    for _ in 0..60 {
        let secrets = stack
            .http
            .get(stack.url(&format!("/api/stores/{id}/secrets")))
            .send()
            .await
            .unwrap();
        if secrets.status() == StatusCode::OK {
            let body: Value = secrets.json().await.unwrap();
            assert_eq!(body["secrets"], json!({"K": "v1"}));
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        recovered,
        "Transit did not come back after OpenBao restarted"
    );
    let created = stack
        .create(json!({"name": "After Outage", "secrets": {"K": "v2"}}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
}
