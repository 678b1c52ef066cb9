//! deploy/: every metric name the alert rules and the Grafana dashboard use
//! is one the running services really export.
//!
//! `deploy/check` writes the names used by
//! `deploy/k8s/base/monitoring/prometheusrule.yaml` and
//! `dashboards/store-platform.json` to `deploy/metrics-used.txt` (and fails
//! when that file is stale). This test starts the real platform the way
//! production runs it, on free ports: PostgreSQL (primary + streaming
//! replica) and OpenBao through testkit, configured with the production
//! Vault policy (`deploy/vault/policies/store-service.hcl`) and the
//! gateway's production configuration file
//! (`deploy/k8s/base/gateway/gateway.toml`, with local addresses), then the
//! store-service and gateway binaries. After a few requests through the
//! gateway it reads both `/metrics` and asserts that each listed name is
//! exported (a histogram or summary also matches its `_bucket`, `_sum`,
//! `_count` series).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use testkit::{DatabaseEngine, OidcIssuer, OpenBao, PgCluster};
use tokio::process::{Child, Command};

const DATABASE: &str = "stores";
const APP: &str = "store-service";
/// The OIDC client id (the tokens' `aud`) deploy/vault/setup.sh fixes and
/// the gateway's production configuration expects.
const CLIENT_ID: &str = "store-platform-api";
/// Where the production gateway.toml points at OpenBao.
const CLUSTER_BAO: &str = "https://openbao.openbao.svc:8200";
/// The write queue's sealing key (base64 of the 32 bytes 0..=31; the
/// cluster's comes from the Secret `gateway-queue-key`).
const QUEUE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("bins/xtask is two levels down")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `cargo build -p store-service -p gateway`, once, with this test's
/// target directory and profile (cargo gives a package's tests only its
/// own binaries); returns the profile directory holding both.
fn service_binaries() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command
            .args(["build", "--quiet", "-p", "store-service", "-p", "gateway"])
            .env("CARGO_TARGET_DIR", &target_dir)
            .current_dir(workspace_root());
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            command.arg("--release");
        }
        let status = command.status().expect("cargo runs");
        assert!(
            status.success(),
            "cargo build of the services failed: {status}"
        );
        profile_dir
    })
    .clone()
}

/// The metric names deploy/metrics-used.txt lists, with where each is used.
fn used_metrics() -> BTreeMap<String, String> {
    let used: BTreeMap<String, String> = read("deploy/metrics-used.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, uses) = l.split_once('\t').unwrap_or((l, "?"));
            (name.trim().to_owned(), uses.trim().to_owned())
        })
        .collect();
    assert!(
        !used.is_empty(),
        "deploy/metrics-used.txt lists no metric (run deploy/check --update)"
    );
    used
}

/// Every series name in a Prometheus text exposition, plus the names of
/// the `# TYPE` lines (the base names of histograms and summaries).
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                names.insert(name.to_owned());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

fn is_exported(name: &str, names: &BTreeSet<String>) -> bool {
    names.contains(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| names.contains(&format!("{name}{suffix}")))
}

async fn wait_ready(http: &reqwest::Client, url: &str, child: &mut Child, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("checking the process") {
            panic!("{what} exited before it was ready: {status}");
        }
        if let Ok(r) = http.get(url).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} was not ready within 120 s ({url})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// OpenBao as deploy/vault/setup.sh configures it (AppRole instead of
