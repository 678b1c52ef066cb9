//! The JSON on the wire, exactly: camelCase members, RFC 3339 times,
//! SCREAMING_SNAKE_CASE statuses; and round trips back to the same values.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use store_domain::{
    Actor, CreateStore, Cursor, ErrorCode, FieldErrorCode, HistoryCursor, PageLimit, Problem,
    Secrets, SecretsResponse, Store, StoreEvent, StoreHistory, StorePage, StoreQuery,
    StoreResponse, StoreStatus, UpdateStore, ValidCreate,
};
use time::macros::datetime;
use uuid::Uuid;

const ID: &str = "01936b2e-8f00-7000-8000-000000000001";

fn store() -> Store {
    Store {
        id: ID.parse().unwrap(),
        name: "Corner Shop".into(),
        status: StoreStatus::Active,
        config: serde_json::from_value(json!({"theme": "dark", "hours": [9, 17]})).unwrap(),
        version: 3,
        created_at: datetime!(2026-11-26 09:30:00 UTC),
        updated_at: datetime!(2026-11-26 10:15:30.123456 UTC),
        secret_keys: vec!["API_KEY".into(), "WIFI_PASSWORD".into()],
    }
}

fn store_json() -> Value {
    json!({
        "id": ID,
        "name": "Corner Shop",
        "status": "ACTIVE",
        "config": {"theme": "dark", "hours": [9, 17]},
        "version": 3,
        "createdAt": "2026-11-26T09:30:00Z",
        "updatedAt": "2026-11-26T10:15:30.123456Z",
        "secretKeys": ["API_KEY", "WIFI_PASSWORD"]
    })
}

/// `value` serializes to `expected`, and `expected` deserializes back to
/// `value`.
fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    value: &T,
    expected: &Value,
) {
    assert_eq!(&serde_json::to_value(value).unwrap(), expected);
    let text = serde_json::to_string(value).unwrap();
    assert_eq!(&serde_json::from_str::<T>(&text).unwrap(), value);
    assert_eq!(
        &serde_json::from_value::<T>(expected.clone()).unwrap(),
        value
    );
}

#[test]
fn store_json_is_exact() {
    check(&store(), &store_json());
}

#[test]
fn times_with_offsets_are_read_as_instants() {
    let mut json = store_json();
    json["createdAt"] = json!("2026-11-26T10:30:00+01:00");
    let read: Store = serde_json::from_value(json).unwrap();
    assert_eq!(read.created_at, datetime!(2026-11-26 09:30:00 UTC));
    let mut bad = store_json();
    bad["createdAt"] = json!("26/11/2026");
    assert!(serde_json::from_value::<Store>(bad).is_err());
}

#[test]
fn store_ignores_unknown_members_for_forward_compatibility() {
    let mut json = store_json();
    json["ownerTeam"] = json!("payments");
    assert_eq!(serde_json::from_value::<Store>(json).unwrap(), store());
}

#[test]
fn store_responses() {
    check(
        &StoreResponse::found(store()),
        &json!({"store": store_json()}),
    );
    check(
        &StoreResponse::created(store()),
        &json!({"store": store_json(), "message": "Store created successfully"}),
    );
    check(
        &StoreResponse::updated(store()),
        &json!({"store": store_json(), "message": "Store updated successfully"}),
    );
}

#[test]
fn page_json_is_exact() {
    let cursor = Cursor::after(&store());
    let page = StorePage::new(vec![store()], Some(cursor));
    check(
        &page,
        &json!({"stores": [store_json()], "count": 1, "nextCursor": cursor.encode()}),
    );
    let last = StorePage::new(Vec::new(), None);
    check(
        &last,
        &json!({"stores": [], "count": 0, "nextCursor": null}),
    );
}

#[test]
fn requests_json() {
    let create = CreateStore::new("Shop")
        .with_config(serde_json::from_value(json!({"a": 1})).unwrap())
        .with_secret("PIN", "0000");
    check(
        &create,
        &json!({"name": "Shop", "config": {"a": 1}, "secrets": {"PIN": "0000"}}),
    );
    check(&CreateStore::new("Shop"), &json!({"name": "Shop"}));
    let update = UpdateStore::based_on(4).with_status(StoreStatus::Decommissioned);
    check(&update, &json!({"status": "DECOMMISSIONED", "version": 4}));
}

