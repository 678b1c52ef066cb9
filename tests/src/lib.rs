#![doc = include_str!("../README.md")]

use std::time::Duration;

use serde_json::Value;
use testkit::{
    DatabaseEngine, NatsCluster, OidcIssuer, OpenBao, PgCluster, Service, ServiceCommand,
    build_binary, configure_store_service, migrate_store, store_service_command,
};

/// The store database.
pub const DATABASE: &str = "stores";
/// The gateway's stores route timeout, as in `cargo xtask up`'s stack.
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a scenario waits for the platform to settle (a breaker to
/// close, a queued write to be replayed, a failover to be noticed).
pub const SETTLE: Duration = Duration::from_secs(120);
/// How long a fleet gateway holds a resource it replays without renewing
/// it (`degraded.jetstream.lease`): a killed gateway's writes are taken
/// over this much later.
pub const LEASE: Duration = Duration::from_secs(3);
/// The fleet's queue key (`GATEWAY_QUEUE_KEY`, base64 of the bytes 0 to
/// 31): every gateway opens what the others sealed.
const FLEET_QUEUE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Where the gateways keep their write queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    /// One gateway, its queue in an embedded redb file.
    Redb,
    /// `gateways` gateways sharing one queue on a 3-node NATS JetStream
    /// cluster (3 replicas).
    JetStream {
        /// How many gateways.
        gateways: usize,
    },
}

/// The whole platform on free ports: PostgreSQL (a primary and `replicas`
/// streaming replicas), OpenBao configured as `deploy/vault/setup.sh` does
/// (KV, Transit, the database engine, the production policy, an AppRole
/// and the token issuer), the store-service binary on Vault's credentials
/// and the gateway binary in front of it with the local stack's route
/// (or several gateways sharing a NATS JetStream queue: [`Queue`]).
/// Everything stops when it is dropped.
pub struct Platform {
    /// The database cluster.
    pub pg: PgCluster,
    /// The security service and secret store.
    pub bao: OpenBao,
    /// OpenBao's token issuer, which the gateway trusts.
    pub issuer: OidcIssuer,
    /// The store-service process.
    pub store: Service,
    /// The gateway processes (the first is "the gateway").
    pub gateways: Vec<Service>,
    /// The NATS JetStream cluster the gateways share, with
    /// [`Queue::JetStream`].
    pub nats: Option<NatsCluster>,
    /// `http://127.0.0.1:<port>` of the store service.
    pub store_base: String,
    /// `http://127.0.0.1:<port>` of each gateway.
    pub gateway_bases: Vec<String>,
    /// The HTTP client of the scenarios.
    pub http: reqwest::Client,
    /// Holds the gateway's configuration and write queue.
    _dir: tempfile::TempDir,
}

impl Platform {
    /// Starts everything with one gateway on the embedded queue; panics
    /// (with the failing service's log) when something does not start.
    pub async fn start(replicas: usize) -> Platform {
        Self::start_with(replicas, Queue::Redb).await
    }

    /// Starts everything, with `gateways` gateways sharing a queue on a
    /// 3-node NATS JetStream cluster, and a primary without replicas.
    pub async fn fleet(gateways: usize) -> Platform {
        Self::start_with(0, Queue::JetStream { gateways }).await
    }

