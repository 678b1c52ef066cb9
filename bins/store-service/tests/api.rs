//! Every route and error of the API against one real stack (PostgreSQL
//! primary + replica, OpenBao), the service spawned in-process. Scenarios
//! share the stack and stay apart by unique store names and ids.

mod common;

use std::sync::Arc;

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use common::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_api() {
    let stack = common::stack().await;
    health_ready_metrics_openapi(&stack).await;
    create_read_update_history(&stack).await;
    optimistic_locking(&stack).await;
    concurrent_puts_one_winner(&stack).await;
    invalid_transitions(&stack).await;
    bad_input(&stack).await;
    listing(&stack).await;
    idempotency(&stack).await;
    secrets_at_rest(&stack).await;
    request_ids(&stack).await;
    runtime_user_has_dml_only(&stack).await;
    edge_never_5xx(&stack).await;
    extreme_numbers(&stack).await;
}

/// Numbers at the ends of what JSON and `f64` hold, in `config`: stored
/// and read back exactly, and never a 500, nor for the list that holds
/// the store afterwards (schemathesis's `1.7976931348623155e+308`).
async fn extreme_numbers(stack: &Stack) {
    let config = json!({
        "max": 1.797_693_134_862_315_5e308,
        "min": -1.797_693_134_862_315_5e308,
        "tiny": 5e-324,
        "big": u64::MAX,
        "small": i64::MIN,
    });
    let created = stack
        .create(json!({"name": "Big Numbers", "config": config}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let token = created.headers()["read-after"].clone();
    let read: Value = stack
        .http
        .get(stack.url(&location))
        .header("read-after", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["store"]["config"], config, "{read}");
    let list = stack
        .http
        .get(stack.url("/api/stores?limit=200"))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK);
}

/// Asserts an RFC 9457 problem with `code` and `status`; returns the body.
async fn problem(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status for {code}");
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let echoed = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert_eq!(body["status"], status);
    for member in ["type", "title", "instance", "message", "requestId"] {
        assert!(body[member].is_string(), "{member} missing in {body}");
    }
    assert_eq!(body["requestId"], echoed.as_str());
    body
}

async fn health_ready_metrics_openapi(stack: &Stack) {
    let health: Value = common::get_json(&stack.http, stack.url("/health")).await;
    assert_eq!(
        health,
        json!({"status": "healthy", "service": "store-service"})
    );

    let ready = stack.http.get(stack.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["secrets"]["source"], "vault");
    assert_eq!(
        ready["checks"]["idempotency"],
        json!({"status": "up", "fingerprintKey": "transit"})
    );

    // One request so that the request metrics exist.
    stack
        .http
        .get(stack.url("/api/stores?limit=1"))
        .send()
        .await
        .unwrap();
    let metrics = stack.http.get(stack.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = metrics.text().await.unwrap();
    for name in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "store_db_primary_up",
        "store_db_credentials_ttl_seconds",
        "store_db_pool_size",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert!(text.contains("route=\"/api/stores\""));

    let doc: Value = common::get_json(&stack.http, stack.url("/openapi.json")).await;
    for path in [
        "/api/stores",
        "/api/stores/{id}",
        "/api/stores/{id}/history",
        "/api/stores/{id}/secrets",
        "/health",
        "/ready",
        "/metrics",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    assert!(
        doc["info"]["description"]
            .as_str()
            .unwrap()
            .contains("`x-gateway-subject` is not listed as a parameter"),
        "{}",
        doc["info"]
    );
    assert!(doc["paths"]["/openapi.json"]["get"].is_object());
    let put = &doc["paths"]["/api/stores/{id}"]["put"];
    for code in ["200", "409", "412", "428"] {
        assert!(
            put["responses"][code].is_object(),
            "PUT {code} undocumented"
        );
    }
    // Every response names X-Request-Id; every API operation documents
    // 500/503/504 and takes X-Request-Id and traceparent.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            for (status, response) in responses {
                if response.get("$ref").is_none() && path != "/openapi.json" {
                    assert!(
                        response["headers"]["X-Request-Id"].is_object(),
                        "{method} {path} {status}: no X-Request-Id"
                    );
                }
            }
            if path.starts_with("/api/") {
                for status in ["500", "503", "504"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path}: {status} undocumented"
                    );
                }
                let params: Vec<&str> = operation["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                assert!(
                    params.contains(&"X-Request-Id"),
                    "{method} {path}: {params:?}"
                );
                assert!(
                    params.contains(&"traceparent"),
                    "{method} {path}: {params:?}"
                );
                // The gateway's own header, described once (not a
                // client's parameter).
                assert!(
                    !params.contains(&"x-gateway-subject"),
                    "{method} {path}: {params:?}"
                );
                if method == "get" && path.contains("{id}") {
                    assert!(
                        params.contains(&"Read-After"),
                        "{method} {path}: {params:?}"
                    );
                }
            }
        }
    }
    for (path, method, status) in [
        ("/api/stores", "post", "201"),
        ("/api/stores/{id}", "put", "200"),
    ] {
        let headers = &doc["paths"][path][method]["responses"][status]["headers"];
        assert!(
            headers["Idempotent-Replayed"].is_object(),
            "{method} {path}: {headers}"
        );
        assert!(
            headers["Read-After"].is_object(),
            "{method} {path}: {headers}"
        );
    }
    assert!(
        doc["components"]["responses"]["ServiceUnavailable"]["headers"]["Retry-After"].is_object()
    );
    assert!(
        doc["components"]["schemas"]["StoreEvent"]["properties"]["actor"].is_object(),
        "history events document no actor"
    );
    let problem_doc = doc["components"]["schemas"]["Problem"]["description"]
        .as_str()
        .unwrap();
    for code in store_domain::ErrorCode::ALL {
        assert!(
            problem_doc.contains(&code.type_uri()) && problem_doc.contains(code.as_str()),
            "problem type {code} undocumented"
        );
    }
}

