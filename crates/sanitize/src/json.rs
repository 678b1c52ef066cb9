//! JSON cleaning: [`clean_json`] and its [`JsonPolicy`].
//!
//! Two steps. First [`shape::check`] walks the document without recursion and
//! refuses it if it nests too deep, has an object with too many keys, an array
//! too long, or is too large as it stands; a refused document is dismantled
//! without recursion. Then a recursive walk, whose depth the first step has
//! bounded, cleans every string and key into a new document, counting the
//! bytes of its compact JSON as it goes.

use serde_json::{Map, Value};

use crate::json_size::{number_len, string_len};
use crate::shape::{self, Limits};
use crate::text::{self, TextPolicy, Violation};
use crate::{SanitizeError, SanitizeReport, pointer};

/// Keys dropped or refused in every object: assigning them in JavaScript
/// (`Object.assign`, naive deep merges) pollutes prototypes.
pub const FORBIDDEN_KEYS: [&str; 3] = ["__proto__", "constructor", "prototype"];

/// The hard ceiling on [`JsonPolicy::max_depth`]: a larger setting is treated
/// as this one, so the cleaning walk never recurses deeper.
pub const MAX_DEPTH_LIMIT: usize = 128;

/// What to do with an object member whose key is in [`FORBIDDEN_KEYS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Mode {
    /// Drop the member, and list its pointer in [`SanitizeReport::keys_dropped`].
    #[default]
    Strip,
    /// Refuse the document with [`SanitizeError::ForbiddenKey`].
    Reject,
}

/// How [`clean_json`] treats a JSON document.
///
/// Sizes are bytes of compact JSON as `serde_json::to_vec` writes it:
/// [`max_input_bytes`](Self::max_input_bytes) for the document as received,
/// [`max_bytes`](Self::max_bytes) for the cleaned one.
///
/// ```
/// use sanitize::{JsonPolicy, Mode, TextPolicy};
///
/// let config = JsonPolicy::default()
///     .strings(TextPolicy::default().max_chars(200))
///     .forbidden_keys(Mode::Reject)
///     .max_depth(8);
/// # let _ = config;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct JsonPolicy {
    /// The policy for every string value. Its `field` is ignored: errors name
    /// the string's JSON pointer instead.
    pub strings: TextPolicy,
    /// The most characters a key may have after cleaning (keys are cleaned as
    /// single-line text, with `strings`' bidi setting and input size limit).
    pub max_key_chars: usize,
    /// What happens to keys in [`FORBIDDEN_KEYS`].
    pub forbidden_keys: Mode,
    /// How many arrays/objects may enclose one another (a scalar document has
    /// depth 0, `[]` depth 1). Capped at [`MAX_DEPTH_LIMIT`].
    pub max_depth: usize,
    /// The most keys an object may have (counted before dropping any).
    pub max_keys: usize,
    /// The most elements an array may have.
    pub max_array_len: usize,
    /// The largest cleaned document, in bytes of compact JSON.
    pub max_bytes: usize,
    /// The largest document accepted before cleaning, in bytes of compact JSON.
    pub max_input_bytes: usize,
}

impl Default for JsonPolicy {
    fn default() -> Self {
        Self {
            strings: TextPolicy::default(),
            max_key_chars: 128,
            forbidden_keys: Mode::Strip,
            max_depth: 16,
            max_keys: 256,
            max_array_len: 1024,
            max_bytes: 64 * 1024,
            max_input_bytes: 256 * 1024,
        }
    }
}

impl JsonPolicy {
    /// Sets the policy for string values.
    #[must_use]
    pub fn strings(mut self, policy: TextPolicy) -> Self {
        self.strings = policy;
        self
    }

    /// Sets the most characters a cleaned key may have.
    #[must_use]
    pub const fn max_key_chars(mut self, max: usize) -> Self {
        self.max_key_chars = max;
        self
    }

    /// Sets whether forbidden keys are dropped or refused.
    #[must_use]
    pub const fn forbidden_keys(mut self, mode: Mode) -> Self {
        self.forbidden_keys = mode;
        self
    }

    /// Sets the nesting limit (capped at [`MAX_DEPTH_LIMIT`]).
    #[must_use]
    pub const fn max_depth(mut self, max: usize) -> Self {
        self.max_depth = max;
        self
    }

