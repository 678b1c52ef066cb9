//! The request-id layer and problem responses through a real axum router:
//! which ids are kept, what the handler and the client see, problem bodies
//! completed with the request's id and path with their headers kept; the
//! Prometheus recorder and its `/metrics` answer; `Secret`.

use axum::{
    Extension, Router,
    body::Body,
    http::{HeaderMap, HeaderValue, Request, StatusCode, header},
    middleware,
    response::Response,
    routing::get,
};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use service_kit::{
    Secret, problem,
    prometheus::{self, OTHER_METHOD},
    request_id::{self, RequestId, X_REQUEST_ID},
};
use store_domain::{ErrorCode, Problem};
use tower_service::Service as _;

/// The id the handler saw, in its extensions and in the request's header.
async fn echo(Extension(RequestId(id)): Extension<RequestId>, headers: HeaderMap) -> String {
    let header = headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    format!("{id} {header}")
}

/// A retryable problem with a header of the handler's own.
async fn limited() -> Response {
    let mut response = problem::response(Problem::new(ErrorCode::RateLimited, ""));
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
    response
}

fn router() -> Router {
    Router::new()
        .route("/echo", get(echo))
        .route("/limited/{id}", get(limited))
        .route(
            "/plain",
            get(|| async { (StatusCode::CONFLICT, "not a problem") }),
        )
        .layer(middleware::from_fn(request_id::layer))
}

async fn call(path: &str, id: Option<&str>) -> (Response, String) {
    let mut request = Request::builder().uri(path);
    if let Some(id) = id {
        request = request.header(&X_REQUEST_ID, id);
    }
    let response = router()
        .call(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    (Response::from_parts(parts, Body::empty()), text)
}

fn echoed(response: &Response) -> &str {
    response.headers()[&X_REQUEST_ID].to_str().unwrap()
}

#[tokio::test]
async fn a_sane_id_is_kept_everywhere() {
    let (response, body) = call("/echo", Some("req-1.a:b_c")).await;
    assert_eq!(echoed(&response), "req-1.a:b_c");
    assert_eq!(body, "req-1.a:b_c req-1.a:b_c");
}

#[tokio::test]
async fn any_other_id_is_replaced_by_a_uuid_v7() {
    for bad in ["a b", "<script>", &"a".repeat(request_id::MAX_LEN + 1)] {
        let (response, body) = call("/echo", Some(bad)).await;
        let id = echoed(&response).to_owned();
        let uuid = uuid::Uuid::try_parse(&id).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 7);
        assert_eq!(body, format!("{id} {id}"), "the handler sees the new id");
    }
    let (response, _) = call("/echo", None).await;
    assert!(uuid::Uuid::try_parse(echoed(&response)).is_ok());
}

#[tokio::test]
async fn problems_are_completed_with_the_id_and_path() {
    let (response, body) = call("/limited/42", Some("req-9")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    assert_eq!(echoed(&response), "req-9");
    assert_eq!(
        response.headers()[header::CONTENT_LENGTH],
        body.len().to_string().as_str(),
        "the length is the completed body's"
    );
    // Byte for byte: member names and order are the contract.
    let expected = serde_json::to_string(
        &Problem::new(ErrorCode::RateLimited, "req-9").with_instance("/limited/42"),
    )
    .unwrap();
    assert_eq!(body, expected);
    let value: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        value,
        json!({
            "type": "https://example.invalid/problems/rate-limited",
            "title": "Too many requests",
            "status": 429,
            "detail": "Too many requests. Retry later.",
            "instance": "/limited/42",
            "error": "RATE_LIMITED",
            "message": "Too many requests. Retry later.",
            "requestId": "req-9"
        })
    );
}

#[tokio::test]
async fn other_responses_pass_unchanged() {
    let (response, body) = call("/plain", Some("req-2")).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(body, "not a problem");
    assert_eq!(echoed(&response), "req-2");
}

#[test]
fn complete_leaves_a_completed_problem_alone() {
    let first = problem::complete(
        problem::response(Problem::new(ErrorCode::NotFound, "")),
        "req-1",
        "/a",
    );
    let again = problem::complete(first, "req-2", "/b");
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let body = futures_body(again);
    assert!(body.contains("\"requestId\":\"req-1\""), "{body}");
    assert!(body.contains("\"instance\":\"/a\""), "{body}");
}

/// The body of a response whose body is already in memory.
fn futures_body(response: Response) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let bytes = runtime
        .block_on(response.into_body().collect())
        .unwrap()
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn prometheus_is_installed_once_with_its_buckets() {
    let mut described = 0;
    let handle = prometheus::install(&[0.5, 1.0], || {
        described += 1;
        metrics::describe_histogram!("kit_test_seconds", "A test histogram");
    });
    let again = prometheus::install(&[9.0], || described += 1);
    assert_eq!(described, 1, "describe runs once");
    metrics::histogram!("kit_test_seconds", "method" => prometheus::method_label(&"BREW".parse().unwrap()))
        .record(0.7);
    let response = prometheus::render(&again);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4"
    );
    let text = futures_body(response);
    assert!(
        text.contains("# HELP kit_test_seconds A test histogram"),
        "{text}"
    );
    let bucket = format!("kit_test_seconds_bucket{{method=\"{OTHER_METHOD}\",le=\"0.5\"}} 0");
    assert!(text.contains(&bucket), "{text}");
    assert!(!text.contains("le=\"9\""), "the first buckets stay: {text}");
    assert_eq!(handle.render(), again.render());
}

#[test]
fn secrets_never_print() {
    let parsed: Secret = "hunter2".parse().unwrap();
    let read: Secret = serde_json::from_value(json!("hunter2")).unwrap();
    for secret in [parsed, read, Secret::new("hunter2")] {
        assert_eq!(format!("{secret:?}"), "[REDACTED]");
        assert_eq!(secret.expose(), "hunter2");
    }
    let wrapped = Some(Secret::new("hunter2"));
    assert!(!format!("{wrapped:?}").contains("hunter2"));
}
