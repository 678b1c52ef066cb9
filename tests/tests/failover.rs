//! A primary failover under the gateway: writers create stores through
//! the gateway, each write with an `Idempotency-Key` and retried with it
//! until acknowledged (201, or 202 queued by the gateway), while the
//! primary is killed and the replica promoted (synchronous replication).
//! No acknowledged write is lost, and each key made exactly one store.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use system_tests::{Platform, SETTLE};

/// How a write was acknowledged.
enum Ack {
    /// 201: the store's id.
    Created(String),
    /// 202: queued by the gateway; the request's id.
    Queued(String),
}

const WRITERS: usize = 4;
/// Writes each writer makes once the replica is promoted.
const AFTER_PROMOTION: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_is_lost_across_a_failover_under_the_gateway() {
    let platform = Arc::new(Platform::start(1).await);
    let (old, new) = (platform.pg.primary(), platform.pg.replicas()[0]);
    platform.pg.wait_streaming(new).await.unwrap();
    platform.pg.set_synchronous_standbys(old, 1).await.unwrap();
    let token = Arc::new(platform.token("stores:read stores:write").await);

    let promoted = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (platform, token, promoted, sent) = (
                Arc::clone(&platform),
                Arc::clone(&token),
                Arc::clone(&promoted),
                Arc::clone(&sent),
            );
            tokio::spawn(async move {
                let mut acks = Vec::new();
                let mut after = 0;
                for i in 0.. {
                    let was_promoted = promoted.load(Ordering::SeqCst);
                    let name = format!("Failover Shop {w}-{i}");
                    acks.push((name.clone(), write(&platform, &token, &name, &sent).await));
                    if was_promoted {
                        after += 1;
                        if after == AFTER_PROMOTION {
                            break;
                        }
                    }
                }
                acks
            })
        })
        .collect();

    // Kill the primary with writes in flight, then promote the replica.
    testkit::eventually("writes in flight", SETTLE, || {
        let count = sent.load(Ordering::SeqCst);
        async move { (count >= 4 * WRITERS).then_some(()) }
    })
    .await
    .unwrap();
    platform.pg.kill(old).await.unwrap();
    platform.pg.promote(new).await.unwrap();
    promoted.store(true, Ordering::SeqCst);

    let mut acks = Vec::new();
    for writer in writers {
        acks.extend(writer.await.expect("a writer panicked"));
    }
    let queued = acks
        .iter()
        .filter(|(_, ack)| matches!(ack, Ack::Queued(_)))
        .count();
    eprintln!(
        "{} writes acknowledged, {queued} of them queued",
        acks.len()
    );

    // Queued writes are replayed; each ends as the store it created.
    let mut ids = Vec::new();
    for (name, ack) in &acks {
        let id = match ack {
            Ack::Created(id) => id.clone(),
            Ack::Queued(request) => {
                let record = platform.finished(request, &token).await;
                assert_eq!(record["status"], "completed", "{name}: {record}");
                assert_eq!(record["response"]["status"], 201, "{name}: {record}");
                record["response"]["body"]["store"]["id"]
                    .as_str()
                    .expect("the replayed store's id")
                    .to_owned()
            }
        };
        ids.push((name, id));
    }

    // Every acknowledged store is on the new primary, read through the
    // gateway (never seen before, so never a stale copy) and the service.
    for (name, id) in &ids {
        let path = format!("/api/stores/{id}");
        let (status, got) = platform.get_json(&path, &token).await;
        assert_eq!(status, 200, "acknowledged store {name} ({id}) lost: {got}");
        assert!(got.get("meta").is_none(), "{got}");
        assert_eq!(got["store"]["name"], name.as_str());
        let (status, direct) = platform.store_json(&path).await;
        assert_eq!(status, 200, "{name} through the service: {direct}");
    }
    // Exactly one store per key.
    assert_eq!(platform.pg.primary(), new);
    let db = platform.db().await;
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT name) FROM stores WHERE name LIKE 'Failover Shop %'",
            &[],
        )
        .await
        .unwrap();
    let (stores, names): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!((stores, names), (acks.len() as i64, acks.len() as i64));
}

/// Creates the store `name` through the gateway with an idempotency key,
/// retrying with that key until the write is acknowledged: while the
/// database fails over the answer may be 503 or 504 (the outcome unknown
/// to the client) or 409 (the key held by the attempt in flight).
async fn write(platform: &Platform, token: &str, name: &str, sent: &AtomicUsize) -> Ack {
    let key = name.replace(' ', "-");
    testkit::eventually(&format!("{name} to be acknowledged"), SETTLE, || {
        sent.fetch_add(1, Ordering::SeqCst);
        let request = platform
            .through_gateway(Method::POST, "/api/stores", token)
            .header("idempotency-key", &key)
            .json(&json!({ "name": name }))
            .send();
        async move {
            let response = request.await.ok()?;
            let status = response.status();
            match status {
                StatusCode::CREATED => {
                    let body: Value = response.json().await.ok()?;
                    Some(Ack::Created(body["store"]["id"].as_str()?.to_owned()))
                }
                StatusCode::ACCEPTED => {
                    let body: Value = response.json().await.ok()?;
                    Some(Ack::Queued(body["requestId"].as_str()?.to_owned()))
                }
                StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
                | StatusCode::CONFLICT => None,
                other => panic!(
                    "{name}: unexpected {other}: {}",
                    response.text().await.unwrap_or_default()
                ),
            }
        }
    })
    .await
    .unwrap()
}