#[test]
fn event_json_is_exact() {
    let (created, _) = ValidCreate::from_json(json!({"name": "Shop", "secrets": {"PIN": "1"}}))
        .unwrap()
        .into_store(ID.parse().unwrap(), datetime!(2026-01-02 03:04:05 UTC));
    let event = StoreEvent::created(&created, "req-9", None);
    let expected = json!({
        "storeId": ID,
        "version": 1,
        "occurredAt": "2026-01-02T03:04:05Z",
        "kind": "CREATED",
        "changes": [
            {"field": "name", "old": null, "new": "Shop"},
            {"field": "status", "old": null, "new": "PROVISIONING"},
            {"field": "config", "old": null, "new": {}},
            {"field": "secrets", "old": null, "new": ["PIN"]}
        ],
        "requestId": "req-9",
        "actor": null
    });
    check(&event, &expected);
    // A subject's event names it; an event written before `actor` existed
    // reads as anonymous.
    let alice = Actor::new("auth0|alice").unwrap();
    let by_alice = StoreEvent::created(&created, "req-9", Some(alice.clone()));
    let mut expected_alice = expected.clone();
    expected_alice["actor"] = json!("auth0|alice");
    check(&by_alice, &expected_alice);
    let mut older = expected.clone();
    older.as_object_mut().unwrap().remove("actor");
    assert_eq!(serde_json::from_value::<StoreEvent>(older).unwrap(), event);
    // An actor that is not a subject does not parse.
    let mut empty = expected.clone();
    empty["actor"] = json!("");
    assert!(serde_json::from_value::<StoreEvent>(empty).is_err());
    check(
        &StoreHistory {
            store_id: created.id,
            events: vec![event],
            count: 1,
            next_cursor: Some(HistoryCursor::after(2)),
        },
        &json!({"storeId": ID, "events": [expected], "count": 1, "nextCursor": "AgAAAAI"}),
    );
}

#[test]
fn secrets_response_json() {
    let response = SecretsResponse {
        store_id: ID.parse().unwrap(),
        secrets: Secrets::new().with("PIN", "<1234>"),
    };
    check(
        &response,
        &json!({"storeId": ID, "secrets": {"PIN": "<1234>"}}),
    );
    assert!(!format!("{response:?}").contains("1234"));
}

#[test]
fn query_json() {
    let query = StoreQuery {
        limit: PageLimit::new(20).unwrap(),
        cursor: None,
        status: Some(StoreStatus::Active),
    };
    check(&query, &json!({"limit": 20, "status": "ACTIVE"}));
    let defaulted: StoreQuery = serde_json::from_value(json!({})).unwrap();
    assert_eq!(defaulted, StoreQuery::default());
    assert_eq!(defaulted.limit, PageLimit::DEFAULT);
}

#[test]
fn validation_problem_json_is_exact() {
    let errors = ValidCreate::from_json(json!({"name": "x", "extra": 1})).unwrap_err();
    let problem = Problem::validation(&errors, "req-3").with_instance("/api/stores");
    let expected = json!({
        "type": "https://example.invalid/problems/validation-error",
        "title": "Validation failed",
        "status": 400,
        "detail": "The request is invalid; see errors for each field.",
        "instance": "/api/stores",
        "error": "VALIDATION_ERROR",
        "message": "The request is invalid; see errors for each field.",
        "requestId": "req-3",
        "errors": [
            {
                "field": "name",
                "pointer": "/name",
                "code": "too_short",
                "message": "name must be 3 to 100 characters long once markup and surrounding spaces are removed; it has 1"
            },
            {
                "field": "extra",
                "pointer": "/extra",
                "code": "unknown_field",
                "message": "unknown field; the fields are name, config, secrets"
            }
        ]
    });
    check(&problem, &expected);
    assert_eq!(problem.code(), Some(ErrorCode::ValidationError));
    let read: Problem = serde_json::from_value(expected).unwrap();
    let kinds: Vec<_> = read.errors.unwrap().iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        [
            Some(FieldErrorCode::TooShort),
            Some(FieldErrorCode::UnknownField)
        ]
    );
}

#[test]
fn every_code_makes_a_consistent_problem() {
    for &code in ErrorCode::ALL {
        let problem = Problem::new(code, "r");
        let json = serde_json::to_value(&problem).unwrap();
        assert_eq!(json["error"], code.as_str());
        assert_eq!(json["status"], code.status());
        assert_eq!(json["title"], code.title());
        assert_eq!(json["message"], json["detail"]);
        assert_eq!(json["requestId"], "r");
        assert!(json.get("errors").is_none() && json.get("currentVersion").is_none());
        assert_eq!(serde_json::from_value::<Problem>(json).unwrap(), problem);
    }
}

#[test]
fn uuid_ids_are_hyphenated_strings() {
    let id = Uuid::from_u128(1);
    let mut s = store();
    s.id = id;
    assert_eq!(
        serde_json::to_value(&s).unwrap()["id"],
        "00000000-0000-0000-0000-000000000001"
    );
}