async fn create_read_update_history(stack: &Stack) {
    let created = stack
        .create(json!({"name": "  <b>Corner</b> Shop ", "config": {"theme": "<i>dark</i>", "__proto__": {"admin": true}, "nested": {"constructor": 1, "ok": 2}}}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let location = created.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(created.headers()[header::ETAG], "\"1\"");
    let token = created.headers()["read-after"].to_str().unwrap().to_owned();
    let body: Value = created.json().await.unwrap();
    assert_eq!(body["message"], "Store created successfully");
    let store = &body["store"];
    assert_eq!(store["name"], "Corner Shop");
    assert_eq!(store["status"], "PROVISIONING");
    assert_eq!(store["version"], 1);
    assert_eq!(
        store["config"],
        json!({"theme": "dark", "nested": {"ok": 2}})
    );
    assert_eq!(store["secretKeys"], json!([]));
    let id = store["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/api/stores/{id}"));

    // Read-your-writes with the token, and without (a replica 404 is confirmed on the primary).
    for with_token in [true, false] {
        let mut get = stack.http.get(stack.url(&location));
        if with_token {
            get = get.header("read-after", &token);
        }
        let got = get.send().await.unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.headers()[header::ETAG], "\"1\"");
        let got: Value = got.json().await.unwrap();
        assert_eq!(&got["store"], store);
    }

    // Update with the version in the body.
    let updated = stack
        .http
        .put(stack.url(&location))
        .json(&json!({"status": "ACTIVE", "version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    assert_eq!(updated.headers()[header::ETAG], "\"2\"");
    assert!(updated.headers().contains_key("read-after"));
    let updated: Value = updated.json().await.unwrap();
    assert_eq!(updated["store"]["status"], "ACTIVE");
    assert_eq!(updated["store"]["version"], 2);

    // Update through If-Match.
    let renamed = stack
        .http
        .put(stack.url(&location))
        .header(header::IF_MATCH, "\"2\"")
        .json(&json!({"name": "Corner Shop 2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    let renamed_token = renamed.headers()["read-after"].clone();

    // With the last write's token, the history has it (a lagging replica is
    // not used).
    let history: Value = stack
        .http
        .get(stack.url(&format!("{location}/history")))
        .header("read-after", &renamed_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = history["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{history}");
    assert_eq!(events[0]["kind"], "CREATED");
    assert_eq!(events[1]["kind"], "UPDATED");
    assert_eq!(
        events[1]["changes"],
        json!([{"field": "status", "old": "PROVISIONING", "new": "ACTIVE"}])
    );
    assert_eq!(events[2]["changes"][0]["field"], "name");
    assert!(events[2]["requestId"].is_string());
    assert!(history["nextCursor"].is_null(), "{history}");

    // Paged like the list: pages of 2 hold the same events, in order.
    let paged = walk_pages(
        stack,
        &format!("{location}/history?limit=2"),
        "events",
        Some(&renamed_token),
    )
    .await;
    assert_eq!(&paged, events);
    // A cursor past the last event: an empty last page, not a 404.
    let last = store_domain::HistoryCursor::after(3).encode();
    let after_last: Value = common::get_json(
        &stack.http,
        stack.url(&format!("{location}/history?cursor={last}")),
    )
    .await;
    assert_eq!(
        (
            after_last["count"].clone(),
            after_last["nextCursor"].clone()
        ),
        (json!(0), Value::Null),
        "{after_last}"
    );
    // A cursor that is not one (a list cursor is not a history cursor),
    // a limit out of range: 400 naming the parameter.
    let list_cursor =
        store_domain::Cursor::new(time::OffsetDateTime::UNIX_EPOCH, uuid::Uuid::nil()).encode();
    for (query, field) in [
        (format!("cursor={list_cursor}"), "cursor"),
        ("cursor=nope".to_owned(), "cursor"),
        ("limit=201".to_owned(), "limit"),
    ] {
        let body = problem(
            stack
                .http
                .get(stack.url(&format!("{location}/history?{query}")))
                .send()
                .await
                .unwrap(),
            400,
            "VALIDATION_ERROR",
        )
        .await;
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }

    // Unknown ids: 404 everywhere; non-UUID ids: 400.
    let missing = "/api/stores/0190a0b0-0000-7000-8000-000000000000";
    problem(
        stack.http.get(stack.url(missing)).send().await.unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    problem(
        stack
            .http
            .get(stack.url(&format!("{missing}/history")))
            .send()
            .await
            .unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    problem(
        stack
            .http
            .get(stack.url(&format!("{missing}/secrets")))
            .send()
            .await
            .unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    problem(
        stack
            .http
            .put(stack.url(missing))
            .json(&json!({"name": "abc", "version": 1}))
            .send()
            .await
            .unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    // Not a UUID, or not even UTF-8 once percent-decoded: a problem, never
    // axum's plain-text rejection.
    for path in [
        "/api/stores/not-a-uuid",
        "/api/stores/%FF",
        "/api/stores/%FF/history",
        "/api/stores/%FF/secrets",
    ] {
        problem(
            stack.http.get(stack.url(path)).send().await.unwrap(),
            400,
            "INVALID_ID",
        )
        .await;
    }
    problem(
        stack.http.get(stack.url("/nowhere")).send().await.unwrap(),
        404,
        "NOT_FOUND",
    )
    .await;
    problem(
        stack
            .http
            .delete(stack.url(&location))
            .send()
            .await
            .unwrap(),
        405,
        "METHOD_NOT_ALLOWED",
    )
    .await;
}

async fn new_store(stack: &Stack, name: &str) -> String {
    let created: Value = stack
        .create(json!({"name": name}))
        .await
        .json()
        .await
        .unwrap();
    format!("/api/stores/{}", created["store"]["id"].as_str().unwrap())
}

async fn optimistic_locking(stack: &Stack) {
    let location = new_store(stack, "Locking Shop").await;
    let ok = stack
        .http
        .put(stack.url(&location))
        .json(&json!({"name": "Locking Shop 2", "version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    let stale = stack
        .http
        .put(stack.url(&location))
        .json(&json!({"name": "Stale", "version": 1}))
        .send()
        .await
        .unwrap();
    let body = problem(stale, 409, "CONCURRENCY_ERROR").await;
    assert_eq!(
        body["message"],
        "Store was modified by another request. Please refresh and try again."
    );
    assert_eq!(body["currentVersion"], 2);

    let stale = stack
        .http
        .put(stack.url(&location))
        .header(header::IF_MATCH, "\"1\"")
        .json(&json!({"name": "Stale"}))
        .send()
        .await
        .unwrap();
    let body = problem(stale, 412, "CONCURRENCY_ERROR").await;
    assert_eq!(body["currentVersion"], 2);

    let none = stack
        .http
        .put(stack.url(&location))
        .json(&json!({"name": "No Version"}))
        .send()
        .await
        .unwrap();
    problem(none, 428, "PRECONDITION_REQUIRED").await;

    let bad_etag = stack
        .http
        .put(stack.url(&location))
        .header(header::IF_MATCH, "W/\"2\"")
        .json(&json!({"name": "Weak"}))
        .send()
        .await
        .unwrap();
    problem(bad_etag, 400, "VALIDATION_ERROR").await;

    let got: Value = common::get_json(&stack.http, stack.url(&location)).await;
    assert_eq!(got["store"]["name"], "Locking Shop 2");
}

async fn concurrent_puts_one_winner(stack: &Stack) {
    let location = Arc::new(new_store(stack, "Race Shop").await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (http, url) = (stack.http.clone(), stack.url(&location));
        tasks.spawn(async move {
            let response = http
                .put(url)
                .json(&json!({"name": format!("Racer {i}"), "version": 1}))
                .send()
                .await
                .unwrap();
            (
                response.status(),
                response.headers().get("read-after").cloned(),
            )
        });
    }
    let mut statuses = Vec::new();
    let mut winner_token = None;
    while let Some(result) = tasks.join_next().await {
        let (status, token) = result.unwrap();
        if status == StatusCode::OK {
            winner_token = token;
        }
        statuses.push(status);
    }
    let wins = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let conflicts = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((wins, conflicts), (1, 19), "{statuses:?}");
    let history: Value = stack
        .http
        .get(stack.url(&format!("{location}/history")))
        .header("read-after", winner_token.expect("the winner's Read-After"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let updates = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "UPDATED")
        .count();
    assert_eq!(updates, 1);
}

async fn invalid_transitions(stack: &Stack) {
    let location = new_store(stack, "Lifecycle Shop").await;
    let put = |status: &str, version: i64| {
        stack
            .http
            .put(stack.url(&location))
            .json(&json!({"status": status, "version": version}))
            .send()
    };
    assert_eq!(
        put("DECOMMISSIONED", 1).await.unwrap().status(),
        StatusCode::OK
    );
    let body = problem(
        put("ACTIVE", 2).await.unwrap(),
        409,
        "INVALID_STATUS_TRANSITION",
    )
    .await;
    assert!(body["message"].as_str().unwrap().contains("DECOMMISSIONED"));
    let body = problem(put("BOGUS", 2).await.unwrap(), 400, "VALIDATION_ERROR").await;
    assert_eq!(body["errors"][0]["field"], "status");
}

async fn bad_input(stack: &Stack) {
    let post = |body: Vec<u8>, content_type: &'static str| {
        stack
            .http
            .post(stack.url("/api/stores"))
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };
    problem(
        post(b"{\"name\": ".to_vec(), "application/json")
            .await
            .unwrap(),
        400,
        "MALFORMED_JSON",
    )
    .await;
    problem(
        post(b"name=x".to_vec(), "application/x-www-form-urlencoded")
            .await
            .unwrap(),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    let body = problem(
        post(
            br#"{"name": "Shop", "owner": "me"}"#.to_vec(),
            "application/json",
        )
        .await
        .unwrap(),
        400,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(body["errors"][0]["code"], "unknown_field");
    let big = format!(
        r#"{{"name": "Big Shop", "config": {{"blob": "{}"}}}}"#,
        "x".repeat(70 * 1024)
    );
    problem(
        post(big.into_bytes(), "application/json").await.unwrap(),
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    // 10 000-deep JSON, as text: refused, no crash.
    let deep = format!(
        r#"{{"name": "Deep Shop", "config": {{"a": {}{}}}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    problem(
        post(deep.into_bytes(), "application/json").await.unwrap(),
        400,
        "MALFORMED_JSON",
    )
    .await;
    let body = problem(
        post(br#"{"name": "x"}"#.to_vec(), "application/json")
            .await
            .unwrap(),
        400,
        "VALIDATION_ERROR",
    )
    .await;
    assert_eq!(body["errors"][0]["field"], "name");

    // XSS and SQL stored inert.
    let created = stack
        .create(json!({"name": "Robert'); DROP TABLE stores;--<script>alert(1)</script>"}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let body: Value = created.json().await.unwrap();
    assert_eq!(body["store"]["name"], "Robert'); DROP TABLE stores;--");
    let list = stack
        .http
        .get(stack.url("/api/stores?limit=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK);
}

/// Every item (the `items` member) of the pages from `first` on, following
/// `Link: <...>; rel="next"`; each page's `count`, `nextCursor` and `Link`
/// agree, and holds at most its `limit`.
async fn walk_pages(
    stack: &Stack,
    first: &str,
    items: &str,
    read_after: Option<&header::HeaderValue>,
) -> Vec<Value> {
    let limit: usize = first
        .split("limit=")
        .nth(1)
        .and_then(|l| l.split('&').next())
        .and_then(|l| l.parse().ok())
        .unwrap_or(50);
    let mut next = Some(first.to_owned());
    let mut seen = Vec::new();
    while let Some(path) = next.take() {
        let mut request = stack.http.get(stack.url(&path));
        if let Some(token) = read_after {
            request = request.header("read-after", token);
        }
        let page = request.send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{path}");
        let link = page
            .headers()
            .get(header::LINK)
            .map(|l| l.to_str().unwrap().to_owned());
        let body: Value = page.json().await.unwrap();
        let page_items = body[items].as_array().unwrap();
        assert_eq!(body["count"], page_items.len());
        assert!(page_items.len() <= limit, "{body}");
        seen.extend(page_items.iter().cloned());
        match (link, body["nextCursor"].as_str()) {
            (Some(link), Some(cursor)) => {
                assert!(
                    link.ends_with(">; rel=\"next\"") && link.contains(cursor),
                    "{link}"
                );
                next = Some(
                    link.trim_start_matches('<')
                        .split('>')
                        .next()
                        .unwrap()
                        .to_owned(),
                );
            }
            (None, None) => assert!(body["nextCursor"].is_null(), "{body}"),
            other => panic!("Link and nextCursor disagree: {other:?}"),
        }
    }
    seen
}

async fn listing(stack: &Stack) {
    for i in 0..5 {
        let created = stack
            .create(json!({"name": format!("Paged Shop {i}")}))
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    // Walk every page of 2 following Link headers; every store appears once, in order.
    let seen: Vec<(String, String)> = walk_pages(stack, "/api/stores?limit=2", "stores", None)
        .await
        .iter()
        .map(|s| {
            (
                s["createdAt"].as_str().unwrap().to_owned(),
                s["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "a store appeared twice");
    assert!(seen.len() >= 5);

    let active: Value = common::get_json(
        &stack.http,
        stack.url("/api/stores?status=ACTIVE&limit=200"),
    )
    .await;
    assert!(
        active["stores"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "ACTIVE")
    );
    // A well-formed but forged cursor for 5000 BC: before PostgreSQL's
    // timestamptz range, so it must be refused here, not fail in SQL (500).
    let ancient = store_domain::Cursor::new(
        time::OffsetDateTime::from_unix_timestamp(-220_000_000_000).unwrap(),
        uuid::Uuid::nil(),
    )
    .encode();
    let ancient = format!("cursor={ancient}");
    for bad in [
        "limit=0",
        "limit=201",
        "limit=abc",
        "status=NOPE",
        "cursor=';DROP",
        ancient.as_str(),
    ] {
        let response = stack
            .http
            .get(stack.url(&format!("/api/stores?{bad}")))
            .send()
            .await
            .unwrap();
        problem(response, 400, "VALIDATION_ERROR").await;
    }
}

async fn idempotency(stack: &Stack) {
    let body = json!({"name": "Idempotent Shop"});
    let first = stack
        .http
        .post(stack.url("/api/stores"))
        .header("idempotency-key", "key-create-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let location = first.headers()[header::LOCATION].clone();
    let first: Value = first.json().await.unwrap();

    let again = stack
        .http
        .post(stack.url("/api/stores"))
        .header("idempotency-key", "key-create-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.headers()[header::LOCATION], location);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "the replay is the first response");

    let other = stack
        .http
        .post(stack.url("/api/stores"))
        .header("idempotency-key", "key-create-1")
        .json(&json!({"name": "Another Shop"}))
        .send()
        .await
        .unwrap();
    problem(other, 422, "IDEMPOTENCY_KEY_REUSED").await;

    let bad = stack
        .http
        .post(stack.url("/api/stores"))
        .header("idempotency-key", "")
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(bad, 400, "INVALID_IDEMPOTENCY_KEY").await;

    // A key whose first request is still running: 409. Running means its
    // record is claimed and row-locked by the change's transaction; here an
    // admin transaction holds that lock, as a request in flight does.
    let scope = "POST /api/stores";
    let mut admin = stack
        .pg
        .admin_db(stack.pg.primary(), "stores")
        .await
        .unwrap();
    admin
        .execute(
            "INSERT INTO idempotency_keys (scope, key, fingerprint) VALUES ($1, 'key-running', $2)",
            &[
                &scope,
                &stack
                    .state
                    .fingerprints
                    .fingerprint(None, b"{\"name\":\"Running Shop\"}"),
            ],
        )
        .await
        .unwrap();
    let running = || {
        stack
            .http
            .post(stack.url("/api/stores"))
            .header("idempotency-key", "key-running")
            .header(header::CONTENT_TYPE, "application/json")
            .body("{\"name\":\"Running Shop\"}")
            .send()
    };
    let in_flight = admin.transaction().await.unwrap();
    in_flight
        .execute(
            "SELECT 1 FROM idempotency_keys WHERE key = 'key-running' FOR UPDATE",
            &[],
        )
        .await
        .unwrap();
    problem(running().await.unwrap(), 409, "IDEMPOTENCY_KEY_IN_USE").await;
    // The first request dies without an answer (its transaction rolls
    // back): the key is not stuck, a retry runs the request.
    in_flight.rollback().await.unwrap();
    let retried = running().await.unwrap();
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert!(!retried.headers().contains_key("idempotent-replayed"));
    let replayed = running().await.unwrap();
    assert_eq!(replayed.status(), StatusCode::CREATED);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert!(replayed.headers().contains_key("read-after"));

    // A stale PUT replayed: the same 409, no second event.
    let location = location.to_str().unwrap().to_owned();
    let put = || {
        stack
            .http
            .put(stack.url(&location))
            .header("idempotency-key", "key-put-1")
            .json(&json!({"status": "ACTIVE", "version": 1}))
            .send()
    };
    assert_eq!(put().await.unwrap().status(), StatusCode::OK);
    let replay = put().await.unwrap();
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let history: Value = stack
        .http
        .get(stack.url(&format!("{location}/history")))
        .header("read-after", replay.headers()["read-after"].clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(history["events"].as_array().unwrap().len(), 2);

    // Only the write routes take a key: an unknown path or a wrong method
    // with a key writes no idempotency row.
    for (method, path) in [
        (reqwest::Method::POST, "/api/not-a-route"),
        (
            reqwest::Method::POST,
            "/api/stores/00000000-0000-0000-0000-000000000000",
        ),
    ] {
        let response = stack
            .http
            .request(method.clone(), stack.url(path))
            .header("idempotency-key", "key-not-a-write-route")
            .json(&json!({"name": "Nowhere"}))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_client_error(),
            "{method} {path}: {}",
            response.status()
        );
    }
    let stray = admin
        .query_opt(
            "SELECT 1 FROM idempotency_keys WHERE key = 'key-not-a-write-route'",
            &[],
        )
        .await
        .unwrap();
    assert!(
        stray.is_none(),
        "a request outside the write routes stored an idempotency row"
    );

    // Expired records (older than 24 h) are ignored.
    admin.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'key-create-1'", &[]).await.unwrap();
    let fresh = stack
        .http
        .post(stack.url("/api/stores"))
        .header("idempotency-key", "key-create-1")
        .json(&json!({"name": "Another Shop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(fresh.status(), StatusCode::CREATED);
    assert!(!fresh.headers().contains_key("idempotent-replayed"));
}

async fn secrets_at_rest(stack: &Stack) {
    let created = stack.create(json!({"name": "Secret Shop", "secrets": {"WIFI_PASSWORD": "hunter2-wifi", "API_KEY": "sk-live-123"}})).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let text = created.text().await.unwrap();
    assert!(!text.contains("hunter2-wifi") && !text.contains("sk-live-123"));
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body["store"]["secretKeys"],
        json!(["API_KEY", "WIFI_PASSWORD"])
    );
    let id = body["store"]["id"].as_str().unwrap().to_owned();

    let secrets: Value =
        common::get_json(&stack.http, stack.url(&format!("/api/stores/{id}/secrets"))).await;
    assert_eq!(
        secrets["secrets"],
        json!({"WIFI_PASSWORD": "hunter2-wifi", "API_KEY": "sk-live-123"})
    );

    let updated = stack
        .http
        .put(stack.url(&format!("/api/stores/{id}")))
        .json(&json!({"secrets": {"WIFI_PASSWORD": "new-wifi"}, "version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    let history = stack
        .http
        .get(stack.url(&format!("/api/stores/{id}/history")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !history.contains("hunter2-wifi") && !history.contains("new-wifi"),
        "{history}"
    );

    // The raw table, as the superuser: only Transit ciphertext.
    let admin = stack
        .pg
        .admin_db(stack.pg.primary(), "stores")
        .await
        .unwrap();
    let rows = admin
        .query("SELECT value FROM stores, jsonb_each_text(secrets)", &[])
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        let value: String = row.get(0);
        assert!(value.starts_with("vault:v"), "plaintext at rest: {value}");
    }
    let dump = admin
        .query_one(
            "SELECT string_agg(t::text, ' ') FROM (SELECT * FROM stores) t",
            &[],
        )
        .await
        .unwrap();
    let dump: String = dump.get(0);
    assert!(!dump.contains("hunter2-wifi") && !dump.contains("new-wifi"));
}

async fn request_ids(stack: &Stack) {
    let sane = stack
        .http
        .get(stack.url("/health"))
        .header("x-request-id", "my-req.1")
        .send()
        .await
        .unwrap();
    assert_eq!(sane.headers()["x-request-id"], "my-req.1");
    let insane = stack
        .http
        .get(stack.url("/nowhere"))
        .header("x-request-id", "<script>")
        .send()
        .await
        .unwrap();
    let id = insane.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, "<script>");
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let body: Value = insane.json().await.unwrap();
    assert_eq!(body["requestId"], id.as_str());
}

async fn runtime_user_has_dml_only(stack: &Stack) {
    // The Vault-issued user the service runs as can use every table, and create none.
    let credentials = stack.state.leases.as_ref().expect("Vault in use").current();
    use vault_client::ExposeSecret;
    let config = stack.pg.node(stack.pg.primary()).config(
        &credentials.username,
        credentials.password.expose_secret(),
        "stores",
    );
    let (db, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    for table in ["stores", "store_events", "idempotency_keys"] {
        db.query(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap();
    }
    assert!(
        db.batch_execute("CREATE TABLE not_allowed (id int)")
            .await
            .is_err()
    );
}

/// Arbitrary JSON bodies at the HTTP edge: never a 5xx.
async fn edge_never_5xx(stack: &Stack) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("name"),
            Just("status"),
            Just("config"),
            Just("secrets"),
            Just("version"),
            Just("__proto__")
        ]
        .prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_owned()),
                    Just("status".to_owned()),
                    Just("config".to_owned()),
                    Just("secrets".to_owned()),
                    Just("version".to_owned()),
                    ".{0,6}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let location = new_store(stack, "Fuzzed Shop").await;
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    runner
        .run(&value, |body| {
            let statuses = tokio::task::block_in_place(|| {
                handle.block_on(async {
                    let post = stack
                        .http
                        .post(stack.url("/api/stores"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .status();
                    let put = stack
                        .http
                        .put(stack.url(&location))
                        .json(&body)
                        .send()
                        .await
                        .unwrap()
                        .status();
                    (post, put)
                })
            });
            prop_assert!(
                !statuses.0.is_server_error() && !statuses.1.is_server_error(),
                "{statuses:?} for {body}"
            );
            Ok(())
        })
        .unwrap();

    // The rest of the request: query strings, path ids and the headers the
    // service reads, as arbitrary bytes (percent-encoded where they go in
    // the URL, and whatever a header value may carry).
    let bytes = || prop::collection::vec(any::<u8>(), 0..48);
    let encode = |raw: &[u8]| raw.iter().map(|b| format!("%{b:02X}")).collect::<String>();
    let request_parts = (
        bytes(),
        bytes(),
        prop::collection::vec((0..6_usize, bytes()), 0..4),
        ".{0,12}",
    );
    let header_names = [
        "idempotency-key",
        "if-match",
        "read-after",
        "x-request-id",
        "traceparent",
        "x-gateway-subject",
    ];
    runner
        .run(&request_parts, |(query, id, headers, plain_query)| {
            let statuses = tokio::task::block_in_place(|| {
                handle.block_on(async {
                    let mut statuses = Vec::new();
                    let with_headers = |mut request: reqwest::RequestBuilder| {
                        for (name, value) in &headers {
                            if let Ok(value) = reqwest::header::HeaderValue::from_bytes(value) {
                                request = request.header(header_names[*name], value);
                            }
                        }
                        request
                    };
                    let urls = [
                        format!("/api/stores?{}", encode(&query)),
                        format!(
                            "/api/stores?limit={}&cursor={}&status={}",
                            encode(&query),
                            encode(&id),
                            encode(&query)
                        ),
                        format!("/api/stores?{plain_query}"),
                        format!("/api/stores/{}", encode(&id)),
                        format!("/api/stores/{}/history", encode(&id)),
                        format!("/api/stores/{}/secrets", encode(&id)),
                    ];
                    for url in &urls {
                        let response = with_headers(stack.http.get(stack.url(url))).send().await;
                        statuses.push((url.clone(), response.unwrap().status()));
                    }
                    let put = with_headers(stack.http.put(stack.url(&location)))
                        .json(&json!({"name": "Fuzzed Shop"}))
                        .send()
                        .await
                        .unwrap()
                        .status();
                    statuses.push((location.clone(), put));
                    let post = with_headers(stack.http.post(stack.url("/api/stores")))
                        .json(&json!({"name": "Fuzzed Header Shop"}))
                        .send()
                        .await
                        .unwrap()
                        .status();
                    statuses.push(("POST /api/stores".into(), post));
                    statuses
                })
            });
            for (url, status) in &statuses {
                prop_assert!(
                    !status.is_server_error(),
                    "{status} for {url} with {headers:?}"
                );
            }
            Ok(())
        })
        .unwrap();

    // A body that cannot be read (a broken chunked encoding) is a 400, not
    // a 413; only a body over the limit is a 413.
    let broken = raw_request(
        stack,
        "POST /api/stores HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n",
    )
    .await;
    assert!(broken.starts_with("HTTP/1.1 400"), "{broken}");
    assert!(broken.contains("INVALID_BODY"), "{broken}");
    let keyed = raw_request(
        stack,
        "POST /api/stores HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Idempotency-Key: broken-body\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n",
    )
    .await;
    assert!(keyed.starts_with("HTTP/1.1 400"), "{keyed}");
    assert!(keyed.contains("INVALID_BODY"), "{keyed}");
    let big = format!(
        "POST /api/stores HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        70 * 1024,
        " ".repeat(70 * 1024)
    );
    let too_large = raw_request(stack, &big).await;
    assert!(too_large.starts_with("HTTP/1.1 413"), "{too_large}");
}

/// Sends `request` as it is over a new connection; returns what came back.
async fn raw_request(stack: &Stack, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = stack
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // The server may answer (and close) before it has read everything.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}
