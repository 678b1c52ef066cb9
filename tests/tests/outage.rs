//! The README's "An outage": the store service hangs (frozen, as `pkill
//! -STOP` does) under the gateway; reads get the last good copy marked
//! stale, a write is queued durably (202) and, once the service is back,
//! replayed exactly once: the change is visible through the service itself
//! and in PostgreSQL.

use reqwest::Method;
use serde_json::{Value, json};
use system_tests::{Platform, SETTLE, json_body};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_and_its_replay() {
    let platform = Platform::start(0).await;
    let token = platform.token("stores:read stores:write").await;

    let created = platform
        .send_json(
            Method::POST,
            "/api/stores",
            &token,
            &[],
            &json!({"name": "Outage Shop"}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created = json_body(created).await;
    let id = created["store"]["id"]
        .as_str()
        .expect("store id")
        .to_owned();
    let store = format!("/api/stores/{id}");
    // A good copy, kept by the gateway.
    let (status, good) = platform.get_json(&store, &token).await;
    assert_eq!(status, 200);
    assert_eq!(good["store"]["status"], "PROVISIONING");
    assert!(good.get("meta").is_none(), "{good}");

    platform.store.freeze().expect("store-service freezes");

    // The read: the last good copy, marked stale (the route times out).
    let stale = platform
        .through_gateway(Method::GET, &store, &token)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    assert!(stale.headers().contains_key("age"));
    let cache_status = stale.headers()["cache-status"].to_str().unwrap().to_owned();
    assert!(cache_status.starts_with("gateway;"), "{cache_status}");
    let stale = json_body(stale).await;
    assert_eq!(stale["store"], good["store"], "the original JSON");
    assert_eq!(stale["meta"]["isStale"], true, "{stale}");
    assert!(
        matches!(
            stale["meta"]["staleReason"].as_str(),
            Some("timeout" | "circuit_open")
        ),
        "{stale}"
    );

    // A write: queued, 202 with its request's address.
    let queued = platform
        .send_json(
            Method::PUT,
            &store,
            &token,
            &[("if-match", "\"1\"")],
            &json!({"status": "ACTIVE"}),
        )
        .await;
    assert_eq!(queued.status(), 202);
    let location = queued.headers()["location"].to_str().unwrap().to_owned();
    assert!(queued.headers().contains_key("retry-after"));
    let queued = json_body(queued).await;
    assert_eq!(queued["status"], "accepted", "{queued}");
    let request_id = queued["requestId"].as_str().expect("requestId").to_owned();
    assert_eq!(location, format!("/api/requests/{request_id}"));
    let (_, record) = platform.get_json(&location, &token).await;
    assert!(
        matches!(record["status"].as_str(), Some("queued" | "replaying")),
        "{record}"
    );
    assert_eq!(record["method"], "PUT");
    // Only its sender reads a queued write.
    let other = platform.token("stores:read").await;
    assert_eq!(platform.get_json(&location, &other).await.0, 404);

    // The service comes back: the write is replayed once.
    platform.store.thaw().expect("store-service thaws");
    let finished = platform.finished(&request_id, &token).await;
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(finished["response"]["status"], 200, "{finished}");
    assert_eq!(finished["response"]["body"]["store"]["status"], "ACTIVE");
    assert_eq!(finished["response"]["body"]["store"]["version"], 2);

    // Visible through the service itself (not a gateway copy)...
    let (status, direct) = platform.store_json(&store).await;
    assert_eq!(status, 200);
    assert_eq!(direct["store"]["status"], "ACTIVE", "{direct}");
    assert_eq!(direct["store"]["version"], 2, "{direct}");
    // ...through the gateway, fresh once its breaker lets calls through...
    let fresh = testkit::eventually("a fresh read through the gateway", SETTLE, || {
        let request = platform.through_gateway(Method::GET, &store, &token).send();
        async move {
            let body: Value = request.await.ok()?.json().await.ok()?;
            body.get("meta").is_none().then_some(body)
        }
    })
    .await
    .unwrap();
    assert_eq!(fresh["store"], direct["store"]);
    // ...and in PostgreSQL: one update, applied once.
    let db = platform.db().await;
    let row = db
        .query_one(
            "SELECT status::text, version FROM stores WHERE id::text = $1",
            &[&id],
        )
        .await
        .unwrap();
    let (status, version): (String, i32) = (row.get(0), row.get(1));
    assert_eq!((status.as_str(), version), ("ACTIVE", 2));
    let (_, history) = platform.store_json(&format!("{store}/history")).await;
    assert_eq!(
        history["events"].as_array().map(Vec::len),
        Some(2),
        "created, then activated once: {history}"
    );
}
