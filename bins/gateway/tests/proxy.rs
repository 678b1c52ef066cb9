//! Proxying through the gateway to the real store service (and, to see
//! exactly what an upstream receives, a local echo upstream on a second
//! route); bad input refused before anything is forwarded; rate limits.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;
use serde_json::Value;

fn routes(store: &Store, echo: SocketAddr) -> String {
    format!(
        r#"
[[routes]]
prefix = "/api/stores"
upstream = "http://{store}"
scopes = {{ GET = ["stores:read"], POST = ["stores:write"], PUT = ["stores:write"] }}
segment_scopes = {{ secrets = ["stores:secrets"] }}
sensitive_segments = ["secrets"]
openapi = "/openapi.json"

[[routes]]
prefix = "/api/echo"
upstream = "http://{echo}"
scopes = {{ GET = ["stores:read"], POST = ["stores:write"] }}
rate_limit = {{ per_second = 1, burst = 3 }}
"#,
        store = store.relay.addr,
    )
}

/// The store service, OpenBao, the echo upstream and a gateway with both
/// routes.
async fn echo_stack() -> (Store, Security, SocketAddr, Seen, RunningGateway) {
    let (store, security) = tokio::join!(Store::start(), Security::start());
    let (echo, seen) = echo_upstream().await;
    let gw = RunningGateway::start(&config_text(
        &security.issuer.jwks_url,
        &security,
        &store,
        "",
        &routes(&store, echo),
    ))
    .await;
    (store, security, echo, seen, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_bodies_headers_ids_and_reuses_upstream_connections() {
    let (store, security, echo, seen, gw) = echo_stack().await;
    let token = security.token("stores:read stores:write").await;
    let http = http();

    // Bodies both ways, against the real store service.
    let id = create_store(&gw, &token, "Gateway Shop").await;
    let read = http
        .get(gw.url(&format!("/api/stores/{id}")))
        .bearer_auth(&token)
        .header("x-request-id", "client-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    // The store service echoes the id it received: the gateway forwarded
    // the client's id, and echoes it too.
    assert_eq!(read.headers()["x-request-id"], "client-id-42");
    assert!(
        read.headers().contains_key("etag"),
        "store headers come back"
    );
    let body: Value = read.json().await.unwrap();
    assert_eq!(body["store"]["name"], "Gateway Shop");

    // A store-service error body passes through untouched.
    let missing = get_with(
        &gw.url("/api/stores/00000000-0000-7000-8000-000000000000"),
        &token,
    )
    .await;
    assert_eq!(missing.status(), 404);
    let problem: Value = missing.json().await.unwrap();
    assert_eq!(problem["message"], "Store not found.", "{problem}");

    // What an upstream receives: headers, hop-by-hop removal, forwarding.
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let echoed: Value = http
        .post(gw.url("/api/echo/things?x=1&y=%20"))
        .bearer_auth(&token)
        .header("host", "api.example.test")
        .header("connection", "keep-alive, x-client-hop")
        .header("x-client-hop", "must-not-pass")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-custom", "kept")
        .header("traceparent", traceparent)
        .header("x-request-id", "bad id with spaces")
        .body("hello upstream")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let headers = &echoed["headers"];
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["uri"], "/api/echo/things?x=1&y=%20");
    assert_eq!(echoed["body"], "hello upstream");
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(headers["traceparent"], traceparent);
    // The client is no trusted proxy: its X-Forwarded-For is replaced.
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "api.example.test");
    assert_eq!(headers["host"], echo.to_string());
    for hop in [
        "x-client-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
        "transfer-encoding",
    ] {
        assert!(headers.get(hop).is_none(), "{hop} was forwarded: {headers}");
    }
    // An insane client id is replaced by a UUIDv7, forwarded as such.
    let replaced = headers["x-request-id"].as_str().unwrap();
    assert_eq!(replaced.len(), 36, "{replaced}");
    assert_eq!(&replaced[14..15], "7", "{replaced}");

    // Response side: hop-by-hop and Connection-listed headers removed,
    // the rest kept, the request id echoed.
    let response = http
        .get(gw.url("/api/echo/x"))
        .bearer_auth(&token)
        .header("x-request-id", "abc.123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-upstream"], "kept");
    assert!(response.headers().get("x-upstream-hop").is_none());
    assert!(response.headers().get("keep-alive").is_none());
    assert_eq!(response.headers()["x-request-id"], "abc.123");
    assert_eq!(
        seen.lock().unwrap().last().unwrap()["headers"]["x-request-id"],
        "abc.123"
    );

    // A chunked body within the limit is forwarded whole, with a length.
    let answer = raw_request(
        gw.addr,
        format!(
            "POST /api/echo/chunked HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\na\r\npart one, \r\n8\r\npart two\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let chunked = seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(chunked["body"], "part one, part two");
    assert_eq!(chunked["headers"]["content-length"], "18");
    assert!(chunked["headers"].get("transfer-encoding").is_none());

    // Upstream keep-alive: sequential requests share pooled connections.
    let before = store.relay.connections();
    for _ in 0..30 {
        let r = http
            .get(gw.url(&format!("/api/stores/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let opened = store.relay.connections() - before;
    assert!(
        opened <= 3,
        "30 sequential requests opened {opened} upstream connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_never_forwarded() {
    let (store, security, _echo, seen, gw) = echo_stack().await;
    let token = security
        .token("stores:read stores:write stores:secrets")
        .await;
    let http = http();
    let auth = format!("Authorization: Bearer {token}\r\n");
    let before = store.api_requests().await;

    // Oversized bodies: declared, and chunked.
    let big = "x".repeat(4096);
    let declared = http
        .post(gw.url("/api/stores"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(format!("{{\"name\": \"{big}\"}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(declared.status(), 413);
    let problem: Value = declared.json().await.unwrap();
    assert_eq!(problem["error"], "PAYLOAD_TOO_LARGE");
    let chunked = raw_request(
        gw.addr,
        format!(
            "POST /api/stores HTTP/1.1\r\nHost: gw\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&chunked), 413, "{chunked}");

    // Idempotency keys the store API would refuse: refused here, before
    // they are forwarded (or, with the upstream down, queued with a 202).
    for key in ["two words", &"k".repeat(256), "tab\tkey"] {
        let refused = http
            .post(gw.url("/api/stores"))
            .bearer_auth(&token)
            .header("idempotency-key", key)
            .json(&serde_json::json!({"name": "Keyed Shop"}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{key}");
        let problem: Value = refused.json().await.unwrap();
        assert_eq!(problem["error"], "INVALID_IDEMPOTENCY_KEY", "{key}");
    }

    // Raw requests no HTTP client would send.
    let cases: Vec<(&str, String)> = vec![
        (
            "dot-dot",
            format!(
                "GET /api/stores/../secrets HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n"
            ),
        ),
        (
            "encoded dot-dot",
            format!(
                "GET /api/stores/%2e%2e/%2e%2e/admin HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n"
            ),
        ),
        (
            "mixed dot-dot",
            format!(
                "GET /api/stores/.%2E/x HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n"
            ),
        ),
        (
            "encoded slash",
            format!(
                "GET /api/stores%2f..%2fadmin HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n"
            ),
        ),
        (
            "encoded slash in id",
            format!(
                "GET /api/stores/a%2Fb HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n"
            ),
        ),
        (
            "backslash",
            format!(
                "GET /api/stores/..\\admin HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n"
            ),
        ),
        (
            "bare CR in a header",
            format!(
                "GET /api/stores HTTP/1.1\r\nHost: gw\r\n{auth}X-Evil: a\rX-Injected: 1\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "bare LF inside a header value",
            format!(
                "GET /api/stores HTTP/1.1\r\nHost: gw\r\n{auth}X-Evil: a\nX-Injected 1\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "CRLF-encoded in the path",
            format!(
                "GET /api/stores/%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n"
            ),
        ),
        (
            "Content-Length + Transfer-Encoding",
            format!(
                "POST /api/stores HTTP/1.1\r\nHost: gw\r\n{auth}Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "two Content-Lengths",
            format!(
                "POST /api/stores HTTP/1.1\r\nHost: gw\r\n{auth}Content-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{{}}"
            ),
        ),
        (
            "obfuscated Transfer-Encoding",
            format!(
                "POST /api/stores HTTP/1.1\r\nHost: gw\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: xchunked\r\nConnection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
            ),
        ),
        (
            "Transfer-Encoding: chunked, identity",
            format!(
                "POST /api/stores HTTP/1.1\r\nHost: gw\r\n{auth}Content-Type: application/json\r\nTransfer-Encoding: chunked, identity\r\nConnection: close\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
            ),
        ),
    ];
    for (name, raw) in &cases {
        let answer = raw_request(gw.addr, raw.as_bytes()).await;
        let status = raw_status(&answer);
        assert!((400..500).contains(&status), "{name}: {answer}");
    }
    // The same through the echo route: nothing arrives there either.
    for raw in [
        format!("GET /api/echo/../stores HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n"),
        format!("GET /api/echo/%2e%2e HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n"),
        format!(
            "POST /api/echo HTTP/1.1\r\nHost: gw\r\n{auth}Content-Length: 3\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
        ),
    ] {
        let answer = raw_request(gw.addr, raw.as_bytes()).await;
        assert!((400..500).contains(&raw_status(&answer)), "{answer}");
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "forwarded: {:?}",
        seen.lock().unwrap()
    );
    assert_eq!(
        store.api_requests().await,
        before,
        "a refused request reached the store service"
    );

    // A path outside every route, and a method a route does not allow.
    let outside = get_with(&gw.url("/admin"), &token).await;
    assert_eq!(outside.status(), 404);
    let delete = http
        .delete(gw.url("/api/stores/1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 405);
    assert_eq!(delete.headers()["allow"], "GET, POST, PUT");
    assert_eq!(store.api_requests().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_per_client_with_ietf_headers() {
    let (_store, security, _echo, seen, gw) = echo_stack().await;
    let (alice, bob) = tokio::join!(
        security.token("stores:read"),
        security.token("stores:read stores:write")
    );
    // burst 3 at 1/s: three pass (r = 2, 1, 0), the fourth is a 429.
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = get_with(&gw.url("/api/echo/a"), &alice).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["ratelimit-policy"], "\"echo\";q=3;w=3");
        remaining.push(r.headers()["ratelimit"].to_str().unwrap().to_owned());
    }
    let r: Vec<&str> = remaining
        .iter()
        .map(|v| v.split(';').nth(1).unwrap())
        .collect();
    // One token may come back between two requests on a slow machine.
    assert!(
        r[0] == "r=2" && (r[2] == "r=0" || r[2] == "r=1"),
        "{remaining:?}"
    );
    let mut limited = None;
    for _ in 0..5 {
        let r = get_with(&gw.url("/api/echo/a"), &alice).await;
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let limited = limited.expect("a 429 within 5 more requests");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.headers()["ratelimit-policy"], "\"echo\";q=3;w=3");
    assert!(
        limited.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"echo\";r=0;t=")
    );
    assert_eq!(
        limited.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(problem["error"], "RATE_LIMITED");
    assert_eq!(problem["status"], 429);
    assert!(
        problem["requestId"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    let forwarded = seen.lock().unwrap().len();

    // Another client (another `sub`) has its own bucket.
    let other = get_with(&gw.url("/api/echo/a"), &bob).await;
    assert_eq!(other.status(), 200);
    assert_eq!(seen.lock().unwrap().len(), forwarded + 1);

    // The store route has the default bucket, reported too.
    let stores = get_with(&gw.url("/api/stores"), &alice).await;
    assert_eq!(stores.status(), 200);
    assert_eq!(stores.headers()["ratelimit-policy"], "\"stores\";q=100;w=2");

    // Metrics count it.
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_rate_limited_total{route=\"echo\"}")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_route_breaker_is_a_critical_alert_until_it_closes() {
    let (store, security, pagerduty) = tokio::join!(
        Store::start(),
        Security::start(),
        PagerDutyReceiver::start()
    );
    // An upstream that is not there yet.
    let port = testkit::free_port().unwrap();
    let gw = RunningGateway::start(&config_text(
        &security.issuer.jwks_url,
        &security,
        &store,
        "",
        &format!(
            r#"
[alerts]
pagerduty_url = "{pd}"

[[routes]]
name = "flaky"
prefix = "/api/flaky"
upstream = "http://127.0.0.1:{port}"
scopes = {{ GET = ["stores:read"] }}
breaker = {{ preset = "store-service", minimum_calls = 2, window = {{ kind = "count", size = 4 }}, open_wait = "1s" }}
"#,
            pd = pagerduty.url
        ),
    ))
    .await;
    let token = security.token("stores:read").await;
    let url = gw.url("/api/flaky/x");
    // Unreachable, nothing cached: 503 + Retry-After (5 s, the upstream was
    // tried) until the breaker opens, then 503 + the breaker's Retry-After
    // (1 s) without trying the upstream.
    let first = get_with(&url, &token).await;
    assert_eq!(first.status(), 503);
    assert_eq!(first.headers()["retry-after"], "5");
    let problem: Value = first.json().await.unwrap();
    assert_eq!(problem["error"], "UPSTREAM_UNAVAILABLE");
    let open = eventually("the breaker to open", Duration::from_secs(20), || {
        let request = get_with(&url, &token);
        async move {
            let response = request.await;
            (response
                .headers()
                .get("retry-after")
                .is_some_and(|v| v == "1"))
            .then_some(response)
        }
    })
    .await;
    assert_eq!(open.status(), 503);
    let problem: Value = open.json().await.unwrap();
    assert_eq!(problem["error"], "UPSTREAM_UNAVAILABLE");
    let key = "gateway/breaker_open:flaky";
    pagerduty.wait_for("trigger", key, 1).await;

    // The upstream comes up: after the open wait a probe closes the
    // breaker, and the alert resolves.
    let (_, seen) = echo_upstream_on(port).await;
    get_until(&url, &token, 200, Duration::from_secs(20)).await;
    assert!(!seen.lock().unwrap().is_empty());
    pagerduty.wait_for("resolve", key, 1).await;
    let for_key: Vec<_> = pagerduty
        .actions()
        .into_iter()
        .filter(|(_, k)| k == key)
        .collect();
    assert_eq!(
        for_key,
        [
            ("trigger".to_owned(), key.to_owned()),
            ("resolve".to_owned(), key.to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_belong_to_the_subject_and_history_names_it() {
    let (_store, security, _echo, _seen, gw) = echo_stack().await;
    let (alice, bob) = tokio::join!(
        security.token("stores:read stores:write"),
        security.token("stores:write stores:read")
    );
    let post = |token: &str, headers: &[(&str, &str)], name: &str| {
        let mut request = http()
            .post(gw.url("/api/stores"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "name": name }));
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        request.send()
    };
    // The issue's reproduction: one X-Request-Id, two bodies: two stores
    // (the request id is not an idempotency key any more).
    let a = post(&alice, &[("x-request-id", "job-1")], "Shop A")
        .await
        .unwrap();
    assert_eq!(a.status(), 201);
    let b = post(&alice, &[("x-request-id", "job-1")], "Shop B")
        .await
        .unwrap();
    assert_eq!(b.status(), 201, "{:?}", b.text().await);
    // One Idempotency-Key, two subjects: two independent requests.
    let key = [("idempotency-key", "shared-key-1")];
    let first = post(&alice, &key, "Alice's").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let other = post(&bob, &key, "Bob's").await.unwrap();
    assert_eq!(other.status(), 201, "{:?}", other.text().await);
    let other: Value = other.json().await.unwrap();
    assert_ne!(first["store"]["id"], other["store"]["id"]);
    // The same subject again: its own earlier answer.
    let again = post(&alice, &key, "Alice's").await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["store"]["id"], first["store"]["id"]);
    // The history names the subject, whatever the client claimed.
    let id = first["store"]["id"].as_str().unwrap();
    let history = http()
        .get(gw.url(&format!("/api/stores/{id}/history")))
        .bearer_auth(&alice)
        .header("x-gateway-subject", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(history.status(), 200);
    let history: Value = history.json().await.unwrap();
    assert_eq!(history["events"][0]["actor"], subject_of(&alice));
}

/// Every `$ref` of `value` that does not resolve in `document`.
fn dangling_refs(document: &Value, value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                let resolved = target
                    .strip_prefix('#')
                    .and_then(|pointer| document.pointer(pointer));
                if resolved.is_none() {
                    found.push(target.clone());
                }
            }
            for member in map.values() {
                dangling_refs(document, member, found);
            }
        }
        Value::Array(items) => {
            for item in items {
                dangling_refs(document, item, found);
            }
        }
        _ => {}
    }
}

/// `GET /openapi.json` on the gateway: the store service's operations
/// under the route, as the gateway serves them (security and scopes, the
/// gateway's problems and rate-limit fields, no subject header), its own
/// routes, every reference resolved; no token needed. A route without a
/// document (the echo route) is not described.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_its_own_openapi_document() {
    let (_store, _security, _echo, _seen, gw) = echo_stack().await;
    let response = http().get(gw.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");

    let paths = document["paths"].as_object().unwrap();
    let mut names: Vec<&str> = paths.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "/api/requests/{id}",
            "/api/stores",
            "/api/stores/{id}",
            "/api/stores/{id}/history",
            "/api/stores/{id}/secrets",
            "/health",
            "/metrics",
            "/openapi.json",
            "/ready",
        ]
    );
    let security = |path: &str, method: &str| paths[path][method]["security"].clone();
    assert_eq!(
        security("/api/stores", "get"),
        serde_json::json!([{"bearer": ["stores:read"]}])
    );
    assert_eq!(
        security("/api/stores", "post"),
        serde_json::json!([{"bearer": ["stores:write"]}])
    );
    assert_eq!(
        security("/api/stores/{id}/secrets", "get"),
        serde_json::json!([{"bearer": ["stores:secrets"]}])
    );
    assert_eq!(security("/health", "get"), serde_json::json!([{}]));
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let list = &paths["/api/stores"]["get"];
    for status in ["200", "400", "401", "403", "429", "502", "503", "504"] {
        assert!(list["responses"][status].is_object(), "{status} missing");
    }
    assert!(list["responses"]["401"]["headers"]["WWW-Authenticate"].is_object());
    assert!(list["responses"]["429"]["headers"]["Retry-After"].is_object());
    assert!(list["responses"]["200"]["headers"]["RateLimit"].is_object());
    assert!(
        list["responses"]["503"]["description"]
            .as_str()
            .unwrap()
            .contains("SECURITY_SERVICE_UNAVAILABLE")
    );
    // The store service's own 400 keeps its description and gains the
    // gateway's.
    let bad = list["responses"]["400"]["description"].as_str().unwrap();
    assert!(
        bad.contains("BAD_REQUEST") && bad.len() > "BAD_REQUEST".len() + 30,
        "{bad}"
    );
    // Degraded mode: a write may be queued (202, `Location`), a read
    // answered from a stale copy (`meta`, `Cache-Status`), never one of a
    // sensitive path.
    let queued = &paths["/api/stores"]["post"]["responses"]["202"];
    assert!(queued["headers"]["Location"].is_object(), "{queued}");
    let read = &paths["/api/stores/{id}"]["get"]["responses"]["200"];
    assert!(read["headers"]["Cache-Status"].is_object(), "{read}");
    let secrets = &paths["/api/stores/{id}/secrets"]["get"]["responses"]["200"];
    assert!(secrets["headers"]["Cache-Status"].is_null(), "{secrets}");
    assert_eq!(
        security("/api/requests/{id}", "get"),
        serde_json::json!([{"bearer": []}])
    );

    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                assert_ne!(
                    parameter["name"], "x-gateway-subject",
                    "{method} {path}: the subject header is the gateway's own"
                );
            }
        }
    }
    let mut dangling = Vec::new();
    dangling_refs(&document, &document, &mut dangling);
    assert!(dangling.is_empty(), "unresolved: {dangling:?}");
}
