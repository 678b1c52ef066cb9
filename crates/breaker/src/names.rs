//! Interned breaker names.
//!
//! A breaker's name travels in every rejection and event. Interning makes it a
//! `&'static str`, so a rejection copies a pointer instead of bumping a shared
//! reference count, which would be a contended write on the rejection path
//! when many threads are turned away at once. Each distinct name is stored
//! once for the life of the process; name breakers after upstreams and
//! services, not after per-request values.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock, PoisonError};

/// The names seen so far.
static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();

/// The interned copy of `name`.
pub(crate) fn intern(name: &str) -> &'static str {
    let names = NAMES.get_or_init(|| Mutex::new(HashSet::new()));
    let mut names = names.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(existing) = names.get(name) {
        return existing;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_storage() {
        let a = intern("upstream-a");
        let b = intern(&String::from("upstream-a"));
        assert!(std::ptr::eq(a, b));
        assert_ne!(intern("upstream-b"), a);
    }
}
