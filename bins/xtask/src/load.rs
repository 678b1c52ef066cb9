//! A closed-loop HTTP/1.1 load generator: N keep-alive connections, each
//! sending its next request as soon as the previous response is read, for
//! a fixed duration. Reports requests per second and latency percentiles of
//! the successful requests; failures (transport errors and non-2xx
//! responses) are counted separately.
//!
//! The client is a minimal HTTP/1.1 implementation on a tokio `TcpStream`
//! (`Content-Length` and chunked bodies, keep-alive, reconnect after
//! `Connection: close` or an error): it only talks to the workspace's own
//! services, and keeps the load generator's cost per request small on a
//! machine it shares with the service and PostgreSQL.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// What the load generator saw of one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// The status code.
    pub(crate) status: u16,
    /// The `ETag` header, if any.
    pub(crate) etag: Option<String>,
    /// The `Link` header, if any.
    pub(crate) link: Option<String>,
    /// The body's length in bytes.
    pub(crate) body_len: usize,
}

/// One connection's requests: the next request to send, and what to learn
/// from each response (e.g. the version of a store for its next `PUT`).
pub(crate) trait Workload: Send + 'static {
    /// The next request, a complete HTTP/1.1 message.
    fn request(&mut self) -> Vec<u8>;

    /// Called with each response; returns whether it counts as a success
    /// (default: a 2xx status).
    fn response(&mut self, response: &Response) -> bool {
        (200..300).contains(&response.status)
    }

    /// Whether this connection has sent all it had to send (default: never;
    /// the run's duration ends it).
    fn done(&self) -> bool {
        false
    }
}

/// The figures of one run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    /// Successful requests.
    pub(crate) ok: u64,
    /// Failed requests: transport errors and unsuccessful responses.
    pub(crate) errors: u64,
    /// The first failure seen, for the report.
    pub(crate) first_error: Option<String>,
    /// Wall time of the run.
    pub(crate) elapsed: Duration,
    /// Latencies of the successful requests, in microseconds, sorted.
    latencies_us: Vec<u32>,
}

impl Report {
    /// Successful requests per second.
    pub(crate) fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// The `q` quantile (0..=1) of the successful requests' latency.
    pub(crate) fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(quantile_us(&self.latencies_us, q).into())
    }
}

/// The `q` quantile of sorted `values` (nearest rank; 0 when empty).
pub(crate) fn quantile_us(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Runs one workload per connection against `addr` for `duration`.
pub(crate) async fn run<W: Workload>(
    addr: std::net::SocketAddr,
    workloads: Vec<W>,
    duration: Duration,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for workload in workloads {
        tasks.spawn(connection_loop(addr, workload, deadline));
    }
    let mut report = Report {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    while let Some(done) = tasks.join_next().await {
        let part = done.context("a load connection panicked")?;
        report.ok += part.ok;
        report.errors += part.errors;
        if report.first_error.is_none() {
            report.first_error = part.first_error;
        }
        report.latencies_us.extend(part.latencies_us);
    }
    report.elapsed = started.elapsed();
    report.latencies_us.sort_unstable();
    Ok(report)
}

/// Sends one request on a new connection and returns the response.
pub(crate) async fn once(addr: std::net::SocketAddr, request: &[u8]) -> anyhow::Result<Response> {
    let mut connection = Connection::open(addr).await?;
    Ok(connection.exchange(request).await?.0)
}

async fn connection_loop<W: Workload>(
    addr: std::net::SocketAddr,
    mut workload: W,
    deadline: Instant,
) -> Report {
    let mut part = Report {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies_us: Vec::with_capacity(1 << 14),
    };
    let mut connection: Option<Connection> = None;
    while Instant::now() < deadline && !workload.done() {
        let conn = match connection.as_mut() {
            Some(conn) => conn,
            None => match Connection::open(addr).await {
                Ok(conn) => connection.insert(conn),
                Err(e) => {
                    part.fail(format!("{e:#}"));
                    // Do not spin on a refused connection.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let request = workload.request();
        let sent = Instant::now();
        match conn.exchange(&request).await {
            Ok((response, keep_alive)) => {
                let latency = sent.elapsed();
                if !keep_alive {
                    connection = None;
                }
                if workload.response(&response) {
                    part.ok += 1;
                    part.latencies_us
                        .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
                } else {
                    part.fail(format!("HTTP status {}", response.status));
                }
            }
            Err(e) => {
                connection = None;
                part.fail(format!("{e:#}"));
            }
        }
    }
    part
}

impl Report {
    fn fail(&mut self, message: String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(message);
        }
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    stream: BufReader<TcpStream>,
    line: Vec<u8>,
    body: Vec<u8>,
}

impl Connection {
    async fn open(addr: std::net::SocketAddr) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true).context("TCP_NODELAY")?;
        Ok(Connection {
            stream: BufReader::new(stream),
            line: Vec::with_capacity(256),
            body: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends `request` and reads the whole response; also returns whether
    /// the connection may be reused.
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<(Response, bool)> {
        self.stream
            .get_mut()
            .write_all(request)
            .await
            .context("sending the request")?;
        let status_line = self.read_line().await?;
        let status = parse_status_line(&status_line)?;
        let mut etag = None;
        let mut link = None;
        let mut length = None;
        let mut chunked = false;
        let mut keep_alive = true;
        loop {
            let line = self.read_line().await?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                bail!("malformed header line `{line}`");
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    length = Some(
                        value
                            .parse::<usize>()
                            .with_context(|| format!("bad Content-Length `{value}`"))?,
                    );
                }
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => keep_alive = !value.eq_ignore_ascii_case("close"),
                "etag" => etag = Some(value.to_owned()),
                "link" => link = Some(value.to_owned()),
                _ => {}
            }
        }
        let body_len = if chunked {
            self.read_chunked().await?
        } else {
            let length = length.unwrap_or(0);
            self.body.resize(length, 0);
            self.stream
                .read_exact(&mut self.body)
                .await
                .context("reading the body")?;
            length
        };
        Ok((
            Response {
                status,
                etag,
                link,
                body_len,
            },
            keep_alive,
        ))
    }

    async fn read_chunked(&mut self) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let size_line = self.read_line().await?;
            let size = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16)
                .with_context(|| format!("bad chunk size `{size}`"))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(total);
            }
            self.body.resize(size, 0);
            self.stream
                .read_exact(&mut self.body)
                .await
                .context("reading a chunk")?;
            total += size;
            let end = self.read_line().await?;
            if !end.is_empty() {
                bail!("chunk not followed by CRLF");
            }
        }
    }

    /// One line without its CRLF.
    async fn read_line(&mut self) -> anyhow::Result<String> {
        self.line.clear();
        let n = self
            .stream
            .read_until(b'\n', &mut self.line)
            .await
            .context("reading the response")?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        while matches!(self.line.last(), Some(b'\n' | b'\r')) {
            self.line.pop();
        }
        String::from_utf8(std::mem::take(&mut self.line)).context("non-UTF-8 header line")
    }
}

