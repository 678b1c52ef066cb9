//! Vault down, sealed, rate limiting: the breaker opens and calls fail fast,
//! reads are served from the last known good value and then from the
//! environment (reported, never silent), and the client recovers by itself
//! when the server comes back.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use vault_client::breaker::State;
use vault_client::{Backoff, Client, Delivery, Error, Event, FallbackConfig, Source};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_fallbacks_serve_reads_and_the_client_recovers() {
    let bao = common::bao().await;
    common::enable_kv2(&bao, "kv").await;
    bao.kv_put(
        "kv",
        "database/primary",
        json!({ "username": "app", "password": "from-vault" }),
    )
    .await
    .unwrap();
    let env: BTreeMap<String, String> = [
        ("VAULT_FALLBACK_DATABASE_PRIMARY_USERNAME", "app"),
        ("VAULT_FALLBACK_DATABASE_PRIMARY_PASSWORD", "from-env"),
        ("VAULT_FALLBACK_DATABASE_STANDBY_USERNAME", "app"),
        (
            "VAULT_FALLBACK_DATABASE_STANDBY_PASSWORD",
            "standby-from-env",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    // Generous, so that a loaded machine never ages the value out while the
    // server is stopped; the environment step uses a key never cached.
    let max_age = Duration::from_secs(60);
    let config = common::root_config(&bao)
        .max_retries(1)
        .breaker_policy(common::quick_breaker(Duration::from_secs(2)))
        .fallback(FallbackConfig {
            last_known_good_max_age: Some(max_age),
            ..FallbackConfig::default()
        })
        .environment(env)
        .build()
        .unwrap();
    let client = Client::new(config).await.unwrap();
    let mut events = client.subscribe();
    let kv = client.kv2("kv");

    let fresh = kv.read("database/primary").await.unwrap();
    assert_eq!(fresh.source, Source::Vault);
    assert!(client.health().await.unwrap().is_active());

    bao.stop().await.unwrap();

    // Vault is down: the last known good value, reported as such.
    let stale = kv.read("database/primary").await.unwrap();
    assert_eq!(stale.data.get_str("password"), Some("from-vault"));
    match &stale.source {
        Source::LastKnownGood { cause, .. } => assert!(cause.contains("connect"), "{cause}"),
        other => panic!("expected the last known good value, got {other:?}"),
    }
    // Failures pile up until the breaker opens (4 calls judged, 50 %).
    for _ in 0..4 {
        if client.breaker().state() == State::Open {
            break;
        }
        let _ = kv.read("database/primary").await;
    }
    assert_eq!(client.breaker().snapshot().state, State::Open);
    // Open: calls are not made at all.
    let rejected = client.health().await.unwrap_err();
    assert!(matches!(rejected, Error::CircuitOpen { .. }), "{rejected}");
    assert_eq!(rejected.delivery(), Delivery::NotSent);
    assert!(rejected.is_retryable());
    assert!(rejected.retry_after().is_some());
    let still_stale = kv.read("database/primary").await.unwrap();
    assert!(matches!(still_stale.source, Source::LastKnownGood { .. }));

    // No last known good value (never read): the environment takes over.
    let from_env = kv.read("database/standby").await.unwrap();
    assert_eq!(from_env.data.get_str("password"), Some("standby-from-env"));
    match &from_env.source {
        Source::Environment { variables, cause } => {
            assert_eq!(variables.len(), 2, "{variables:?}");
            assert!(cause.contains("rejected"), "{cause}");
        }
        other => panic!("expected the environment, got {other:?}"),
    }
    // Nothing anywhere: the error itself.
    let none = kv.read("database/replica").await.unwrap_err();
    assert!(none.is_unavailable(), "{none}");

    // Every fallback was an event.
    let mut sources = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::Fallback { path, source } = event {
            let expected = match source {
                Source::Environment { .. } => "kv/data/database/standby",
                _ => "kv/data/database/primary",
            };
            assert_eq!(path, expected);
            sources.push(source);
        }
    }
    assert!(
        sources
            .iter()
            .any(|s| matches!(s, Source::LastKnownGood { .. }))
    );
    assert!(
        sources
            .iter()
            .any(|s| matches!(s, Source::Environment { .. }))
    );

    // The server comes back: the same client recovers once the open wait is
    // over and a probe succeeds.
    bao.restart().await.unwrap();
    let recovered = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match kv.read("database/primary").await {
                Ok(secret) if secret.source == Source::Vault => return secret,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
    .expect("recovered without a new client");
    assert_eq!(recovered.data.get_str("password"), Some("from-vault"));
    assert_eq!(client.breaker().state(), State::Closed);

    // Sealed: 503 answers, reported by the health check, and reads fall
    // back to the value just read.
    client.write("sys/seal", &json!({})).await.unwrap();
    let sealed = client.health().await.unwrap();
    assert_eq!(sealed.status, 503);
    assert!(sealed.sealed && !sealed.is_ready(true));
    let during_seal = kv.read("database/primary").await.unwrap();
    match &during_seal.source {
        Source::LastKnownGood { cause, .. } => assert!(cause.contains("503"), "{cause}"),
        other => panic!("expected the last known good value, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_requests_honour_retry_after() {
    let bao = common::bao().await;
    common::enable_kv2(&bao, "secret").await;
    bao.kv_put("secret", "app", json!({ "k": "v" }))
        .await
        .unwrap();
    let strict = Client::new(common::root_config(&bao).max_retries(0).build().unwrap())
        .await
        .unwrap();
    let kv = strict.kv2("secret");
    assert_eq!(kv.read("app").await.unwrap().source, Source::Vault);

    bao.call(
        Method::POST,
        "sys/quotas/config",
        Some(json!({ "enable_rate_limit_response_headers": true })),
    )
    .await
    .unwrap();
    bao.call(
        Method::POST,
        "sys/quotas/rate-limit/kv",
        Some(json!({ "path": "secret/", "rate": 1, "interval": "2s" })),
    )
    .await
    .unwrap();

    // Without retries: a typed 429 carrying the server's Retry-After. (The
    // quota takes effect a moment after it is written.)
    let mut limited = None;
    for _ in 0..50 {
        if let Err(e) = strict.read("secret/data/app").await {
            limited = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let limited = limited.expect("the quota answers 429");
    assert_eq!(limited.status(), Some(429), "{limited}");
    assert!(limited.is_retryable());
    // Vault's Retry-After counts whole seconds to the quota's reset.
    assert!(limited.retry_after().is_some(), "{limited:?}");
    // A KV read meanwhile is served from the last known good value.
    let stale = kv.read("app").await.unwrap();
    match &stale.source {
        Source::LastKnownGood { cause, .. } => assert!(cause.contains("429"), "{cause}"),
        other => panic!("expected the last known good value, got {other:?}"),
    }

    // With retries: the client waits (at least as asked, and its own
    // back-off when Retry-After is 0) and gets through.
    let patient = Client::new(
        common::root_config(&bao)
            .retry_backoff(Backoff::new(
                Duration::from_millis(500),
                Duration::from_secs(2),
            ))
            .max_retries(6)
            .max_retry_after(Duration::from_secs(5))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    for _ in 0..3 {
        let read = patient.read("secret/data/app").await.unwrap().unwrap();
        assert_eq!(read["data"]["data"]["k"], "v");
    }
    // 429s were met and retried; they do not count against Vault's health.
    let totals = patient.breaker().snapshot().totals;
    assert!(totals.ignored >= 1, "{totals:?}");
    assert_eq!(totals.failures, 0, "{totals:?}");
    assert_eq!(patient.breaker().state(), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creds_read_that_timed_out_is_not_repeated() {
    // A frozen server accepts connections and reads requests, but never
    // answers: the request was sent, its effect unknown.
    let bao = common::bao().await;
    let client = Client::new(
        common::root_config(&bao)
            .client_timeout(Duration::from_millis(500))
            .max_retries(3)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let attempts = |client: &Client| {
        let totals = client.breaker().snapshot().totals;
        totals.successes + totals.failures + totals.timeouts + totals.ignored
    };
    bao.freeze().await.unwrap();

    let before = attempts(&client);
    let err = client
        .database("database")
        .creds("store-service")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(err.delivery(), Delivery::MaybeDelivered);
    assert!(err.is_retryable(), "retryable by a caller who knows better");
    assert_eq!(attempts(&client) - before, 1, "sent once, never repeated");

    // An idempotent read is retried after the same failure.
    let before = attempts(&client);
    let err = client.read("secret/data/app").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(attempts(&client) - before, 4, "1 try + 3 retries");

    bao.thaw().await.unwrap();
    assert!(client.health().await.unwrap().is_active());
}
