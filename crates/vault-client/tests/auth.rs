//! Auth methods and the token manager against a real OpenBao: AppRole
//! (plain and response-wrapped secret id), Kubernetes-style JWT login with
//! the file re-read at every login, renewal of a short-TTL token up to its
//! max TTL, and new logins when renewal is exhausted.

mod common;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use testkit::OpenBao;
use vault_client::{AuthMethod, Client, Config, Error, Event, ExposeSecret, Kubernetes};

const APP_POLICY: &str = r#"path "secret/data/app/*" { capabilities = ["read"] }"#;

fn field(value: &Option<Value>, pointer: &str) -> String {
    value
        .as_ref()
        .and_then(|v| v.pointer(pointer))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {pointer} in the answer"))
        .to_owned()
}

/// An AppRole role `name` with the `app` policy and the given TTLs; returns
/// its role id.
async fn approle(bao: &OpenBao, name: &str, ttl: &str, max_ttl: &str) -> String {
    bao.enable_approle("bootstrap", &[], Duration::from_secs(60))
        .await
        .unwrap();
    bao.call(
        Method::POST,
        &format!("auth/approle/role/{name}"),
        Some(json!({ "token_policies": ["app"], "token_ttl": ttl, "token_max_ttl": max_ttl })),
    )
    .await
    .unwrap();
    let role = bao
        .call(
            Method::GET,
            &format!("auth/approle/role/{name}/role-id"),
            None,
        )
        .await
        .unwrap();
    field(&role, "/data/role_id")
}

