//! Property tests of validation: valid names come back unchanged, no input
//! panics, and whatever passes is 3..=100 characters of plain text.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use store_domain::{CreateStore, UpdateStore, ValidCreate, ValidUpdate};

/// Names that are already clean: words of letters (some accented), digits
/// and light punctuation, joined by single spaces, 3 to 100 characters.
fn clean_name() -> impl Strategy<Value = String> {
    prop::collection::vec("[A-Za-z0-9À-ÖØ-öø-ÿ][A-Za-z0-9À-ÖØ-öø-ÿ'.,_-]{0,11}", 1..12)
        .prop_map(|words| words.join(" "))
        .prop_filter("3 to 100 characters", |name| {
            (3..=100).contains(&name.chars().count())
        })
}

/// Text rich in markup, references, quotes and odd characters.
fn hostile_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "<",
        ">",
        "</",
        "<!--",
        "-->",
        "<script>",
        "</script>",
        "<b>",
        "<img src=x onerror=alert(1)>",
        "&",
        "&lt;",
        "&gt;",
        "&amp;",
        "&#60;",
        "&#x3c;",
        ";",
        "\"",
        "'",
        " ",
        "  ",
        "\t",
        "\n",
        "\u{202E}",
        "\u{0}",
        "\u{FEFF}",
        "e\u{301}",
        "a",
        "Shop",
        "DROP TABLE",
        "--",
        "/",
        "!",
        "?",
        "é",
        "日本",
        "🙂",
    ]);
    prop::collection::vec(pieces, 0..60).prop_map(|parts| parts.concat())
}

/// Whether text could open markup: `<` before a letter, `/`, `!` or `?`.
fn holds_markup_opener(text: &str) -> bool {
    text.as_bytes().windows(2).any(|pair| {
        pair[0] == b'<' && (pair[1].is_ascii_alphabetic() || matches!(pair[1], b'/' | b'!' | b'?'))
    })
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        hostile_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    hostile_text(),
                    Just("__proto__".to_owned()),
                    Just("constructor".to_owned())
                ],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A body with each member either absent or of a plausible type (so that
/// the typed request often deserializes), or with any member of any value.
fn any_body() -> impl Strategy<Value = Value> {
    let secret_key = prop_oneof![
        "[A-Za-z0-9_.-]{1,70}",
        hostile_text(),
        Just("__proto__".to_owned())
    ];
    let plausible = (
        prop::option::of(hostile_text().prop_map(Value::from)),
        prop::option::of(prop_oneof![
            prop::sample::select(vec!["PROVISIONING", "ACTIVE", "DECOMMISSIONED", "active"])
                .prop_map(Value::from),
            Just(Value::Null),
        ]),
        prop::option::of(any_json().prop_map(|v| match v {
            Value::Object(map) => Value::Object(map),
            other => json!({ "value": other }),
        })),
        prop::option::of(
            prop::collection::btree_map(secret_key, "(.|<b>){0,20}", 0..6).prop_map(|m| {
                Value::Object(m.into_iter().map(|(k, v)| (k, Value::from(v))).collect())
            }),
        ),
        prop::option::of((-3_i64..10).prop_map(Value::from)),
    )
        .prop_map(|(name, status, config, secrets, version)| {
            let members = [
                ("name", name),
                ("status", status),
                ("config", config),
                ("secrets", secrets),
                ("version", version),
            ];
            Value::Object(
                members
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                    .collect::<Map<_, _>>(),
            )
        });
    let anything = prop::collection::btree_map(
        prop::sample::select(vec![
            "name", "config", "secrets", "status", "version", "extra",
        ]),
        any_json(),
        0..6,
    )
    .prop_map(|m| {
        Value::Object(
            m.into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<Map<_, _>>(),
        )
    });
    prop_oneof![plausible, anything]
}

proptest! {
    #[test]
    fn clean_names_round_trip(name in clean_name()) {
        let valid = CreateStore::new(name.clone()).validate().unwrap();
        prop_assert_eq!(valid.name(), name.as_str());
        let from_json = ValidCreate::from_json(json!({ "name": name.clone() })).unwrap();
        prop_assert_eq!(from_json.name(), name.as_str());
        let update = UpdateStore::based_on(1).with_name(name.clone()).validate().unwrap();
        prop_assert_eq!(update.name(), Some(name.as_str()));
    }

    #[test]
    fn accepted_names_are_bounded_plain_text(raw in hostile_text()) {
        if let Ok(valid) = CreateStore::new(raw).validate() {
            let name = valid.name();
            let chars = name.chars().count();
            prop_assert!((3..=100).contains(&chars), "{} characters", chars);
            prop_assert!(!holds_markup_opener(name), "{:?}", name);
            prop_assert_eq!(name.trim(), name);
            prop_assert!(!name.chars().any(char::is_control), "{:?}", name);
            // Validating the result again changes nothing.
            let again = CreateStore::new(name).validate().unwrap();
            prop_assert_eq!(again.name(), name);
        }
    }

    #[test]
    fn any_string_never_panics(raw in any::<String>()) {
        let _ = CreateStore::new(raw.clone()).validate();
        let _ = UpdateStore::default().with_name(raw.clone()).validate();
        let _ = ValidCreate::from_json(json!({ "name": raw.clone(), "secrets": { "K": raw } }));
    }

    #[test]
    fn any_body_never_panics_and_both_paths_agree(body in any_body()) {
        for result in [
            ValidCreate::from_json(body.clone()).map(|_| ()),
            ValidUpdate::from_json(body.clone()).map(|_| ()),
        ] {
            if let Err(errors) = result {
                prop_assert!(!errors.errors().is_empty());
                for error in errors.errors() {
                    prop_assert!(error.kind().is_some(), "unknown code {}", error.code);
                    prop_assert!(!error.message.is_empty());
                }
            }
        }
        // Where the typed request deserializes, both paths give the same
        // result, errors included.
        let typed: Result<CreateStore, _> = serde_json::from_value(body.clone());
        if let Ok(typed) = typed {
            prop_assert_eq!(typed.validate(), ValidCreate::from_json(body.clone()));
        }
        let typed: Result<UpdateStore, _> = serde_json::from_value(body.clone());
        if let Ok(typed) = typed {
            prop_assert_eq!(typed.validate(), ValidUpdate::from_json(body));
        }
    }

    #[test]
    fn accepted_configs_hold_no_forbidden_keys(config in any_json()) {
        if let Value::Object(config) = config
            && let Ok(valid) = CreateStore::new("Shop").with_config(config).validate()
        {
            let mut stack = vec![Value::Object(valid.config().clone())];
            while let Some(value) = stack.pop() {
                match value {
                    Value::Object(map) => {
                        for (key, value) in map {
                            prop_assert!(
                                !["__proto__", "constructor", "prototype"].contains(&key.as_str()),
                                "{}", key
                            );
                            stack.push(value);
                        }
                    }
                    Value::Array(items) => stack.extend(items),
                    Value::String(s) => prop_assert!(!holds_markup_opener(&s), "{:?}", s),
                    _ => {}
                }
            }
        }
    }
}
