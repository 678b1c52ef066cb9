//! Properties of `clean_text` and `clean_json` over generated input.

use proptest::prelude::*;
use sanitize::{
    FORBIDDEN_KEYS, JsonPolicy, MAX_DEPTH_LIMIT, Mode, SanitizeError, TextPolicy, clean_json,
    clean_json_report, clean_text, clean_text_report,
};
use serde_json::{Map, Number, Value};
use unicode_normalization::is_nfc;

/// Pieces that make markup, references and tricky characters likely.
const PIECES: &[&str] = &[
    "<",
    ">",
    "&",
    "/",
    "!",
    "?",
    "-",
    "=",
    "\"",
    "'",
    ";",
    "#",
    " ",
    "a",
    "b",
    "x",
    "lt;",
    "gt;",
    "amp;",
    "#60;",
    "#x3C;",
    "#0;",
    "nbsp;",
    "script",
    "style",
    "textarea",
    "img",
    "svg",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "<?",
    "</",
    "<b>",
    "</b>",
    "<script>",
    "</script>",
    "onerror=",
    "\0",
    "\t",
    "\n",
    "\r",
    "\u{7}",
    "\u{85}",
    "\u{A0}",
    "\u{202E}",
    "\u{2066}",
    "\u{FEFF}",
    "\u{2028}",
    "\u{301}",
    "e",
    "\u{212A}",
    "\u{338}",
    "é",
    "𝄞",
    "\u{3000}",
];

fn pieces() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..48).prop_map(|p| p.concat())
}

/// Mostly markup-heavy text, sometimes any string at all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![4 => pieces(), 1 => any::<String>(), 1 => "\\PC{0,40}"]
}

fn policy() -> impl Strategy<Value = TextPolicy> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(newlines, tabs, bidi)| {
        TextPolicy::default()
            .max_chars(usize::MAX)
            .allow_newlines(newlines)
            .allow_tabs(tabs)
            .strip_bidi_controls(bidi)
    })
}

/// Whether `text` holds a `<` that would open markup.
fn has_opener(text: &str) -> bool {
    text.as_bytes()
        .windows(2)
        .any(|w| w[0] == b'<' && (w[1].is_ascii_alphabetic() || matches!(w[1], b'/' | b'!' | b'?')))
}

