//! The OpenAPI documents are exact: schemathesis (`st`, with
//! `tests/schemathesis.toml`) finds no failure against store-service's
//! document (straight to the service) nor against the gateway's (through
//! it, with a token of every scope), on the running platform. A missing
//! `st` fails with its install command. `CONFORMANCE_SEED=N` runs it with
//! another seed than CI's 7.

use std::{path::Path, process::Command};

use serde_json::Value;
use system_tests::Platform;

/// Every check of schemathesis 4.32 (`--checks all` would add a
/// response-time limit: a timed assertion, which tests never make).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_headers_conformance,response_schema_conformance,negative_data_rejection,\
positive_data_acceptance,missing_required_header,unsupported_method,allow_header_conformance,\
use_after_free,ensure_resource_availability,ignored_auth,object_level_authorization";

/// The seed: `CONFORMANCE_SEED`, else 7 (CI's, so its runs agree).
fn seed() -> String {
    std::env::var("CONFORMANCE_SEED").unwrap_or_else(|_| "7".to_owned())
}

/// Runs `st run` against `document` (as `name`), with `token` as bearer
/// when given; panics with schemathesis's report unless it found nothing.
fn schemathesis(document: &str, token: Option<&str>, name: &str) {
    let st = testkit::schemathesis_binary().unwrap_or_else(|missing| panic!("{missing}"));
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemathesis.toml");
    let mut command = Command::new(st);
    command
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            document,
            "--checks",
            CHECKS,
            "--phases",
            "examples,fuzzing,stateful",
            "--seed",
            &seed(),
            "--no-color",
        ])
        .env("PYTHONIOENCODING", "utf-8");
    if let Some(token) = token {
        command.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    let output = command.output().expect("running st");
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("schemathesis against {name}:\n{report}");
    assert!(
        output.status.success(),
        "schemathesis found failures in {name}'s document ({}):\n{report}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_in_either_document() {
    let platform = Platform::start(1).await;
    let token = platform
        .token("stores:read stores:write stores:secrets")
        .await;

    // The gateway's document, before anything else: what only it states.
    let (status, document) = platform.get_json("/openapi.json", "").await;
    assert_eq!(status, 200, "{document}");
    let post = &document["paths"]["/api/stores"]["post"]["responses"];
    assert!(post["202"]["headers"]["Location"].is_object(), "{post}");
    assert_eq!(
        post["202"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Accepted"
    );
    let read = &document["paths"]["/api/stores/{id}"]["get"]["responses"]["200"];
    assert!(read["headers"]["Cache-Status"].is_object(), "{read}");
    let secrets = &document["paths"]["/api/stores/{id}/secrets"]["get"]["responses"]["200"];
    assert!(
        secrets["headers"]["Cache-Status"].is_null(),
        "a sensitive route is never stale: {secrets}"
    );
    assert!(document["paths"]["/api/requests/{id}"]["get"].is_object());
    assert_eq!(
        document["components"]["schemas"]["RequestStatus"]["type"],
        Value::from("object")
    );

    let store_document = platform.store_url("/openapi.json");
    let gateway_document = platform.gateway_url("/openapi.json");
    tokio::task::spawn_blocking(move || {
        schemathesis(&store_document, None, "store-service");
        schemathesis(&gateway_document, Some(&token), "the gateway");
    })
    .await
    .unwrap();
}
