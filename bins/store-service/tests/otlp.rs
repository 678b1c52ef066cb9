//! OTLP export: with an endpoint, request spans reach the collector (a
//! stand-in that records what it is sent) with the trace id of the
//! request's W3C `traceparent`.

mod common;

use std::{sync::Arc, time::Duration};

use axum::{Router, body::Bytes, routing::post};
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_with_the_remote_parent() {
    common::vault_client_provider();
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let sink = Arc::clone(&received);
    let collector = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = Arc::clone(&sink);
            async move { sink.lock().await.push(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let guard = service_kit::telemetry::init("store-service", "text", Some(&endpoint));
    let stack = common::stack().await;
    // A trace id the collector must see, as raw bytes in the protobuf body.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = stack
        .http
        .get(stack.url("/health"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let expected: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    drop(guard); // flushes the batch
    let mut found = false;
    for _ in 0..50 {
        found = received
            .lock()
            .await
            .iter()
            .any(|body| body.windows(16).any(|w| w == expected.as_slice()));
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "no exported span carries the request's trace id");
}