/// Kubernetes auth, which needs a cluster): KV, Transit, the database
/// engine, the production policy, and the token issuer with the fixed
/// client id.
async fn configure_bao(pg: &PgCluster, bao: &OpenBao) -> (testkit::AppRoleCredentials, OidcIssuer) {
    bao.enable_kv2("secret").await.expect("kv");
    bao.kv_put(
        "secret",
        "store-service/database",
        json!({ "dbname": DATABASE }),
    )
    .await
    .expect("kv put");
    bao.enable_transit("transit").await.expect("transit");
    bao.create_transit_key("transit", "store-secrets")
        .await
        .expect("transit key");
    bao.configure_database(
        pg,
        &DatabaseEngine {
            role: APP.into(),
            database: DATABASE.into(),
            ..DatabaseEngine::default()
        },
    )
    .await
    .expect("database engine");
    bao.write_policy(APP, &read("deploy/vault/policies/store-service.hcl"))
        .await
        .expect("the production policy is accepted");
    let approle = bao
        .enable_approle(APP, &[APP], Duration::from_secs(3600))
        .await
        .expect("approle");
    // setup.sh's issuer: the key, then role `api` with a fixed client id,
    // then testkit's (idempotent) set-up, which keeps that client id.
    bao.call(
        Method::POST,
        "identity/oidc/key/gateway",
        Some(json!({ "algorithm": "ES256", "allowed_client_ids": "*" })),
    )
    .await
    .expect("oidc key");
    bao.call(
        Method::POST,
        "identity/oidc/role/api",
        Some(json!({
            "key": "gateway",
            "ttl": "1h",
            "client_id": CLIENT_ID,
            "template": r#"{"scope": {{identity.entity.metadata.scope}}}"#,
        })),
    )
    .await
    .expect("oidc role with a fixed client id");
    let issuer = bao
        .configure_oidc_issuer("gateway", "api", Duration::from_secs(3600))
        .await
        .expect("oidc issuer");
    assert_eq!(
        issuer.client_id, CLIENT_ID,
        "OpenBao keeps the client id setup.sh gives the role (the gateway's audience)"
    );
    (approle, issuer)
}

