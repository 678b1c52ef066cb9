//! The client against the real platform, through the gateway binary to the
//! store-service binary (PostgreSQL, OpenBao, tokens from OpenBao's
//! issuer): every call, idempotency keys, `If-Match` from the version last
//! seen, problems as typed errors, a queued write awaited and a stale read
//! marked while the store service is frozen.

use std::time::Duration;

use store_client::{ClientError, RetryPolicy, StaticToken, StoreClient, Written};
use store_domain::{
    CreateStore, ErrorCode, HistoryQuery, PageLimit, StoreQuery, StoreStatus, UpdateStore,
};
use system_tests::Platform;

fn client(platform: &Platform, token: String) -> StoreClient {
    StoreClient::builder(
        platform.gateway_url(""),
        StaticToken::new(token),
        platform.http.clone(),
    )
    .poll_interval(Duration::from_millis(200))
    .build()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_through_the_gateway() {
    let platform = Platform::start(0).await;
    let token = platform
        .token("stores:read stores:write stores:secrets")
        .await;
    let stores = client(&platform, token);

    // Create: a fresh idempotency key, applied once.
    let create = CreateStore::new("Client Shop").with_secret("WIFI_PASSWORD", "hunter2");
    let created = stores
        .create(&create)
        .await
        .unwrap()
        .applied()
        .await
        .unwrap();
    assert_eq!((created.status, created.replayed), (201, false));
    let id = created.store.id;
    assert_eq!(stores.version_of(id), Some(1));

    // The same key again: the first answer, replayed, no second store.
    let key = format!("client-test-{id}");
    let first = stores.create_with_key(&create, &key).await.unwrap();
    let again = stores.create_with_key(&create, &key).await.unwrap();
    let (Written::Applied(first), Written::Applied(again)) = (first, again) else {
        panic!("nothing is queued while the service is up");
    };
    assert_eq!(first.store.id, again.store.id);
    assert!(again.replayed && !first.replayed);

    // Read: its version, not stale.
    let read = stores.get(id).await.unwrap();
    assert_eq!((read.version, read.is_stale()), (Some(1), false));
    assert_eq!(read.value.name, "Client Shop");

    // Activate: If-Match from the version last seen; then a rename.
    let active = stores.activate(id).await.unwrap().applied().await.unwrap();
    assert_eq!(
        (active.store.status, active.store.version),
        (StoreStatus::Active, 2)
    );
    let renamed = stores
        .update(id, &UpdateStore::default().with_name("Client Shop 2"))
        .await
        .unwrap()
        .applied()
        .await
        .unwrap();
    assert_eq!(renamed.store.version, 3);

    // A stale version: the store service's problem, typed, not retried.
    let stale = stores
        .update(id, &UpdateStore::based_on(1).with_name("Lost Update"))
        .await
        .unwrap_err();
    assert_eq!(
        stale.store_code(),
        Some(ErrorCode::ConcurrencyError),
        "{stale}"
    );
    assert!(!stale.is_retryable());

    // History, paged; the list; the secrets (read after the last write).
    let limit = PageLimit::new(2).unwrap();
    let page = stores
        .history(
            id,
            &HistoryQuery {
                limit,
                cursor: None,
            },
        )
        .await
        .unwrap()
        .value;
    assert_eq!(page.count, 2);
    let rest = stores
        .history(
            id,
            &HistoryQuery {
                limit,
                cursor: page.next_cursor,
            },
        )
        .await
        .unwrap()
        .value;
    assert_eq!((rest.count, rest.next_cursor), (1, None));
    let versions: Vec<i32> = page
        .events
        .iter()
        .chain(&rest.events)
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    let listed = stores
        .list(&StoreQuery {
            limit: PageLimit::new(200).unwrap(),
            ..StoreQuery::default()
        })
        .await
        .unwrap();
    assert!(listed.value.stores.iter().any(|s| s.id == id));
    let secrets = stores.secrets(id).await.unwrap();
    assert_eq!(secrets.secrets.get("WIFI_PASSWORD"), Some("hunter2"));

    // A token the gateway refuses: 401, typed, never retried.
    let refused = client(&platform, "not-a-token".into())
        .get(id)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ClientError::Problem { status: 401, .. }) && !refused.is_retryable(),
        "{refused}"
    );
    // Without the secrets scope: 403.
    let reader = client(&platform, platform.token("stores:read").await);
    let forbidden = reader.secrets(id).await.unwrap_err();
    assert!(
        matches!(forbidden, ClientError::Problem { status: 403, .. }),
        "{forbidden}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_write_is_awaited_and_a_stale_read_marked() {
    let platform = Platform::start(0).await;
    let token = platform.token("stores:read stores:write").await;
    let stores = StoreClient::builder(
        platform.gateway_url(""),
        StaticToken::new(token),
        platform.http.clone(),
    )
    .poll_interval(Duration::from_millis(200))
    // Gateway answers while the service is frozen are not retried.
    .retry(RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    })
    .build()
    .unwrap();
    let id = stores
        .create(&CreateStore::new("Queued Shop"))
        .await
        .unwrap()
        .applied()
        .await
        .unwrap()
        .store
        .id;
    // A good copy at the gateway, and the version for If-Match.
    assert!(!stores.get(id).await.unwrap().is_stale());

    platform.store.freeze().expect("store-service freezes");
    let stale = stores.get(id).await.unwrap();
    assert!(stale.is_stale(), "{stale:?}");
    assert_eq!(stale.value.name, "Queued Shop");
    let Written::Queued(pending) = stores.activate(id).await.unwrap() else {
        panic!("the upstream is down: the write is queued");
    };
    platform.store.thaw().expect("store-service thaws");
    let mut seen = Vec::new();
    let applied = tokio::time::timeout(
        system_tests::SETTLE,
        pending.wait_with(|status| seen.push(status.status)),
    )
    .await
    .expect("the queued write is replayed")
    .unwrap();
    assert_eq!(
        (applied.store.status, applied.store.version),
        (StoreStatus::Active, 2)
    );
    assert!(!seen.is_empty());
}
