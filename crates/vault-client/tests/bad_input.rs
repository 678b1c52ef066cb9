//! Bad input, from the caller and from the server, against a real OpenBao:
//! every case is a typed error, never a panic.

mod common;

use serde_json::json;
use vault_client::{Client, EncryptOptions, Error};

fn calls_made(client: &Client) -> u64 {
    let totals = client.breaker().snapshot().totals;
    totals.successes + totals.failures + totals.timeouts + totals.ignored + totals.rejected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_with_dot_dot_or_whitespace_are_refused_before_sending() {
    let bao = common::bao().await;
    common::enable_kv2(&bao, "secret").await;
    let client = common::root_client(&bao).await;
    let before = calls_made(&client);
    let kv = client.kv2("secret");
    for name in [
        "../../sys/seal",
        "app/../../sys/seal",
        "app/./x",
        "my app",
        " app",
        "app\n",
        "app\tx",
        "app?version=1",
        "app#x",
        "app%2F..",
        "",
        "//",
    ] {
        let err = kv.read(name).await.unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{name:?}: {err}");
        assert!(!err.may_have_reached_server());
        let err = kv.write(name, &json!({ "k": "v" })).await.unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{name:?}: {err}");
    }
    let transit = client.transit("transit");
    assert!(matches!(
        transit
            .encrypt("a b", b"x", EncryptOptions::default())
            .await,
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        client.database("database").creds("../../sys/seal").await,
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        client.read("secret/../sys/seal").await,
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(
        client.kv2("se cret").read("app").await,
        Err(Error::InvalidPath { .. })
    ));
    assert_eq!(calls_made(&client), before, "nothing was sent");
    // The server is intact.
    assert!(client.health().await.unwrap().is_active());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_missing_and_huge_answers_are_typed_errors() {
    let bao = common::bao().await;
    common::enable_kv2(&bao, "secret").await;
    bao.mount("kv1", "kv", json!({ "version": "1" }))
        .await
        .unwrap();
    let client = common::root_client(&bao).await;

    // Malformed JSON: a real endpoint that answers 200 with text.
    let err = client.read("sys/pprof/cmdline").await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err}");
    assert!(!err.is_retryable());

    // 200 with missing fields: typed readers pointed at the wrong engine.
    client
        .kv1("kv1")
        .write("data/app", &json!({ "x": 1 }))
        .await
        .unwrap();
    let err = client.kv2("kv1").read("app").await.unwrap_err();
    assert!(
        matches!(&err, Error::MissingField { field, .. } if field == "/data/data"),
        "{err}"
    );
    client
        .kv1("kv1")
        .write("creds/app", &json!({ "username": "u" }))
        .await
        .unwrap();
    let err = client.database("kv1").creds("app").await.unwrap_err();
    assert!(
        matches!(&err, Error::MissingField { field, .. } if field == "/data/password"),
        "{err}"
    );
    // A 204 where an answer was expected.
    let err = client
        .transit("kv1")
        .encrypt("k", b"x", EncryptOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::MissingField { .. }), "{err}");

    // A huge answer (raft keeps entries under 1 MiB): refused past the
    // limit, read in full below it.
    let big = "x".repeat(900 * 1024);
    client
        .kv2("secret")
        .write("big", &json!({ "blob": big }))
        .await
        .unwrap();
    let small_limit = Client::new(
        common::root_config(&bao)
            .max_response_bytes(512 * 1024)
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let err = small_limit.kv2("secret").read("big").await.unwrap_err();
    assert!(
        matches!(err, Error::BodyTooLarge { limit, .. } if limit == 512 * 1024),
        "{err}"
    );
    let read = client.kv2("secret").read("big").await.unwrap();
    assert_eq!(read.data.get_str("blob").map(str::len), Some(big.len()));
}
