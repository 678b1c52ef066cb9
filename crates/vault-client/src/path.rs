//! API paths: checked before anything is sent.
//!
//! A path is a `/`-separated list of segments under `/v1/`. Refused: empty
//! paths or segments, `.` and `..` segments, whitespace and control
//! characters, `?`, `#`, `%` and `\` (they would change the URL's meaning),
//! and paths longer than [`MAX_PATH_LEN`]. Everything else is sent
//! percent-encoded segment by segment, so a name can never escape its mount.

use crate::error::{Error, Result};

/// The longest path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// A checked API path (without the `/v1/` prefix and without leading or
/// trailing slashes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ApiPath(String);

impl ApiPath {
    /// Checks `path`. Leading and trailing slashes are dropped.
    pub(crate) fn new(path: &str) -> Result<ApiPath> {
        check(path)?;
        Ok(ApiPath(path.trim_matches('/').to_owned()))
    }

    /// Joins checked parts: `ApiPath::join(&[mount, "data", name])`.
    pub(crate) fn join(parts: &[&str]) -> Result<ApiPath> {
        let mut out = String::new();
        for part in parts {
            check(part)?;
            let part = part.trim_matches('/');
            if !out.is_empty() {
                out.push('/');
            }
            out.push_str(part);
        }
        ApiPath::new(&out)
    }

    /// The path as text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments.
    pub(crate) fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl std::fmt::Display for ApiPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid(path: &str, reason: &'static str) -> Error {
    let mut shown: String = path.chars().take(200).collect();
    if shown.len() < path.len() {
        shown.push('…');
    }
    Error::InvalidPath {
        path: shown,
        reason,
    }
}

fn check(path: &str) -> Result<()> {
    if path.len() > MAX_PATH_LEN {
        return Err(invalid(path, "longer than 1024 bytes"));
    }
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Err(invalid(path, "empty"));
    }
    for c in path.chars() {
        if c.is_whitespace() || c.is_control() {
            return Err(invalid(path, "contains whitespace or a control character"));
        }
        if matches!(c, '?' | '#' | '%' | '\\') {
            return Err(invalid(path, "contains `?`, `#`, `%` or `\\`"));
        }
    }
    for segment in trimmed.split('/') {
        match segment {
            "" => return Err(invalid(path, "contains an empty segment (`//`)")),
            "." | ".." => return Err(invalid(path, "contains a `.` or `..` segment")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for (input, expected) in [
            ("secret/data/app", "secret/data/app"),
            ("/secret/data/app/", "secret/data/app"),
            ("kv/data/ünïcode-name_1.2", "kv/data/ünïcode-name_1.2"),
            ("a", "a"),
        ] {
            assert_eq!(ApiPath::new(input).unwrap().as_str(), expected);
        }
        let joined = ApiPath::join(&["secret/", "data", "/app/config"]).unwrap();
        assert_eq!(joined.as_str(), "secret/data/app/config");
        assert_eq!(joined.segments().count(), 4);
    }

    #[test]
    fn refuses_escapes_and_whitespace() {
        let long = "a/".repeat(600);
        for input in [
            "",
            "/",
            "secret/../sys/seal",
            "..",
            "secret/./x",
            "secret//x",
            "secret/data/my app",
            " secret/data/x",
            "secret/data/x\n",
            "secret/data/x\t",
            "secret/data/x?version=1",
            "secret/data/x#frag",
            "secret/data/%2e%2e",
            "secret\\data",
            "secret/data/\u{7f}",
            "secret/data/\u{a0}",
            long.as_str(),
        ] {
            let err = ApiPath::new(input).unwrap_err();
            assert!(matches!(err, Error::InvalidPath { .. }), "{input:?}: {err}");
            assert!(!err.may_have_reached_server());
        }
        assert!(ApiPath::join(&["secret", "../x"]).is_err());
    }
}
