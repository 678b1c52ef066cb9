//! The one error type of the crate.

use std::fmt;

/// Why a value was refused.
///
/// Every variant names *where* (a field name, or a JSON pointer) and *which
/// limit* was crossed, and [`code`](SanitizeError::code) gives a stable,
/// machine-readable name for it, so an HTTP edge can turn it into a
/// `problem+json` body without parsing messages.
///
/// None of these errors is transient: the same input under the same policy is
/// refused the same way every time, so retrying is pointless.
///
/// Messages never echo the offending input. Field names and JSON pointers are
/// shown escaped and shortened to [`SHOWN_CHARS`] characters; the fields of the
/// variant keep the full value for programs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SanitizeError {
    /// The raw input was larger than the policy accepts before any cleaning
    /// (see `TextPolicy::max_input_bytes`). Checked first, so a huge input costs
    /// nothing but its length.
    #[error(
        "{} is too large: {actual} bytes before cleaning, at most {max} accepted",
        Shown(field)
    )]
    InputTooLarge {
        /// The field name (or JSON pointer) of the value.
        field: String,
        /// The limit, in bytes of UTF-8.
        max: usize,
        /// The input's size, in bytes of UTF-8.
        actual: usize,
    },
    /// The cleaned text has more characters than allowed.
    #[error(
        "{} is too long: {actual} characters, at most {max} allowed",
        Shown(field)
    )]
    TooLong {
        /// The field name (or JSON pointer) of the value.
        field: String,
        /// The limit, in characters (Unicode scalar values) after cleaning.
        max: usize,
        /// The cleaned text's length, in characters.
        actual: usize,
    },
    /// The cleaned text has fewer characters than required.
    #[error(
        "{} is too short: {actual} characters, at least {min} required",
        Shown(field)
    )]
    TooShort {
        /// The field name (or JSON pointer) of the value.
        field: String,
        /// The minimum, in characters after cleaning.
        min: usize,
        /// The cleaned text's length, in characters.
        actual: usize,
    },
    /// A cleaned object key has more characters than `JsonPolicy::max_key_chars`.
    #[error(
        "a key of the object at {} is too long: {actual} characters, at most {max} allowed",
        Shown(path)
    )]
    KeyTooLong {
        /// JSON pointer of the object holding the key.
        path: String,
        /// The limit, in characters after cleaning.
        max: usize,
        /// The cleaned key's length, in characters.
        actual: usize,
    },
    /// Arrays and objects nest deeper than allowed.
    #[error("the JSON value at {} nests deeper than {max} levels", Shown(path))]
    TooDeep {
        /// JSON pointer of the first array or object past the limit.
        path: String,
        /// The limit: how many arrays/objects may enclose one another.
        max: usize,
    },
    /// An object has more keys than allowed.
    #[error(
        "the object at {} has {actual} keys, at most {max} allowed",
        Shown(path)
    )]
    TooManyKeys {
        /// JSON pointer of the object.
        path: String,
        /// The limit.
        max: usize,
        /// The object's key count (before forbidden keys are dropped).
        actual: usize,
    },
    /// An array has more elements than allowed.
    #[error(
        "the array at {} has {actual} elements, at most {max} allowed",
        Shown(path)
    )]
    ArrayTooLong {
        /// JSON pointer of the array.
        path: String,
        /// The limit.
        max: usize,
        /// The array's length.
        actual: usize,
    },
    /// The JSON document, before cleaning, is larger than
    /// `JsonPolicy::max_input_bytes` (measured as compact JSON).
    #[error("the JSON document is {actual} bytes before cleaning, at most {max} accepted")]
    DocumentTooLarge {
        /// The limit, in bytes of compact JSON.
        max: usize,
        /// The document's size, in bytes of compact JSON.
        actual: usize,
    },
    /// The cleaned JSON document is larger than `JsonPolicy::max_bytes`
    /// (measured as compact JSON). Cleaning stops where the limit is crossed.
    #[error(
        "the cleaned JSON document exceeds {max} bytes (crossed at {})",
        Shown(path)
    )]
    TooLarge {
        /// JSON pointer of the value being written when the limit was crossed.
        path: String,
        /// The limit, in bytes of compact JSON.
        max: usize,
    },
    /// An object holds a key that could pollute a JavaScript prototype
    /// (`__proto__`, `constructor`, `prototype`) and the policy rejects those.
    #[error("the object at {} has the forbidden key {key:?}", Shown(path))]
    ForbiddenKey {
        /// JSON pointer of the object.
        path: String,
        /// The forbidden key, after cleaning.
        key: String,
    },
    /// Two different keys of one object clean to the same string, so keeping
    /// either would silently lose data.
    #[error(
        "two keys of the object at {} clean to the same key {}",
        Shown(path),
        Shown(key)
    )]
    KeyCollision {
        /// JSON pointer of the object.
        path: String,
        /// The key both clean to.
        key: String,
    },
}

