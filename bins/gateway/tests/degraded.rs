//! Degraded mode against a real store service (spawned binary on
//! PostgreSQL via testkit) and OpenBao as the security service: the
//! per-upstream breaker, stale reads, and writes queued durably and
//! replayed exactly once (also across a `kill -9` of the gateway).

mod common;

use std::{collections::HashMap, path::Path, time::Duration};

use common::*;
use serde_json::{Value, json};

/// The stores route straight to the store service (no relay: a stopped
/// service refuses connections), with a small breaker and a 1 s timeout.
fn route(store: &Store, extra: &str) -> String {
    format!(
        r#"
[[routes]]
name = "stores"
prefix = "/api/stores"
upstream = "http://{addr}"
timeout = "1s"
scopes = {{ GET = ["stores:read"], POST = ["stores:write"], PUT = ["stores:write"] }}
segment_scopes = {{ secrets = ["stores:secrets"] }}
sensitive_segments = ["secrets"]
breaker = {{ preset = "store-service", minimum_calls = 2, window = {{ kind = "count", size = 4 }}, open_wait = "1s" }}
{extra}
"#,
        addr = store.addr
    )
}

/// A metric's value in `text`, if present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn send(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http().request(method, url).bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("the gateway answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_and_the_breaker_per_upstream() {
    let (mut store, security) = tokio::join!(Store::start(), Security::start());
    let gw = RunningGateway::start(&config_text(
        &security.issuer.jwks_url,
        &security,
        &store,
        "",
        &route(&store, ""),
    ))
    .await;
    let token = security
        .token("stores:read stores:write stores:secrets")
        .await;
    let id = create_store(&gw, &token, "Stale Shop").await;
    let url = gw.url(&format!("/api/stores/{id}"));
    let fresh: Value = get_with(&url, &token).await.json().await.unwrap();
    assert_eq!(fresh["store"]["id"], id);
    assert!(fresh.get("meta").is_none());
    let secrets = gw.url(&format!("/api/stores/{id}/secrets"));
    assert_eq!(get_with(&secrets, &token).await.status(), 200);

    // 4xx are not failures: the breaker stays closed.
    for _ in 0..6 {
        let missing = gw.url(&format!("/api/stores/{}", uuid::Uuid::now_v7()));
        assert_eq!(get_with(&missing, &token).await.status(), 404);
    }
    let state = "gateway_upstream_circuit_state{upstream=\"stores\"}";
    assert_eq!(metric(&gw.metrics().await, state), Some(0.0));

    // The store service goes away: the last good copy, marked stale.
    store.stop().await;
    let stale = get_with(&url, &token).await;
    assert_eq!(stale.status(), 200);
    let cache_status = stale.headers()["cache-status"].to_str().unwrap().to_owned();
    assert!(stale.headers().contains_key("age"));
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["store"], fresh["store"], "the original JSON");
    assert_eq!(body["meta"]["isStale"], true);
    assert_eq!(body["meta"]["staleReason"], "service_unavailable");
    assert!(body["meta"]["dataTimestamp"].is_string() && body["meta"]["nextRetry"].is_string());
    assert!(
        cache_status.starts_with("gateway; fwd=stale")
            && cache_status.contains("service_unavailable"),
        "{cache_status}"
    );
    // Connection errors open the breaker; then nothing is sent.
    let open = eventually(
        "the stores breaker to open",
        Duration::from_secs(20),
        || {
            let request = get_with(&url, &token);
            async move {
                let body: Value = request.await.json().await.ok()?;
                (body["meta"]["staleReason"] == "circuit_open").then_some(body)
            }
        },
    )
    .await;
    assert_eq!(open["store"]["id"], id);
    let open_response = get_with(&url, &token).await;
    let cache_status = open_response.headers()["cache-status"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cache_status.starts_with("gateway; hit; ttl=-"),
        "{cache_status}"
    );
    // Nothing kept for this URL: 503 with Retry-After.
    let never_read = get_with(
        &gw.url(&format!("/api/stores/{}", uuid::Uuid::now_v7())),
        &token,
    )
    .await;
    assert_eq!(never_read.status(), 503);
    assert!(never_read.headers().contains_key("retry-after"));
    let problem: Value = never_read.json().await.unwrap();
    assert_eq!(problem["error"], "UPSTREAM_UNAVAILABLE");
    // A sensitive route is never kept.
    assert_eq!(get_with(&secrets, &token).await.status(), 503);
    let text = gw.metrics().await;
    assert_eq!(metric(&text, state), Some(1.0));
    assert!(
        metric(
            &text,
            "gateway_stale_responses_total{reason=\"circuit_open\"}"
        )
        .unwrap()
            >= 1.0
    );

    // Back: a probe closes the breaker, answers are fresh again.
    store.restart().await;
    let back = eventually("fresh answers", Duration::from_secs(20), || {
        let request = get_with(&url, &token);
        async move {
            let body: Value = request.await.json().await.ok()?;
            body.get("meta").is_none().then_some(body)
        }
    })
    .await;
    assert_eq!(back["store"]["id"], id);
    assert_eq!(metric(&gw.metrics().await, state), Some(0.0));

    // Timeouts (PostgreSQL frozen under the service): stale, `timeout`,
    // until they open the breaker too.
    store.pg.freeze(store.pg.primary()).await.unwrap();
    let timed_out: Value = get_with(&url, &token).await.json().await.unwrap();
    assert_eq!(timed_out["meta"]["staleReason"], "timeout", "{timed_out}");
    eventually(
        "timeouts to open the breaker",
        Duration::from_secs(30),
        || {
            let request = get_with(&url, &token);
            async move {
                let body: Value = request.await.json().await.ok()?;
                (body["meta"]["staleReason"] == "circuit_open").then_some(())
            }
        },
    )
    .await;
    store.pg.thaw(store.pg.primary()).await.unwrap();
}

