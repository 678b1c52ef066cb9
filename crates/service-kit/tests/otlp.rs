//! OTLP export (feature `otlp`): a span whose parent is a W3C
//! `traceparent` reaches the collector (a stand-in that records what it is
//! sent) with that trace id, and the trace context is propagated to an
//! upstream's headers. One test: the subscriber is global to the process.

#![cfg(feature = "otlp")]

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, HeaderValue},
    routing::post,
};
use service_kit::telemetry;
use tokio::sync::mpsc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_and_propagated_with_the_remote_parent() {
    // With `rustls-no-provider` unified in (a workspace build), every
    // reqwest client needs a process-wide provider, as in the binaries.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (sink, mut received) = mpsc::unbounded_channel::<Bytes>();
    let collector = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let _ = sink.send(body);
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let guard = telemetry::init("kit-test", "json", Some(&endpoint));
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut incoming = HeaderMap::new();
    incoming.insert(
        "traceparent",
        HeaderValue::from_str(&format!("00-{trace_id}-00f067aa0ba902b7-01")).unwrap(),
    );
    let span = tracing::info_span!("request");
    telemetry::set_remote_parent(&span, &incoming);
    let mut upstream = HeaderMap::new();
    span.in_scope(|| telemetry::inject_current(&mut upstream));
    drop(span);
    let propagated = upstream["traceparent"].to_str().unwrap().to_owned();
    assert!(
        propagated.starts_with(&format!("00-{trace_id}-")),
        "{propagated}"
    );
    assert!(
        !propagated.contains("00f067aa0ba902b7"),
        "the upstream's parent is this service's span, not the client's"
    );

    // Shutting the pipeline down exports what is batched and waits for the
    // collector's answer, so every body has arrived when `drop` returns.
    tokio::task::spawn_blocking(move || drop(guard))
        .await
        .unwrap();
    let expected: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut found = false;
    while let Ok(body) = received.try_recv() {
        found |= body.windows(16).any(|w| w == expected.as_slice());
    }
    assert!(found, "no exported span carries the request's trace id");
}
