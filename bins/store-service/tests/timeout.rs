//! The request timeout: a request that outlives `REQUEST_TIMEOUT_SECS`
//! (here a create whose secret waits on a frozen OpenBao's Transit) is a
//! 504 problem with code TIMEOUT, and the service serves again once it
//! thaws. (A frozen primary no longer makes a request outlive 1 s: it is
//! declared down within 0.8 s and the write ends as a 503.)

mod common;

use std::time::Duration;

use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use testkit::DatabaseEngine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_request_is_a_504_and_the_service_recovers() {
    let (_pg, bao, mut settings) = common::services(DatabaseEngine::default()).await;
    settings.request_timeout_secs = 1;
    let (base, _state) = common::spawn(settings).await;
    let http = common::http();
    let create = |name: &'static str| {
        http.post(format!("{base}/api/stores"))
            .json(&json!({ "name": name, "secrets": { "API_KEY": "s3cret" } }))
            .send()
    };
    assert_eq!(
        create("Before Freeze").await.unwrap().status(),
        StatusCode::CREATED
    );

    bao.freeze().await.unwrap();
    let hung = create("During Freeze").await.unwrap();
    let status = hung.status();
    let content_type = hung.headers()[header::CONTENT_TYPE].clone();
    let request_id = hung.headers()["x-request-id"].clone();
    let body: Value = hung.json().await.unwrap();
    bao.thaw().await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["error"], "TIMEOUT", "{body}");
    assert_eq!(body["status"], 504);
    assert_eq!(body["requestId"], request_id.to_str().unwrap());
    assert_eq!(body["instance"], "/api/stores");

    // Thawed: writes succeed again without a restart (the first attempts
    // may still meet connections the timeout abandoned).
    let mut recovered = false;
    for _ in 0..100 {
        let response = create("After Thaw").await.unwrap();
        if response.status() == StatusCode::CREATED {
            recovered = true;
            break;
        }
        assert!(
            response.status().is_server_error(),
            "unexpected {}",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the service did not recover after the thaw");
    // The 504 is counted in the metrics (the metrics layer wraps the timeout).
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("http_requests_total") && l.contains("status=\"504\"")),
        "no 504 in /metrics:\n{metrics}"
    );
    let health = http.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}
