//! The real stack for the gateway's tests: PostgreSQL (testkit), the
//! store-service **binary** (built by the first test that needs it) behind
//! a connection-counting TCP relay, OpenBao as the security service (its
//! identity token issuer), the gateway in-process, and small local
//! receivers (a counting JWKS proxy, a PagerDuty receiver).

#![allow(dead_code, unreachable_pub)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, Uri},
    routing::get,
    routing::post,
};
use gateway::{Application, Config, Gateway, Settings};
use serde_json::{Value, json};
use testkit::{OidcIssuer, OpenBao, PgCluster, Service, ServiceCommand};
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::oneshot,
};

/// [`testkit::eventually`], failing the test when `within` passes.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    testkit::eventually(what, within, check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// GETs `url` with `token` as bearer.
pub async fn get_with(url: &str, token: &str) -> reqwest::Response {
    http()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("GET answers")
}

/// GETs `url` (with `token` as bearer unless empty) until the answer has `status`, for
/// at most `within`; returns that answer.
pub async fn get_until(url: &str, token: &str, status: u16, within: Duration) -> reqwest::Response {
    let http = http();
    eventually(&format!("{status} from {url}"), within, || {
        let mut request = http.get(url);
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        let request = request.send();
        async move {
            let r = request.await.ok()?;
            (r.status() == status).then_some(r)
        }
    })
    .await
}

/// The store-service binary, built alone once per test process.
pub fn store_service_binary() -> PathBuf {
    testkit::build_binary("store-service").expect("store-service builds")
}

/// A TCP relay that counts the connections it accepted.
pub struct CountingRelay {
    pub addr: std::net::SocketAddr,
    pub connections: Arc<AtomicU64>,
}

impl CountingRelay {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay binds");
        let addr = listener.local_addr().expect("relay address");
        let connections = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, connections }
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

/// The store service: a spawned binary (killed on drop) on PostgreSQL,
/// with `DATABASE_URL` (no Vault: OpenBao here is the security service).
pub struct Store {
    pub pg: PgCluster,
    pub service: Service,
    pub addr: std::net::SocketAddr,
    pub relay: CountingRelay,
}

impl Store {
    pub async fn start() -> Self {
        let binary = tokio::task::spawn_blocking(store_service_binary)
            .await
            .expect("build task");
        let pg = PgCluster::start(0).await.expect("postgres starts");
        testkit::migrate_store(&binary, &pg, "stores")
            .await
            .expect("store-service migrate");
        let url = pg.superuser_url(pg.primary(), "stores");
        let port = testkit::free_port().expect("free port");
        let command = ServiceCommand::new(&binary)
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("DATABASE_URL", &url)
            .env("DB_MAX_CONNECTIONS", "8")
            .env("RUST_LOG", "error")
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR");
        let service = Service::start(command, format!("http://127.0.0.1:{port}/ready"))
            .await
            .expect("store-service starts");
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let relay = CountingRelay::start(addr).await;
        Self {
            pg,
            service,
            addr,
            relay,
        }
    }

    /// Kills the service (its port refuses connections until `restart`).
    pub async fn stop(&mut self) {
        self.service.kill();
    }

    /// Starts the service again on the same port and database.
    pub async fn restart(&mut self) {
        self.service
            .restart()
            .await
            .expect("store-service restarts");
    }

    /// A connection to the store database, as the superuser.
    pub async fn db(&self) -> tokio_postgres::Client {
        self.pg
            .admin_db(self.pg.primary(), "stores")
            .await
            .expect("database connection")
    }