    /// Starts everything with `replicas` database replicas and the
    /// gateways of `queue`.
    pub async fn start_with(replicas: usize, queue: Queue) -> Platform {
        let nats = async {
            match queue {
                Queue::Redb => None,
                Queue::JetStream { .. } => Some(
                    NatsCluster::builder()
                        .nodes(3)
                        .start()
                        .await
                        .expect("NATS JetStream starts"),
                ),
            }
        };
        let binaries = tokio::task::spawn_blocking(|| {
            Ok::<_, testkit::Error>((build_binary("store-service")?, build_binary("gateway")?))
        });
        let (pg, bao, nats) = tokio::join!(PgCluster::start(replicas), OpenBao::start(), nats);
        let (pg, bao) = (pg.expect("PostgreSQL starts"), bao.expect("OpenBao starts"));
        let (store_binary, gateway_binary) = binaries
            .await
            .expect("the build task")
            .expect("store-service and gateway build");

        let engine = DatabaseEngine::default();
        migrate_store(&store_binary, &pg, &engine.database)
            .await
            .expect("store-service migrate");
        let approle = configure_store_service(&bao, &pg, &engine)
            .await
            .expect("OpenBao set up for store-service");
        let issuer = bao
            .configure_oidc_issuer("gateway", "api", Duration::from_secs(3600))
            .await
            .expect("token issuer");

        let store_port = testkit::free_port().expect("a free port");
        let store_base = format!("http://127.0.0.1:{store_port}");
        let store = Service::start(
            store_service_command(&store_binary, store_port, &pg, &bao, &approle, &engine)
                .env("DB_MAX_CONNECTIONS", "8"),
            format!("{store_base}/ready"),
        )
        .await
        .expect("store-service starts");

        let dir = tempfile::tempdir().expect("a folder for the gateway");
        let config = dir.path().join("gateway.toml");
        let section = nats.as_ref().map(jetstream_section).unwrap_or_default();
        let text = gateway_config(&issuer, &store_base, dir.path()) + &section;
        std::fs::write(&config, text).expect("writing gateway.toml");
        let count = match queue {
            Queue::Redb => 1,
            Queue::JetStream { gateways } => gateways,
        };
        let (mut gateways, mut gateway_bases) = (Vec::new(), Vec::new());
        for _ in 0..count {
            let port = testkit::free_port().expect("a free port");
            let base = format!("http://127.0.0.1:{port}");
            let command = ServiceCommand::new(&gateway_binary)
                .env("GATEWAY_CONFIG", &config)
                .env("PORT", port.to_string())
                .env("HOST", "127.0.0.1")
                .env("STORE_SERVICE_URL", &store_base)
                .env("LOG_FORMAT", "text")
                .env("RUST_LOG", "warn")
                .env_remove("PAGERDUTY_ROUTING_KEY")
                .env_remove("GATEWAY_NATS_TOKEN");
            let command = match queue {
                Queue::Redb => command.env_remove("GATEWAY_QUEUE_KEY"),
                Queue::JetStream { .. } => command.env("GATEWAY_QUEUE_KEY", FLEET_QUEUE_KEY),
            };
            let gateway = Service::start(command, format!("{base}/ready"))
                .await
                .expect("the gateway starts");
            gateways.push(gateway);
            gateway_bases.push(base);
        }
        // Installs the TLS provider reqwest needs; a fleet's writes may
        // wait out a NATS leader election (publish_timeout, 15 s) after
        // the route's timeout.
        testkit::http_client().expect("an HTTP client");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("an HTTP client");

        Platform {
            pg,
            bao,
            issuer,
            store,
            gateways,
            nats,
            store_base,
            gateway_bases,
            http,
            _dir: dir,
        }
    }

    /// A fresh token whose `scope` claim is `scope` (as `cargo xtask token
    /// --scope`); one scope string is one client (one `sub`).
    pub async fn token(&self, scope: &str) -> String {
        self.bao
            .oidc_token(&self.issuer, scope)
            .await
            .expect("a token from OpenBao")
    }

    /// The (first) gateway's URL of `path`.
    pub fn gateway_url(&self, path: &str) -> String {
        self.url_of(0, path)
    }

    /// Gateway `i`'s URL of `path`.
    pub fn url_of(&self, i: usize, path: &str) -> String {
        format!("{}{path}", self.gateway_bases[i])
    }

    /// The store service's own URL of `path` (behind the gateway).
    pub fn store_url(&self, path: &str) -> String {
        format!("{}{path}", self.store_base)
    }

    /// A request to the (first) gateway with `token` as bearer.
    pub fn through_gateway(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.through(0, method, path, token)
    }

