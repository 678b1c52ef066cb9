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

/// Database credentials revoked early (an operator's `lease revoke
/// -prefix`: OpenBao drops the user) while requests run: the service reads
/// new credentials at once (db-failover reports the refusal, the lease
/// manager replaces them) instead of failing until the lease's end; no
/// request gets a 500, and writes work again within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_revoked_early_are_replaced_at_once() {
    let engine = DatabaseEngine::default();
    let (_pg, bao, settings) = common::services(engine.clone()).await;
    let (base, state) = common::spawn(settings).await;
    let http = common::http();
    let leases = state.leases.clone().expect("Vault in use");
    let create = |i: usize| {
        http.post(format!("{base}/api/stores"))
            .json(&json!({"name": format!("Revoked Shop {i}")}))
            .send()
    };
    assert_eq!(create(0).await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(leases.current().generation, 1);

    bao.call(
        reqwest::Method::PUT,
        &format!(
            "sys/leases/revoke-prefix/{}/creds/{}",
            engine.mount, engine.role
        ),
        None,
    )
    .await
    .unwrap();
    // Until a write succeeds again: 503 (retryable) at worst, never 500.
    let mut i = 1;
    testkit::eventually(
        "a write with new credentials",
        Duration::from_secs(60),
        || {
            i += 1;
            let sent = create(i);
            async move {
                let status = sent.await.ok()?.status();
                assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR);
                (status == StatusCode::CREATED).then_some(())
            }
        },
    )
    .await
    .unwrap();
    // Well before the 1 h lease would have been renewed or rotated.
    assert!(leases.current().generation >= 2);
}