impl SanitizeError {
    /// A stable, machine-readable name for the kind of error, in `snake_case`.
    ///
    /// These strings are part of the API: they do not change between versions.
    #[must_use]
    pub const fn code(&self) -> &'static str {
        match self {
            Self::InputTooLarge { .. } => "input_too_large",
            Self::TooLong { .. } => "too_long",
            Self::TooShort { .. } => "too_short",
            Self::KeyTooLong { .. } => "key_too_long",
            Self::TooDeep { .. } => "too_deep",
            Self::TooManyKeys { .. } => "too_many_keys",
            Self::ArrayTooLong { .. } => "array_too_long",
            Self::DocumentTooLarge { .. } => "document_too_large",
            Self::TooLarge { .. } => "too_large",
            Self::ForbiddenKey { .. } => "forbidden_key",
            Self::KeyCollision { .. } => "key_collision",
        }
    }
}

/// How many characters of a field name, key or JSON pointer an error message
/// shows before it cuts with `…`.
pub const SHOWN_CHARS: usize = 64;

/// Shows a name in a message: quoted and escaped (no raw control characters
/// reach a log line) and cut at [`SHOWN_CHARS`] characters.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(SHOWN_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}…", &self.0[..cut]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case() {
        let all = [
            SanitizeError::InputTooLarge {
                field: "f".into(),
                max: 1,
                actual: 2,
            },
            SanitizeError::TooLong {
                field: "f".into(),
                max: 1,
                actual: 2,
            },
            SanitizeError::TooShort {
                field: "f".into(),
                min: 2,
                actual: 1,
            },
            SanitizeError::KeyTooLong {
                path: "/a".into(),
                max: 1,
                actual: 2,
            },
            SanitizeError::TooDeep {
                path: "/a".into(),
                max: 1,
            },
            SanitizeError::TooManyKeys {
                path: "".into(),
                max: 1,
                actual: 2,
            },
            SanitizeError::ArrayTooLong {
                path: "".into(),
                max: 1,
                actual: 2,
            },
            SanitizeError::DocumentTooLarge { max: 1, actual: 2 },
            SanitizeError::TooLarge {
                path: "".into(),
                max: 1,
            },
            SanitizeError::ForbiddenKey {
                path: "".into(),
                key: "__proto__".into(),
            },
            SanitizeError::KeyCollision {
                path: "".into(),
                key: "a".into(),
            },
        ];
        let mut codes: Vec<_> = all.iter().map(SanitizeError::code).collect();
        assert!(
            codes
                .iter()
                .all(|c| c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'))
        );
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), all.len());
    }

    #[test]
    fn message_names_field_and_limit() {
        let err = SanitizeError::TooLong {
            field: "name".into(),
            max: 100,
            actual: 101,
        };
        assert_eq!(
            err.to_string(),
            r#""name" is too long: 101 characters, at most 100 allowed"#
        );
    }

    #[test]
    fn message_cuts_and_escapes_long_names() {
        let key = format!("{}\n", "k".repeat(500));
        let err = SanitizeError::KeyCollision {
            path: "/a".into(),
            key,
        };
        let message = err.to_string();
        assert!(message.len() < 200, "{message}");
        assert!(!message.contains('\n'));
        assert!(message.ends_with('…'));
    }
}
