//! OpenBao stopped: the service keeps serving with its current credentials
//! (secrets, which need Transit, answer 503), a renewal of the database
//! lease fails meanwhile, and when OpenBao returns the lease is renewed
//! again (or rotated) and Transit works.

mod common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::DatabaseEngine;
use tokio::sync::broadcast::error::RecvError;
use vault_client::LeaseEvent;

/// The next lease event `wanted` accepts, within `within`.
async fn next_event(
    events: &mut tokio::sync::broadcast::Receiver<LeaseEvent>,
    within: Duration,
    wanted: impl Fn(&LeaseEvent) -> bool,
) -> Option<LeaseEvent> {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(event) if wanted(&event) => return Some(event),
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_stopped_then_restarted() {
    // Leases short enough that a renewal falls inside the outage.
    let stack = common::stack_with(DatabaseEngine {
        default_ttl: Duration::from_secs(6),
        max_ttl: Duration::from_secs(600),
        ..DatabaseEngine::default()
    })
    .await;
    let leases = stack.state.leases.clone().expect("credentials from Vault");
    let mut events = leases.subscribe();
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

    // A renewal comes due during the outage and fails; the service keeps
    // serving on the credentials it has.
    let failed = next_event(&mut events, Duration::from_secs(20), |e| {
        matches!(e, LeaseEvent::Failed { .. })
    })
    .await;
    assert!(
        failed.is_some(),
        "no renewal was attempted during the outage"
    );
    let during = stack
        .create(json!({"name": "After A Failed Renewal"}))
        .await;
    assert_eq!(during.status(), StatusCode::CREATED);

    stack.bao.restart().await.unwrap();
    // The lease is renewed (or, if it could not be, replaced) once OpenBao
    // is back, and the credentials in use are valid for a while again.
    let resumed = next_event(&mut events, Duration::from_secs(30), |e| {
        matches!(e, LeaseEvent::Renewed { .. } | LeaseEvent::Rotated { .. })
    })
    .await;
    assert!(
        resumed.is_some(),
        "lease renewal did not resume after OpenBao returned"
    );
    assert!(
        leases.current().expires_at > std::time::SystemTime::now(),
        "the current credentials have expired"
    );
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
