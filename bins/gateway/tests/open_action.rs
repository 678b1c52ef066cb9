//! A route's breaker preset decides what an unavailable upstream means
//! (`on_open`): `fallback` serves the last good copy of a read and queues a
//! write (202), `deny` fails closed (no stale copy, no queue: 503 once its
//! breaker is open). Two routes to the same failing upstream, one of each.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::{Method, StatusCode, Uri},
};
use common::*;
use serde_json::{Value, json};

/// An upstream that answers 200/201 with JSON while `healthy`, else 500.
async fn switchable_upstream() -> (SocketAddr, Arc<AtomicBool>) {
    let healthy = Arc::new(AtomicBool::new(true));
    let app = Router::new()
        .fallback(
            |State(healthy): State<Arc<AtomicBool>>, method: Method, uri: Uri| async move {
                let status = match (healthy.load(Ordering::SeqCst), method) {
                    (false, _) => StatusCode::INTERNAL_SERVER_ERROR,
                    (true, Method::POST) => StatusCode::CREATED,
                    (true, _) => StatusCode::OK,
                };
                (status, Json(json!({ "path": uri.path() })))
            },
        )
        .with_state(Arc::clone(&healthy));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, healthy)
}

fn config(security: &Security, upstream: SocketAddr) -> String {
    let route = |name: &str, on_open: &str| {
        format!(
            r#"
[[routes]]
name = "{name}"
prefix = "/api/{name}"
upstream = "http://{upstream}"
timeout = "2s"
scopes = {{ GET = ["stores:read"], POST = ["stores:write"] }}
breaker = {{ preset = "store-service", minimum_calls = 2, window = {{ kind = "count", size = 4 }}, open_wait = "60s", on_open = "{on_open}" }}
"#
        )
    };
    format!(
        r#"
[server]
drain_timeout = "5s"

[auth]
jwks_url = "{jwks}"
issuer = "{issuer}"
audiences = ["{audience}"]
fetch_timeout = "1s"

[pre_auth_limit]
per_second = 10000
burst = 100000
{fallback}
{deny}
"#,
        jwks = security.issuer.jwks_url,
        issuer = security.issuer.issuer,
        audience = security.issuer.client_id,
        fallback = route("fallback", "fallback"),
        deny = route("deny", "deny"),
    )
}

async fn send(method: Method, url: &str, token: &str) -> reqwest::Response {
    let mut request = http().request(method.clone(), url).bearer_auth(token);
    if method == Method::POST {
        request = request.json(&json!({ "name": "x" }));
    }
    request.send().await.expect("the gateway answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_preset_decides_fallback_or_fail_closed() {
    let security = Security::start().await;
    let (upstream, healthy) = switchable_upstream().await;
    let gw = RunningGateway::start(&config(&security, upstream)).await;
    let token = security.token("stores:read stores:write").await;
    let (fallback, deny) = (gw.url("/api/fallback/x"), gw.url("/api/deny/x"));

    // Up: both routes answer, and both see a good 200.
    for url in [&fallback, &deny] {
        assert_eq!(send(Method::GET, url, &token).await.status(), 200);
    }
    healthy.store(false, Ordering::SeqCst);

    // Fallback: the last good copy, marked stale, until and after the
    // breaker opens.
    for _ in 0..4 {
        let stale = send(Method::GET, &fallback, &token).await;
        assert_eq!(stale.status(), 200);
        let cache_status = stale.headers()["cache-status"].to_str().unwrap().to_owned();
        assert!(cache_status.contains("ttl=-"), "{cache_status}");
        let body: Value = stale.json().await.unwrap();
        assert_eq!(body["path"], "/api/fallback/x", "{body}");
    }
    // Deny: the upstream's failures, never the copy, then 503 once open.
    eventually(
        "the deny route's breaker to open",
        Duration::from_secs(20),
        || {
            let answer = send(Method::GET, &deny, &token);
            async move {
                let response = answer.await;
                let status = response.status();
                assert!(
                    status.is_server_error(),
                    "no stale copy on a deny route: {status}"
                );
                let retry_after = response.headers().contains_key("retry-after");
                let body: Value = response.json().await.unwrap_or_default();
                (status == 503 && body["error"] == "UPSTREAM_UNAVAILABLE" && retry_after)
                    .then_some(())
            }
        },
    )
    .await;

    // Writes while open: queued on the fallback route, refused on deny.
    let queued = send(Method::POST, &gw.url("/api/fallback/new"), &token).await;
    assert_eq!(queued.status(), 202);
    assert!(queued.headers().contains_key("location"));
    let refused = send(Method::POST, &gw.url("/api/deny/new"), &token).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "UPSTREAM_UNAVAILABLE", "{body}");
}
