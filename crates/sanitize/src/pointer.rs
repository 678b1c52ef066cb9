//! JSON pointers (RFC 6901) naming where in a document an error is.
//!
//! `""` is the whole document, `/a/0` is element 0 of member `a`; `~` and `/`
//! inside a key are written `~0` and `~1`.

/// Appends the segment for an object key.
pub(crate) fn push_key(path: &mut String, key: &str) {
    path.push('/');
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

/// Appends the segment for an array index.
pub(crate) fn push_index(path: &mut String, index: usize) {
    path.push('/');
    path.push_str(&index.to_string());
}

/// The pointer of a member named `key` in the object at `path`.
pub(crate) fn child_key(path: &str, key: &str) -> String {
    let mut out = path.to_owned();
    push_key(&mut out, key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_tilde_and_slash() {
        assert_eq!(child_key("", "a/b~c"), "/a~1b~0c");
        assert_eq!(child_key("/x", ""), "/x/");
    }

    #[test]
    fn indexes() {
        let mut path = String::from("/list");
        push_index(&mut path, 12);
        assert_eq!(path, "/list/12");
    }
}