/// The production gateway.toml with this machine's OpenBao in place of the
/// cluster's, no PagerDuty, and no cluster CA file (this OpenBao is plain
/// http).
fn gateway_config(dir: &Path, bao: &OpenBao, issuer: &OidcIssuer) -> PathBuf {
    let production = read("deploy/k8s/base/gateway/gateway.toml");
    assert!(
        production.contains(CLUSTER_BAO) && production.contains(CLIENT_ID),
        "gateway.toml no longer names {CLUSTER_BAO} and {CLIENT_ID}: update this test"
    );
    let local: String = production
        .replace(CLUSTER_BAO, bao.addr())
        .replace(
            "/var/lib/gateway/queue.redb",
            &dir.join("queue.redb").display().to_string(),
        )
        .lines()
        .filter(|l| {
            let key = l.trim_start();
            !key.starts_with("pagerduty_url") && !key.starts_with("extra_ca_file")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        local.contains(&format!("issuer = \"{}\"", issuer.issuer)),
        "the production issuer is OpenBao's address + /v1/identity/oidc ({})",
        issuer.issuer
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, local).expect("writing gateway.toml");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_of_the_rules_and_the_dashboard_is_exported() {
    let used = used_metrics();
    let bins = tokio::task::spawn_blocking(service_binaries)
        .await
        .expect("build task");
    let tmp = tempfile::tempdir().expect("temp dir");

    let pg = PgCluster::start(1).await.expect("PostgreSQL starts");
    pg.create_database(DATABASE).await.expect("database");
    let bao = OpenBao::start().await.expect("OpenBao starts");

    // The migrate Job's command.
    let migrated = Command::new(bins.join("store-service"))
        .arg("migrate")
        .env(
            "MIGRATION_DATABASE_URL",
            pg.superuser_url(pg.primary(), DATABASE),
        )
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .status()
        .await
        .expect("store-service migrate runs");
    assert!(migrated.success(), "store-service migrate failed");
    let (approle, issuer) = configure_bao(&pg, &bao).await;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");

    // store-service with the variables of deploy/k8s/base/store-service.
    let store_port = testkit::free_port().expect("free port");
    let replicas: Vec<String> = pg
        .replicas()
        .into_iter()
        .map(|id| format!("127.0.0.1:{}", pg.node(id).port()))
        .collect();
    let mut store = Command::new(bins.join("store-service"))
        .env("PORT", store_port.to_string())
        .env("HOST", "127.0.0.1")
        .env("BAO_ADDR", bao.addr())
        .env("BAO_ROLE_ID", &approle.role_id)
        .env("BAO_SECRET_ID", &approle.secret_id)
        .env(
            "DB_PRIMARY",
            format!("127.0.0.1:{}", pg.node(pg.primary()).port()),
        )
        .env("DB_REPLICAS", replicas.join(","))
        .env("DB_NAME", DATABASE)
        .env("DB_MAX_CONNECTIONS", "4")
        .env("VAULT_DB_ROLE", APP)
        .env("TRANSIT_KEY", "store-secrets")
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("VAULT_ADDR")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("store-service starts");
    let store_url = format!("http://127.0.0.1:{store_port}");
    wait_ready(
        &http,
        &format!("{store_url}/ready"),
        &mut store,
        "store-service",
    )
    .await;
    let ready: Value = http
        .get(format!("{store_url}/ready"))
        .send()
        .await
        .expect("ready")
        .json()
        .await
        .expect("ready JSON");
    assert_eq!(
        ready["status"], "ready",
        "store-service runs on Vault's credentials with the production policy: {ready}"
    );

    // The gateway with the production configuration file. It asks for the
    // queue key from the environment (`queue_key_source = "env"`), as the
    // Deployment gives it from the Secret `gateway-queue-key`.
    let gateway_port = testkit::free_port().expect("free port");
    let mut gateway = Command::new(bins.join("gateway"))
        .env("GATEWAY_CONFIG", gateway_config(tmp.path(), &bao, &issuer))
        .env("GATEWAY_QUEUE_KEY", QUEUE_KEY)
        .env("PORT", gateway_port.to_string())
        .env("HOST", "127.0.0.1")
        .env("STORE_SERVICE_URL", &store_url)
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .env_remove("PAGERDUTY_ROUTING_KEY")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("gateway starts");
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    wait_ready(
        &http,
        &format!("{gateway_url}/ready"),
        &mut gateway,
        "gateway",
    )
    .await;

    // A few requests, so that request, auth and pool metrics exist.
    let token = bao
        .oidc_token(&issuer, "stores:read stores:write")
        .await
        .expect("a token");
    let refused = http
        .get(format!("{gateway_url}/api/stores"))
        .send()
        .await
        .expect("request without token");
    assert_eq!(refused.status(), 401);
    let created = http
        .post(format!("{gateway_url}/api/stores"))
        .bearer_auth(&token)
        .json(&json!({ "name": "Metrics Shop", "secrets": { "K": "v" } }))
        .send()
        .await
        .expect("create through the gateway");
    assert_eq!(created.status(), 201, "POST through the gateway");
    let body: Value = created.json().await.expect("created JSON");
    let id = body["store"]["id"].as_str().expect("store id").to_owned();
    for path in [format!("/api/stores/{id}"), "/api/stores".to_owned()] {
        let r = http
            .get(format!("{gateway_url}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("read through the gateway");
        assert_eq!(r.status(), 200, "GET {path} through the gateway");
    }

    // Probes run every second: give the gauges they set a few rounds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let missing = loop {
        let mut names = BTreeSet::new();
        for url in [&store_url, &gateway_url] {
            let text = http
                .get(format!("{url}/metrics"))
                .send()
                .await
                .expect("/metrics")
                .text()
                .await
                .expect("/metrics text");
            names.extend(exported(&text));
        }
        let missing: Vec<(&String, &String)> = used
            .iter()
            .filter(|(name, _)| !is_exported(name, &names))
            .collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            break missing
                .into_iter()
                .map(|(name, uses)| format!("  {name} (used by {uses})"))
                .collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        missing.is_empty(),
        "metrics used by deploy/'s alert rules or dashboard that neither store-service nor \
         the gateway exports:\n{}",
        missing.join("\n")
    );
}

#[test]
fn exposition_names_include_summary_and_histogram_series() {
    let names = exported(
        "# TYPE a_seconds summary\na_seconds{quantile=\"0.5\"} 1\na_seconds_sum 2\n\
         a_seconds_count 3\n# TYPE b histogram\nb_bucket{le=\"1\"} 1\nc_total{x=\"y\"} 4\nd 5\n",
    );
    assert!(is_exported("a_seconds", &names));
    assert!(is_exported("a_seconds_count", &names));
    assert!(is_exported("b", &names));
    assert!(is_exported("c_total", &names));
    assert!(is_exported("d", &names));
    assert!(!is_exported("e", &names));
}
