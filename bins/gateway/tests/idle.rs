//! Many idle and slow clients (issue 19): 2,000 connections that send
//! nothing or half a request line. The gateway's memory stays under a
//! stated bound, it still answers a new client, and every one of those
//! connections is closed by the gateway after its header-read timeout,
//! and the memory they held is given back.
//! (Alone in its test binary: the process's memory is the gateway's and
//! this test's only.)

mod common;

use std::time::Duration;

use common::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The idle and slow connections.
const CLIENTS: usize = 2_000;

/// The stated bound: what 2,000 idle connections may add to the gateway's
/// (and this test's client sockets') resident memory.
const BOUND_KIB: u64 = 40 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_clients_are_bounded_and_closed() {
    let (store, security) = tokio::join!(Store::start(), Security::start());
    let rest = "";
    let config = config_text(&security.issuer.jwks_url, &security, &store, "", rest).replace(
        "drain_timeout = \"5s\"",
        "drain_timeout = \"5s\"\nheader_read_timeout = \"3s\"\nmax_connections = 3000",
    );
    let gw = RunningGateway::start(&config).await;
    let token = security.token("stores:read").await;
    get_until(&gw.url("/api/stores"), &token, 200, Duration::from_secs(10)).await;
    let before = rss_kib();

    let mut idle = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let mut stream = TcpStream::connect(gw.addr).await.expect("connect");
        if i % 2 == 1 {
            stream.write_all(b"GET /api/stores HT").await.unwrap();
        }
        idle.push(stream);
    }
    // Every connection is accepted and holds its state now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = rss_kib();
    let grown = during.saturating_sub(before);
    eprintln!(
        "{CLIENTS} idle connections: VmRSS {before} KiB -> {during} KiB (+{grown} KiB, {} bytes each)",
        grown * 1024 / CLIENTS as u64
    );
    assert!(
        grown < BOUND_KIB,
        "{CLIENTS} idle connections grew memory by {grown} KiB (bound {BOUND_KIB} KiB)"
    );

    // A new client is still served.
    let fresh = get_with(&gw.url("/api/stores"), &token).await;
    assert_eq!(fresh.status(), 200);

    // After the header-read timeout every idle or slow connection is
    // closed by the gateway: reading gives end of stream (or a 408-less
    // close), never a hang.
    let mut closed = 0;
    for mut stream in idle {
        let mut buffer = [0u8; 512];
        let read = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut buffer)).await;
        match read {
            Ok(Ok(_)) | Ok(Err(_)) => closed += 1,
            Err(_) => panic!("a connection was still open 15 s after connecting"),
        }
    }
    assert_eq!(closed, CLIENTS);

    // And the memory they held is given back to the kernel (service-kit's
    // trimmer, once the open connections fell to a quarter of their peak;
    // glibc's malloc alone kept it all).
    let limit = before + grown / 4;
    let waited = tokio::time::Instant::now();
    let mut after = rss_kib();
    while after > limit && waited.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = rss_kib();
    }
    eprintln!(
        "after the {CLIENTS} connections closed: VmRSS {after} KiB ({:?} after the last)",
        waited.elapsed()
    );
    assert!(
        after <= limit,
        "VmRSS still {after} KiB 30 s after the connections closed (idle {before} KiB, with them {during} KiB)"
    );
}
