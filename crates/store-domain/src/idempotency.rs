//! The `Idempotency-Key` rule the store API and the gateway share: the
//! gateway refuses a key the service would refuse before it answers 202
//! for a queued write, so a queued write never fails on its key.

/// The request header.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The longest key accepted, in bytes.
pub const IDEMPOTENCY_KEY_MAX_LEN: usize = 255;

/// Whether `key` is a usable `Idempotency-Key`: 1 to
/// [`IDEMPOTENCY_KEY_MAX_LEN`] visible ASCII characters (no spaces, no
/// control characters).
///
/// ```
/// use store_domain::is_valid_idempotency_key;
/// assert!(is_valid_idempotency_key("create-shop-42"));
/// assert!(!is_valid_idempotency_key("create shop"));
/// assert!(!is_valid_idempotency_key(""));
/// assert!(!is_valid_idempotency_key(&"k".repeat(256)));
/// ```
#[must_use]
pub fn is_valid_idempotency_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= IDEMPOTENCY_KEY_MAX_LEN
        && key.bytes().all(|b| b.is_ascii_graphic())
}
