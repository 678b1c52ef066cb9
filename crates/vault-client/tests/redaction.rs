//! No token, secret id, password or secret value appears in `Debug`,
//! `Display`, error messages, events or logs (captured at TRACE level,
//! including reqwest's, hyper's and rustls' own).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use vault_client::{AuthMethod, Client, Config, DecryptOptions, EncryptOptions, ExposeSecret};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_is_ever_formatted_or_logged() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    let bao = common::bao().await;
    common::enable_kv2(&bao, "secret").await;
    bao.enable_transit("transit").await.unwrap();
    bao.create_transit_key("transit", "k").await.unwrap();
    bao.write_policy(
        "app",
        r#"path "secret/data/app/*" { capabilities = ["read", "create", "update"] }"#,
    )
    .await
    .unwrap();
    let approle = bao
        .enable_approle("app", &["app"], Duration::from_secs(60))
        .await
        .unwrap();
    let root = common::root_client(&bao).await;
    let secret_value = "correct-horse-battery-staple";
    let plaintext = "4111-1111-1111-1111";
    root.kv2("secret")
        .write("app/db", &json!({ "password": secret_value }))
        .await
        .unwrap();

    let client = Client::new(
        Config::builder()
            .address(bao.addr())
            .auth(AuthMethod::approle(&approle.role_id, &approle.secret_id))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let mut events = client.subscribe();
    let read = client.kv2("secret").read("app/db").await.unwrap();
    assert_eq!(read.data.get_str("password"), Some(secret_value));
    let ciphertext = root
        .transit("transit")
        .encrypt("k", plaintext.as_bytes(), EncryptOptions::default())
        .await
        .unwrap();
    let opened = root
        .transit("transit")
        .decrypt("k", &ciphertext, DecryptOptions::default())
        .await
        .unwrap();
    assert_eq!(opened.expose_secret(), plaintext.as_bytes());
    let wrapped = root
        .write_wrapped(
            "auth/approle/role/app/secret-id",
            &json!({}),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    client.login().await.unwrap();

    // Errors: forbidden, not found, CAS, an open breaker.
    let forbidden = client.kv2("secret").read("other").await.unwrap_err();
    let missing = root.kv2("secret").read("nothing").await.unwrap_err();
    root.kv2("secret")
        .write_cas("app/db", &json!({ "password": secret_value }), 1)
        .await
        .unwrap();
    let cas = root
        .kv2("secret")
        .write_cas("app/db", &json!({ "password": secret_value }), 1)
        .await
        .unwrap_err();
    root.breaker().force_open();
    let open = root.kv2("secret").read("app/db").await.unwrap_err();
    root.breaker().reset();

    let mut events_seen = String::new();
    while let Ok(event) = events.try_recv() {
        events_seen.push_str(&format!("{event:?}\n"));
    }
    assert!(events_seen.contains("LoggedIn"), "{events_seen}");

    let token = bao.root_token().to_owned();
    // The client's own current token (the one it sends), as Vault reports
    // it to its owner: lookup-self answers with the token as `id`.
    let own = client
        .read("auth/token/lookup-self")
        .await
        .unwrap()
        .unwrap();
    let own_token = own
        .pointer("/data/id")
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    assert!(!own_token.is_empty());
    // The plaintext travels base64-encoded: that form must not leak either.
    let plaintext_b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(plaintext)
    };
    let app_token = {
        // The AppRole token itself, through an independent login.
        let login = bao
            .call(
                Method::POST,
                "auth/approle/login",
                Some(json!({ "role_id": approle.role_id, "secret_id": approle.secret_id })),
            )
            .await
            .unwrap();
        login
            .as_ref()
            .and_then(|v| v.pointer("/auth/client_token"))
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    };
    let formatted = format!(
        "{client:?}\n{client:#?}\n{root:?}\n{:?}\n{read:?}\n{read:#?}\n{opened:?}\n{wrapped:?}\n\
         {forbidden}\n{forbidden:?}\n{missing}\n{missing:?}\n{cas}\n{cas:?}\n{open}\n{open:?}\n{events_seen}",
        client.config(),
    );
    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logged.contains("vault.request"), "request spans are logged");
    assert!(logged.contains("secret/data/app/db"), "with their path");
    for secret in [
        token.as_str(),
        own_token.as_str(),
        app_token.as_str(),
        plaintext_b64.as_str(),
        approle.secret_id.as_str(),
        wrapped.token.expose_secret(),
        secret_value,
        plaintext,
    ] {
        assert!(
            !formatted.contains(secret),
            "a secret in formatted output:\n{formatted}"
        );
        assert!(!logged.contains(secret), "a secret in the logs");
    }
    // And the formatted client, after all this, still hides its token.
    let client_now = format!("{client:?} {client:#?}");
    for secret in [own_token.as_str(), plaintext_b64.as_str()] {
        assert!(!client_now.contains(secret), "{client_now}");
    }
}
