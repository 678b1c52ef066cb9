//! Bounded metric labels: 10,000 requests with distinct invented methods
//! and paths neither add series to `/metrics` nor grow the process.
//!
//! Its own test binary, so that the process-wide metrics registry and the
//! process's memory are this test's alone. The service runs in-process, so
//! memory is this process's `VmRSS` (`/proc/self/status`), compared with a
//! generous bound (+16 MiB) that the unbounded labels exceed many times
//! over (each new method/route/status adds a counter, a gauge and a
//! histogram of 17 lines).

mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
};

/// How many invented requests the flood sends.
const FLOOD: usize = 10_000;

/// How many go first, so that every series they can create exists.
const WARM_UP: usize = 30;

/// Connections the flood is spread over (keep-alive, sequential on each).
const CONNECTIONS: usize = 4;

/// The memory the flood may add, in KiB.
const RSS_SLACK_KIB: u64 = 16 * 1024;

/// Request `i`: a method of its own (`M00001AAAA`, never a real one) on a
/// path of its own, in three kinds: no route at all, a store route (the
/// template matches, the method does not), and an unknown API path.
fn invented(i: usize) -> String {
    let method = format!("M{i:05}AAAA");
    let path = match i % 3 {
        0 => format!("/invented/{i}/p{:x}", i * 7919),
        1 => format!("/api/stores/invented-{i}"),
        _ => format!("/api/invented-{i}?q={i}"),
    };
    format!("{method} {path} HTTP/1.1\r\nHost: store-service\r\n\r\n")
}

/// Sends `request` on a keep-alive connection and reads one response;
/// returns its status.
fn exchange(stream: &mut BufReader<TcpStream>, request: &str) -> u16 {
    stream.get_mut().write_all(request.as_bytes()).unwrap();
    let mut status_line = String::new();
    stream.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {status_line:?}"));
    let mut length = None;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let length = length.expect("a Content-Length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    status
}

/// Sends requests `range` over one keep-alive connection; returns their
/// statuses.
fn send_all(address: String, range: std::ops::Range<usize>) -> Vec<u16> {
    let mut stream = BufReader::new(TcpStream::connect(address).unwrap());
    range.map(|i| exchange(&mut stream, &invented(i))).collect()
}

/// The series of a Prometheus text page: every line that is not a comment.
/// The series of the request metrics, whose labels a client's request
/// decides (`http_*`); the service's own figures (pools created on first
/// use, say) are not the client's doing.
fn series(page: &str) -> Vec<String> {
    page.lines()
        .filter(|line| line.starts_with("http_"))
        .map(|line| line.rsplit_once(' ').map_or(line, |(s, _)| s).to_owned())
        .collect()
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_and_paths_do_not_grow_metrics_or_memory() {
    let stack = common::stack().await;
    let address = stack.base.trim_start_matches("http://").to_owned();
    let scrape = || async {
        let page = stack
            .http
            .get(stack.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        series(&page)
    };

    // The first few requests create the series every later one uses.
    let warm = {
        let address = address.clone();
        tokio::task::spawn_blocking(move || send_all(address, 0..WARM_UP))
            .await
            .unwrap()
    };
    assert!(warm.iter().all(|s| matches!(s, 404 | 405)), "{warm:?}");
    scrape().await;
    let before = scrape().await;
    let rss_before = rss_kib();

    // The flood: 10,000 more, every method and path new.
    let per_connection = FLOOD / CONNECTIONS;
    let mut senders = Vec::new();
    for c in 0..CONNECTIONS {
        let address = address.clone();
        let start = WARM_UP + c * per_connection;
        senders.push(tokio::task::spawn_blocking(move || {
            send_all(address, start..start + per_connection)
        }));
    }
    let mut answered = 0;
    for sender in senders {
        let statuses = sender.await.unwrap();
        assert!(
            statuses.iter().all(|s| matches!(s, 404 | 405)),
            "an invented request answered otherwise"
        );
        answered += statuses.len();
    }
    assert_eq!(answered, FLOOD);

    let after = scrape().await;
    let rss_after = rss_kib();
    eprintln!(
        "/metrics series: {} before, {} after; VmRSS: {rss_before} KiB before, {rss_after} KiB after",
        before.len(),
        after.len()
    );
    let new: Vec<&String> = after.iter().filter(|s| !before.contains(s)).collect();
    assert!(
        new.is_empty() && after.len() == before.len(),
        "/metrics grew from {} to {} series; new ones (first 10): {:?}",
        before.len(),
        after.len(),
        &new[..new.len().min(10)]
    );
    for line in &after {
        assert!(!line.contains("M0"), "an invented method in {line}");
        assert!(!line.contains("invented"), "an invented path in {line}");
    }
    assert!(
        after
            .iter()
            .any(|s| s.contains("method=\"OTHER\"") && s.contains("route=\"unmatched\"")),
        "no OTHER/unmatched series: {after:?}"
    );
    assert!(
        rss_after <= rss_before + RSS_SLACK_KIB,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB over {FLOOD} requests"
    );
}