async fn setup(bao: &OpenBao) {
    common::enable_kv2(bao, "secret").await;
    bao.kv_put("secret", "app/config", json!({ "password": "s3cret" }))
        .await
        .unwrap();
    bao.write_policy("app", APP_POLICY).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_login_plain_and_response_wrapped() {
    let bao = common::bao().await;
    setup(&bao).await;
    let role_id = approle(&bao, "app", "60s", "120s").await;
    let secret = bao
        .call(
            Method::POST,
            "auth/approle/role/app/secret-id",
            Some(json!({})),
        )
        .await
        .unwrap();
    let secret_id = field(&secret, "/data/secret_id");

    let client = Client::new(
        Config::builder()
            .address(bao.addr())
            .auth(AuthMethod::approle(&role_id, &secret_id))
            .build()
            .unwrap(),
    )
    .await
    .expect("AppRole login");
    assert_eq!(client.token_generation(), 1);
    let ttl = client.token_ttl().expect("an AppRole token expires");
    assert!(
        ttl <= Duration::from_secs(60) && ttl > Duration::from_secs(50),
        "{ttl:?}"
    );
    let read = client.kv2("secret").read("app/config").await.unwrap();
    assert_eq!(read.data.get_str("password"), Some("s3cret"));
    assert!(
        client
            .kv2("secret")
            .read("other")
            .await
            .unwrap_err()
            .is_forbidden()
    );
    client.login().await.unwrap();
    assert_eq!(client.token_generation(), 2);

    // Every AppRole token revoked behind the client's back: the next call
    // gets a 403, the client sees its token is dead (lookup-self refused),
    // logs in once more and the call succeeds.
    bao.call(
        Method::PUT,
        "sys/leases/revoke-prefix/auth/approle/login",
        Some(json!({})),
    )
    .await
    .unwrap();
    let read = client.kv2("secret").read("app/config").await.unwrap();
    assert_eq!(read.data.get_str("password"), Some("s3cret"));
    assert_eq!(client.token_generation(), 3);
    // A 403 for a path outside the policy is not mistaken for a dead token.
    assert!(
        client
            .kv2("secret")
            .read("other")
            .await
            .unwrap_err()
            .is_forbidden()
    );
    assert_eq!(client.token_generation(), 3);

    // A response-wrapped secret id, minted by an operator's client.
    let root = common::root_client(&bao).await;
    let wrapped = root
        .write_wrapped(
            "auth/approle/role/app/secret-id",
            &json!({}),
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    assert_eq!(wrapped.creation_path, "auth/approle/role/app/secret-id");
    assert!(!format!("{wrapped:?}").contains(wrapped.token.expose_secret()));
    let client = Client::new(
        Config::builder()
            .address(bao.addr())
            .auth(AuthMethod::approle_wrapped(
                &role_id,
                wrapped.token.expose_secret(),
            ))
            .build()
            .unwrap(),
    )
    .await
    .expect("login with a wrapped secret id");
    // Later logins reuse the unwrapped secret id (the wrapping token is
    // spent).
    client.login().await.unwrap();
    assert_eq!(client.token_generation(), 2);
    assert!(client.kv2("secret").read("app/config").await.is_ok());

    // A wrapping token created elsewhere is refused before it is unwrapped.
    let foreign = root
        .write_wrapped(
            "sys/wrapping/wrap",
            &json!({ "secret_id": "planted" }),
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    let err = Client::new(
        Config::builder()
            .address(bao.addr())
            .auth(AuthMethod::approle_wrapped(
                &role_id,
                foreign.token.expose_secret(),
            ))
            .build()
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::WrappingMismatch { .. }), "{err}");
    // ...and still usable by whoever it was meant for.
    let unwrapped = root
        .unwrap(&foreign.token, "sys/wrapping/wrap")
        .await
        .unwrap();
    assert_eq!(unwrapped["data"]["secret_id"], "planted");

    // Bad credentials are an error at construction, not a silent retry loop.
    let bad = Client::new(
        Config::builder()
            .address(bao.addr())
            .auth(AuthMethod::approle(&role_id, "not-the-secret"))
            .build()
            .unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(bad.status(), Some(400), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_ttl_token_is_renewed_until_its_max_ttl() {
    let bao = common::bao().await;
    setup(&bao).await;
    let root = common::root_client(&bao).await;
    let created = root
        .write(
            "auth/token/create",
            &json!({ "ttl": "3s", "explicit_max_ttl": "9s", "renewable": true, "policies": ["app"] }),
        )
        .await
        .unwrap();
    let token = field(&created, "/auth/client_token");
    let client = Client::new(
        Config::builder()
            .address(bao.addr())
            .auth(AuthMethod::token(&token))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let mut events = client.subscribe();
    let mut extended = 0;
    let mut capped = 0;
    let mut read_after_first_ttl = false;
    let outcome = tokio::time::timeout(Duration::from_secs(25), async {
        loop {
            match events.recv().await {
                Ok(Event::TokenRenewed { extended: true, .. }) => {
                    extended += 1;
                    if extended == 2 {
                        // Past the original 3 s TTL: only renewal kept it.
                        read_after_first_ttl =
                            client.kv2("secret").read("app/config").await.is_ok();
                    }
                }
                Ok(Event::TokenRenewed {
                    extended: false, ..
                }) => capped += 1,
                Ok(Event::TokenExpired) => return,
                Ok(_) => {}
                Err(e) => panic!("events: {e}"),
            }
        }
    })
    .await;
    assert!(
        outcome.is_ok(),
        "the token should have expired at its max TTL"
    );
    assert!(extended >= 2, "renewed {extended} times");
    assert!(
        capped >= 1,
        "a renewal should have been capped by the max TTL"
    );
    assert!(read_after_first_ttl);
    assert!(
        client
            .kv2("secret")
            .read("app/config")
            .await
            .unwrap_err()
            .is_forbidden()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_logs_in_again_when_renewal_is_exhausted() {
    let bao = common::bao().await;
    setup(&bao).await;
    let role_id = approle(&bao, "short", "3s", "6s").await;
    let secret = bao
        .call(
            Method::POST,
            "auth/approle/role/short/secret-id",
            Some(json!({})),
        )
        .await
        .unwrap();
    let client = Client::new(
        Config::builder()
            .address(bao.addr())
            .auth(AuthMethod::approle(
                role_id,
                field(&secret, "/data/secret_id"),
            ))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    // Read steadily while tokens come and go: never a failure.
    let kv = client.kv2("secret");
    let mut reads = 0;
    let done = tokio::time::timeout(Duration::from_secs(25), async {
        while client.token_generation() < 3 {
            kv.read("app/config").await.expect("every read succeeds");
            reads += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "two new logins within 25 s (generation {})",
        client.token_generation()
    );
    assert!(reads > 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_login_rereads_the_jwt_file_at_every_login() {
    // OpenBao's `jwt` method takes the same login body as `kubernetes`
    // ({role, jwt}) and validates the token locally, so a real server can
    // check it without a Kubernetes API server.
    let bao = common::bao().await;
    setup(&bao).await;
    let tokens = bao
        .enable_kubernetes_login("k8s", "store-service", "stores", "store-service", &["app"])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let jwt_path = dir.path().join("token");
    let config = Config::builder()
        .address(bao.addr())
        .auth(AuthMethod::Kubernetes(Kubernetes {
            mount: "k8s".into(),
            role: "store-service".into(),
            jwt_path: jwt_path.clone(),
        }))
        .build()
        .unwrap();

    // No file yet: a typed IO error.
    let err = Client::new(config.clone()).await.unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    tokens.write_token(&jwt_path).unwrap();
    let client = Client::new(config).await.expect("login with the JWT");
    assert!(client.kv2("secret").read("app/config").await.is_ok());

    // The kubelet rotates the file: the next login reads the new content.
    // A token for another subject is refused, which proves it was read...
    std::fs::write(
        &jwt_path,
        tokens.token_for("system:serviceaccount:other:intruder"),
    )
    .unwrap();
    let refused = client.login().await.unwrap_err();
    assert!(
        refused.status().is_some_and(|s| s == 400 || s == 403),
        "{refused}"
    );
    // ...and a fresh valid one works again, without a new client.
    tokens.write_token(&jwt_path).unwrap();
    client.login().await.unwrap();
    assert_eq!(client.token_generation(), 2);
}
