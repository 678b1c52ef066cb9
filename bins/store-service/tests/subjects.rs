//! The subject the gateway forwards (`x-gateway-subject`, set here by the
//! test as the gateway would): idempotency records belong to it, history
//! events name it as `actor`, and a header that does not decode is a 400
//! problem. One real stack (PostgreSQL primary + replica, OpenBao), the
//! service in-process; scenarios stay apart by unique keys and names.

mod common;

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use common::Stack;

/// The gateway's header.
const SUBJECT: &str = "x-gateway-subject";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subjects() {
    let stack = common::stack().await;
    idempotency_keys_belong_to_the_subject(&stack).await;
    history_names_the_actor(&stack).await;
    malformed_subject_is_a_400_problem(&stack).await;
}

/// A subject's header value (percent-encoded, as the gateway sends it).
fn encoded(subject: &str) -> String {
    store_domain::Actor::new(subject).unwrap().to_header_value()
}

/// `POST /api/stores` with `key`, as `subject` (`None`: no header).
async fn create(
    stack: &Stack,
    subject: Option<&str>,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    let mut request = stack
        .http
        .post(stack.url("/api/stores"))
        .header("idempotency-key", key)
        .json(body);
    if let Some(subject) = subject {
        request = request.header(SUBJECT, encoded(subject));
    }
    request.send().await.unwrap()
}

/// The id of a created (or replayed) store, and whether it was a replay.
async fn created_id(response: reqwest::Response) -> (String, bool) {
    assert_eq!(response.status(), StatusCode::CREATED);
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let body: Value = response.json().await.unwrap();
    (body["store"]["id"].as_str().unwrap().to_owned(), replayed)
}

/// Asserts an RFC 9457 problem with `code` and `status`; returns the body
/// text.
async fn problem(response: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(response.status().as_u16(), status, "status for {code}");
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let echoed = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["requestId"], echoed.as_str());
    text
}

/// The same `Idempotency-Key` from two subjects (and from the anonymous
/// caller) is three independent requests; each replays only its own.
async fn idempotency_keys_belong_to_the_subject(stack: &Stack) {
    let key = "shared-key-1";
    let alice_body = json!({"name": "Alice Shop"});
    let bob_body = json!({"name": "Bob Shop"});
    let anonymous_body = json!({"name": "Anonymous Shop"});

    let (alice, replayed) = created_id(create(stack, Some("alice"), key, &alice_body).await).await;
    assert!(!replayed);
    // Bob's subject needs percent-encoding (`|`).
    let (bob, replayed) = created_id(create(stack, Some("auth0|bob"), key, &bob_body).await).await;
    assert!(!replayed, "bob got alice's response");
    let (anonymous, replayed) = created_id(create(stack, None, key, &anonymous_body).await).await;
    assert!(!replayed, "the anonymous caller got a subject's response");
    assert!(alice != bob && bob != anonymous && alice != anonymous);

    // Each subject replays its own first response.
    for (subject, body, id) in [
        (Some("alice"), &alice_body, &alice),
        (Some("auth0|bob"), &bob_body, &bob),
        (None, &anonymous_body, &anonymous),
    ] {
        let (again, replayed) = created_id(create(stack, subject, key, body).await).await;
        assert!(replayed, "{subject:?}: not a replay");
        assert_eq!(&again, id, "{subject:?}: another subject's response");
    }
    // Within one subject the key still refuses another body.
    problem(
        create(stack, Some("alice"), key, &bob_body).await,
        422,
        "IDEMPOTENCY_KEY_REUSED",
    )
    .await;

    // The same for PUT: bob's key is not alice's, so bob's request runs
    // (and meets the version alice's update moved on: 409), it is not
    // answered with alice's 200.
    let location = format!("/api/stores/{alice}");
    let put = |subject: &'static str| {
        stack
            .http
            .put(stack.url(&location))
            .header("idempotency-key", "shared-put-key")
            .header(SUBJECT, encoded(subject))
            .json(&json!({"status": "ACTIVE", "version": 1}))
            .send()
    };
    let first = put("alice").await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let replay = put("alice").await.unwrap();
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let bobs = put("auth0|bob").await.unwrap();
    assert!(!bobs.headers().contains_key("idempotent-replayed"));
    problem(bobs, 409, "CONCURRENCY_ERROR").await;

    // One record per subject, the anonymous one under ''.
    let admin = stack
        .pg
        .admin_db(stack.pg.primary(), "stores")
        .await
        .unwrap();
    let subjects: Vec<String> = admin
        .query(
            "SELECT subject FROM idempotency_keys WHERE key = $1 ORDER BY subject",
            &[&key],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(subjects, ["", "alice", "auth0|bob"]);
}

