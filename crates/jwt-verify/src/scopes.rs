//! [`Scopes`]: the `scope` claim (RFC 8693 §4.2: space separated).

use std::collections::HashSet;

/// The scopes a token grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes(HashSet<String>);

impl Scopes {
    /// The scopes of a `scope` claim (space separated; repeated and extra
    /// whitespace ignored).
    pub fn parse(claim: &str) -> Self {
        Self(claim.split_whitespace().map(str::to_owned).collect())
    }

    /// Whether `scope` is granted.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    /// Whether every one of `required` is granted (true when none is).
    pub fn contains_all<I>(&self, required: I) -> bool
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        required.into_iter().all(|s| self.contains(s.as_ref()))
    }

    /// The granted scopes, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// How many scopes are granted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is granted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<S: Into<String>> FromIterator<S> for Scopes {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self(iter.into_iter().map(Into::into).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_check() {
        let scopes = Scopes::parse("  stores:read\tstores:write stores:read ");
        assert_eq!(scopes.len(), 2);
        assert!(scopes.contains("stores:read"));
        assert!(!scopes.contains("stores"));
        assert!(scopes.contains_all(["stores:read", "stores:write"]));
        assert!(!scopes.contains_all(["stores:read", "stores:admin"]));
        assert!(scopes.contains_all(Vec::<String>::new()));
        assert!(Scopes::parse("").is_empty());
        assert_eq!(
            scopes,
            ["stores:write", "stores:read"].into_iter().collect()
        );
    }
}
