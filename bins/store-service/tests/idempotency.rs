//! Exactly-once `Idempotency-Key`: the response is recorded in the same
//! transaction as the change, so a change whose commit fails leaves no
//! store and a retryable key (never a key stuck "in progress").

mod common;

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

/// How many stores are named `name`, and the status recorded for `key`.
async fn state_of(admin: &tokio_postgres::Client, name: &str, key: &str) -> (i64, Option<i16>) {
    let stores: i64 = admin
        .query_one("SELECT count(*) FROM stores WHERE name = $1", &[&name])
        .await
        .unwrap()
        .get(0);
    let status: Option<i16> = admin
        .query_opt(
            "SELECT status FROM idempotency_keys WHERE key = $1",
            &[&key],
        )
        .await
        .unwrap()
        .and_then(|row| row.get(0));
    (stores, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_leaves_nothing_and_the_key_retryable() {
    let stack = common::stack().await;
    let admin = stack
        .pg
        .admin_db(stack.pg.primary(), "stores")
        .await
        .unwrap();
    // A deferred constraint trigger fails the commit of any transaction
    // that records a response for this key: the store row and the audit
    // event are written by then, and must roll back with it.
    admin
        .batch_execute(
            "CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'commit refused'; END $$; \
             CREATE CONSTRAINT TRIGGER refuse_commit AFTER UPDATE ON idempotency_keys \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW \
             WHEN (NEW.key = 'atomic-key' AND NEW.status IS NOT NULL) \
             EXECUTE FUNCTION refuse_commit();",
        )
        .await
        .unwrap();
    let post = || {
        stack
            .http
            .post(stack.url("/api/stores"))
            .header("idempotency-key", "atomic-key")
            .json(&json!({"name": "Atomic Shop"}))
            .send()
    };

    for _ in 0..2 {
        // Fails (and fails again when retried while the cause lasts: never
        // a 409 for a key nobody is using).
        let failed = post().await.unwrap();
        assert_eq!(failed.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: Value = failed.json().await.unwrap();
        assert_eq!(body["error"], "INTERNAL_ERROR", "{body}");
        assert!(!body.to_string().contains("commit refused"), "{body}");
        // Nothing happened: no store, no event, no recorded response.
        assert_eq!(
            state_of(&admin, "Atomic Shop", "atomic-key").await,
            (0, None)
        );
        let events: i64 = admin
            .query_one("SELECT count(*) FROM store_events", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(events, 0);
    }

    // The cause goes away: the retry with the same key runs the request.
    admin
        .batch_execute("DROP TRIGGER refuse_commit ON idempotency_keys")
        .await
        .unwrap();
    let created = post().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert!(!created.headers().contains_key("idempotent-replayed"));
    let location = created.headers()[header::LOCATION].clone();
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        state_of(&admin, "Atomic Shop", "atomic-key").await,
        (1, Some(201))
    );

    // And from now on it replays, exactly once.
    let replayed = post().await.unwrap();
    assert_eq!(replayed.status(), StatusCode::CREATED);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(replayed.headers()[header::LOCATION], location);
    let replayed: Value = replayed.json().await.unwrap();
    assert_eq!(replayed, created);
    assert_eq!(
        state_of(&admin, "Atomic Shop", "atomic-key").await,
        (1, Some(201))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_update_commit_keeps_the_old_version() {
    let stack = common::stack().await;
    let admin = stack
        .pg
        .admin_db(stack.pg.primary(), "stores")
        .await
        .unwrap();
    let created: Value = stack
        .create(json!({"name": "Atomic Update Shop"}))
        .await
        .json()
        .await
        .unwrap();
    let location = format!("/api/stores/{}", created["store"]["id"].as_str().unwrap());
    admin
        .batch_execute(
            "CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'commit refused'; END $$; \
             CREATE CONSTRAINT TRIGGER refuse_commit AFTER UPDATE ON idempotency_keys \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW \
             WHEN (NEW.key = 'atomic-put' AND NEW.status IS NOT NULL) \
             EXECUTE FUNCTION refuse_commit();",
        )
        .await
        .unwrap();
    let put = || {
        stack
            .http
            .put(stack.url(&location))
            .header("idempotency-key", "atomic-put")
            .json(&json!({"status": "ACTIVE", "version": 1}))
            .send()
    };
    assert_eq!(
        put().await.unwrap().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let version: i32 = admin
        .query_one(
            "SELECT version FROM stores WHERE name = 'Atomic Update Shop'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, 1, "the update rolled back with its response");

    admin
        .batch_execute("DROP TRIGGER refuse_commit ON idempotency_keys")
        .await
        .unwrap();
    let updated = put().await.unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    assert!(!updated.headers().contains_key("idempotent-replayed"));
    let replayed = put().await.unwrap();
    assert_eq!(replayed.status(), StatusCode::OK);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let history: Value =
        common::get_json(&stack.http, stack.url(&format!("{location}/history"))).await;
    assert_eq!(history["events"].as_array().unwrap().len(), 2, "{history}");
}
