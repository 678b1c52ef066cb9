//! Validation of create and update bodies, through both paths: the typed
//! request (`CreateStore::validate`) and the JSON body
//! (`ValidCreate::from_json`).

use serde_json::{Map, Value, json};
use store_domain::{
    CreateStore, FieldErrorCode, Secrets, StoreStatus, UpdateStore, ValidCreate, ValidUpdate,
    ValidationErrors,
};

/// The `(field, code)` pairs of a refusal, in order.
fn codes(errors: &ValidationErrors) -> Vec<(String, String)> {
    errors
        .errors()
        .iter()
        .map(|e| (e.field.clone(), e.code.clone()))
        .collect()
}

fn pairs(expected: &[(&str, FieldErrorCode)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(field, code)| ((*field).to_owned(), code.as_str().to_owned()))
        .collect()
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// A value nested `depth` objects deep: `{"a": {"a": ... 1}}`.
fn nested(depth: usize) -> Value {
    let mut value = json!(1);
    for _ in 0..depth {
        let mut map = Map::new();
        map.insert("a".to_owned(), value);
        value = Value::Object(map);
    }
    value
}

#[test]
fn a_valid_create_is_cleaned() {
    let valid = CreateStore::new("  <b>Corner</b> Shop ")
        .with_config(object(json!({"theme": "<i>dark</i>", "hours": [9, 17]})))
        .with_secret("WIFI_PASSWORD", " p<a>ss ")
        .validate()
        .unwrap();
    assert_eq!(valid.name(), "Corner Shop");
    assert_eq!(
        Value::Object(valid.config().clone()),
        json!({"theme": "dark", "hours": [9, 17]})
    );
    // Secret values are verbatim: not trimmed, not stripped.
    assert_eq!(valid.secrets().get("WIFI_PASSWORD"), Some(" p<a>ss "));
}

#[test]
fn create_without_config_or_secrets_gets_empty_ones() {
    let valid = CreateStore::new("Shop").validate().unwrap();
    assert!(valid.config().is_empty());
    assert!(valid.secrets().is_empty());
}

#[test]
fn create_lists_every_failing_field() {
    let request = CreateStore {
        name: "<p>x</p>".into(),
        config: Some(object(json!({"a": "x".repeat(5000)}))),
        secrets: Some(Secrets::new().with("bad key", "v").with("EMPTY", "")),
    };
    let errors = request.validate().unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[
            ("name", FieldErrorCode::TooShort),
            ("config", FieldErrorCode::TooLong),
            ("secrets", FieldErrorCode::InvalidKey),
            ("secrets", FieldErrorCode::Empty),
        ])
    );
}

#[test]
fn from_json_lists_shape_and_rule_errors_together() {
    let body = json!({
        "name": 42,
        "config": [1, 2],
        "secrets": {"API_KEY": 12345, "OK": "fine", "EMPTY": ""},
        "admin": true
    });
    let errors = ValidCreate::from_json(body).unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[
            ("name", FieldErrorCode::InvalidType),
            ("config", FieldErrorCode::InvalidType),
            ("secrets", FieldErrorCode::InvalidType),
            ("admin", FieldErrorCode::UnknownField),
        ])
    );
    assert_eq!(errors.errors()[2].pointer, "/secrets/API_KEY");
    assert_eq!(errors.errors()[3].pointer, "/admin");
}

#[test]
fn from_json_requires_a_name_and_an_object() {
    let errors = ValidCreate::from_json(json!({"config": {}})).unwrap_err();
    assert_eq!(codes(&errors), pairs(&[("name", FieldErrorCode::Required)]));
    let errors = ValidCreate::from_json(json!({"name": null})).unwrap_err();
    assert_eq!(codes(&errors), pairs(&[("name", FieldErrorCode::Required)]));
    for body in [json!([]), json!("Shop"), json!(null), json!(1)] {
        let errors = ValidCreate::from_json(body.clone()).unwrap_err();
        assert_eq!(
            codes(&errors),
            pairs(&[("", FieldErrorCode::InvalidType)]),
            "{body}"
        );
    }
}

