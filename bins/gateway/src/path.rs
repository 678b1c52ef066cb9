//! What a request path may look like: [`check_path`] refuses any path that
//! could mean something else after decoding or normalisation. The routing
//! layer applies it to every request, the configuration to every route
//! prefix.

/// Why a path is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Not an absolute path.
    #[error("the path must start with `/`")]
    NotAbsolute,
    /// A `.` or `..` segment, plain or percent-encoded.
    #[error("dot segments are not allowed")]
    DotSegment,
    /// An encoded `/` or `\`, a `\`, a control character or a NUL.
    #[error("encoded separators and control characters are not allowed")]
    ForbiddenCharacter,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    BadEscape,
    /// `//` inside the path.
    #[error("empty path segments are not allowed")]
    EmptySegment,
}

/// Checks that `path` cannot mean something else after decoding or
/// normalisation: no `.`/`..` segments (also as `%2e`), no encoded `/` or
/// `\`, no control characters, no empty segments except a trailing `/`.
pub fn check_path(path: &str) -> Result<(), PathError> {
    let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() && segments.peek().is_some() {
            return Err(PathError::EmptySegment);
        }
        // The segment decoded, as far as it matters: its length and
        // whether it is all dots.
        let (mut length, mut dots) = (0usize, true);
        let bytes = segment.as_bytes();
        let mut j = 0;
        while j < bytes.len() {
            let b = bytes[j];
            let byte = if b == b'%' {
                let hex = bytes.get(j + 1..j + 3).ok_or(PathError::BadEscape)?;
                let text = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
                let value = u8::from_str_radix(text, 16).map_err(|_| PathError::BadEscape)?;
                j += 3;
                value
            } else {
                j += 1;
                b
            };
            if byte == b'/' || byte == b'\\' || byte < 0x20 || byte == 0x7f {
                return Err(PathError::ForbiddenCharacter);
            }
            length += 1;
            dots &= byte == b'.';
        }
        if dots && (length == 1 || length == 2) {
            return Err(PathError::DotSegment);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_escape_are_refused() {
        let cases: &[(&str, Result<(), PathError>)] = &[
            ("/api/stores", Ok(())),
            ("/api/stores/", Ok(())),
            ("/api/stores/0190-abc/history", Ok(())),
            ("/api/stores/a%20b", Ok(())),
            ("/api/stores/%252e%252e", Ok(())),
            ("/api/stores/..", Err(PathError::DotSegment)),
            ("/api/stores/../admin", Err(PathError::DotSegment)),
            ("/api/stores/./x", Err(PathError::DotSegment)),
            ("/api/stores/%2e%2e/admin", Err(PathError::DotSegment)),
            ("/api/stores/%2E./admin", Err(PathError::DotSegment)),
            ("/api/stores/.%2e", Err(PathError::DotSegment)),
            (
                "/api/stores%2f..%2fadmin",
                Err(PathError::ForbiddenCharacter),
            ),
            ("/api/stores/%2F", Err(PathError::ForbiddenCharacter)),
            ("/api/stores/%5c..", Err(PathError::ForbiddenCharacter)),
            ("/api/stores\\..\\admin", Err(PathError::ForbiddenCharacter)),
            ("/api/stores/%00", Err(PathError::ForbiddenCharacter)),
            ("/api/stores/%0d%0aX:1", Err(PathError::ForbiddenCharacter)),
            ("/api/stores/%zz", Err(PathError::BadEscape)),
            ("/api/stores/%2", Err(PathError::BadEscape)),
            ("/api//stores", Err(PathError::EmptySegment)),
            ("api/stores", Err(PathError::NotAbsolute)),
        ];
        for (path, expected) in cases {
            assert_eq!(check_path(path), *expected, "{path}");
        }
    }

    proptest::proptest! {
        /// No input panics, and an accepted path has no dot segment in
        /// any spelling.
        #[test]
        fn any_path(path in "/[a-zA-Z0-9%./\\\\_-]{0,40}") {
            if check_path(&path).is_ok() {
                let lowered = path.to_ascii_lowercase().replace("%2e", ".");
                proptest::prop_assert!(!lowered.split('/').any(|s| s == "." || s == ".."), "{}", path);
            }
        }
    }
}