/// Checks everything a cleaned text must satisfy.
fn assert_clean(out: &str, policy: &TextPolicy) -> Result<(), TestCaseError> {
    prop_assert!(!has_opener(out), "opener in {:?}", out);
    prop_assert_eq!(out.trim(), out);
    prop_assert!(is_nfc(out), "not NFC: {:?}", out);
    for c in out.chars() {
        let allowed = (c == '\n' && policy.allow_newlines) || (c == '\t' && policy.allow_tabs);
        prop_assert!(!c.is_control() || allowed, "control {:?} in {:?}", c, out);
        prop_assert!(
            !matches!(c, '\r' | '\u{2028}' | '\u{2029}'),
            "raw line break in {:?}",
            out
        );
        if policy.strip_bidi_controls {
            let bidi = matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}');
            prop_assert!(!bidi, "bidi control in {:?}", out);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn clean_text_is_idempotent_and_leaves_no_markup(input in text(), policy in policy()) {
        let out = clean_text(&input, &policy);
        prop_assert!(out.is_ok(), "refused: {:?}", out);
        let out = out.unwrap_or_default();
        assert_clean(&out, &policy)?;
        prop_assert_eq!(clean_text(&out, &policy), Ok(out.clone()), "not idempotent");
        let (reported, report) = clean_text_report(&input, &policy).unwrap_or_default();
        prop_assert_eq!(&reported, &out);
        prop_assert_eq!(report.changed, out != input);
    }

    #[test]
    fn clean_text_respects_length_bounds(input in text(), min in 0usize..20, max in 0usize..40) {
        let policy = TextPolicy::default().field("f").min_chars(min).max_chars(max);
        let unbounded = clean_text(&input, &TextPolicy::default().max_chars(usize::MAX));
        let len = unbounded.as_ref().map(|s| s.chars().count()).unwrap_or_default();
        match clean_text(&input, &policy) {
            Ok(out) => {
                prop_assert!(min <= len && len <= max);
                prop_assert_eq!(Ok(out), unbounded);
            }
            Err(SanitizeError::TooLong { field, max: m, actual }) => {
                prop_assert_eq!((field.as_str(), m, actual), ("f", max, len));
                prop_assert!(len > max);
            }
            Err(SanitizeError::TooShort { field, min: m, actual }) => {
                prop_assert_eq!((field.as_str(), m, actual), ("f", min, len));
                prop_assert!(len < min && len <= max);
            }
            Err(other) => prop_assert!(false, "unexpected {other}"),
        }
    }
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-c]{1,2}",
        1 => prop::sample::select(FORBIDDEN_KEYS.as_slice()).prop_map(str::to_owned),
        1 => pieces(),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn json_policy() -> impl Strategy<Value = JsonPolicy> {
    (
        0usize..6,
        0usize..6,
        0usize..6,
        0usize..600,
        0usize..30,
        1usize..6,
        any::<bool>(),
    )
        .prop_map(|(depth, keys, len, bytes, chars, key_chars, reject)| {
            JsonPolicy::default()
                .max_depth(depth)
                .max_keys(keys)
                .max_array_len(len)
                .max_bytes(bytes)
                .max_key_chars(key_chars)
                .strings(TextPolicy::default().max_chars(chars))
                .forbidden_keys(if reject { Mode::Reject } else { Mode::Strip })
        })
}

/// Checks every bound of `policy` on a cleaned document, without recursion
/// past the depth it checks.
fn assert_within(value: &Value, policy: &JsonPolicy) -> Result<(), TestCaseError> {
    let bytes = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    prop_assert!(
        bytes <= policy.max_bytes,
        "{} bytes > {}",
        bytes,
        policy.max_bytes
    );
    let mut pending = vec![(value, 0usize)];
    while let Some((value, depth)) = pending.pop() {
        match value {
            Value::Array(items) => {
                prop_assert!(depth < policy.max_depth && items.len() <= policy.max_array_len);
                pending.extend(items.iter().map(|v| (v, depth + 1)));
            }
            Value::Object(map) => {
                prop_assert!(depth < policy.max_depth && map.len() <= policy.max_keys);
                for (key, member) in map {
                    prop_assert!(!FORBIDDEN_KEYS.contains(&key.as_str()));
                    prop_assert!(key.chars().count() <= policy.max_key_chars);
                    prop_assert_eq!(clean_text(key, &TextPolicy::default()), Ok(key.clone()));
                    pending.push((member, depth + 1));
                }
            }
            Value::String(s) => {
                prop_assert!(s.chars().count() <= policy.strings.max_chars);
                assert_clean(s, &policy.strings)?;
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn clean_json_never_panics_and_respects_all_bounds(value in json(), policy in json_policy()) {
        match clean_json_report(value, &policy) {
            Ok((out, report)) => {
                assert_within(&out, &policy)?;
                prop_assert_eq!(clean_json(out.clone(), &policy), Ok(out), "not idempotent");
                if policy.forbidden_keys == Mode::Reject {
                    prop_assert!(report.keys_dropped.is_empty());
                }
            }
            Err(err) => {
                // Each error names the limit the policy set.
                match err {
                    SanitizeError::TooDeep { max, .. } => prop_assert_eq!(max, policy.max_depth),
                    SanitizeError::TooManyKeys { max, actual, .. } => {
                        prop_assert_eq!(max, policy.max_keys);
                        prop_assert!(actual > max);
                    }
                    SanitizeError::ArrayTooLong { max, actual, .. } => {
                        prop_assert_eq!(max, policy.max_array_len);
                        prop_assert!(actual > max);
                    }
                    SanitizeError::TooLarge { max, .. } => prop_assert_eq!(max, policy.max_bytes),
                    SanitizeError::TooLong { max, actual, .. } => {
                        prop_assert_eq!(max, policy.strings.max_chars);
                        prop_assert!(actual > max);
                    }
                    SanitizeError::KeyTooLong { max, actual, .. } => {
                        prop_assert_eq!(max, policy.max_key_chars);
                        prop_assert!(actual > max);
                    }
                    SanitizeError::ForbiddenKey { key, .. } => {
                        prop_assert_eq!(policy.forbidden_keys, Mode::Reject);
                        prop_assert!(FORBIDDEN_KEYS.contains(&key.as_str()));
                    }
                    SanitizeError::KeyCollision { .. } => {}
                    other => prop_assert!(false, "unexpected {other}"),
                }
            }
        }
    }

    #[test]
    fn clean_json_with_ample_bounds_only_cleans(value in json()) {
        let policy = JsonPolicy::default().max_depth(MAX_DEPTH_LIMIT).max_bytes(usize::MAX);
        match clean_json(value, &policy) {
            Ok(out) => assert_within(&out, &policy)?,
            // Keys from generated pieces may clean alike; nothing else may fail.
            Err(err) => prop_assert_eq!(err.code(), "key_collision"),
        }
    }
}