#[test]
fn from_json_and_validate_agree_on_valid_bodies() {
    let body = json!({
        "name": " Main <em>Street</em> ",
        "config": {"tz": "Europe/Paris", "__proto__": {"x": 1}},
        "secrets": {"API_KEY": "k<>y"}
    });
    let from_json = ValidCreate::from_json(body.clone()).unwrap();
    let typed: CreateStore = serde_json::from_value(body).unwrap();
    assert_eq!(typed.validate().unwrap(), from_json);
    assert_eq!(from_json.name(), "Main Street");
    assert_eq!(
        Value::Object(from_json.config().clone()),
        json!({"tz": "Europe/Paris"})
    );
}

#[test]
fn unknown_fields_are_refused_when_deserializing() {
    let err =
        serde_json::from_value::<CreateStore>(json!({"name": "Shop", "owner": "x"})).unwrap_err();
    assert!(err.to_string().contains("unknown field `owner`"), "{err}");
    let err =
        serde_json::from_value::<UpdateStore>(json!({"version": 1, "nmae": "x"})).unwrap_err();
    assert!(err.to_string().contains("unknown field `nmae`"), "{err}");
}

/// Names that attack an HTML page or a SQL statement: HTML is removed;
/// SQL stays as text (the service binds it as a parameter, so it is inert).
#[test]
fn hostile_names_are_stored_inert() {
    let cases = [
        ("<script>alert('xss')</script>Shop", "Shop"),
        ("<img src=x onerror=alert(1)>Corner", "Corner"),
        ("<svg/onload=alert(1)>Market", "Market"),
        ("<a href=\"javascript:alert(1)\">Click</a> me", "Click me"),
        ("&lt;script&gt;alert(1)&lt;/script&gt;Bakery", "Bakery"),
        ("<iframe src=//evil></iframe>Deli", "Deli"),
        ("Café <style>body{display:none}</style>Noir", "Café Noir"),
        ("\"><script>alert(document.cookie)</script>Shop", "\">Shop"),
        (
            "Robert'); DROP TABLE stores;--",
            "Robert'); DROP TABLE stores;--",
        ),
        ("' OR '1'='1", "' OR '1'='1"),
        (
            "1; DELETE FROM stores WHERE 1=1",
            "1; DELETE FROM stores WHERE 1=1",
        ),
        ("admin'--", "admin'--"),
        (
            "x' UNION SELECT password FROM users--",
            "x' UNION SELECT password FROM users--",
        ),
    ];
    for (input, stored) in cases {
        let typed = CreateStore::new(input).validate().unwrap();
        assert_eq!(typed.name(), stored, "{input:?}");
        let from_json = ValidCreate::from_json(json!({ "name": input })).unwrap();
        assert_eq!(from_json.name(), stored, "{input:?}");
        let update = UpdateStore::based_on(1)
            .with_name(input)
            .validate()
            .unwrap();
        assert_eq!(update.name(), Some(stored), "{input:?}");
    }
}

#[test]
fn names_that_are_only_markup_are_too_short() {
    for input in [
        "<script>alert(1)</script>",
        "<b></b>",
        "<img src=x onerror=alert(1)>",
        "   ",
        "<p>ab</p>",
    ] {
        let errors = CreateStore::new(input).validate().unwrap_err();
        assert_eq!(
            codes(&errors),
            pairs(&[("name", FieldErrorCode::TooShort)]),
            "{input:?}"
        );
    }
}