/// Every event names its actor: the subject of a create and of each PUT,
/// `null` (present) for an anonymous one.
async fn history_names_the_actor(stack: &Stack) {
    // A subject that needs percent-encoding, beyond ASCII.
    let zoe = "auth0|zoë";
    let created = stack
        .http
        .post(stack.url("/api/stores"))
        .header(SUBJECT, encoded(zoe))
        .json(&json!({"name": "Actor Shop"}))
        .send()
        .await
        .unwrap();
    let (id, _) = created_id(created).await;
    let location = format!("/api/stores/{id}");
    let bob = stack
        .http
        .put(stack.url(&location))
        .header(SUBJECT, encoded("auth0|bob"))
        .json(&json!({"status": "ACTIVE", "version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bob.status(), StatusCode::OK);
    let anonymous = stack
        .http
        .put(stack.url(&location))
        .json(&json!({"name": "Actor Shop 2", "version": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::OK);
    let token = anonymous.headers()["read-after"].clone();

    let history: Value = stack
        .http
        .get(stack.url(&format!("{location}/history")))
        .header("read-after", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = history["events"].as_array().unwrap();
    let actors: Vec<&Value> = events.iter().map(|e| &e["actor"]).collect();
    assert_eq!(actors, [&json!(zoe), &json!("auth0|bob"), &Value::Null]);
    // `actor` is present on every event, null when anonymous.
    for event in events {
        assert!(event.as_object().unwrap().contains_key("actor"), "{event}");
    }

    // An anonymous create: `actor: null` on its event.
    let (id, _) = created_id(stack.create(json!({"name": "Anonymous Actor Shop"})).await).await;
    let history: Value =
        common::get_json(&stack.http, stack.url(&format!("/api/stores/{id}/history"))).await;
    assert_eq!(history["events"][0]["kind"], "CREATED");
    assert!(
        history["events"][0]
            .as_object()
            .unwrap()
            .get("actor")
            .is_some_and(Value::is_null),
        "{history}"
    );
}

/// A subject header that does not decode (or more than one) is a 400
/// `INVALID_SUBJECT` problem, never a 500 and never echoed; nothing is
/// written.
async fn malformed_subject_is_a_400_problem(stack: &Stack) {
    let location = {
        let (id, _) = created_id(stack.create(json!({"name": "Target Shop"})).await).await;
        format!("/api/stores/{id}")
    };
    let invalid: [&[u8]; 6] = [
        b"%FF",               // not UTF-8 once decoded
        b"%C3%28",            // an invalid UTF-8 sequence
        b"alice%0Aroot",      // a control character
        b"",                  // empty
        b"\xFF\xFEraw",       // raw bytes that are not UTF-8
        &[b'a'; 3 * 255 + 1], // too long
    ];
    for value in invalid {
        let value = reqwest::header::HeaderValue::from_bytes(value).unwrap();
        let requests = [
            stack
                .http
                .post(stack.url("/api/stores"))
                .header("idempotency-key", "malformed-subject-key")
                .json(&json!({"name": "Malformed Shop"})),
            stack
                .http
                .put(stack.url(&location))
                .json(&json!({"name": "Malformed Shop", "version": 1})),
            stack.http.get(stack.url(&location)),
            stack.http.get(stack.url("/api/stores")),
        ];
        for request in requests {
            let response = request.header(SUBJECT, value.clone()).send().await.unwrap();
            let text = problem(response, 400, "INVALID_SUBJECT").await;
            if value.len() > 2 {
                let raw = String::from_utf8_lossy(value.as_bytes()).into_owned();
                assert!(!text.contains(&raw), "the value is echoed: {text}");
            }
        }
    }
    // Two subject headers: ambiguous, refused.
    let twice = stack
        .http
        .post(stack.url("/api/stores"))
        .header(SUBJECT, "alice")
        .header(SUBJECT, "bob")
        .json(&json!({"name": "Malformed Shop"}))
        .send()
        .await
        .unwrap();
    problem(twice, 400, "INVALID_SUBJECT").await;

    // Nothing was written: no store, no idempotency record, no event.
    let admin = stack
        .pg
        .admin_db(stack.pg.primary(), "stores")
        .await
        .unwrap();
    let stores: i64 = admin
        .query_one(
            "SELECT count(*) FROM stores WHERE name = 'Malformed Shop'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stores, 0);
    let keys: i64 = admin
        .query_one(
            "SELECT count(*) FROM idempotency_keys WHERE key = 'malformed-subject-key'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(keys, 0);
    let events: i64 = admin
        .query_one(
            "SELECT count(*) FROM store_events WHERE store_id = $1",
            &[&uuid::Uuid::parse_str(location.trim_start_matches("/api/stores/")).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(events, 1, "only the create");
}
