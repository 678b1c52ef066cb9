//! A store's `ETag` is its version in quotes: `"7"`. These functions write
//! and read it, so the service and its clients agree.

/// The strong `ETag` of `version`: `"7"`, quotes included.
///
/// ```
/// assert_eq!(store_domain::etag(7), "\"7\"");
/// assert_eq!(store_domain::parse_etag("\"7\""), Ok(7));
/// ```
#[must_use]
pub fn etag(version: i32) -> String {
    format!("\"{version}\"")
}

/// Reads a version from an `ETag` or a single-value `If-Match` header:
/// exactly `"<digits>"`, with optional surrounding spaces, and at least 1.
///
/// # Errors
///
/// [`InvalidEtag`] for anything else: a weak tag (`W/"7"`, which `If-Match`
/// never matches), `*`, a list, missing quotes, a number out of range.
pub fn parse_etag(value: &str) -> Result<i32, InvalidEtag> {
    let inner = value
        .trim()
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .ok_or(InvalidEtag)?;
    if inner.is_empty() || !inner.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidEtag);
    }
    match inner.parse::<i32>() {
        Ok(version) if version >= 1 => Ok(version),
        _ => Err(InvalidEtag),
    }
}

/// A header value that is not one of this API's `ETag`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a store ETag: expected a version in double quotes, such as \"3\"")]
pub struct InvalidEtag;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for version in [1, 2, 99, i32::MAX] {
            assert_eq!(parse_etag(&etag(version)), Ok(version));
        }
        assert_eq!(parse_etag("  \"12\" "), Ok(12));
    }

    #[test]
    fn refused() {
        let bad = [
            "",
            "7",
            "\"\"",
            "\"0\"",
            "\"-1\"",
            "\"+1\"",
            "W/\"7\"",
            "*",
            "\"1\", \"2\"",
            "\"2147483648\"",
            "\"7",
            "7\"",
            "\"1 \"",
            "\"٣\"",
        ];
        for value in bad {
            assert_eq!(parse_etag(value), Err(InvalidEtag), "{value:?}");
        }
    }
}