/// An upstream that answers every request with 500.
async fn failing_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": "INTERNAL_ERROR"})),
        )
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_5xx_open_the_breaker() {
    let (store, security) = tokio::join!(Store::start(), Security::start());
    let failing = failing_upstream().await;
    let gw = RunningGateway::start(&config_text(
        &security.issuer.jwks_url,
        &security,
        &store,
        "",
        &format!(
            r#"
[[routes]]
name = "failing"
prefix = "/api/failing"
upstream = "http://{failing}"
scopes = {{ GET = ["stores:read"] }}
breaker = {{ preset = "store-service", minimum_calls = 2, window = {{ kind = "count", size = 4 }}, open_wait = "30s" }}
"#
        ),
    ))
    .await;
    let token = security.token("stores:read").await;
    let url = gw.url("/api/failing/x");
    // Nothing kept: each 500 becomes a 503 with Retry-After, until the
    // breaker opens (its Retry-After is then the open wait).
    let first = get_with(&url, &token).await;
    assert_eq!(first.status(), 503);
    eventually("5xx to open the breaker", Duration::from_secs(20), || {
        let request = get_with(&url, &token);
        async move {
            let response = request.await;
            let retry: u64 = response
                .headers()
                .get("retry-after")?
                .to_str()
                .ok()?
                .parse()
                .ok()?;
            (retry > 5).then_some(())
        }
    })
    .await;
    let state = "gateway_upstream_circuit_state{upstream=\"failing\"}";
    assert_eq!(metric(&gw.metrics().await, state), Some(1.0));
}

/// The gateway as a process of its own (so that it can be `kill -9`ed),
/// on a fixed port and queue file.
struct GatewayProcess {
    service: testkit::Service,
    base: String,
}