#[test]
fn prototype_pollution_keys_are_dropped_at_any_depth() {
    let config = object(json!({
        "__proto__": {"isAdmin": true},
        "constructor": {"prototype": {"polluted": 1}},
        "safe": {
            "prototype": 1,
            "list": [{"__proto__": {"x": 1}, "keep": 1}, [{"constructor": 2}]],
            "deeper": {"a": {"b": {"__proto__": 3, "c": "ok"}}}
        },
        "<b>__proto__</b>": "markup around the key does not hide it"
    }));
    let expected = json!({
        "safe": {
            "list": [{"keep": 1}, [{}]],
            "deeper": {"a": {"b": {"c": "ok"}}}
        }
    });
    let typed = CreateStore::new("Shop")
        .with_config(config.clone())
        .validate()
        .unwrap();
    assert_eq!(Value::Object(typed.config().clone()), expected);
    let update = UpdateStore::based_on(3)
        .with_config(config)
        .validate()
        .unwrap();
    assert_eq!(update.config().cloned().map(Value::Object), Some(expected));
}

/// A body object from members, built by moving the values in (`json!`
/// would copy them by serializing, recursively).
fn body(members: Vec<(&str, Value)>) -> Value {
    Value::Object(
        members
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
    )
}

#[test]
fn a_10_000_deep_config_is_refused_without_a_crash() {
    // Built by a program (serde_json would not parse it).
    let deep = object(nested(10_000));
    let errors = CreateStore::new("Shop")
        .with_config(deep)
        .validate()
        .unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[("config", FieldErrorCode::TooDeep)])
    );

    let errors = ValidCreate::from_json(body(vec![
        ("name", json!("Shop")),
        ("config", nested(10_000)),
    ]))
    .unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[("config", FieldErrorCode::TooDeep)])
    );

    let errors = UpdateStore::based_on(1)
        .with_config(object(nested(10_000)))
        .validate()
        .unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[("config", FieldErrorCode::TooDeep)])
    );
}

#[test]
fn deep_values_anywhere_are_dropped_without_recursion() {
    let errors = ValidCreate::from_json(body(vec![
        ("name", nested(10_000)),
        ("secrets", nested(10_000)),
        ("junk", nested(10_000)),
    ]))
    .unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[
            ("name", FieldErrorCode::InvalidType),
            ("secrets", FieldErrorCode::InvalidType),
            ("junk", FieldErrorCode::UnknownField),
        ])
    );
    let errors = ValidCreate::from_json(body(vec![
        ("name", json!("Shop")),
        ("secrets", body(vec![("K", nested(10_000))])),
    ]))
    .unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[("secrets", FieldErrorCode::InvalidType)])
    );
    let errors = ValidCreate::from_json(nested(10_000)).unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[
            ("name", FieldErrorCode::Required),
            ("a", FieldErrorCode::UnknownField)
        ])
    );
    let mut deep_array = json!(1);
    for _ in 0..10_000 {
        deep_array = Value::Array(vec![deep_array]);
    }
    let errors = ValidCreate::from_json(deep_array).unwrap_err();
    assert_eq!(codes(&errors), pairs(&[("", FieldErrorCode::InvalidType)]));
    let errors = ValidUpdate::from_json(body(vec![
        ("status", nested(10_000)),
        ("version", nested(10_000)),
    ]))
    .unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[
            ("status", FieldErrorCode::InvalidType),
            ("version", FieldErrorCode::InvalidType),
        ])
    );
}

#[test]
fn a_10_000_deep_json_text_is_refused_by_the_parser() {
    let text = format!(
        r#"{{"name":"Shop","config":{}1{}}}"#,
        r#"{"a":"#.repeat(10_000),
        "}".repeat(10_000)
    );
    let err = serde_json::from_str::<CreateStore>(&text).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
    let err = serde_json::from_str::<Value>(&text).unwrap_err();
    assert!(err.to_string().contains("recursion limit"), "{err}");
}