    /// Sets the most keys per object.
    #[must_use]
    pub const fn max_keys(mut self, max: usize) -> Self {
        self.max_keys = max;
        self
    }

    /// Sets the most elements per array.
    #[must_use]
    pub const fn max_array_len(mut self, max: usize) -> Self {
        self.max_array_len = max;
        self
    }

    /// Sets the largest cleaned document, in bytes of compact JSON.
    #[must_use]
    pub const fn max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
    }

    /// Sets the largest document accepted before cleaning, in bytes of compact JSON.
    #[must_use]
    pub const fn max_input_bytes(mut self, max: usize) -> Self {
        self.max_input_bytes = max;
        self
    }

    /// The policy keys are cleaned with.
    fn key_policy(&self) -> TextPolicy {
        TextPolicy::default()
            .max_chars(self.max_key_chars)
            .max_input_bytes(self.strings.max_input_bytes)
            .strip_bidi_controls(self.strings.strip_bidi_controls)
    }
}

/// Cleans a JSON document: every string value through
/// [`clean_text`](crate::clean_text) with [`JsonPolicy::strings`], every key likewise, keys
/// in [`FORBIDDEN_KEYS`] dropped or refused, and every bound of the policy
/// enforced. Numbers, booleans and `null` pass through.
///
/// Keys are cleaned too, since they end up in the same stores and screens as
/// values: forbidden keys are recognised *after* cleaning (`<b>__proto__</b>`
/// is `__proto__`), and two keys that clean to the same string are refused
/// rather than one silently overwriting the other.
///
/// Never recurses deeper than [`MAX_DEPTH_LIMIT`] and never panics, whatever
/// the document: one nested 100 000 levels deep is refused with
/// [`SanitizeError::TooDeep`] and dropped without recursion.
///
/// # Errors
///
/// The first bound broken, naming its JSON pointer: [`SanitizeError::TooDeep`],
/// [`SanitizeError::TooManyKeys`], [`SanitizeError::ArrayTooLong`] and
/// [`SanitizeError::DocumentTooLarge`] from the look at the raw document,
/// then [`SanitizeError::TooLong`], [`SanitizeError::TooShort`],
/// [`SanitizeError::InputTooLarge`], [`SanitizeError::KeyTooLong`],
/// [`SanitizeError::ForbiddenKey`], [`SanitizeError::KeyCollision`] and
/// [`SanitizeError::TooLarge`] while cleaning.
pub fn clean_json(value: Value, policy: &JsonPolicy) -> Result<Value, SanitizeError> {
    clean(value, policy, false).map(|(value, _)| value)
}

/// Like [`clean_json`], and also says what was removed or changed, including
/// the pointers of dropped members.
///
/// # Errors
///
/// As [`clean_json`].
pub fn clean_json_report(
    value: Value,
    policy: &JsonPolicy,
) -> Result<(Value, SanitizeReport), SanitizeError> {
    clean(value, policy, true)
}

fn clean(
    value: Value,
    policy: &JsonPolicy,
    detect_markup: bool,
) -> Result<(Value, SanitizeReport), SanitizeError> {
    let key_policy = policy.key_policy();
    let limits = Limits {
        max_depth: policy.max_depth.min(MAX_DEPTH_LIMIT),
        max_keys: policy.max_keys,
        max_array_len: policy.max_array_len,
        max_input_bytes: policy.max_input_bytes,
    };
    let key_name = |raw: &str| shown_key(raw, &key_policy);
    if let Err(refused) = shape::check(&value, limits, &key_name) {
        shape::dismantle(value);
        return Err(refused);
    }
    let mut walker = Walker {
        policy,
        key_policy: &key_policy,
        detect_markup,
        path: String::new(),
        size: 0,
        report: SanitizeReport::default(),
    };
    let cleaned = walker.value(value)?;
    Ok((cleaned, walker.report))
}

/// A raw key as shown in a pointer of an error found before cleaning: cleaned
/// like a key but without bounds, and cut to the key length limit.
fn shown_key(raw: &str, key_policy: &TextPolicy) -> String {
    let mut cut = raw.len().min(key_policy.max_chars.saturating_mul(4));
    while !raw.is_char_boundary(cut) {
        cut -= 1;
    }
    let unbounded = key_policy
        .clone()
        .max_chars(usize::MAX)
        .max_input_bytes(usize::MAX);
    let mut report = SanitizeReport::default();
    let cleaned = text::clean(&raw[..cut], &unbounded, &mut report, false).unwrap_or_default();
    cleaned.chars().take(key_policy.max_chars).collect()
}

