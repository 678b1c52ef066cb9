//! Gateways as a fleet (issue 15): two gateway processes share one write
//! queue on a real 3-node NATS JetStream cluster, in front of the real
//! store service, PostgreSQL and OpenBao. The same scenario of one gateway
//! runs on the embedded redb queue.
//!
//! The store service is frozen (SIGSTOP) and the gateways' breakers are
//! opened first, so every write is queued without being sent: what the
//! tests see applied was applied by a replay.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use system_tests::{LEASE, Platform, Queue, SETTLE, json_body};

/// The stream of the fleet's writes (`degraded.jetstream.prefix` "gateway").
const STREAM: &str = "GATEWAY_WRITES";

/// Creates a store named `name` through gateway 0; its path.
async fn create(platform: &Platform, token: &str, name: &str) -> String {
    let created = platform
        .send_json(
            Method::POST,
            "/api/stores",
            token,
            &[],
            &json!({ "name": name }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let created = json_body(created).await;
    format!("/api/stores/{}", created["store"]["id"].as_str().unwrap())
}

/// Reads `path` through every gateway until each answers fresh (its
/// breaker closed), so that each keeps a good copy of the store as it is.
async fn keep_good_copies(platform: &Platform, path: &str, token: &str) {
    for i in 0..platform.gateways.len() {
        testkit::eventually(&format!("a fresh read through gateway {i}"), SETTLE, || {
            let read = platform.through(i, Method::GET, path, token).send();
            async move {
                let answer = read.await.ok()?;
                let status = answer.status();
                let body: Value = answer.json().await.ok()?;
                (status == 200 && body.get("meta").is_none()).then_some(())
            }
        })
        .await
        .unwrap();
    }
}

/// Reads `path` through gateway `i` until its breaker is open (the read is
/// answered from its stale copy with `staleReason: circuit_open`): from
/// then on its writes are queued without being sent.
async fn open_breaker(platform: &Platform, i: usize, path: &str, token: &str) {
    // The breaker opens after 10 failed calls (the store-service preset):
    // 12 at once time out together instead of one after the other.
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..12 {
        reads.spawn(platform.through(i, Method::GET, path, token).send());
    }
    while reads.join_next().await.is_some() {}
    testkit::eventually(&format!("gateway {i}'s breaker to open"), SETTLE, || {
        let read = platform.through(i, Method::GET, path, token).send();
        async move {
            let body: Value = read.await.ok()?.json().await.ok()?;
            (body["meta"]["staleReason"] == "circuit_open").then_some(())
        }
    })
    .await
    .unwrap();
}

/// `PUT path` through gateway `i` with `If-Match: "version"`, renaming the
/// store; the 202's request id.
async fn queue_put(platform: &Platform, i: usize, path: &str, token: &str, version: i32) -> String {
    let answer = platform
        .send_json_via(
            i,
            Method::PUT,
            path,
            token,
            &[("if-match", &format!("\"{version}\""))],
            &json!({ "name": format!("Chain v{}", version + 1) }),
        )
        .await;
    accepted(answer).await
}

/// `POST /api/stores` of `name` through gateway `i` with an
/// `Idempotency-Key`; the 202's request id.
async fn queue_post(platform: &Platform, i: usize, token: &str, name: &str) -> String {
    let key = format!("create-{}", name.replace(' ', "-"));
    let answer = platform
        .send_json_via(
            i,
            Method::POST,
            "/api/stores",
            token,
            &[("idempotency-key", &key)],
            &json!({ "name": name }),
        )
        .await;
    accepted(answer).await
}

/// The request id of a 202 (anything else fails the test: nothing may be
/// refused).
async fn accepted(answer: reqwest::Response) -> String {
    let status = answer.status();
    let location = answer
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = json_body(answer).await;
    assert_eq!(status, 202, "{body}");
    let id = body["requestId"].as_str().expect("requestId").to_owned();
    assert_eq!(location, Some(format!("/api/requests/{id}")));
    id
}

/// The store at `path` and the number of its history events, from the
/// store service itself.
async fn store_and_history(platform: &Platform, path: &str) -> (Value, usize) {
    let (status, store) = platform.store_json(path).await;
    assert_eq!(status, 200, "{store}");
    let (_, history) = platform.store_json(&format!("{path}/history")).await;
    let events = history["events"].as_array().map_or(0, Vec::len);
    (store["store"].clone(), events)
}

/// How many stores named `name` PostgreSQL holds.
async fn rows_named(platform: &Platform, name: &str) -> i64 {
    platform
        .db()
        .await
        .query_one("SELECT count(*) FROM stores WHERE name = $1", &[&name])
        .await
        .unwrap()
        .get(0)
}

/// Waits until `id` is finished, read through gateway `i`, and checks it
/// completed with `status`.
async fn completed(platform: &Platform, i: usize, id: &str, token: &str, status: u16) {
    let record = platform.finished_via(i, id, token).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["response"]["status"], status, "{record}");
}

/// Test 1, 2 and 6 of the issue: writes accepted by every gateway while the
/// store service is frozen; each status readable from the other gateway
/// (and by nobody else); after the service resumes each write applied
/// exactly once; a PUT chain (`If-Match` "1", "2", "3") alternating
/// gateways ends at version 4 with no 412 or 409.
async fn writes_are_shared_ordered_and_applied_once(platform: Platform) {
    let n = platform.gateways.len();
    let token = platform.token("stores:read stores:write").await;
    let other = platform.token("stores:read").await;
    let chain = create(&platform, &token, "Chain v1").await;
    keep_good_copies(&platform, &chain, &token).await;

    platform.store.freeze().expect("store-service freezes");
    for i in 0..n {
        open_breaker(&platform, i, &chain, &token).await;
    }
    let mut queued = Vec::new();
    for version in 1..=3 {
        let via = (version as usize - 1) % n;
        let id = queue_put(&platform, via, &chain, &token, version).await;
        queued.push((via, id, 200));
    }
    let names: Vec<String> = (0..n).map(|i| format!("Fleet Shop {i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let id = queue_post(&platform, i, &token, name).await;
        queued.push((i, id, 201));
    }
    // Any gateway answers the sender about any write; nobody else.
    for (via, id, _) in &queued {
        let reader = (via + 1) % n;
        let path = format!("/api/requests/{id}");
        let (status, record) = platform.get_json_via(reader, &path, &token).await;
        assert_eq!(status, 200, "gateway {reader} about {id}: {record}");
        assert!(
            matches!(record["status"].as_str(), Some("queued" | "replaying")),
            "{record}"
        );
        assert_eq!(platform.get_json_via(reader, &path, &other).await.0, 404);
    }

    platform.store.thaw().expect("store-service thaws");
    for (via, id, status) in &queued {
        completed(&platform, (via + 1) % n, id, &token, *status).await;
    }
    let (store, events) = store_and_history(&platform, &chain).await;
    assert_eq!(store["version"], 4, "{store}");
    assert_eq!(store["name"], "Chain v4", "{store}");
    assert_eq!(events, 4, "created, then three updates, each once");
    for name in &names {
        assert_eq!(rows_named(&platform, name).await, 1, "{name} applied once");
    }
    if n < 2 {
        return;
    }

    // A gateway that never saw the outage (its breaker closed) gets a
    // write to a resource another gateway has queued writes for: it
    // queues it behind them instead of overtaking them (which would end
    // in 412: the store is still at the version before the queued one).
    keep_good_copies(&platform, &chain, &token).await;
    platform.store.freeze().expect("store-service freezes");
    open_breaker(&platform, 0, &chain, &token).await;
    let first = queue_put(&platform, 0, &chain, &token, 4).await;
    platform.store.thaw().expect("store-service thaws");
    let second = platform
        .send_json_via(
            1,
            Method::PUT,
            &chain,
            &token,
            &[("if-match", "\"5\"")],
            &json!({ "name": "Chain v6" }),
        )
        .await;
    assert_eq!(second.status(), 202, "{}", json_body(second).await);
    let second = json_body(second).await["requestId"]
        .as_str()
        .unwrap()
        .to_owned();
    completed(&platform, 1, &first, &token, 200).await;
    completed(&platform, 0, &second, &token, 200).await;
    let (store, events) = store_and_history(&platform, &chain).await;
    assert_eq!((store["version"].clone(), events), (json!(6), 6), "{store}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_status_and_order_on_jetstream() {
    writes_are_shared_ordered_and_applied_once(Platform::fleet(2).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateway_on_redb_keeps_the_same_promises() {
    let platform = Platform::start_with(0, Queue::Redb).await;
    writes_are_shared_ordered_and_applied_once(platform).await;
}

/// Test 3: a gateway killed (`kill -9`) while it holds unreplayed writes;
/// the other replays them, each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_gateways_writes_are_replayed_by_another() {
    let mut platform = Platform::fleet(2).await;
    let token = platform.token("stores:read stores:write").await;
    let chain = create(&platform, &token, "Chain v1").await;
    keep_good_copies(&platform, &chain, &token).await;

    // Only gateway 0 accepts and tries the writes.
    platform.gateways[1].freeze().expect("gateway 1 freezes");
    platform.store.freeze().expect("store-service freezes");
    open_breaker(&platform, 0, &chain, &token).await;
    let mut queued = Vec::new();
    for version in 1..=3 {
        queued.push((queue_put(&platform, 0, &chain, &token, version).await, 200));
    }
    queued.push((queue_post(&platform, 0, &token, "Orphan Shop").await, 201));
    // Gateway 0 has taken up the chain's head: its replay was tried (the
    // breaker's answer or an attempt) and the write is not finished.
    let head = format!("/api/requests/{}", queued[0].0);
    testkit::eventually("gateway 0 to try the first write", SETTLE, || async {
        let (_, record) = platform.get_json_via(0, &head, &token).await;
        (!record["lastError"].is_null() || record["status"] == "replaying").then_some(())
    })
    .await
    .unwrap();

    platform.gateways[0].kill();
    platform.gateways[1].thaw().expect("gateway 1 thaws");
    platform.store.thaw().expect("store-service thaws");
    for (id, status) in &queued {
        completed(&platform, 1, id, &token, *status).await;
    }
    let (store, events) = store_and_history(&platform, &chain).await;
    assert_eq!(store["version"], 4, "{store}");
    assert_eq!(events, 4, "created, then three updates, each once");
    assert_eq!(rows_named(&platform, "Orphan Shop").await, 1);
}

/// Tests 4 and 5: one NATS node killed before and during the writes
/// (each time the stream's leader): nothing refused, nothing lost. Then
/// the whole cluster frozen: writes get 503 `WRITE_QUEUE_UNAVAILABLE` with
/// `Retry-After`, never a 202, and reads still get stale answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_faults_refuse_nothing_lose_nothing_and_never_fake_a_202() {
    let platform = Platform::fleet(2).await;
    let nats = platform.nats.as_ref().expect("the fleet's NATS cluster");
    let token = platform.token("stores:read stores:write").await;
    let chain = create(&platform, &token, "Chain v1").await;
    keep_good_copies(&platform, &chain, &token).await;
    platform.store.freeze().expect("store-service freezes");
    for i in 0..2 {
        open_breaker(&platform, i, &chain, &token).await;
    }
    let leader = || async {
        testkit::eventually("the writes' stream to have a leader", SETTLE, || {
            nats.stream_leader(STREAM)
        })
        .await
        .unwrap()
    };

    // Before: the stream's leader is gone when the writes come.
    let first = leader().await;
    nats.kill(first).await.unwrap();
    let mut queued = Vec::new();
    for version in 1..=3 {
        let via = (version as usize - 1) % 2;
        queued.push((
            queue_put(&platform, via, &chain, &token, version).await,
            200,
        ));
    }
    nats.restart(first).await.unwrap();
    nats.wait_ready().await.unwrap();

    // During: the new leader is killed while writes arrive.
    let second = leader().await;
    let names: Vec<String> = (0..6).map(|i| format!("Windy Shop {i}")).collect();
    let (_, during) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            nats.kill(second).await.unwrap();
        },
        async {
            let mut ids = Vec::new();
            for (i, name) in names.iter().enumerate() {
                ids.push((queue_post(&platform, i % 2, &token, name).await, 201));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            ids
        }
    );
    queued.extend(during);

    // Nothing lost: each write replayed once, the chain in order.
    platform.store.thaw().expect("store-service thaws");
    for (k, (id, status)) in queued.iter().enumerate() {
        completed(&platform, k % 2, id, &token, *status).await;
    }
    let (store, events) = store_and_history(&platform, &chain).await;
    assert_eq!(store["version"], 4, "{store}");
    assert_eq!(events, 4, "created, then three updates, each once");
    for name in &names {
        assert_eq!(rows_named(&platform, name).await, 1, "{name} applied once");
    }
    nats.restart(second).await.unwrap();
    nats.wait_ready().await.unwrap();

    // The whole cluster frozen (and the store service down again).
    keep_good_copies(&platform, &chain, &token).await;
    platform.store.freeze().expect("store-service freezes");
    for i in 0..2 {
        open_breaker(&platform, i, &chain, &token).await;
    }
    nats.freeze_all().await.unwrap();
    let refused = platform
        .send_json_via(
            1,
            Method::PUT,
            &chain,
            &token,
            &[("if-match", "\"4\"")],
            &json!({ "name": "Never Accepted" }),
        )
        .await;
    let status = refused.status();
    let retry_after = refused.headers().contains_key("retry-after");
    let problem = json_body(refused).await;
    let (read_status, stale) = platform.get_json_via(0, &chain, &token).await;
    nats.thaw_all().await.unwrap();
    platform.store.thaw().expect("store-service thaws");
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["error"], "WRITE_QUEUE_UNAVAILABLE", "{problem}");
    assert!(retry_after, "503 without Retry-After");
    assert_eq!(read_status, 200, "{stale}");
    assert_eq!(stale["meta"]["isStale"], true, "{stale}");
    assert_eq!(stale["store"]["version"], 4, "{stale}");
    // Nothing of the refused write was kept or applied.
    tokio::time::sleep(LEASE).await;
    assert_eq!(rows_named(&platform, "Never Accepted").await, 0);
    let (store, _) = store_and_history(&platform, &chain).await;
    assert_eq!(store["version"], 4, "{store}");
}