#[test]
fn config_bounds() {
    let too_many: Map<String, Value> = (0..300).map(|i| (format!("k{i}"), json!(i))).collect();
    let errors = CreateStore::new("Shop")
        .with_config(too_many)
        .validate()
        .unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[("config", FieldErrorCode::TooManyKeys)])
    );

    let long_array = object(json!({ "a": vec![0; 1025] }));
    let errors = CreateStore::new("Shop")
        .with_config(long_array)
        .validate()
        .unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[("config", FieldErrorCode::ArrayTooLong)])
    );

    // 20 strings of 2 000 characters: each within bounds, 40 KB together.
    let large: Map<String, Value> = (0..20)
        .map(|i| (format!("k{i}"), json!("x".repeat(2000))))
        .collect();
    let errors = CreateStore::new("Shop")
        .with_config(large)
        .validate()
        .unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[("config", FieldErrorCode::TooLarge)])
    );

    let collision = object(json!({"<b>k</b>": 1, "k": 2}));
    let errors = CreateStore::new("Shop")
        .with_config(collision)
        .validate()
        .unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[("config", FieldErrorCode::KeyCollision)])
    );
}

#[test]
fn refusals_never_echo_secret_values() {
    let secret = "hunter2-SUPER-SECRET";
    let bodies = [
        json!({"name": "Shop", "secrets": secret}),
        json!({"name": "Shop", "secrets": [secret]}),
        json!({"name": "Shop", "secrets": {"bad key": secret}}),
        json!({"name": "Shop", "secrets": {"K": secret.repeat(300)}}),
        json!({"name": "x", "secrets": {"K": secret}}),
    ];
    for body in bodies {
        let errors = ValidCreate::from_json(body.clone()).unwrap_err();
        let shown = format!(
            "{errors} {errors:?} {}",
            serde_json::to_string(errors.errors()).unwrap()
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        let typed = serde_json::from_value::<CreateStore>(body);
        if let Ok(typed) = typed {
            assert!(!format!("{typed:?}").contains("hunter2"));
            let errors = typed.validate().unwrap_err();
            assert!(!format!("{errors} {errors:?}").contains("hunter2"));
        } else if let Err(err) = typed {
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}

#[test]
fn an_update_must_change_something() {
    for request in [UpdateStore::default(), UpdateStore::based_on(3)] {
        let errors = request.validate().unwrap_err();
        assert_eq!(codes(&errors), pairs(&[("", FieldErrorCode::NoFields)]));
    }
    for body in [
        json!({}),
        json!({"version": 2}),
        json!({"name": null, "version": 2}),
    ] {
        let errors = ValidUpdate::from_json(body.clone()).unwrap_err();
        assert_eq!(
            codes(&errors),
            pairs(&[("", FieldErrorCode::NoFields)]),
            "{body}"
        );
    }
}

#[test]
fn update_fields() {
    let update = ValidUpdate::from_json(json!({
        "status": "ACTIVE",
        "version": 3,
        "secrets": {},
    }))
    .unwrap();
    assert_eq!(update.status(), Some(StoreStatus::Active));
    assert_eq!(update.expected_version(), Some(3));
    assert_eq!(update.secrets().map(Secrets::len), Some(0));
    assert_eq!(update.name(), None);
    assert_eq!(update.config(), None);
    // If-Match replaces the body's version.
    assert_eq!(update.with_expected_version(9).expected_version(), Some(9));

    let errors = ValidUpdate::from_json(json!({
        "status": "RETIRED",
        "version": 0,
        "name": "<b></b>",
    }))
    .unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[
            ("name", FieldErrorCode::TooShort),
            ("status", FieldErrorCode::InvalidValue),
            ("version", FieldErrorCode::OutOfRange),
        ])
    );
    let errors = ValidUpdate::from_json(json!({"status": 1, "version": "3"})).unwrap_err();
    assert_eq!(
        codes(&errors),
        pairs(&[
            ("status", FieldErrorCode::InvalidType),
            ("version", FieldErrorCode::InvalidType),
        ])
    );
}

#[test]
fn update_without_version_is_valid_input() {
    // The missing precondition is decided when applying (428), not here.
    let update = UpdateStore::default().with_name("Shop").validate().unwrap();
    assert_eq!(update.expected_version(), None);
}

#[test]
fn try_from_is_validate() {
    let valid = ValidCreate::try_from(CreateStore::new("Shop")).unwrap();
    assert_eq!(valid.name(), "Shop");
    assert!(ValidUpdate::try_from(UpdateStore::default()).is_err());
}