    /// Requests the store service has served on `/api/...` (from its own
    /// `http_requests_total`): what reached the upstream.
    pub async fn api_requests(&self) -> u64 {
        let text = http()
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await
            .expect("store metrics")
            .text()
            .await
            .expect("store metrics text");
        text.lines()
            .filter(|l| l.starts_with("http_requests_total{"))
            .filter(|l| {
                !l.contains("route=\"/metrics\"")
                    && !l.contains("route=\"/ready\"")
                    && !l.contains("route=\"/health\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

/// A local HTTP server that serves OpenBao's JWKS through itself and
/// counts the fetches: what the security service sees.
pub struct CountingJwks {
    pub url: String,
    pub fetches: Arc<AtomicU64>,
}

impl CountingJwks {
    pub async fn start(upstream: String) -> Self {
        let fetches = Arc::new(AtomicU64::new(0));
        let state = (upstream, Arc::clone(&fetches), http());
        let app = Router::new()
            .route(
                "/keys",
                get(
                    |State((upstream, fetches, http)): State<(
                        String,
                        Arc<AtomicU64>,
                        reqwest::Client,
                    )>| async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        match http.get(&upstream).send().await {
                            Ok(r) => (
                                axum::http::StatusCode::from_u16(r.status().as_u16())
                                    .unwrap_or(axum::http::StatusCode::BAD_GATEWAY),
                                r.bytes().await.unwrap_or_default().to_vec(),
                            ),
                            Err(_) => (axum::http::StatusCode::BAD_GATEWAY, Vec::new()),
                        }
                    },
                ),
            )
            .with_state(state);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("jwks binds");
        let url = format!("http://{}/keys", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, fetches }
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A PagerDuty Events API v2 stand-in that records every event.
pub struct PagerDutyReceiver {
    pub url: String,
    pub events: Arc<Mutex<Vec<Value>>>,
}

impl PagerDutyReceiver {
    pub async fn start() -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/v2/enqueue",
                post(
                    |State(events): State<Arc<Mutex<Vec<Value>>>>, Json(event): Json<Value>| async move {
                        events.lock().unwrap().push(event);
                        (axum::http::StatusCode::ACCEPTED, Json(json!({"status": "success"})))
                    },
                ),
            )
            .with_state(Arc::clone(&events));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("receiver binds");
        let url = format!("http://{}/v2/enqueue", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, events }
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Waits until `count` events `action` with `dedup_key` arrived.
    pub async fn wait_for(&self, action: &str, dedup_key: &str, count: usize) {
        eventually(
            &format!("{count} PagerDuty {action} for {dedup_key}"),
            Duration::from_secs(10),
            || {
                let seen = self
                    .actions()
                    .iter()
                    .filter(|(a, k)| a == action && k == dedup_key)
                    .count();
                async move { (seen >= count).then_some(()) }
            },
        )
        .await;
    }

    pub fn actions(&self) -> Vec<(String, String)> {
        self.events()
            .iter()
            .map(|e| {
                (
                    e["event_action"].as_str().unwrap_or_default().to_owned(),
                    e["dedup_key"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

/// OpenBao as the security service.
pub struct Security {
    pub bao: OpenBao,
    pub issuer: OidcIssuer,
}

impl Security {
    pub async fn start() -> Self {
        let bao = OpenBao::start().await.expect("OpenBao starts");
        let issuer = bao
            .configure_oidc_issuer("gateway", "api", Duration::from_secs(600))
            .await
            .expect("issuer");
        Self { bao, issuer }
    }

    pub async fn token(&self, scope: &str) -> String {
        self.bao
            .oidc_token(&self.issuer, scope)
            .await
            .expect("token")
    }
}

/// The gateway's configuration for `store` (through its relay) and
/// `security`, with `extra` TOML appended to `[auth]`.
pub fn config_text(
    jwks_url: &str,
    security: &Security,
    store: &Store,
    auth_extra: &str,
    rest: &str,
) -> String {
    format!(
        r#"
[server]
body_limit_bytes = 1024
drain_timeout = "5s"

[auth]
jwks_url = "{jwks_url}"
issuer = "{issuer}"
audiences = ["{audience}"]
fetch_timeout = "1s"
{auth_extra}

# These tests send many refused requests from one address on purpose.
[pre_auth_limit]
per_second = 10000
burst = 100000

[upstreams]
store = "http://{store}"

{rest}
"#,
        issuer = security.issuer.issuer,
        audience = security.issuer.client_id,
        store = store.relay.addr,
    )
}

/// A running gateway (in-process), stopped on drop.
pub struct RunningGateway {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub state: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
    /// Holds the write queue's file when the configuration names none.
    _queue_dir: Option<tempfile::TempDir>,
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl RunningGateway {
    pub async fn start(config_text: &str) -> Self {
        let mut config = Config::parse(config_text)
            .expect("config parses")
            .with_upstreams(None, None)
            .expect("config checks");
        let queue_dir = (!config_text.contains("queue_path")).then(|| {
            let dir = tempfile::tempdir().expect("queue folder");
            config.degraded.queue_path = dir.path().join("queue.redb");
            dir
        });
        let mut settings = Settings::new("test.toml");
        settings.port = 0;
        settings.host = [127, 0, 0, 1].into();
        settings.pagerduty_routing_key = Some(gateway::Secret::new("test-routing-key"));
        let app = Application::with_config(config, &settings)
            .await
            .expect("gateway builds");
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], app.port()).into();
        let state = Arc::clone(app.gateway());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        let gateway = Self {
            base: format!("http://{addr}"),
            addr,
            state,
            stop: Some(stop),
            _queue_dir: queue_dir,
        };
        get_until(&gateway.url("/ready"), "", 200, Duration::from_secs(30)).await;
        gateway
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The gateway's `/metrics` text.
    pub async fn metrics(&self) -> String {
        http()
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }
}

/// testkit's HTTP client (no proxy from the environment, rustls provider
/// installed).
pub fn http() -> reqwest::Client {
    testkit::http_client().expect("reqwest client")
}

/// Sends `raw` bytes on a fresh connection and returns everything read
/// until the server closes or 2 s of silence.
pub async fn raw_request(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of a raw HTTP/1.1 answer.
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Creates a store through the gateway and returns its id.
pub async fn create_store(gw: &RunningGateway, token: &str, name: &str) -> String {
    let response = http()
        .post(gw.url("/api/stores"))
        .bearer_auth(token)
        .json(&json!({ "name": name }))
        .send()
        .await
        .expect("POST answers");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or_default();
    assert_eq!(status, 201, "{body}");
    body["store"]["id"].as_str().expect("store id").to_owned()
}

/// What the echo upstream received.
pub type Seen = Arc<Mutex<Vec<Value>>>;

/// An upstream answering with what it received (and recording it).
pub async fn echo_upstream() -> (SocketAddr, Seen) {
    echo_upstream_on(0).await
}

/// [`echo_upstream`] on `port`.
pub async fn echo_upstream_on(port: u16) -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .fallback(
            |State(seen): State<Seen>,
             method: Method,
             uri: Uri,
             headers: HeaderMap,
             body: Bytes| async move {
                let headers: serde_json::Map<String, Value> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or("?"))))
                    .collect();
                let request = json!({
                    "method": method.as_str(),
                    "uri": uri.to_string(),
                    "headers": headers,
                    "body": String::from_utf8_lossy(&body),
                });
                seen.lock().unwrap().push(request.clone());
                // `/missing` anywhere: the upstream's own 404.
                let status = if uri.path().ends_with("/missing") {
                    axum::http::StatusCode::NOT_FOUND
                } else {
                    axum::http::StatusCode::OK
                };
                (
                    status,
                    [
                        ("connection", "x-upstream-hop"),
                        ("x-upstream-hop", "secret"),
                        ("keep-alive", "timeout=5"),
                        ("x-upstream", "kept"),
                    ],
                    Json(request),
                )
            },
        )
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

/// The number of series in a Prometheus text whose labels a client's
/// request decides (requests, auth failures, rate limits); the gateway's
/// own figures (key fetches, breakers) are not the client's doing.
pub fn series(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| {
            [
                "gateway_request",
                "gateway_auth_failures",
                "gateway_rate_limited",
            ]
            .iter()
            .any(|family| l.starts_with(family))
        })
        .count()
}

/// The `sub` claim of a JWT (read, not verified).
pub fn subject_of(token: &str) -> String {
    testkit::jwt_subject(token).expect("a JWT with a subject")
}

/// One keep-alive HTTP/1.1 connection for raw requests.
pub struct RawConnection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawConnection {
    pub async fn open(addr: std::net::SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buffer: Vec::new(),
        }
    }

    /// Sends `raw` and reads one answer (head and a `Content-Length`
    /// body); returns its status and head.
    pub async fn send(&mut self, raw: &[u8]) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.stream.write_all(raw).await.expect("write");
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                if self.buffer.len() >= end + 4 + length {
                    self.buffer.drain(..end + 4 + length);
                    return (raw_status(&head), head);
                }
            }
            let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut chunk))
                .await
                .expect("an answer within 10 s")
                .expect("read");
            assert!(n > 0, "the gateway closed the connection");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

/// This process's resident memory, in KiB.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
