//! The bounds that validation enforces, and the `sanitize` policies built
//! from them.
//!
//! They are constants rather than settings: they are part of the API
//! contract that clients rely on, and the OpenAPI document states them.

use sanitize::{JsonPolicy, Mode, TextPolicy};

/// Fewest characters of a store name, after cleaning.
pub const NAME_MIN_CHARS: u64 = 3;
/// Most characters of a store name, after cleaning.
pub const NAME_MAX_CHARS: u64 = 100;
/// Largest raw name, in bytes of UTF-8, that is cleaned at all; a larger one
/// is refused as `too_long` before any work.
pub const NAME_MAX_INPUT_BYTES: usize = 4 * 1024;

/// Arrays/objects that may enclose one another inside `config` (`{}` is 1).
pub const CONFIG_MAX_DEPTH: usize = 16;
/// Most keys of one object inside `config`.
pub const CONFIG_MAX_KEYS: usize = 256;
/// Most elements of one array inside `config`.
pub const CONFIG_MAX_ARRAY_LEN: usize = 1024;
/// Most characters of one string inside `config`, after cleaning.
pub const CONFIG_MAX_STRING_CHARS: usize = 2000;
/// Most characters of one key inside `config`, after cleaning.
pub const CONFIG_MAX_KEY_CHARS: usize = 128;
/// Largest cleaned `config`, in bytes of compact JSON.
pub const CONFIG_MAX_BYTES: usize = 32 * 1024;
/// Largest `config` accepted before cleaning, in bytes of compact JSON.
pub const CONFIG_MAX_INPUT_BYTES: usize = 64 * 1024;

/// Most secrets of one store.
pub const SECRETS_MAX_KEYS: u64 = 32;
/// Most characters of a secret's key name (which is `[A-Za-z0-9_.-]+`).
pub const SECRET_KEY_MAX_CHARS: usize = 64;
/// Most characters of one secret value.
pub const SECRET_VALUE_MAX_CHARS: u64 = 4096;

/// The `sanitize` policy for store names: single-line plain text, raw input
/// bounded by [`NAME_MAX_INPUT_BYTES`]. The length rule
/// ([`NAME_MIN_CHARS`]..=[`NAME_MAX_CHARS`]) is checked afterwards by
/// `validator`, on the cleaned text.
#[must_use]
pub fn name_policy() -> TextPolicy {
    TextPolicy::default()
        .field("name")
        .max_chars(usize::MAX)
        .max_input_bytes(NAME_MAX_INPUT_BYTES)
}

/// The `sanitize` policy for `config`: every string and key cleaned
/// (newlines and tabs kept in strings), `__proto__`, `constructor` and
/// `prototype` dropped at any depth, and the `CONFIG_*` bounds.
#[must_use]
pub fn config_policy() -> JsonPolicy {
    JsonPolicy::default()
        .strings(
            TextPolicy::default()
                .max_chars(CONFIG_MAX_STRING_CHARS)
                .allow_newlines(true)
                .allow_tabs(true),
        )
        .max_key_chars(CONFIG_MAX_KEY_CHARS)
        .forbidden_keys(Mode::Strip)
        .max_depth(CONFIG_MAX_DEPTH)
        .max_keys(CONFIG_MAX_KEYS)
        .max_array_len(CONFIG_MAX_ARRAY_LEN)
        .max_bytes(CONFIG_MAX_BYTES)
        .max_input_bytes(CONFIG_MAX_INPUT_BYTES)
}

/// Whether `key` is a valid secret key name: 1 to
/// [`SECRET_KEY_MAX_CHARS`] characters of `A-Z a-z 0-9 _ . -`.
#[must_use]
pub fn is_valid_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= SECRET_KEY_MAX_CHARS
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_key_names() {
        let ok = ["A", "WIFI_PASSWORD", "api.key-2", &"k".repeat(64)];
        for key in ok {
            assert!(is_valid_secret_key(key), "{key:?}");
        }
        let long = "k".repeat(65);
        let bad = ["", " A", "A B", "a/b", "ключ", "__proto__<", "a\0", &long];
        for key in bad {
            assert!(!is_valid_secret_key(key), "{key:?}");
        }
    }

    #[test]
    fn policies_state_the_constants() {
        let name = name_policy();
        assert_eq!(name.max_input_bytes, NAME_MAX_INPUT_BYTES);
        assert_eq!(name.min_chars, 0);
        let config = config_policy();
        assert_eq!(config.max_depth, CONFIG_MAX_DEPTH);
        assert_eq!(config.max_bytes, CONFIG_MAX_BYTES);
        assert_eq!(config.forbidden_keys, Mode::Strip);
        assert!(config.strings.allow_newlines);
    }
}
