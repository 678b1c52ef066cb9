//! Transit against a real OpenBao.

mod common;

use vault_client::{
    DataKeyKind, DecryptItem, DecryptOptions, EncryptItem, EncryptOptions, ExposeSecret,
    ciphertext_version,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transit_round_trip_batch_rewrap_and_data_keys() {
    let bao = common::bao().await;
    bao.enable_transit("transit").await.unwrap();
    let client = common::root_client(&bao).await;
    let transit = client.transit("transit");
    transit.create_key("orders", "aes256-gcm96").await.unwrap();

    // Round trip, with associated data bound to the ciphertext.
    let plaintext = b"card 4111-1111 \x00\xff binary";
    let sealed = transit
        .encrypt(
            "orders",
            plaintext,
            EncryptOptions {
                associated_data: Some(b"order-42"),
                ..EncryptOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ciphertext_version(&sealed), Some(1));
    let opened = transit
        .decrypt(
            "orders",
            &sealed,
            DecryptOptions {
                associated_data: Some(b"order-42"),
                ..DecryptOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(opened.expose_secret(), plaintext);
    let wrong_aad = transit
        .decrypt(
            "orders",
            &sealed,
            DecryptOptions {
                associated_data: Some(b"order-43"),
                ..DecryptOptions::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(wrong_aad.status(), Some(400), "{wrong_aad}");

    // A derived key needs a context.
    bao.call(
        reqwest::Method::POST,
        "transit/keys/per-tenant",
        Some(serde_json::json!({ "type": "aes256-gcm96", "derived": true })),
    )
    .await
    .unwrap();
    let tenant = transit
        .encrypt(
            "per-tenant",
            b"x",
            EncryptOptions {
                context: Some(b"tenant-1"),
                ..EncryptOptions::default()
            },
        )
        .await
        .unwrap();
    let back = transit
        .decrypt(
            "per-tenant",
            &tenant,
            DecryptOptions {
                context: Some(b"tenant-1"),
                ..DecryptOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(back.expose_secret(), b"x");
    assert!(transit.key_info("per-tenant").await.unwrap().derived);

    // Batch with one bad item: the others still succeed.
    let items = [
        EncryptItem {
            plaintext: b"one",
            ..EncryptItem::default()
        },
        EncryptItem {
            plaintext: b"two",
            ..EncryptItem::default()
        },
    ];
    let sealed_batch = transit.encrypt_batch("orders", &items, None).await.unwrap();
    let one = sealed_batch[0].clone().unwrap();
    let two = sealed_batch[1].clone().unwrap();
    let decrypt_items = [
        DecryptItem {
            ciphertext: &one,
            ..DecryptItem::default()
        },
        DecryptItem {
            ciphertext: "vault:v1:not-a-ciphertext",
            ..DecryptItem::default()
        },
        DecryptItem {
            ciphertext: &two,
            ..DecryptItem::default()
        },
    ];
    let opened = transit
        .decrypt_batch("orders", &decrypt_items)
        .await
        .unwrap();
    assert_eq!(opened.len(), 3);
    assert_eq!(opened[0].as_ref().unwrap().expose_secret(), b"one");
    let bad = opened[1].as_ref().unwrap_err();
    assert_eq!(bad.index, 1);
    assert!(!bad.message.is_empty());
    assert_eq!(opened[2].as_ref().unwrap().expose_secret(), b"two");
    assert!(
        transit
            .encrypt_batch("orders", &[], None)
            .await
            .unwrap()
            .is_empty()
    );

    // Rotate the key: old ciphertexts still open, rewrap moves them to v2.
    transit.rotate_key("orders").await.unwrap();
    let info = transit.key_info("orders").await.unwrap();
    assert_eq!(info.latest_version, 2);
    assert_eq!(info.key_type, "aes256-gcm96");
    let rewrapped = transit.rewrap("orders", &one, None, None).await.unwrap();
    assert_eq!(ciphertext_version(&rewrapped), Some(2));
    let still = transit
        .decrypt("orders", &rewrapped, DecryptOptions::default())
        .await
        .unwrap();
    assert_eq!(still.expose_secret(), b"one");
    let batch = transit
        .rewrap_batch("orders", &[&two, "garbage"])
        .await
        .unwrap();
    assert_eq!(ciphertext_version(batch[0].as_ref().unwrap()), Some(2));
    assert!(batch[1].is_err());
    // Encrypt with a pinned older version.
    let pinned = transit
        .encrypt(
            "orders",
            b"p",
            EncryptOptions {
                key_version: Some(1),
                ..EncryptOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ciphertext_version(&pinned), Some(1));

    // Data keys: plaintext + ciphertext, or wrapped only.
    let key = transit
        .data_key("orders", DataKeyKind::Plaintext, Some(256), None)
        .await
        .unwrap();
    let plain = key.plaintext.as_ref().unwrap();
    assert_eq!(plain.expose_secret().len(), 32);
    assert_eq!(key.key_version, 2);
    let unwrapped = transit
        .decrypt("orders", &key.ciphertext, DecryptOptions::default())
        .await
        .unwrap();
    assert_eq!(unwrapped.expose_secret(), plain.expose_secret());
    let wrapped = transit
        .data_key("orders", DataKeyKind::Wrapped, Some(128), None)
        .await
        .unwrap();
    assert!(wrapped.plaintext.is_none());
    assert!(wrapped.ciphertext.starts_with("vault:v2:"));
    assert!(
        transit
            .data_key("orders", DataKeyKind::Wrapped, Some(100), None)
            .await
            .is_err()
    );
    assert!(!format!("{key:?}").contains(&format!("{:?}", plain.expose_secret())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_is_deterministic_per_key_version() {
    let bao = common::bao().await;
    bao.enable_transit("transit").await.unwrap();
    let client = common::root_client(&bao).await;
    let transit = client.transit("transit");
    transit
        .create_key("fingerprints", "aes256-gcm96")
        .await
        .unwrap();

    let first = transit
        .hmac("fingerprints", b"label", None, None)
        .await
        .unwrap();
    let again = transit
        .hmac("fingerprints", b"label", None, None)
        .await
        .unwrap();
    assert_eq!(first.expose_secret(), again.expose_secret());
    assert!(first.expose_secret().starts_with("vault:v1:"));
    let other = transit
        .hmac("fingerprints", b"other", None, None)
        .await
        .unwrap();
    assert_ne!(first.expose_secret(), other.expose_secret());
    let sha512 = transit
        .hmac("fingerprints", b"label", None, Some("sha2-512"))
        .await
        .unwrap();
    assert_ne!(first.expose_secret(), sha512.expose_secret());
    assert!(!format!("{first:?}").contains(first.expose_secret()));

    // After a rotation the latest version gives another value; pinning
    // version 1 gives the first one again.
    transit.rotate_key("fingerprints").await.unwrap();
    let latest = transit
        .hmac("fingerprints", b"label", None, None)
        .await
        .unwrap();
    assert!(latest.expose_secret().starts_with("vault:v2:"));
    let pinned = transit
        .hmac("fingerprints", b"label", Some(1), None)
        .await
        .unwrap();
    assert_eq!(pinned.expose_secret(), first.expose_secret());

    // An unknown key is a typed error, not a panic.
    let missing = transit
        .hmac("no-such-key", b"label", None, None)
        .await
        .unwrap_err();
    assert!(missing.status().is_some(), "{missing}");
}
