//! Careless and hostile clients at the front door: failures before
//! authentication limited per client address, forwarding headers a client
//! cannot forge (the subject, `X-Forwarded-For`, idempotency keys), and a
//! write queue that one subject cannot fill and that forgets finished
//! writes. Upstreams are local echo servers; the security service is
//! OpenBao.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;
use serde_json::{Value, json};

/// A gateway configuration with one route, `/api/echo`, to `upstream`;
/// `server` and `rest` are added to `[server]` and after the route.
fn config(security: &Security, upstream: SocketAddr, server: &str, rest: &str) -> String {
    format!(
        r#"
[server]
body_limit_bytes = 4096
drain_timeout = "5s"
{server}

[auth]
jwks_url = "{jwks}"
issuer = "{issuer}"
audiences = ["{audience}"]
fetch_timeout = "1s"

[[routes]]
prefix = "/api/echo"
upstream = "http://{upstream}"
timeout = "1s"
breaker = {{ preset = "store-service", open_wait = "1s" }}
scopes = {{ GET = ["stores:read"], POST = ["stores:write"], PUT = ["stores:write"] }}

{rest}
"#,
        jwks = security.issuer.jwks_url,
        issuer = security.issuer.issuer,
        audience = security.issuer.client_id,
    )
}

/// A request of `method` to `path`, with `headers`.
async fn send(
    gw: &RunningGateway,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = http().request(method, gw.url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.expect("an answer")
}

/// A request that fails before authentication: method, path, headers and
/// the status it gets.
type Failure<'a> = (reqwest::Method, &'a str, &'a [(&'a str, &'a str)], u16);

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_before_authentication_are_limited_per_client_address() {
    let security = Security::start().await;
    let (echo, seen) = echo_upstream().await;
    let limit = "[pre_auth_limit]\nper_second = 1\nburst = 5\n";
    let gw = RunningGateway::start(&config(&security, echo, "", limit)).await;
    let token = security.token("stores:read stores:write").await;
    let get = reqwest::Method::GET;

    // Authenticated requests cost the address nothing, even when the
    // upstream answers 404.
    for _ in 0..12 {
        let r = send(
            &gw,
            get.clone(),
            "/api/echo/missing",
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
        assert_eq!(r.status(), 404);
        assert!(
            header(&r, "ratelimit").starts_with("\"echo\";"),
            "{:?}",
            r.headers()
        );
    }

    // Five failures of every kind before authentication: answered as they
    // are, with the address's bucket in the RateLimit fields.
    let failures: [Failure<'_>; 5] = [
        (get.clone(), "/api/echo/a", &[], 401),
        (
            get.clone(),
            "/api/echo/a",
            &[("authorization", "Bearer not.a.jwt")],
            401,
        ),
        (get.clone(), "/api/nothing-here", &[], 404),
        (reqwest::Method::DELETE, "/api/echo/a", &[], 405),
        (get.clone(), "/api/echo/a%2Fb", &[], 400),
    ];
    for (i, (method, path, headers, status)) in failures.iter().enumerate() {
        let r = send(&gw, method.clone(), path, headers).await;
        assert_eq!(r.status(), *status, "{path}");
        assert_eq!(
            header(&r, "ratelimit-policy"),
            "\"unauthenticated\";q=5;w=5"
        );
        let left = 4 - i;
        assert!(
            header(&r, "ratelimit").starts_with(&format!("\"unauthenticated\";r={left}"))
                || header(&r, "ratelimit")
                    .starts_with(&format!("\"unauthenticated\";r={}", left + 1)),
            "{i}: {:?}",
            r.headers()
        );
    }
    // Then 429 (within a few more, should a token come back on a slow
    // machine): a problem with Retry-After and the fields.
    let mut r = send(&gw, get.clone(), "/api/echo/a", &[]).await;
    for _ in 0..5 {
        if r.status() == 429 {
            break;
        }
        r = send(&gw, get.clone(), "/api/echo/a", &[]).await;
    }
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "content-type"), "application/problem+json");
    let retry_after: u64 = header(&r, "retry-after").parse().expect("Retry-After");
    assert!((1..=5).contains(&retry_after), "{retry_after}");
    assert_eq!(
        header(&r, "ratelimit-policy"),
        "\"unauthenticated\";q=5;w=5"
    );
    assert!(header(&r, "ratelimit").starts_with("\"unauthenticated\";r=0;t="));
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["error"], "RATE_LIMITED");
    // A forged X-Forwarded-For from a client that is not a trusted proxy
    // changes nothing, and while the address is limited, nothing from it
    // is worked on (its valid token included) until Retry-After.
    let forged = send(
        &gw,
        get.clone(),
        "/api/echo/a",
        &[("x-forwarded-for", "198.51.100.9")],
    )
    .await;
    assert_eq!(forged.status(), 429);
    let forwarded = seen.lock().unwrap().len();
    let blocked = send(
        &gw,
        get.clone(),
        "/api/echo/a",
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(blocked.status(), 429);
    assert_eq!(
        seen.lock().unwrap().len(),
        forwarded,
        "nothing forwarded while limited"
    );
    get_until(&gw.url("/api/echo/a"), &token, 200, Duration::from_secs(15)).await;
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_rate_limited_total{route=\"unauthenticated\"}")),
        "{metrics}"
    );

    // Behind a trusted proxy, each forwarded client has its own bucket,
    // and the chain is appended to.
    drop(gw);
    let gw = RunningGateway::start(&config(
        &security,
        echo,
        "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]",
        limit,
    ))
    .await;
    let a = [("x-forwarded-for", "198.51.100.1")];
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let status = send(&gw, get.clone(), "/api/echo/a", &a)
            .await
            .status()
            .as_u16();
        statuses.push(status);
        if status == 429 {
            break;
        }
    }
    assert!(
        statuses.len() >= 5 && statuses.ends_with(&[429]),
        "{statuses:?}"
    );
    let b = [("x-forwarded-for", "6.6.6.6, 198.51.100.2, 10.1.2.3")];
    assert_eq!(
        send(&gw, get.clone(), "/api/echo/a", &b).await.status(),
        401
    );
    let bearer = format!("Bearer {token}");
    let r = send(
        &gw,
        get.clone(),
        "/api/echo/b",
        &[("authorization", &bearer), b[0]],
    )
    .await;
    assert_eq!(r.status(), 200);
    let upstream = seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        upstream["headers"]["x-forwarded-for"],
        "6.6.6.6, 198.51.100.2, 10.1.2.3, 127.0.0.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_gateway_names_the_subject_and_request_ids_are_not_idempotency_keys() {
    let security = Security::start().await;
    let (echo, seen) = echo_upstream().await;
    let gw = RunningGateway::start(&config(&security, echo, "", "")).await;
    let token = security.token("stores:read stores:write").await;
    let actor = store_domain::Actor::new(&subject_of(&token)).unwrap();
    let bearer = format!("Bearer {token}");
    let last = || seen.lock().unwrap().last().cloned().unwrap();

    // A client's own subject header and X-Forwarded-For are replaced; a
    // write without an Idempotency-Key gets a fresh one, not its request id.
    let forged = [
        ("authorization", bearer.as_str()),
        ("x-gateway-subject", "admin"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-request-id", "job-1"),
        ("content-type", "application/json"),
    ];
    let r = send(&gw, reqwest::Method::POST, "/api/echo", &forged).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-request-id"), "job-1");
    let first = last();
    assert_eq!(
        first["headers"]["x-gateway-subject"],
        actor.to_header_value()
    );
    assert_eq!(first["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(first["headers"]["x-request-id"], "job-1");
    let key = first["headers"]["idempotency-key"]
        .as_str()
        .expect("a key")
        .to_owned();
    assert_ne!(key, "job-1");
    assert!(uuid::Uuid::try_parse(&key).is_ok(), "{key}");
    // The same request id again: another fresh key (two requests).
    send(&gw, reqwest::Method::POST, "/api/echo", &forged).await;
    assert_ne!(last()["headers"]["idempotency-key"], json!(key));
    // A client's key is kept as it is.
    let mut keyed = forged.to_vec();
    keyed.push(("idempotency-key", "client-key-1"));
    send(&gw, reqwest::Method::PUT, "/api/echo/1", &keyed).await;
    assert_eq!(last()["headers"]["idempotency-key"], "client-key-1");
    // Reads carry the subject too; nothing without a token reaches the
    // upstream, subject header or not.
    let forwarded = seen.lock().unwrap().len();
    let r = send(
        &gw,
        reqwest::Method::GET,
        "/api/echo/x",
        &[("x-gateway-subject", "admin")],
    )
    .await;
    assert_eq!(r.status(), 401);
    assert_eq!(seen.lock().unwrap().len(), forwarded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subject_cannot_fill_the_queue_and_finished_writes_are_purged() {
    let security = Security::start().await;
    // Nothing listens on the upstream's port yet: writes are queued.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let upstream: SocketAddr = ([127, 0, 0, 1], port).into();
    let rest = "[degraded]\nqueue_max_per_subject = 2\nqueue_retention = \"2s\"\n";
    let gw = RunningGateway::start(&config(&security, upstream, "", rest)).await;
    let (alice, bob) = tokio::join!(
        security.token("stores:read stores:write"),
        security.token("stores:write stores:read")
    );
    assert_ne!(subject_of(&alice), subject_of(&bob), "two subjects");
    let write = |token: String, n: u32| {
        let url = gw.url(&format!("/api/echo/{n}"));
        async move {
            http()
                .put(url)
                .bearer_auth(token)
                .json(&json!({ "n": n }))
                .send()
                .await
                .unwrap()
        }
    };
    let mut accepted = Vec::new();
    for n in 0..2 {
        let r = write(alice.clone(), n).await;
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
        let body: Value = r.json().await.unwrap();
        accepted.push(body["requestId"].as_str().unwrap().to_owned());
    }
    let refused = write(alice.clone(), 2).await;
    assert_eq!(refused.status(), 429);
    assert!(header(&refused, "retry-after").parse::<u64>().is_ok());
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["error"], "TOO_MANY_QUEUED_WRITES");
    // Another subject still has room.
    assert_eq!(write(bob.clone(), 3).await.status(), 202);

    // The upstream comes up: the writes are replayed as their senders.
    let (_echo, seen) = echo_upstream_on(port).await;
    for id in &accepted {
        let url = gw.url(&format!("/api/requests/{id}"));
        eventually(
            "the queued write completed",
            Duration::from_secs(30),
            || {
                let request = http().get(&url).bearer_auth(&alice).send();
                async move {
                    let body: Value = request.await.ok()?.json().await.ok()?;
                    (body["status"] == "completed").then_some(())
                }
            },
        )
        .await;
    }
    let replayed = eventually("three replays", Duration::from_secs(30), || {
        let seen = seen.lock().unwrap().clone();
        async move { (seen.len() >= 3).then_some(seen) }
    })
    .await;
    let alice_actor = store_domain::Actor::new(&subject_of(&alice)).unwrap();
    let bob_actor = store_domain::Actor::new(&subject_of(&bob)).unwrap();
    for request in &replayed {
        let expected = if request["uri"] == "/api/echo/3" {
            &bob_actor
        } else {
            &alice_actor
        };
        assert_eq!(
            request["headers"]["x-gateway-subject"],
            expected.to_header_value()
        );
        assert!(request["headers"]["idempotency-key"].is_string());
    }
    // After the retention, the running gateway purges them.
    for id in &accepted {
        get_until(
            &gw.url(&format!("/api/requests/{id}")),
            &alice,
            404,
            Duration::from_secs(30),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_to_an_upstream_are_bounded() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let security = Security::start().await;
    // A slow upstream that records how many requests it holds at once.
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let app = {
        let (now, most) = (Arc::clone(&now), Arc::clone(&most));
        axum::Router::new().fallback(move || {
            let (now, most) = (Arc::clone(&now), Arc::clone(&most));
            async move {
                let held = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(held, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                axum::Json(json!({"ok": true}))
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gw = RunningGateway::start(&config(
        &security,
        upstream,
        "upstream_max_in_flight = 2",
        "",
    ))
    .await;
    let token = security.token("stores:read").await;
    let requests: Vec<_> = (0..8)
        .map(|i| {
            let request = http()
                .get(gw.url(&format!("/api/echo/{i}")))
                .bearer_auth(&token)
                .send();
            tokio::spawn(request)
        })
        .collect();
    for request in requests {
        let answer = request.await.unwrap().unwrap();
        assert_eq!(answer.status(), 200);
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "the upstream held more requests at once than upstream_max_in_flight"
    );
}
