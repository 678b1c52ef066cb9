//! Vault login with the Kubernetes auth method (`BAO_K8S_ROLE`), as the
//! pods of deploy/ do: the service-account token file is read at login, the
//! database credentials and Transit work, and `/ready` says so. (OpenBao's
//! `jwt` method stands in for `kubernetes`: same login body, no Kubernetes
//! API server; see testkit's `enable_kubernetes_login`.)

mod common;

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;
use store_service::{CredentialSource, Settings};
use testkit::{DatabaseEngine, OpenBao, PgCluster, ServiceAccountTokens};

/// The stack, with a Kubernetes-style login at `k8s` for the
/// `store-service` account, and settings that log in with it (no AppRole,
/// no token); `token` writes the token file from the issuer. The servers
/// stop when the returned handles drop.
async fn stack_with_k8s_login(
    token: impl FnOnce(&ServiceAccountTokens) -> String,
) -> (Arc<PgCluster>, Arc<OpenBao>, Settings, tempfile::TempDir) {
    let (pg, bao, mut settings) = common::services(DatabaseEngine::default()).await;
    let tokens = bao
        .enable_kubernetes_login(
            "k8s",
            "store-service",
            "store-platform",
            "store-service",
            &["store-service"],
        )
        .await
        .expect("kubernetes-style login");
    let dir = tempfile::tempdir().expect("temporary folder");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, token(&tokens)).expect("token file");
    settings.bao_role_id = None;
    settings.bao_secret_id = None;
    settings.bao_token = None;
    settings.bao_k8s_role = Some("store-service".into());
    settings.bao_k8s_mount = "k8s".into();
    settings.bao_k8s_jwt_path = token_file;
    (pg, bao, settings, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_with_the_service_account_token() {
    let (_pg, _bao, settings, _dir) = stack_with_k8s_login(ServiceAccountTokens::token).await;
    let (base, state) = common::spawn(settings).await;
    assert_eq!(state.source, CredentialSource::Vault);
    let http = common::http();
    let ready = common::get_json(&http, format!("{base}/ready")).await;
    assert_eq!(ready["checks"]["secrets"]["source"], "vault", "{ready}");
    let created = http
        .post(format!("{base}/api/stores"))
        .json(&json!({"name": "Pod Shop", "secrets": {"K": "v"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let body: serde_json::Value = created.json().await.unwrap();
    let id = body["store"]["id"].as_str().unwrap();
    let secrets = common::get_json(&http, format!("{base}/api/stores/{id}/secrets")).await;
    assert_eq!(secrets["secrets"], json!({"K": "v"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_service_account_is_refused_and_the_service_falls_back() {
    let (pg, _bao, mut settings, _dir) =
        stack_with_k8s_login(|tokens| tokens.token_for("system:serviceaccount:other:intruder"))
            .await;
    settings.vault_startup_timeout_secs = 1;
    settings.database_url = Some(store_service::Secret::new(
        pg.superuser_url(pg.primary(), "stores"),
    ));
    let (_, state) = common::spawn(settings).await;
    let CredentialSource::Fallback { cause } = &state.source else {
        panic!("a refused login must not reach Vault's credentials");
    };
    assert!(cause.contains("Vault unusable at start"), "{cause}");
    // The refusal is named, not hidden behind "unreachable".
    assert!(
        cause.contains("400")
            || cause.contains("403")
            || cause.contains("denied")
            || cause.contains("refused"),
        "{cause}"
    );
}
