//! The limits on real sockets: slow and idle clients are closed after the
//! header-read timeout while new ones are served, the connection past the
//! limit is refused with a 503, and shutdown lets a request finish.

use std::{net::SocketAddr, time::Duration};

use axum::{Router, routing::get};
use service_kit::{Limits, serve};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

async fn start(limits: Limits) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new().route("/", get(|| async { "hello" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            "finished"
        }),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        router,
        limits,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));
    (address, stop, server)
}

/// Reads until the server closes the connection (at most 10 s).
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server did not close the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

async fn get_once(address: SocketAddr, path: &str) -> String {
    let mut client = TcpStream::connect(address).await.unwrap();
    client
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    until_closed(&mut client).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_closed_after_the_header_timeout() {
    let limits = Limits {
        header_read_timeout: Duration::from_millis(600),
        ..Limits::default()
    };
    let (address, _stop, _server) = start(limits).await;
    // A slow loris: a partial request line, then nothing.
    let mut loris = TcpStream::connect(address).await.unwrap();
    loris.write_all(b"GET / HT").await.unwrap();
    // A kept-alive client that goes quiet after one answer.
    let mut idle = TcpStream::connect(address).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 256];
    let n = idle.read(&mut first).await.unwrap();
    assert!(
        std::str::from_utf8(&first[..n])
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );
    // Meanwhile a new client is served.
    assert!(get_once(address, "/").await.starts_with("HTTP/1.1 200"));
    // Both are closed by the server (read returns end of stream).
    until_closed(&mut loris).await;
    until_closed(&mut idle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_limit_a_connection_is_refused_with_a_503() {
    let limits = Limits {
        max_connections: 2,
        header_read_timeout: Duration::from_secs(30),
        ..Limits::default()
    };
    let (address, _stop, _server) = start(limits).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = TcpStream::connect(address).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 256];
        let n = client.read(&mut answer).await.unwrap();
        assert!(
            std::str::from_utf8(&answer[..n])
                .unwrap()
                .starts_with("HTTP/1.1 200")
        );
        held.push(client);
    }
    let refused = get_once(address, "/").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("retry-after: 1"), "{refused}");
    assert!(
        refused.contains("\"error\":\"TOO_MANY_CONNECTIONS\""),
        "{refused}"
    );
    // A slot freed is a slot served.
    drop(held.pop());
    let mut served = String::new();
    for _ in 0..100 {
        served = get_once(address, "/").await;
        if served.starts_with("HTTP/1.1 200") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_431_and_shutdown_drains_requests_in_flight() {
    let limits = Limits {
        max_header_bytes: 2048,
        ..Limits::default()
    };
    let (address, stop, server) = start(limits).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(4096)
    );
    let mut client = TcpStream::connect(address).await.unwrap();
    client.write_all(big.as_bytes()).await.unwrap();
    let answer = until_closed(&mut client).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // A slow request started before the shutdown still gets its answer.
    let slow = tokio::spawn(get_once(address, "/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.send(()).unwrap();
    let answer = slow.await.unwrap();
    assert!(answer.contains("finished"), "{answer}");
    server.await.unwrap();
    assert!(
        TcpStream::connect(address).await.is_err(),
        "no longer listening"
    );
}
