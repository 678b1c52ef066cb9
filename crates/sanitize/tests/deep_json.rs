//! Documents nested far deeper than any limit are refused, not a stack overflow.
//!
//! A `serde_json::Value` drops itself recursively, so each of these values is
//! built iteratively and either handed to `clean_json` (which must dismantle it
//! without recursion) or dropped here without recursion.

use sanitize::{JsonPolicy, MAX_DEPTH_LIMIT, SanitizeError, clean_json};
use serde_json::{Map, Value, json};

const DEPTH: usize = 100_000;

fn deep_array(depth: usize) -> Value {
    let mut value = json!("leaf");
    for _ in 0..depth {
        value = Value::Array(vec![value]);
    }
    value
}

fn deep_object(depth: usize) -> Value {
    let mut value = json!("leaf");
    for _ in 0..depth {
        let mut map = Map::new();
        map.insert("k".to_owned(), value);
        value = Value::Object(map);
    }
    value
}

#[test]
fn deep_array_is_refused_with_too_deep() {
    let err = clean_json(deep_array(DEPTH), &JsonPolicy::default());
    assert_eq!(
        err,
        Err(SanitizeError::TooDeep {
            path: "/0".repeat(16),
            max: 16
        })
    );
}

#[test]
fn deep_object_is_refused_with_too_deep() {
    let err = clean_json(deep_object(DEPTH), &JsonPolicy::default());
    assert_eq!(
        err,
        Err(SanitizeError::TooDeep {
            path: "/k".repeat(16),
            max: 16
        })
    );
}

#[test]
fn a_huge_depth_setting_is_capped() {
    let policy = JsonPolicy::default().max_depth(usize::MAX);
    let err = clean_json(deep_array(DEPTH), &policy);
    assert_eq!(
        err,
        Err(SanitizeError::TooDeep {
            path: "/0".repeat(MAX_DEPTH_LIMIT),
            max: MAX_DEPTH_LIMIT
        })
    );
}

#[test]
fn deep_sibling_of_an_earlier_violation_is_dropped_safely() {
    // The too-many-keys object is met first; the deep sibling behind it must
    // still be dropped without recursion.
    let policy = JsonPolicy::default().max_keys(1);
    let value = Value::Array(vec![json!({"a": 1, "b": 2}), deep_array(DEPTH)]);
    let err = clean_json(value, &policy);
    assert_eq!(
        err,
        Err(SanitizeError::TooManyKeys {
            path: "/0".into(),
            max: 1,
            actual: 2
        })
    );
}

#[test]
fn deepest_allowed_document_is_cleaned() {
    // Each level is an object holding an array: two containers.
    let policy = JsonPolicy::default().max_depth(MAX_DEPTH_LIMIT);
    let mut value = json!("<b>leaf</b>");
    let mut expected = json!("leaf");
    for _ in 0..MAX_DEPTH_LIMIT / 2 {
        value = json!({"<i>k</i>": [value]});
        expected = json!({"k": [expected]});
    }
    assert_eq!(clean_json(value.clone(), &policy), Ok(expected));
    let err = clean_json(json!([value]), &policy);
    let path = format!("/0{}", "/k/0".repeat(MAX_DEPTH_LIMIT / 2 - 1)) + "/k";
    assert_eq!(
        err,
        Err(SanitizeError::TooDeep {
            path,
            max: MAX_DEPTH_LIMIT
        })
    );
}