fn parse_status_line(line: &str) -> anyhow::Result<u16> {
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code
            .parse()
            .with_context(|| format!("bad status line `{line}`")),
        _ => bail!("bad status line `{line}`"),
    }
}

/// A `GET` request for `path`.
pub(crate) fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// A request with a JSON body and extra header lines (each ending in CRLF).
pub(crate) fn with_json(method: &str, path: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A small, fast pseudo-random generator (xorshift64*), one per connection.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded from `seed` (any value, 0 included).
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in `1..=max` (`max` ≥ 1).
    pub(crate) fn between_1_and(&mut self, max: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        x % max.max(1) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let values: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile_us(&values, 0.5), 50);
        assert_eq!(quantile_us(&values, 0.99), 99);
        assert_eq!(quantile_us(&values, 1.0), 100);
        assert_eq!(quantile_us(&values, 0.0), 1);
        assert_eq!(quantile_us(&[], 0.5), 0);
    }

    #[test]
    fn the_rng_stays_in_range() {
        let mut rng = Rng::new(0);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let n = rng.between_1_and(5);
            assert!((1..=5).contains(&n));
            seen[(n - 1) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status_line("HTTP/1.1 201 Created").unwrap(), 201);
        assert!(parse_status_line("SSH-2.0 hello").is_err());
        assert!(parse_status_line("HTTP/1.1 abc").is_err());
    }

    #[test]
    fn requests_are_complete_messages() {
        let req = with_json("PUT", "/x", "If-Match: \"3\"\r\n", "{\"a\":1}");
        let text = String::from_utf8(req).unwrap();
        assert!(text.starts_with("PUT /x HTTP/1.1\r\n"));
        assert!(text.contains("Content-Length: 7\r\n"));
        assert!(text.ends_with("If-Match: \"3\"\r\n\r\n{\"a\":1}"));
    }

    /// Serves keep-alive responses: odd requests 200 (`Content-Length`,
    /// with an ETag), even ones 500 (chunked), on each connection.
    async fn server() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    let mut n = 0u64;
                    loop {
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        n += 1;
                        let response: &[u8] = if n % 2 == 1 {
                            b"HTTP/1.1 200 OK\r\nETag: \"7\"\r\nContent-Length: 2\r\n\r\nok"
                        } else {
                            b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n"
                        };
                        if stream.get_mut().write_all(response).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    struct Counting {
        tx: tokio::sync::mpsc::UnboundedSender<Response>,
    }

    impl Workload for Counting {
        fn request(&mut self) -> Vec<u8> {
            get("/")
        }
        fn response(&mut self, response: &Response) -> bool {
            let _ = self.tx.send(response.clone());
            (200..300).contains(&response.status)
        }
    }

    #[tokio::test]
    async fn failures_are_counted_apart_from_successes() {
        let addr = server().await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let workloads = (0..2).map(|_| Counting { tx: tx.clone() }).collect();
        drop(tx);
        let report = run(addr, workloads, Duration::from_millis(200))
            .await
            .unwrap();
        let mut seen = Vec::new();
        while let Some(response) = rx.recv().await {
            seen.push(response);
        }
        let ok = seen.iter().filter(|r| r.status == 200).count() as u64;
        let failed = seen.iter().filter(|r| r.status == 500).count() as u64;
        assert_eq!(report.ok, ok);
        assert_eq!(report.errors, failed);
        assert!(ok > 0 && failed > 0);
        assert_eq!(report.first_error.as_deref(), Some("HTTP status 500"));
        assert!(
            seen.iter()
                .all(|r| (r.status == 200) == (r.etag.as_deref() == Some("\"7\"")))
        );
        assert!(
            seen.iter()
                .all(|r| r.body_len == if r.status == 200 { 2 } else { 3 })
        );
        assert_eq!(report.latencies_us.len() as u64, ok);
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error_not_a_hang() {
        // Bind then drop: the port is (very likely) closed.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let report = run(
            addr,
            vec![Counting {
                tx: tokio::sync::mpsc::unbounded_channel().0,
            }],
            Duration::from_millis(50),
        )
        .await
        .unwrap();
        assert_eq!(report.ok, 0);
        assert!(report.errors > 0);
    }
}