    /// A request to gateway `i` with `token` as bearer.
    pub fn through(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        token: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url_of(i, path))
            .bearer_auth(token)
    }

    /// `GET path` through the gateway with `token`: the status and the
    /// JSON body (`Null` when the body is not JSON).
    pub async fn get_json(&self, path: &str, token: &str) -> (u16, Value) {
        self.get_json_via(0, path, token).await
    }

    /// `GET path` through gateway `i` with `token`: the status and the
    /// JSON body (`Null` when the body is not JSON).
    pub async fn get_json_via(&self, i: usize, path: &str, token: &str) -> (u16, Value) {
        let response = self
            .through(i, reqwest::Method::GET, path, token)
            .send()
            .await
            .expect("the gateway answers");
        (response.status().as_u16(), json_body(response).await)
    }

    /// `GET path` through the gateway with `token` (none when empty).
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        let request = match token {
            "" => self.http.get(self.gateway_url(path)),
            token => self.through_gateway(reqwest::Method::GET, path, token),
        };
        request.send().await.expect("the gateway answers")
    }

    /// `method path` with a JSON `body` through the gateway with `token`
    /// and `headers`: the response.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> reqwest::Response {
        self.send_json_via(0, method, path, token, headers, body)
            .await
    }

    /// `method path` with a JSON `body` through gateway `i` with `token`
    /// and `headers`: the response.
    pub async fn send_json_via(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        token: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> reqwest::Response {
        headers
            .iter()
            .fold(self.through(i, method, path, token), |r, (k, v)| {
                r.header(*k, *v)
            })
            .json(body)
            .send()
            .await
            .expect("the gateway answers")
    }

    /// `GET path` from the store service itself (not through the gateway):
    /// the status and the JSON body.
    pub async fn store_json(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.store_url(path))
            .send()
            .await
            .expect("store-service answers");
        (response.status().as_u16(), json_body(response).await)
    }

    /// A superuser connection to the store database on the current primary.
    pub async fn db(&self) -> tokio_postgres::Client {
        self.pg
            .admin_db(self.pg.primary(), DATABASE)
            .await
            .expect("a connection to the store database")
    }

    /// Polls `GET /api/requests/{id}` through the gateway until the queued
    /// write is finished (`completed` or `failed`); returns its record.
    pub async fn finished(&self, request_id: &str, token: &str) -> Value {
        self.finished_via(0, request_id, token).await
    }

    /// Polls `GET /api/requests/{id}` through gateway `i` until the
    /// queued write is finished; returns its record.
    pub async fn finished_via(&self, i: usize, request_id: &str, token: &str) -> Value {
        let path = format!("/api/requests/{request_id}");
        testkit::eventually(
            &format!("queued write {request_id} to finish"),
            SETTLE,
            || {
                let request = self.through(i, reqwest::Method::GET, &path, token).send();
                async move {
                    let record: Value = request.await.ok()?.json().await.ok()?;
                    matches!(record["status"].as_str(), Some("completed" | "failed"))
                        .then_some(record)
                }
            },
        )
        .await
        .expect("the queued write is replayed")
    }
}

/// The JSON body of `response`, whatever its status (`Null` when it is not
/// JSON).
pub async fn json_body(response: reqwest::Response) -> Value {
    response.json().await.unwrap_or_default()
}

/// `[degraded.jetstream]` on `nats`, appended to the configuration.
fn jetstream_section(nats: &NatsCluster) -> String {
    let urls: Vec<String> = nats.urls().iter().map(|u| format!("{u:?}")).collect();
    format!(
        r#"queue_backend = "jetstream"

[degraded.jetstream]
urls = [{urls}]
replicas = 3
publish_timeout = "15s"
lease = "{lease}s"
"#,
        urls = urls.join(", "),
        lease = LEASE.as_secs(),
    )
}

/// The configuration `cargo xtask up` writes (the stores route with a 2 s
/// timeout and the store-service breaker), with limits that a scenario's
/// bursts of writes do not reach.
fn gateway_config(issuer: &OidcIssuer, store: &str, dir: &std::path::Path) -> String {
    format!(
        r#"
[auth]
jwks_url = "{jwks}"
issuer = "{iss}"
audiences = ["{aud}"]

[pre_auth_limit]
per_second = 10000
burst = 10000

[rate_limit]
per_second = 10000
burst = 10000

[upstreams]
store = "{store}"

[[routes]]
name = "stores"
prefix = "/api/stores"
upstream = "{store}"
timeout = "{timeout}s"
breaker = {{ preset = "store-service" }}
scopes = {{ GET = ["stores:read"], HEAD = ["stores:read"], POST = ["stores:write"], PUT = ["stores:write"], PATCH = ["stores:write"] }}
segment_scopes = {{ secrets = ["stores:secrets"] }}
sensitive_segments = ["secrets"]
openapi = "/openapi.json"

[degraded]
queue_path = "{queue}"
"#,
        jwks = issuer.jwks_url,
        iss = issuer.issuer,
        aud = issuer.client_id,
        timeout = ROUTE_TIMEOUT.as_secs(),
        queue = dir.join("gateway-queue.redb").display(),
    )
}
