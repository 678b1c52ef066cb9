//! KV v2 and v1 against a real OpenBao.

mod common;

use serde_json::json;
use vault_client::{Error, MetadataSettings, Source};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv2_round_trip_with_cas_conflict() {
    let bao = common::bao().await;
    common::enable_kv2(&bao, "secret").await;
    let client = common::root_client(&bao).await;
    let kv = client.kv2("secret");

    // Create only if absent (cas 0), then update with the right version.
    let v1 = kv
        .write_cas("app/db", &json!({ "user": "app", "password": "pw-1" }), 0)
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    let v2 = kv
        .write_cas("app/db", &json!({ "user": "app", "password": "pw-2" }), 1)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);

    // A writer that still believes version 1 is current loses.
    let conflict = kv
        .write_cas("app/db", &json!({ "password": "stale" }), 1)
        .await
        .unwrap_err();
    assert!(matches!(conflict, Error::CasMismatch { .. }), "{conflict}");
    assert!(!conflict.is_retryable());
    let again = kv
        .write_cas("app/db", &json!({ "x": 1 }), 0)
        .await
        .unwrap_err();
    assert!(matches!(again, Error::CasMismatch { .. }), "{again}");

    let latest = kv.read("app/db").await.unwrap();
    assert_eq!(latest.source, Source::Vault);
    assert_eq!(latest.data.get_str("password"), Some("pw-2"));
    assert_eq!(latest.version.as_ref().unwrap().version, 2);
    let old = kv.read_version("app/db", 1).await.unwrap();
    assert_eq!(old.data.get_str("password"), Some("pw-1"));

    // Patch merges into the latest version.
    let v3 = kv
        .patch("app/db", &json!({ "password": "pw-3", "user": null }))
        .await
        .unwrap();
    assert_eq!(v3.version, 3);
    let patched = kv.read("app/db").await.unwrap();
    assert_eq!(patched.data.get_str("password"), Some("pw-3"));
    assert_eq!(patched.data.get("user"), None);

    // Metadata, soft delete, undelete, destroy.
    kv.write_metadata(
        "app/db",
        &MetadataSettings {
            max_versions: Some(5),
            custom_metadata: Some([("owner".to_owned(), "stores".to_owned())].into()),
            ..MetadataSettings::default()
        },
    )
    .await
    .unwrap();
    kv.delete_latest("app/db").await.unwrap();
    let deleted = kv.read("app/db").await.unwrap_err();
    assert!(deleted.is_not_found(), "{deleted}");
    kv.undelete("app/db", &[3]).await.unwrap();
    assert_eq!(
        kv.read("app/db").await.unwrap().data.get_str("password"),
        Some("pw-3")
    );
    kv.destroy("app/db", &[1]).await.unwrap();
    let meta = kv.metadata("app/db").await.unwrap();
    assert_eq!(meta.current_version, 3);
    assert_eq!(meta.max_versions, 5);
    assert_eq!(
        meta.custom_metadata.get("owner").map(String::as_str),
        Some("stores")
    );
    assert!(meta.versions[&1].destroyed);
    assert!(!meta.versions[&3].destroyed);
    assert!(
        kv.read_version("app/db", 1)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(matches!(
        kv.destroy("app/db", &[]).await,
        Err(Error::InvalidArgument(_))
    ));

    // List, then delete everything.
    kv.write("app/api", &json!({ "key": "k" })).await.unwrap();
    kv.write("other", &json!({ "key": "k" })).await.unwrap();
    let mut top = kv.list("").await.unwrap();
    top.sort();
    assert_eq!(top, vec!["app/".to_owned(), "other".to_owned()]);
    let mut app = kv.list("app").await.unwrap();
    app.sort();
    assert_eq!(app, vec!["api".to_owned(), "db".to_owned()]);
    assert!(kv.list("nothing/here").await.unwrap().is_empty());
    kv.delete_all("app/db").await.unwrap();
    assert!(kv.metadata("app/db").await.unwrap_err().is_not_found());
    assert!(matches!(
        kv.write("x", &json!([1, 2])).await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv1_read_write_list_delete() {
    let bao = common::bao().await;
    bao.mount("kv1", "kv", json!({ "version": "1" }))
        .await
        .unwrap();
    let client = common::root_client(&bao).await;
    let kv = client.kv1("kv1");
    kv.write("service/api", &json!({ "token": "t-1" }))
        .await
        .unwrap();
    let read = kv.read("service/api").await.unwrap();
    assert_eq!(read.data.get_str("token"), Some("t-1"));
    assert_eq!(read.source, Source::Vault);
    assert!(read.version.is_none());
    assert_eq!(kv.list("service").await.unwrap(), vec!["api".to_owned()]);
    kv.delete("service/api").await.unwrap();
    assert!(kv.read("service/api").await.unwrap_err().is_not_found());
    // Generic calls reach the same data.
    client.write("kv1/raw", &json!({ "a": "b" })).await.unwrap();
    let raw = client.read("kv1/raw").await.unwrap().unwrap();
    assert_eq!(raw["data"]["a"], "b");
    assert_eq!(client.list("kv1").await.unwrap(), vec!["raw".to_owned()]);
    client.delete("kv1/raw").await.unwrap();
    assert!(client.list("kv1").await.unwrap().is_empty());
}
