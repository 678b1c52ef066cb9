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
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use testkit::{DatabaseEngine, OidcIssuer, OpenBao, PgCluster, Service, ServiceCommand};

const DATABASE: &str = "stores";
/// The OIDC client id (the tokens' `aud`) deploy/vault/setup.sh fixes and
/// the gateway's production configuration expects.
const CLIENT_ID: &str = "store-platform-api";
/// Where the production gateway.toml points at OpenBao.
const CLUSTER_BAO: &str = "https://openbao.openbao.svc:8200";
/// The write queue's sealing key (base64 of the 32 bytes 0..=31; the
/// cluster's comes from the Secret `gateway-queue-key`).
const QUEUE_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn read(relative: &str) -> String {
    testkit::workspace_file(relative).unwrap_or_else(|e| panic!("{e}"))
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

/// OpenBao as deploy/vault/setup.sh configures it (AppRole instead of
/// Kubernetes auth, which needs a cluster): testkit's store-service set-up
/// (KV, Transit, the database engine, the production policy) and the token
/// issuer with the fixed client id.
async fn configure_bao(pg: &PgCluster, bao: &OpenBao) -> (testkit::AppRoleCredentials, OidcIssuer) {
    let approle = testkit::configure_store_service(bao, pg, &DatabaseEngine::default())
        .await
        .expect("OpenBao set up for store-service with the production policy");
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
    let (store_binary, gateway_binary) = tokio::task::spawn_blocking(|| {
        (
            testkit::build_binary("store-service").expect("store-service builds"),
            testkit::build_binary("gateway").expect("the gateway builds"),
        )
    })
    .await
    .expect("build task");
    let tmp = tempfile::tempdir().expect("temp dir");

    let pg = PgCluster::start(1).await.expect("PostgreSQL starts");
    let bao = OpenBao::start().await.expect("OpenBao starts");
    // The migrate Job's command.
    testkit::migrate_store(&store_binary, &pg, DATABASE)
        .await
        .expect("store-service migrate");
    let (approle, issuer) = configure_bao(&pg, &bao).await;

    let http = testkit::http_client().expect("http client");

    // store-service with the variables of deploy/k8s/base/store-service.
    let store_port = testkit::free_port().expect("free port");
    let store_url = format!("http://127.0.0.1:{store_port}");
    let command = testkit::store_service_command(
        &store_binary,
        store_port,
        &pg,
        &bao,
        &approle,
        &DatabaseEngine::default(),
    )
    .env("DB_MAX_CONNECTIONS", "4");
    let _store = Service::start(command, format!("{store_url}/ready"))
        .await
        .expect("store-service starts");
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
    let gateway_url = format!("http://127.0.0.1:{gateway_port}");
    let _gateway = Service::start(
        ServiceCommand::new(&gateway_binary)
            .env("GATEWAY_CONFIG", gateway_config(tmp.path(), &bao, &issuer))
            .env("GATEWAY_QUEUE_KEY", QUEUE_KEY)
            .env("PORT", gateway_port.to_string())
            .env("HOST", "127.0.0.1")
            .env("STORE_SERVICE_URL", &store_url)
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .env_remove("PAGERDUTY_ROUTING_KEY"),
        format!("{gateway_url}/ready"),
    )
    .await
    .expect("the gateway starts");

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
    let scrape = || {
        let http = http.clone();
        let urls = [store_url.clone(), gateway_url.clone()];
        async move {
            let mut names = BTreeSet::new();
            for url in urls {
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
            names
        }
    };
    let missing = |names: &BTreeSet<String>| -> Vec<String> {
        used.iter()
            .filter(|(name, _)| !is_exported(name, names))
            .map(|(name, uses)| format!("  {name} (used by {uses})"))
            .collect()
    };
    let all = testkit::eventually(
        "every used metric to be exported",
        Duration::from_secs(30),
        || {
            let names = scrape();
            async { Some(names.await).filter(|names| missing(names).is_empty()) }
        },
    )
    .await;
    if let Err(timeout) = all {
        let missing = missing(&scrape().await);
        panic!(
            "{timeout}: metrics used by deploy/'s alert rules or dashboard that neither \
             store-service nor the gateway exports:\n{}",
            missing.join("\n")
        );
    }
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
