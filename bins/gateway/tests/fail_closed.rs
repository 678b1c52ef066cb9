//! Fail closed: with OpenBao (the security service) stopped, and
//! separately frozen (SIGSTOP), once the cached keys are older than their
//! maximum age every request gets the 503 `SECURITY_SERVICE_UNAVAILABLE`
//! with `Retry-After`, nothing reaches the store service, the critical
//! alert fires once (a PagerDuty `trigger` with a stable `dedup_key`), and
//! it resolves once OpenBao is back.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

#[derive(Clone, Copy, Debug)]
enum Outage {
    Stopped,
    Frozen,
}

/// One outage and recovery; `incident` counts the incidents so far
/// (this one included).
async fn outage_and_recovery(
    outage: Outage,
    incident: usize,
    store: &Store,
    security: &Security,
    pagerduty: &PagerDutyReceiver,
    gw: &RunningGateway,
) {
    let http = http();
    let token = security.token("stores:read").await;
    let url = gw.url("/api/stores");
    assert_eq!(get_with(&url, &token).await.status(), 200);

    match outage {
        Outage::Stopped => security.bao.stop().await.expect("stop"),
        Outage::Frozen => security.bao.freeze().await.expect("freeze"),
    }
    // Within the cache age requests still pass; after it, the first 503.
    get_until(&url, &token, 503, Duration::from_secs(30)).await;
    let reached = store.api_requests().await;
    let other = gw.url("/api/stores/0190a8f0-0000-7000-8000-000000000000");
    for path in [url.as_str(), other.as_str()] {
        for _ in 0..10 {
            let response = get_with(path, &token).await;
            assert_eq!(response.status(), 503);
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let retry_after: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(retry_after >= 1);
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["error"], "SECURITY_SERVICE_UNAVAILABLE");
            assert_eq!(
                problem["message"],
                "Access denied due to security system unavailability."
            );
            assert_eq!(problem["status"], 503);
            assert!(
                problem["requestId"]
                    .as_str()
                    .is_some_and(|id| !id.is_empty())
            );
        }
    }
    // Writes and requests without a token too.
    let post = http
        .post(&url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 503);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 503);
    assert_eq!(
        store.api_requests().await,
        reached,
        "a request reached the store service while failing closed"
    );

    // The alert: exactly one trigger for the incident, with its stable key.
    let dedup_key = "gateway-test/security_fail_closed";
    pagerduty.wait_for("trigger", dedup_key, incident).await;
    let triggers: Vec<_> = pagerduty
        .actions()
        .into_iter()
        .filter(|(a, k)| a == "trigger" && k == dedup_key)
        .collect();
    assert_eq!(
        triggers.len(),
        incident,
        "{outage:?}: {:?}",
        pagerduty.events()
    );
    let trigger = pagerduty
        .events()
        .into_iter()
        .find(|e| e["dedup_key"] == dedup_key)
        .unwrap();
    assert_eq!(trigger["routing_key"], "test-routing-key");
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], "gateway-test");
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(&format!(
            "gateway_alerts_total{{alert=\"security_fail_closed\"}} {incident}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_alert_active{alert=\"security_fail_closed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_auth_failures_total{reason=\"security_unavailable\"}"))
    );

    // OpenBao returns: requests pass again, the incident resolves.
    match outage {
        Outage::Stopped => security.bao.restart().await.expect("restart"),
        Outage::Frozen => security.bao.thaw().await.expect("thaw"),
    }
    get_until(&url, &token, 200, Duration::from_secs(60)).await;
    pagerduty.wait_for("resolve", dedup_key, incident).await;
    let actions: Vec<_> = pagerduty
        .actions()
        .into_iter()
        .filter(|(_, k)| k == dedup_key)
        .collect();
    let expected: Vec<_> = (0..incident)
        .flat_map(|_| {
            [
                ("trigger".to_owned(), dedup_key.to_owned()),
                ("resolve".to_owned(), dedup_key.to_owned()),
            ]
        })
        .collect();
    assert_eq!(
        actions, expected,
        "each incident triggered once, then resolved once"
    );
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("gateway_alert_active{alert=\"security_fail_closed\"} 0"),
        "{metrics}"
    );
}

/// Both outages, one after the other on one stack (the metrics registry
/// is per process, so the counts are cumulative): OpenBao stopped, then
/// frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_stopped_then_frozen() {
    let (store, security, pagerduty) = tokio::join!(
        Store::start(),
        Security::start(),
        PagerDutyReceiver::start()
    );
    let text = config_text(
        &security.issuer.jwks_url,
        &security,
        &store,
        "max_age = \"3s\"\nrefresh_interval = \"500ms\"\nbreaker = { preset = \"security-service\", open_wait = \"1s\" }",
        &format!(
            "[alerts]\npagerduty_url = \"{}\"\nsource = \"gateway-test\"",
            pagerduty.url
        ),
    );
    let gw = RunningGateway::start(&text).await;
    assert!(pagerduty.events().is_empty(), "{:?}", pagerduty.events());
    outage_and_recovery(Outage::Stopped, 1, &store, &security, &pagerduty, &gw).await;
    outage_and_recovery(Outage::Frozen, 2, &store, &security, &pagerduty, &gw).await;
}
