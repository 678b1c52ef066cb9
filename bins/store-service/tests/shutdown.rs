//! Graceful shutdown: once the signal comes, no new connection is accepted,
//! and a request already in flight (its body still arriving) completes.

mod common;

use std::time::Duration;

use store_service::{Application, Secret, Settings};
use testkit::PgCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_requests_in_flight() {
    common::vault_client_provider();
    let pg = PgCluster::start(0).await.unwrap();
    pg.create_database("stores").await.unwrap();
    let url = pg.superuser_url(pg.primary(), "stores");
    store_service::migrate::run(&url).await.unwrap();
    let mut settings = Settings::defaults();
    settings.port = 0;
    settings.host = [127, 0, 0, 1].into();
    settings.database_url = Some(Secret::new(url));
    let app = Application::build(settings).await.unwrap();
    let address = format!("127.0.0.1:{}", app.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));

    // A POST whose body arrives in two halves, the shutdown in between.
    let body = br#"{"name": "Draining Shop"}"#;
    let (first, second) = body.split_at(10);
    let mut client = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /api/stores HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(first).await.unwrap();
    // Wait until the server has read the head and started the request.
    let http = common::http();
    let in_flight = "http_requests_in_flight{method=\"POST\",route=\"/api/stores\"} 1";
    let mut started = false;
    for _ in 0..500 {
        let metrics = http
            .get(format!("http://{address}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.lines().any(|line| line == in_flight) {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started, "the POST never started");
    drop(http);
    stop.send(()).unwrap();

    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(&address).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "the listener still accepts after the shutdown signal"
    );

    client.write_all(second).await.unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(answer.contains("Draining Shop"));
    server.await.unwrap().unwrap();
}
