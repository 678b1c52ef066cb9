//! With the `openapi` feature, every API type has a schema whose member names
//! match its serde names. (Built only with the feature: see Cargo.toml.)

use serde_json::Value;
use store_domain::{
    ChangedField, CreateStore, Cursor, ErrorCode, EventKind, FieldChange, FieldError, HistoryQuery,
    PageLimit, Problem, Secrets, SecretsResponse, Store, StoreEvent, StoreHistory, StorePage,
    StoreQuery, StoreResponse, StoreStatus, UpdateStore,
};
use utoipa::{IntoParams, OpenApi};

#[derive(OpenApi)]
#[openapi(components(schemas(
    Store,
    StoreStatus,
    CreateStore,
    UpdateStore,
    Secrets,
    StoreEvent,
    EventKind,
    ChangedField,
    FieldChange,
    StorePage,
    StoreQuery,
    PageLimit,
    Cursor,
    StoreResponse,
    StoreHistory,
    SecretsResponse,
    ErrorCode,
    Problem,
    FieldError,
)))]
struct Doc;

fn schemas() -> Value {
    serde_json::to_value(Doc::openapi()).unwrap()["components"]["schemas"].clone()
}

fn properties(schema: &Value) -> Vec<String> {
    let mut names: Vec<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn member_names_are_the_wire_names() {
    let schemas = schemas();
    assert_eq!(
        properties(&schemas["Store"]),
        [
            "config",
            "createdAt",
            "id",
            "name",
            "secretKeys",
            "status",
            "updatedAt",
            "version"
        ]
    );
    assert_eq!(
        properties(&schemas["StorePage"]),
        ["count", "nextCursor", "stores"]
    );
    assert_eq!(
        properties(&schemas["StoreHistory"]),
        ["count", "events", "nextCursor", "storeId"]
    );
    assert_eq!(
        properties(&schemas["Problem"]),
        [
            "currentVersion",
            "detail",
            "error",
            "errors",
            "instance",
            "message",
            "requestId",
            "status",
            "title",
            "type"
        ]
    );
    assert_eq!(
        properties(&schemas["UpdateStore"]),
        ["config", "name", "secrets", "status", "version"]
    );
    assert_eq!(
        properties(&schemas["StoreEvent"]),
        [
            "actor",
            "changes",
            "kind",
            "occurredAt",
            "requestId",
            "storeId",
            "version"
        ]
    );
}

#[test]
fn enums_list_their_wire_names() {
    let schemas = schemas();
    assert_eq!(
        schemas["StoreStatus"]["enum"],
        serde_json::json!(["PROVISIONING", "ACTIVE", "DECOMMISSIONED"])
    );
    let codes: Vec<&str> = schemas["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let expected: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, expected);
}

#[test]
fn types_and_formats() {
    let schemas = schemas();
    let store = &schemas["Store"]["properties"];
    assert_eq!(store["id"]["format"], "uuid");
    assert_eq!(store["createdAt"]["format"], "date-time");
    assert_eq!(store["config"]["type"], "object");
    assert_eq!(schemas["PageLimit"]["maximum"], 200);
    assert_eq!(schemas["PageLimit"]["minimum"], 1);
    assert_eq!(schemas["PageLimit"]["default"], 50);
    assert_eq!(schemas["Cursor"]["type"], "string");
    assert_eq!(schemas["Secrets"]["additionalProperties"]["type"], "string");
}

#[test]
fn list_query_parameters() {
    let params = StoreQuery::into_params(|| None);
    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["limit", "cursor", "status"]);
    let json = serde_json::to_value(&params).unwrap();
    for param in json.as_array().unwrap() {
        assert_eq!(param["in"], "query");
    }
    // The limit's bounds are inline: a document that names no `PageLimit`
    // schema has no dangling reference.
    assert_eq!(json[0]["schema"]["maximum"], 200, "{json}");
    assert_eq!(json[0]["schema"]["minimum"], 1, "{json}");
}

#[test]
fn history_query_parameters() {
    let params = HistoryQuery::into_params(|| None);
    let json = serde_json::to_value(&params).unwrap();
    let names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["limit", "cursor"]);
    assert_eq!(json[0]["schema"]["maximum"], 200, "{json}");
    assert_eq!(json[1]["in"], "query");
}
