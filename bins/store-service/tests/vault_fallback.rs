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
