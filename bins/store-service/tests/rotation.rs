//! Database credentials rotated by Vault (short TTLs) during a load loop:
//! not one request fails.

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::DatabaseEngine;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_rotate_under_load() {
    let engine = DatabaseEngine {
        default_ttl: Duration::from_secs(3),
        max_ttl: Duration::from_secs(6),
        ..DatabaseEngine::default()
    };
    let (_pg, _bao, settings) = common::services(engine).await;
    let (base, state) = common::spawn(settings).await;
    let http = common::http();
    let leases = state.leases.clone().expect("Vault in use");
    let first = leases.current().generation;

    let mut requests = 0;
    let mut location = None;
    let mut version = 0;
    // Until two rotations have happened (bounded: TTLs of seconds).
    for i in 0..100_000 {
        if leases.current().generation >= first + 2 {
            break;
        }
        assert!(i < 99_999, "no rotation happened");
        let created = http
            .post(format!("{base}/api/stores"))
            .json(&json!({"name": format!("Rotation Shop {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "request {requests}");
        let body: Value = created.json().await.unwrap();
        if location.is_none() {
            location = Some(format!(
                "{base}/api/stores/{}",
                body["store"]["id"].as_str().unwrap()
            ));
            version = 1;
        }
        let location = location.as_deref().unwrap_or_default();
        let got = http.get(location).send().await.unwrap();
        assert_eq!(got.status(), StatusCode::OK, "request {requests}");
        let updated = http
            .put(location)
            .json(&json!({"name": format!("Rotated {i}"), "version": version}))
            .send()
            .await
            .unwrap();
        assert_eq!(updated.status(), StatusCode::OK, "request {requests}");
        version += 1;
        let page = http
            .get(format!("{base}/api/stores?limit=5"))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK, "request {requests}");
        requests += 4;
    }
    assert!(leases.current().generation >= first + 2);
    assert!(requests > 0);
}
