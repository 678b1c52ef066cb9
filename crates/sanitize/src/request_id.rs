//! Which client-sent request ids a service keeps.

/// The longest request id kept from a client.
pub const REQUEST_ID_MAX_LEN: usize = 128;

/// `id` when it is a sane request id to keep from a client (an
/// `X-Request-Id` header): 1 to [`REQUEST_ID_MAX_LEN`] characters of
/// `A-Z a-z 0-9 - _ . :`. Anything else (empty, too long, spaces, quotes,
/// control characters, non-ASCII) is `None`: the service makes its own id
/// instead, so a client cannot inject into logs, headers or problem bodies.
pub fn request_id(id: &str) -> Option<&str> {
    let sane = !id.is_empty()
        && id.len() <= REQUEST_ID_MAX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    sane.then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_and_the_rest_refused() {
        for kept in [
            "a",
            "01a21adb-7ee9-77fe-aa2b-54d96a433783",
            "trace:42.x_y",
            &"x".repeat(128),
        ] {
            assert_eq!(request_id(kept), Some(kept));
        }
        for refused in [
            "",
            "a b",
            "a\r\nX-Injected: 1",
            "é",
            "\"quoted\"",
            &"x".repeat(129),
            "<script>",
        ] {
            assert_eq!(request_id(refused), None, "{refused:?}");
        }
    }
}