/// The cleaning walk over a document whose shape is already checked.
struct Walker<'p> {
    /// The policy.
    policy: &'p JsonPolicy,
    /// The policy keys are cleaned with.
    key_policy: &'p TextPolicy,
    /// Whether the report says if markup was removed (costs a tokenizer run).
    detect_markup: bool,
    /// The pointer of the value being cleaned.
    path: String,
    /// Bytes of the cleaned document so far, as compact JSON.
    size: usize,
    /// What was changed so far.
    report: SanitizeReport,
}

impl Walker<'_> {
    /// Cleans one value. Recurses once per array/object level, which the shape
    /// check has bounded by the depth limit.
    fn value(&mut self, value: Value) -> Result<Value, SanitizeError> {
        match value {
            Value::Null | Value::Bool(true) => self.grow(4).map(|()| value),
            Value::Bool(false) => self.grow(5).map(|()| value),
            Value::Number(ref n) => self.grow(number_len(n)).map(|()| value),
            Value::String(raw) => {
                let cleaned = text::clean(
                    &raw,
                    &self.policy.strings,
                    &mut self.report,
                    self.detect_markup,
                )
                .map_err(|v| v.into_error(self.path.clone()))?;
                self.grow(string_len(&cleaned))?;
                Ok(Value::String(cleaned))
            }
            Value::Array(elements) => self.array(elements),
            Value::Object(members) => self.object(members),
        }
    }

    fn array(&mut self, elements: Vec<Value>) -> Result<Value, SanitizeError> {
        self.grow(1)?;
        let mut out = Vec::with_capacity(elements.len());
        for (index, element) in elements.into_iter().enumerate() {
            if index > 0 {
                self.grow(1)?;
            }
            let len = self.path.len();
            pointer::push_index(&mut self.path, index);
            let cleaned = self.value(element);
            self.path.truncate(len);
            out.push(cleaned?);
        }
        self.grow(1)?;
        Ok(Value::Array(out))
    }

    fn object(&mut self, members: Map<String, Value>) -> Result<Value, SanitizeError> {
        self.grow(1)?;
        let mut out = Map::new();
        for (raw_key, member) in members {
            let key = self.key(&raw_key)?;
            if FORBIDDEN_KEYS.contains(&key.as_str()) {
                match self.policy.forbidden_keys {
                    Mode::Strip => {
                        self.report.changed = true;
                        self.report
                            .keys_dropped
                            .push(pointer::child_key(&self.path, &key));
                        continue;
                    }
                    Mode::Reject => {
                        return Err(SanitizeError::ForbiddenKey {
                            path: self.path.clone(),
                            key,
                        });
                    }
                }
            }
            if out.contains_key(&key) {
                return Err(SanitizeError::KeyCollision {
                    path: self.path.clone(),
                    key,
                });
            }
            if !out.is_empty() {
                self.grow(1)?;
            }
            let len = self.path.len();
            pointer::push_key(&mut self.path, &key);
            let cleaned = self
                .grow(string_len(&key) + 1)
                .and_then(|()| self.value(member));
            self.path.truncate(len);
            out.insert(key, cleaned?);
        }
        self.grow(1)?;
        Ok(Value::Object(out))
    }

    /// Cleans a key of the object at `self.path`.
    fn key(&mut self, raw: &str) -> Result<String, SanitizeError> {
        text::clean(raw, self.key_policy, &mut self.report, self.detect_markup).map_err(
            |violation| {
                let path = self.path.clone();
                match violation {
                    Violation::TooLong { max, actual } => {
                        SanitizeError::KeyTooLong { path, max, actual }
                    }
                    other => other.into_error(path),
                }
            },
        )
    }

    /// Counts `bytes` more of output.
    fn grow(&mut self, bytes: usize) -> Result<(), SanitizeError> {
        self.size = self.size.saturating_add(bytes);
        if self.size > self.policy.max_bytes {
            return Err(SanitizeError::TooLarge {
                path: self.path.clone(),
                max: self.policy.max_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn clean_default(value: Value) -> Result<Value, SanitizeError> {
        clean_json(value, &JsonPolicy::default())
    }

    #[test]
    fn strings_are_cleaned_everywhere() {
        let value = json!({
            "name": "  <b>Shop</b>\u{202E} ",
            "tags": ["a\u{0}b", {"note": "&lt;script&gt;x&lt;/script&gt;ok"}],
            "count": 3, "ratio": 0.5, "on": true, "off": false, "none": null
        });
        let expected = json!({
            "name": "Shop",
            "tags": ["ab", {"note": "ok"}],
            "count": 3, "ratio": 0.5, "on": true, "off": false, "none": null
        });
        assert_eq!(clean_default(value), Ok(expected));
    }

    #[test]
    fn keys_are_cleaned() {
        let value = json!({" <i>name</i> ": 1, "a\u{202E}b": 2});
        assert_eq!(clean_default(value), Ok(json!({"name": 1, "ab": 2})));
    }

    #[test]
    fn forbidden_keys_are_dropped_and_reported() {
        let value = json!({"a": {"__proto__": {"admin": true}, "b": 1}, "constructor": 1, "<b>prototype</b>": 2});
        let (cleaned, mut report) =
            clean_json_report(value, &JsonPolicy::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cleaned, json!({"a": {"b": 1}}));
        // Members are visited in the map's order, which depends on serde_json's features.
        report.keys_dropped.sort();
        assert_eq!(
            report.keys_dropped,
            ["/a/__proto__", "/constructor", "/prototype"]
        );
        assert!(report.changed && report.markup_removed);
    }

    #[test]
    fn forbidden_keys_can_be_rejected() {
        let policy = JsonPolicy::default().forbidden_keys(Mode::Reject);
        assert_eq!(
            clean_json(json!({"a": [{"__proto__": 1}]}), &policy),
            Err(SanitizeError::ForbiddenKey {
                path: "/a/0".into(),
                key: "__proto__".into()
            })
        );
    }

    #[test]
    fn forbidden_keys_are_case_sensitive() {
        let value = json!({"Constructor": 1, "__PROTO__": 2});
        assert_eq!(clean_default(value.clone()), Ok(value));
    }

    #[test]
    fn keys_that_clean_alike_collide() {
        assert_eq!(
            clean_default(json!({"o": {"name": 1, " name": 2}})),
            Err(SanitizeError::KeyCollision {
                path: "/o".into(),
                key: "name".into()
            })
        );
    }

    #[test]
    fn string_errors_name_the_pointer() {
        let policy =
            JsonPolicy::default().strings(TextPolicy::default().max_chars(3).field("ignored"));
        assert_eq!(
            clean_json(json!({"a/b": ["ok", "toolong"]}), &policy),
            Err(SanitizeError::TooLong {
                field: "/a~1b/1".into(),
                max: 3,
                actual: 7
            })
        );
        let policy = JsonPolicy::default().strings(TextPolicy::default().min_chars(1));
        assert_eq!(
            clean_json(json!({"a": "<b></b>"}), &policy),
            Err(SanitizeError::TooShort {
                field: "/a".into(),
                min: 1,
                actual: 0
            })
        );
    }

    #[test]
    fn long_keys_are_refused_without_echoing_them() {
        let policy = JsonPolicy::default().max_key_chars(4);
        let err = clean_json(json!({"x": {"abcde": 1}}), &policy);
        assert_eq!(
            err,
            Err(SanitizeError::KeyTooLong {
                path: "/x".into(),
                max: 4,
                actual: 5
            })
        );
    }

    #[test]
    fn depth_bound() {
        let policy = JsonPolicy::default().max_depth(2);
        assert_eq!(
            clean_json(json!({"a": [1]}), &policy),
            Ok(json!({"a": [1]}))
        );
        assert_eq!(
            clean_json(json!({"<i>a</i>": [[1]]}), &policy),
            Err(SanitizeError::TooDeep {
                path: "/a/0".into(),
                max: 2
            })
        );
    }

    #[test]
    fn depth_setting_is_capped() {
        let policy = JsonPolicy::default().max_depth(usize::MAX);
        let mut value = json!("leaf");
        for _ in 0..MAX_DEPTH_LIMIT {
            value = json!([value]);
        }
        assert!(clean_json(value.clone(), &policy).is_ok());
        let deeper = json!([value]);
        assert!(matches!(
            clean_json(deeper, &policy),
            Err(SanitizeError::TooDeep {
                max: MAX_DEPTH_LIMIT,
                ..
            })
        ));
    }

    #[test]
    fn key_count_bound() {
        let policy = JsonPolicy::default().max_keys(2);
        assert_eq!(
            clean_json(json!({"o": {"a": 1, "b": 2, "c": 3}}), &policy),
            Err(SanitizeError::TooManyKeys {
                path: "/o".into(),
                max: 2,
                actual: 3
            })
        );
    }

    #[test]
    fn array_length_bound() {
        let policy = JsonPolicy::default().max_array_len(2);
        assert_eq!(
            clean_json(json!([[1, 2], [1, 2, 3]]), &policy),
            Err(SanitizeError::ArrayTooLong {
                path: "/1".into(),
                max: 2,
                actual: 3
            })
        );
    }

    #[test]
    fn cleaned_size_bound_is_compact_json_bytes() {
        let value = json!({"a": "<b>xxxx</b>", "b": [1, 2]});
        // {"a":"xxxx","b":[1,2]} is 22 bytes once cleaned.
        let fits = JsonPolicy::default().max_bytes(22);
        assert_eq!(
            clean_json(value.clone(), &fits),
            Ok(json!({"a": "xxxx", "b": [1, 2]}))
        );
        let tight = JsonPolicy::default().max_bytes(21);
        assert_eq!(
            clean_json(value, &tight),
            Err(SanitizeError::TooLarge {
                path: "".into(),
                max: 21
            })
        );
        let tighter = JsonPolicy::default().max_bytes(10);
        assert_eq!(
            clean_json(json!({"a": "xxxxxxxxx"}), &tighter),
            Err(SanitizeError::TooLarge {
                path: "/a".into(),
                max: 10
            })
        );
    }

    #[test]
    fn raw_size_bound() {
        let policy = JsonPolicy::default().max_input_bytes(10);
        assert_eq!(
            clean_json(json!(["<b></b>"]), &policy),
            Err(SanitizeError::DocumentTooLarge {
                max: 10,
                actual: 11
            })
        );
    }

    #[test]
    fn pointers_of_shape_errors_show_cleaned_cut_keys() {
        let policy = JsonPolicy::default().max_key_chars(3).max_depth(1);
        assert_eq!(
            clean_json(json!({"<b>abcdef</b>": []}), &policy),
            Err(SanitizeError::TooDeep {
                path: "/abc".into(),
                max: 1
            })
        );
    }

    #[cfg(feature = "serde")]
    #[test]
    fn policies_deserialize_over_defaults() {
        let policy: Result<JsonPolicy, _> = serde_json::from_value(json!({
            "max_depth": 4,
            "forbidden_keys": "reject",
            "strings": {"max_chars": 10, "allow_newlines": true}
        }));
        let expected = JsonPolicy::default()
            .max_depth(4)
            .forbidden_keys(Mode::Reject)
            .strings(TextPolicy::default().max_chars(10).allow_newlines(true));
        assert_eq!(policy.ok(), Some(expected));
        let unknown: Result<JsonPolicy, _> = serde_json::from_value(json!({"max_dept": 4}));
        assert!(unknown.is_err());
        let named: Result<TextPolicy, _> = serde_json::from_value(json!({"field": "name"}));
        assert_eq!(named.ok(), Some(TextPolicy::default().field("name")));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn reports_serialize() {
        let (_, report) = clean_json_report(
            json!({"__proto__": 1, "a": "<b>x</b>"}),
            &JsonPolicy::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let written = serde_json::to_value(&report).unwrap_or_default();
        assert_eq!(written["keys_dropped"], json!(["/__proto__"]));
        assert_eq!(written["markup_removed"], json!(true));
    }

    #[test]
    fn scalars_pass_through() {
        for value in [
            json!(null),
            json!(1),
            json!(-2.5),
            json!(true),
            json!(u64::MAX),
        ] {
            assert_eq!(clean_default(value.clone()), Ok(value));
        }
    }
}
