//! Vault unreachable at start: the service retries for its start-up budget,
//! then falls back to `DATABASE_URL` and says so on `/ready` (degraded).
//! Secrets, which need Transit, answer 503.

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};
use store_service::{Secret, Settings};
use testkit::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_database_url() {
    common::vault_client_provider();
    let pg = PgCluster::start(1).await.unwrap();
    pg.create_database("stores").await.unwrap();
    store_service::migrate::run(&pg.superuser_url(pg.primary(), "stores"))
        .await
        .unwrap();
    let nobody = testkit::free_port().unwrap();
    let mut settings = Settings::defaults();
    settings.port = 0;
    settings.host = [127, 0, 0, 1].into();
    settings.bao_addr = Some(format!("http://127.0.0.1:{nobody}"));
    settings.bao_token = Some(Secret::new("unused"));
    settings.vault_startup_timeout_secs = 1;
    let url = format!(
        "postgres://postgres:{}@127.0.0.1:{},127.0.0.1:{}/stores",
        pg.superuser_password(),
        pg.node(pg.primary()).port(),
        pg.node(pg.replicas()[0]).port()
    );
    settings.database_url = Some(Secret::new(url));
    let (base, state) = common::spawn(settings).await;
    assert!(state.leases.is_none());
    let http = common::http();

    // Ready (degraded) once the first probe has found the primary: right
    // after start, /ready may still say 503 "no reachable primary".
    let mut ready = Value::Null;
    for _ in 0..100 {
        let response = http.get(format!("{base}/ready")).send().await.unwrap();
        let status = response.status();
        ready = response.json().await.unwrap();
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
        assert_eq!(ready["checks"]["database"]["status"], "down", "{ready}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["checks"]["secrets"]["source"], "DATABASE_URL");

    let created = http
        .post(format!("{base}/api/stores"))
        .json(&json!({"name": "Fallback Shop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let with_secret = http
        .post(format!("{base}/api/stores"))
        .json(&json!({"name": "Secret Shop", "secrets": {"K": "v"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(with_secret.status(), StatusCode::SERVICE_UNAVAILABLE);
    let problem: Value = with_secret.json().await.unwrap();
    assert_eq!(problem["error"], "SERVICE_UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_vault_and_no_database_url_is_a_start_error() {
    common::vault_client_provider();
    let mut settings = Settings::defaults();
    settings.port = 0;
    let error = store_service::Application::build(settings)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("DATABASE_URL"), "{error}");
}

/// `IDEMPOTENCY_HMAC_KEY` is shared by every instance: a retry that reaches
/// another instance is replayed. An instance without it (and without
/// Vault) fingerprints with a key of its own: it answers 422, never a
/// second execution, and says so on `/ready`. The table holds neither the
/// body nor an unkeyed hash of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_key_is_shared_between_instances() {
    common::vault_client_provider();
    let pg = PgCluster::start(0).await.unwrap();
    pg.create_database("stores").await.unwrap();
    let url = pg.superuser_url(pg.primary(), "stores");
    store_service::migrate::run(&url).await.unwrap();
    let settings = |key: Option<&str>| {
        let mut settings = Settings::defaults();
        settings.port = 0;
        settings.host = [127, 0, 0, 1].into();
        settings.database_url = Some(Secret::new(url.clone()));
        settings.idempotency_hmac_key = key.map(Secret::new);
        settings
    };
    let (first, _) = common::spawn(settings(Some("shared fingerprint key"))).await;
    let (second, _) = common::spawn(settings(Some("shared fingerprint key"))).await;
    let (alone, _) = common::spawn(settings(None)).await;
    let http = common::http();
    let body = json!({"name": "Keyed Shop", "secrets": {}});
    let post = |base: &str| {
        http.post(format!("{base}/api/stores"))
            .header("idempotency-key", "retry-elsewhere")
            .json(&body)
            .send()
    };

    let created = post(&first).await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(created.headers().get("idempotent-replayed").is_none());
    let created: Value = created.json().await.unwrap();
    let replayed = post(&second).await.unwrap();
    assert_eq!(replayed.status(), StatusCode::CREATED);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let replayed: Value = replayed.json().await.unwrap();
    assert_eq!(replayed["store"]["id"], created["store"]["id"]);

    let refused = post(&alone).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"], "IDEMPOTENCY_KEY_REUSED");
    let ready: Value = common::get_json(&http, format!("{alone}/ready")).await;
    assert_eq!(
        ready["checks"]["idempotency"],
        json!({"status": "degraded", "fingerprintKey": "this process only"}),
        "{ready}"
    );

    let db = pg.admin_db(pg.primary(), "stores").await.unwrap();
    let raw = serde_json::to_vec(&body).unwrap();
    let mut unkeyed = b"\n".to_vec();
    unkeyed.extend_from_slice(&raw);
    let row = db
        .query_one(
            "SELECT count(*), bool_or(fingerprint = sha256($1)), bool_or(position($2 in fingerprint) > 0) \
             FROM idempotency_keys WHERE key = 'retry-elsewhere'",
            &[&unkeyed, &raw],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
    assert!(
        !row.get::<_, bool>(1),
        "an unkeyed SHA-256 of the request is stored"
    );
    assert!(!row.get::<_, bool>(2), "the request body is stored");
    let stores: i64 = db
        .query_one("SELECT count(*) FROM stores WHERE name = 'Keyed Shop'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stores, 1, "executed once across the three instances");
}