async fn start_gateway(dir: &Path, config: &str, port: u16) -> GatewayProcess {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    let command = testkit::ServiceCommand::new(env!("CARGO_BIN_EXE_gateway"))
        .current_dir(dir)
        .env("GATEWAY_CONFIG", &path)
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env(
            "GATEWAY_QUEUE_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )
        .env("RUST_LOG", "warn");
    let base = format!("http://127.0.0.1:{port}");
    let service = testkit::Service::start(command, format!("{base}/ready"))
        .await
        .expect("the gateway starts");
    GatewayProcess { service, base }
}

/// Polls `/api/requests/{id}` until it is finished; returns its record.
async fn finished(base: &str, id: &str, token: &str) -> Value {
    let url = format!("{base}/api/requests/{id}");
    eventually(
        &format!("request {id} to finish"),
        Duration::from_secs(90),
        || {
            let request = get_with(&url, token);
            async move {
                let record: Value = request.await.json().await.ok()?;
                matches!(record["status"].as_str(), Some("completed" | "failed")).then_some(record)
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_writes_survive_kill_9_and_apply_exactly_once_in_order() {
    let (mut store, security) = tokio::join!(Store::start(), Security::start());
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_port().unwrap();
    let config = format!(
        "{}\n[degraded]\nqueue_path = \"{}\"\n",
        config_text(
            &security.issuer.jwks_url,
            &security,
            &store,
            "",
            &route(&store, "")
        ),
        dir.path().join("queue.redb").display()
    );
    let gateway = start_gateway(dir.path(), &config, port).await;
    let alice = security.token("stores:read stores:write").await;
    let bob = security.token("stores:write stores:read").await;

    // Three stores exist before the outage.
    let mut stores = Vec::new();
    for i in 0..3 {
        let created = send(
            reqwest::Method::POST,
            &format!("{}/api/stores", gateway.base),
            &alice,
            Some(json!({"name": format!("Before {i}")})),
            &[],
        )
        .await;
        assert_eq!(created.status(), 201);
        let body: Value = created.json().await.unwrap();
        stores.push(body["store"]["id"].as_str().unwrap().to_owned());
    }

    store.stop().await;
    // 50 writes while it is down: 35 creates, and 5 updates of each store
    // in version order (If-Match 1..5), then a stale update of the first.
    let mut accepted: Vec<(String, &str)> = Vec::new();
    let accept = |response: reqwest::Response| async move {
        assert_eq!(response.status(), 202, "{:?}", response.headers());
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        assert!(response.headers().contains_key("retry-after"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "accepted");
        assert_eq!(body["message"], "Request queued for processing");
        let id = body["requestId"].as_str().unwrap().to_owned();
        assert_eq!(location, format!("/api/requests/{id}"));
        id
    };
    for i in 0..35 {
        let response = send(
            reqwest::Method::POST,
            &format!("{}/api/stores", gateway.base),
            &alice,
            Some(json!({"name": format!("Queued {i}")})),
            &[],
        )
        .await;
        accepted.push((accept(response).await, "create"));
    }
    for version in 1..=5 {
        for store_id in &stores {
            let response = send(
                reqwest::Method::PUT,
                &format!("{}/api/stores/{store_id}", gateway.base),
                &alice,
                Some(json!({"name": format!("Renamed v{version}")})),
                &[("if-match", &format!("\"{version}\""))],
            )
            .await;
            accepted.push((accept(response).await, "update"));
        }
    }
    let stale = send(
        reqwest::Method::PUT,
        &format!("{}/api/stores/{}", gateway.base, stores[0]),
        &alice,
        Some(json!({"name": "Too late", "version": 1})),
        &[],
    )
    .await;
    let stale = accept(stale).await;
    assert_eq!(accepted.len() + 1, 51);
    let queued: Value = get_with(&format!("{}/api/requests/{stale}", gateway.base), &alice)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(queued["status"], "queued", "{queued}");
    // Only the sender reads a request's status.
    let other = get_with(&format!("{}/api/requests/{stale}", gateway.base), &bob).await;
    assert_eq!(other.status(), 404);

    // kill -9 the gateway, start it again on the same queue, then the
    // store service.
    let mut gateway = gateway;
    gateway.service.kill();
    drop(gateway);
    let gateway = start_gateway(dir.path(), &config, port).await;
    store.restart().await;

    let mut outcomes = HashMap::new();
    for (id, kind) in &accepted {
        let record = finished(&gateway.base, id, &alice).await;
        assert_eq!(record["status"], "completed", "{record}");
        outcomes.insert(id.clone(), (record["response"]["status"].clone(), *kind));
    }
    for (status, kind) in outcomes.values() {
        let expected = if *kind == "create" { 201 } else { 200 };
        assert_eq!(status, &json!(expected), "{kind}");
    }
    let conflict = finished(&gateway.base, &stale, &alice).await;
    assert_eq!(conflict["status"], "completed");
    assert_eq!(conflict["response"]["status"], 409, "{conflict}");
    assert_eq!(conflict["response"]["body"]["error"], "CONCURRENCY_ERROR");

    // Exactly once: one row per create, five updates per store, in order.
    let db = store.db().await;
    let rows: i64 = db
        .query_one(
            "SELECT count(*) FROM stores WHERE name LIKE 'Queued %'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 35);
    let distinct: i64 = db
        .query_one(
            "SELECT count(DISTINCT name) FROM stores WHERE name LIKE 'Queued %'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, 35);
    for store_id in &stores {
        let id = store_id.as_str();
        let row = db
            .query_one(
                "SELECT version, name FROM stores WHERE id = $1::text::uuid",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), 6);
        assert_eq!(row.get::<_, String>(1), "Renamed v5");
        let names: Vec<String> = db
            .query(
                "SELECT changes->0->>'new' FROM store_events WHERE store_id = $1::text::uuid AND kind = 'UPDATED' ORDER BY version",
                &[&id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(
            names,
            (1..=5).map(|v| format!("Renamed v{v}")).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_and_a_timed_out_write_is_replayed_once() {
    let (mut store, security) = tokio::join!(Store::start(), Security::start());
    let queue_dir = tempfile::tempdir().unwrap();
    let gw = RunningGateway::start(&config_text(
        &security.issuer.jwks_url,
        &security,
        &store,
        "",
        &format!(
            "{}\n[degraded]\nqueue_path = \"{}\"\nqueue_max_entries = 3\n",
            route(&store, ""),
            queue_dir.path().join("queue.redb").display()
        ),
    ))
    .await;
    let token = security.token("stores:read stores:write").await;
    let stores_url = gw.url("/api/stores");
    let post = |name: &str| {
        send(
            reqwest::Method::POST,
            &stores_url,
            &token,
            Some(json!({"name": name})),
            &[],
        )
    };

    // A write whose upstream call timed out after it was sent (PostgreSQL
    // frozen under the store service) is queued; its Idempotency-Key makes
    // the replay safe: the row exists once.
    store.pg.freeze(store.pg.primary()).await.unwrap();
    let timed_out = post("Timed Out Shop").await;
    assert_eq!(timed_out.status(), 202);
    let timed_out: Value = timed_out.json().await.unwrap();
    store.pg.thaw(store.pg.primary()).await.unwrap();
    let record = finished(&gw.base, timed_out["requestId"].as_str().unwrap(), &token).await;
    assert_eq!(record["status"], "completed", "{record}");
    assert_eq!(record["response"]["status"], 201, "{record}");
    let db = store.db().await;
    let once: i64 = db
        .query_one(
            "SELECT count(*) FROM stores WHERE name = 'Timed Out Shop'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(once, 1);

    // Full: three accepted, the fourth refused with 503 (nothing dropped).
    store.stop().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let response = post(&format!("Bounded {i}")).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        ids.push(body["requestId"].as_str().unwrap().to_owned());
    }
    let refused = post("Bounded 3").await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["error"], "WRITE_QUEUE_FULL");
    let text = gw.metrics().await;
    assert_eq!(metric(&text, "gateway_queue_depth"), Some(3.0));
    assert!(metric(&text, "gateway_queue_oldest_age_seconds").is_some());
    store.restart().await;
    for id in &ids {
        let record = finished(&gw.base, id, &token).await;
        assert_eq!(record["response"]["status"], 201, "{record}");
    }
    let bounded: i64 = db
        .query_one(
            "SELECT count(*) FROM stores WHERE name LIKE 'Bounded %'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(bounded, 3);
    assert!(
        metric(
            &gw.metrics().await,
            "gateway_replays_total{outcome=\"completed\"}"
        )
        .unwrap()
            >= 4.0
    );
}
