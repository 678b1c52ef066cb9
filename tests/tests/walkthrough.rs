//! The README's walkthrough ("Walkthrough" and "Through the gateway"), run
//! against the real platform with a token: every request goes through the
//! gateway binary to the store-service binary.

use reqwest::Method;
use serde_json::{Value, json};
use system_tests::{Platform, json_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_through_the_gateway() {
    let platform = Platform::start(1).await;
    let token = platform.token("stores:read stores:write").await;

    // No token: 401 with a Bearer challenge.
    let refused = platform.get("/api/stores", "").await;
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
        "{challenge}"
    );

    // With it: the store service's answer plus the gateway's headers.
    let listed = platform.get("/api/stores", &token).await;
    assert_eq!(listed.status(), 200);
    for header in ["x-request-id", "ratelimit-policy", "ratelimit"] {
        assert!(listed.headers().contains_key(header), "{header} missing");
    }

    // Create, with an idempotency key and a secret (encrypted by Transit).
    let body = json!({
        "name": "Corner Shop",
        "config": {"theme": "dark"},
        "secrets": {"WIFI_PASSWORD": "hunter2"},
    });
    let create = || {
        platform.send_json(
            Method::POST,
            "/api/stores",
            &token,
            &[("idempotency-key", "demo-1")],
            &body,
        )
    };
    let created = create().await;
    assert_eq!(created.status(), 201);
    let text = created.text().await.unwrap();
    assert!(
        !text.contains("hunter2"),
        "the secret is not echoed: {text}"
    );
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(created["store"]["status"], "PROVISIONING");
    assert_eq!(created["store"]["secretKeys"], json!(["WIFI_PASSWORD"]));
    let id = created["store"]["id"]
        .as_str()
        .expect("store id")
        .to_owned();
    let store = format!("/api/stores/{id}");

    // The same key again: the first answer, not a second store.
    let again = create().await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again = json_body(again).await;
    assert_eq!(again["store"]["id"], id.as_str());

    // Read it: ETag "1".
    let read = platform.get(&store, &token).await;
    assert_eq!(read.status(), 200);
    assert_eq!(read.headers()["etag"], "\"1\"");

    // Activate it with If-Match; the same again is stale.
    let change = json!({"status": "ACTIVE"});
    let activate = || {
        platform.send_json(
            Method::PUT,
            &store,
            &token,
            &[("if-match", "\"1\"")],
            &change,
        )
    };
    let activated = activate().await;
    assert_eq!(activated.status(), 200);
    let activated = json_body(activated).await;
    assert_eq!(activated["store"]["status"], "ACTIVE");
    assert_eq!(activated["store"]["version"], 2);
    let stale = activate().await;
    assert_eq!(stale.status(), 412);
    assert_eq!(stale.headers()["content-type"], "application/problem+json");
    let stale = json_body(stale).await;
    assert_eq!(stale["error"], "CONCURRENCY_ERROR", "{stale}");

    // The audit trail names the token's subject (through the gateway).
    let (_, history) = platform.get_json(&format!("{store}/history"), &token).await;
    let subject = testkit::jwt_subject(&token).unwrap();
    let events = history["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "{history}");
    assert!(
        events.iter().all(|e| e["actor"] == subject.as_str()),
        "{history}"
    );

    // The secrets need their own scope: 403 insufficient_scope, then 200
    // with the value read back (decrypted by Transit).
    let secrets = format!("{store}/secrets");
    let forbidden = platform.get(&secrets, &token).await;
    assert_eq!(forbidden.status(), 403);
    let challenge = forbidden.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("error=\"insufficient_scope\"")
            && challenge.contains("scope=\"stores:secrets\""),
        "{challenge}"
    );
    let secrets_token = platform.token("stores:secrets").await;
    let (status, revealed) = platform.get_json(&secrets, &secrets_token).await;
    assert_eq!(status, 200);
    assert_eq!(revealed["secrets"], json!({"WIFI_PASSWORD": "hunter2"}));

    // At rest: only Transit ciphertext.
    let db = platform.db().await;
    let rows = db
        .query(
            "SELECT value FROM stores, jsonb_each_text(secrets) WHERE id::text = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let at_rest: String = rows[0].get(0);
    assert!(
        at_rest.starts_with("vault:v1:"),
        "plaintext at rest: {at_rest}"
    );

    // A page of stores, and the gateway's own figures.
    let (_, page) = platform.get_json("/api/stores?limit=10", &token).await;
    let ids: Vec<&str> = page["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, [id.as_str()], "{page}");
    assert_eq!(platform.get("/ready", "").await.status(), 200);
    let metrics = platform.get("/metrics", "").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_requests_total{")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_auth_failures_total{")),
        "{metrics}"
    );
}
