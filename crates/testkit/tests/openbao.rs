//! testkit's OpenBao against the real server: persistence across restarts,
//! freeze, the database secrets engine, AppRole.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use testkit::{DatabaseEngine, OpenBao, PgCluster};
use tokio_postgres::NoTls;

fn field<'a>(value: &'a Option<Value>, pointer: &str) -> &'a str {
    value
        .as_ref()
        .and_then(|v| v.pointer(pointer))
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {pointer} in {value:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart_on_the_same_port() {
    let started = Instant::now();
    let bao = OpenBao::start().await.expect("OpenBao starts");
    bao.enable_kv2("secret").await.unwrap();
    bao.enable_transit("transit").await.unwrap();
    bao.create_transit_key("transit", "k").await.unwrap();
    // Reported, not asserted: figures come from measurements.
    println!(
        "budget: OpenBao up, unsealed and configured in {:?} (target 5 s)",
        started.elapsed()
    );

    bao.kv_put("secret", "app/config", json!({ "password": "s3cret" }))
        .await
        .unwrap();
    let sealed = bao
        .call(
            Method::POST,
            "transit/encrypt/k",
            Some(json!({ "plaintext": "aGVsbG8=" })),
        )
        .await
        .unwrap();
    let ciphertext = field(&sealed, "/data/ciphertext").to_owned();
    let addr = bao.addr().to_owned();

    bao.stop().await.unwrap();
    assert!(
        bao.call(Method::GET, "sys/health", None).await.is_err(),
        "a stopped server answers nothing"
    );
    bao.restart().await.unwrap();

    assert_eq!(bao.addr(), addr);
    let read = bao
        .call(Method::GET, "secret/data/app/config", None)
        .await
        .unwrap();
    assert_eq!(field(&read, "/data/data/password"), "s3cret");
    let opened = bao
        .call(
            Method::POST,
            "transit/decrypt/k",
            Some(json!({ "ciphertext": ciphertext })),
        )
        .await
        .unwrap();
    assert_eq!(
        field(&opened, "/data/plaintext"),
        "aGVsbG8=",
        "the transit key survived"
    );
    // Idempotent setup: running it again changes nothing and fails nothing.
    bao.enable_kv2("secret").await.unwrap();
    bao.create_transit_key("transit", "k").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_times_out_until_thawed() {
    let bao = OpenBao::start().await.expect("OpenBao starts");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let health = format!("{}/v1/sys/health", bao.addr());
    bao.freeze().await.unwrap();
    let err = http
        .get(&health)
        .send()
        .await
        .expect_err("a frozen server never answers");
    assert!(err.is_timeout(), "{err}");
    bao.thaw().await.unwrap();
    let ok = http.get(&health).send().await.expect("answers after thaw");
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_engine_issues_dml_only_users_that_log_in() {
    let (cluster, bao) = tokio::join!(PgCluster::start(0), OpenBao::start());
    let (cluster, bao) = (cluster.unwrap(), bao.unwrap());
    cluster.create_database("stores").await.unwrap();
    let mut db = cluster.admin_db(cluster.primary(), "stores").await.unwrap();
    testkit::migrations::apply(&mut db).await.unwrap();
    let engine = DatabaseEngine {
        default_ttl: Duration::from_secs(5),
        max_ttl: Duration::from_secs(20),
        connection_limit: 3,
        ..DatabaseEngine::default()
    };
    bao.configure_database(&cluster, &engine).await.unwrap();
    bao.configure_database(&cluster, &engine)
        .await
        .expect("configuring twice is fine");

    let admin = db
        .query_one(
            "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = 'vault_admin'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        !admin.get::<_, bool>(0),
        "the engine's login is not a superuser"
    );
    assert!(admin.get::<_, bool>(1));

    let creds = bao
        .call(Method::GET, "database/creds/store-service", None)
        .await
        .unwrap();
    let (user, password) = (
        field(&creds, "/data/username"),
        field(&creds, "/data/password"),
    );
    assert_eq!(creds.as_ref().unwrap()["lease_duration"], 5);
    let (client, connection) = cluster
        .node(cluster.primary())
        .config(user, password, "stores")
        .connect(NoTls)
        .await
        .expect("issued credentials log in over TCP (scram)");
    tokio::spawn(connection);
    client
        .execute(
            "INSERT INTO stores (id, name, status) VALUES (gen_random_uuid(), 'From vault', 'ACTIVE')",
            &[],
        )
        .await
        .expect("DML is granted");
    let err = client
        .batch_execute("CREATE TABLE nope (id int)")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{err}"
    );
    let limit: i32 = db
        .query_one(
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = $1",
            &[&user],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(limit, 3);

    // Revoking the lease drops the user.
    let lease = field(&creds, "/lease_id").to_owned();
    bao.call(
        Method::PUT,
        "sys/leases/revoke",
        Some(json!({ "lease_id": lease })),
    )
    .await
    .unwrap();
    let gone = db
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
        .await
        .unwrap();
    assert!(gone.is_none(), "revocation drops the role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_logs_in_with_its_policy() {
    let bao = OpenBao::start().await.expect("OpenBao starts");
    bao.enable_kv2("secret").await.unwrap();
    bao.kv_put("secret", "app/config", json!({ "k": "v" }))
        .await
        .unwrap();
    bao.kv_put("secret", "other/config", json!({ "k": "v" }))
        .await
        .unwrap();
    bao.write_policy(
        "app",
        r#"path "secret/data/app/*" { capabilities = ["read"] }"#,
    )
    .await
    .unwrap();
    let creds = bao
        .enable_approle("app", &["app"], Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        !format!("{creds:?}").contains(&creds.secret_id),
        "Debug never shows the secret id"
    );

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let login: Value = http
        .post(format!("{}/v1/auth/approle/login", bao.addr()))
        .json(&json!({ "role_id": creds.role_id, "secret_id": creds.secret_id }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["auth"]["client_token"]
        .as_str()
        .expect("a client token");
    let read = |path: &'static str| {
        http.get(format!("{}/v1/secret/data/{path}", bao.addr()))
            .header("X-Vault-Token", token)
            .send()
    };
    assert_eq!(read("app/config").await.unwrap().status(), 200);
    assert_eq!(
        read("other/config").await.unwrap().status(),
        403,
        "outside the policy"
    );
    assert!(
        !format!("{bao:?}").contains(bao.root_token()),
        "Debug never shows the root token"
    );
}
