//! Where environment variables come from: the process, or a map in tests.
//!
//! Configuration ([`Config::from_env`](crate::Config::from_env)) and the
//! environment fallback of reads both go through [`Environment`], so tests
//! inject a map instead of changing the process environment.

use std::collections::{BTreeMap, HashMap};

/// A source of environment variables.
pub trait Environment: Send + Sync + 'static {
    /// The variable `name`, if set and valid UTF-8.
    fn var(&self, name: &str) -> Option<String>;

    /// Every variable whose name starts with `prefix`, sorted by name.
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut vars: Vec<_> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(prefix))
            .collect();
        vars.sort();
        vars
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Environment for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let mut vars: Vec<_> = self
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort();
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_filter_by_prefix_in_order() {
        let map: BTreeMap<String, String> = [("B_X", "1"), ("A_Y", "2"), ("A_X", "3"), ("AB", "4")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let found = map.vars_with_prefix("A_");
        assert_eq!(
            found,
            vec![("A_X".into(), "3".into()), ("A_Y".into(), "2".into())]
        );
        let hash: HashMap<_, _> = map.clone().into_iter().collect();
        assert_eq!(hash.vars_with_prefix("A_"), found);
        assert_eq!(hash.var("AB").as_deref(), Some("4"));
    }
}
