//! Label values come from closed sets: 10,000 requests with invented
//! methods and paths, without a token, add no metric series, and the
//! gateway's memory stays flat. (Alone in its test binary, so that the
//! process's resident memory is the gateway's and this test's only.)

mod common;

use common::*;

/// `count` requests with invented methods and paths, numbered from
/// `first`, over four keep-alive connections.
async fn invent(gw: &RunningGateway, first: usize, count: usize) {
    let mut tasks = Vec::new();
    for lane in 0..4 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let mut connection = RawConnection::open(addr).await;
            for i in (first + lane..first + count).step_by(4) {
                // Half on a known route (405), half on invented paths (404).
                let path = if i % 2 == 0 {
                    format!("/api/stores/{i}")
                } else {
                    format!("/api/x{i:07}/y")
                };
                let raw = format!("M{i:07}AAAAAAAA {path} HTTP/1.1\r\nHost: gw\r\n\r\n");
                let (status, head) = connection.send(raw.as_bytes()).await;
                assert!(matches!(status, 404 | 405), "{status} for {raw:?}: {head}");
            }
        }));
    }
    for task in tasks {
        task.await.expect("a lane of requests");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_and_paths_add_no_series_and_memory_stays_flat() {
    let (store, security) = tokio::join!(Store::start(), Security::start());
    let gw = RunningGateway::start(&config_text(
        &security.issuer.jwks_url,
        &security,
        &store,
        "",
        "",
    ))
    .await;
    // Every kind of answer once, so their series exist.
    invent(&gw, 0, 400).await;
    // A scrape is counted after it answers: the second sees the first.
    gw.metrics().await;
    let before = series(&gw.metrics().await);
    let rss_before = rss_kib();
    invent(&gw, 1_000_000, 10_000).await;
    let metrics = gw.metrics().await;
    let after = series(&metrics);
    let rss_after = rss_kib();
    assert_eq!(before, after, "new series after 10,000 invented requests");
    assert!(
        !metrics.contains("M1000"),
        "an invented method is a label value"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("gateway_requests_total")
                && l.contains("method=\"OTHER\"")
                && l.contains("route=\"unmatched\"")
                && l.contains("status=\"404\"")),
        "{metrics}"
    );
    // Before the fix, each invented method added a counter and a histogram
    // of 15 buckets: tens of MiB for 10,000 of them.
    let grown = rss_after.saturating_sub(rss_before);
    assert!(
        grown < 16 * 1024,
        "resident memory grew by {grown} KiB over 10,000 invented requests"
    );
}
