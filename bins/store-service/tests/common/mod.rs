//! A real stack for the tests: PostgreSQL (primary + replica), OpenBao set
//! up by testkit as production's (the database engine, Transit, the
//! production policy and AppRole), the migrations applied, and the service
//! spawned in-process on a free port.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use store_service::{AppState, Application, Secret, Settings};
use testkit::{DatabaseEngine, OpenBao, PgCluster};

/// Everything a test talks to.
pub struct Stack {
    pub pg: Arc<PgCluster>,
    pub bao: Arc<OpenBao>,
    pub settings: Settings,
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
}

/// Starts PostgreSQL and OpenBao, configures them, applies the migrations
/// as the owner and returns settings for the service (not started).
pub async fn services(engine: DatabaseEngine) -> (Arc<PgCluster>, Arc<OpenBao>, Settings) {
    vault_client_provider();
    let (pg, bao) = tokio::join!(PgCluster::start(1), OpenBao::start());
    let (pg, bao) = (
        Arc::new(pg.expect("postgres starts")),
        Arc::new(bao.expect("openbao starts")),
    );
    let approle = testkit::configure_store_service(&bao, &pg, &engine)
        .await
        .expect("OpenBao set up for store-service");
    let owner_url = pg.superuser_url(pg.primary(), &engine.database);
    let applied = store_service::migrate::run(&owner_url)
        .await
        .expect("migrations apply");
    assert!(applied.contains(&2) && applied.contains(&3), "{applied:?}");
    let port = |id: testkit::NodeId| format!("127.0.0.1:{}", pg.node(id).port());
    let mut settings = Settings::defaults();
    settings.port = 0;
    settings.host = [127, 0, 0, 1].into();
    settings.bao_addr = Some(bao.addr().to_owned());
    settings.bao_role_id = Some(approle.role_id);
    settings.bao_secret_id = Some(Secret::new(approle.secret_id));
    settings.db_primary = Some(port(pg.primary()));
    settings.db_replicas = pg.replicas().into_iter().map(port).collect();
    settings.db_name = engine.database.clone();
    settings.vault_startup_timeout_secs = 5;
    settings.db_max_connections = 8;
    (pg, bao, settings)
}

/// Spawns the service with `settings`.
pub async fn spawn(settings: Settings) -> (String, AppState) {
    let app = Application::build(settings)
        .await
        .expect("the service starts");
    let base = format!("http://127.0.0.1:{}", app.port());
    let state = app.state().clone();
    tokio::spawn(app.run_until_stopped());
    (base, state)
}

/// The whole stack with default settings.
pub async fn stack() -> Stack {
    stack_with(DatabaseEngine::default()).await
}

/// The whole stack, the database engine configured as `engine` says.
pub async fn stack_with(engine: DatabaseEngine) -> Stack {
    let (pg, bao, settings) = services(engine).await;
    let (base, state) = spawn(settings.clone()).await;
    Stack {
        pg,
        bao,
        settings,
        base,
        http: http(),
        state,
    }
}

/// testkit's HTTP client (no proxy, a rustls provider installed).
pub fn http() -> reqwest::Client {
    testkit::http_client().expect("reqwest client")
}

/// reqwest needs a rustls provider in this workspace.
pub fn vault_client_provider() {
    vault_client::install_crypto_provider();
}

impl Stack {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a JSON body to `/api/stores`.
    pub async fn create(&self, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url("/api/stores"))
            .json(&body)
            .send()
            .await
            .expect("POST answers")
    }
}

/// GETs `url` and parses the JSON body, whatever the status.
#[allow(dead_code)] // not every test file uses it
pub async fn get_json(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> serde_json::Value {
    http.get(url)
        .send()
        .await
        .expect("the request is answered")
        .json()
        .await
        .expect("a JSON body")
}
