//! The read fallback chain: Vault → last known good value (bounded age) →
//! environment variables. Every fallback is reported in the result
//! ([`Source`]), as an [`Event::Fallback`](crate::Event::Fallback), in the
//! log (`warn`) and in `vault_fallbacks_total`: never silently.
//!
//! # Environment mapping
//!
//! A secret at `<path>` under any KV mount maps to variables named
//! `<prefix><PATH>_<FIELD>`, where `<PATH>` is the path relative to the mount
//! (without KV v2's `data/`), upper-cased, with every character other than
//! `A-Z` and `0-9` replaced by `_`. With the default prefix,
//! `kv/data/database/primary` field `password` is
//! `VAULT_FALLBACK_DATABASE_PRIMARY_PASSWORD`. Every variable with the
//! secret's prefix becomes a field, named by the rest of the variable's name
//! in lower case. Two secrets whose mapped names nest (`db` and `db/primary`)
//! would share variables: keep fallback names distinct.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::env::Environment;
use crate::secret::SecretData;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// Vault answered.
    Vault,
    /// Vault was unavailable; this is the last value Vault gave.
    LastKnownGood {
        /// How old the value is.
        age: Duration,
        /// Why Vault was not used (the error's message).
        cause: String,
    },
    /// Vault was unavailable and no recent enough value was known; the value
    /// was read from environment variables.
    Environment {
        /// The variables read (names only).
        variables: Vec<String>,
        /// Why Vault was not used.
        cause: String,
    },
}

impl Source {
    /// Whether the value came from a fallback.
    pub fn is_fallback(&self) -> bool {
        !matches!(self, Source::Vault)
    }

    pub(crate) fn metric_label(&self) -> &'static str {
        match self {
            Source::Vault => "vault",
            Source::LastKnownGood { .. } => "last_known_good",
            Source::Environment { .. } => "environment",
        }
    }
}

/// A value kept for the fallback.
#[derive(Clone)]
pub(crate) struct Kept {
    /// The secret's fields.
    pub(crate) data: SecretData,
    /// Its version, if KV v2.
    pub(crate) version: Option<crate::kv2::KvVersion>,
    /// When Vault gave it.
    pub(crate) at: Instant,
}

/// The last known good values, by API path.
#[derive(Default)]
pub(crate) struct Cache {
    /// By API path.
    entries: Mutex<HashMap<String, Kept>>,
}

impl Cache {
    pub(crate) fn put(
        &self,
        path: &str,
        data: &SecretData,
        version: Option<&crate::kv2::KvVersion>,
    ) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.insert(
            path.to_owned(),
            Kept {
                data: data.clone(),
                version: version.cloned(),
                at: Instant::now(),
            },
        );
    }

    /// The value kept for `path` if not older than `max_age`.
    pub(crate) fn get(&self, path: &str, max_age: Duration) -> Option<(Kept, Duration)> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = entries.get(path)?;
        let age = kept.at.elapsed();
        (age <= max_age).then(|| (kept.clone(), age))
    }

    pub(crate) fn forget(&self, path: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries.remove(path);
    }
}

/// The variable prefix of secret `relative` (path inside the mount):
/// `VAULT_FALLBACK_DATABASE_PRIMARY_`.
pub fn env_prefix_for(prefix: &str, relative: &str) -> String {
    let mut name = String::with_capacity(prefix.len() + relative.len() + 1);
    name.push_str(prefix);
    for c in relative.trim_matches('/').chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_uppercase());
        } else {
            name.push('_');
        }
    }
    name.push('_');
    name
}

/// The secret `relative` read from the environment, with the variables used.
pub(crate) fn from_env(
    env: &dyn Environment,
    prefix: &str,
    relative: &str,
) -> Option<(SecretData, Vec<String>)> {
    let var_prefix = env_prefix_for(prefix, relative);
    let vars = env.vars_with_prefix(&var_prefix);
    let mut data = SecretData::default();
    let mut names = Vec::new();
    for (name, value) in vars {
        let Some(field) = name.strip_prefix(var_prefix.as_str()) else {
            continue;
        };
        let field = field.to_ascii_lowercase();
        if field.is_empty() {
            continue;
        }
        data.insert(field, value);
        names.push(name);
    }
    (!data.is_empty()).then_some((data, names))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn mapping_matches_the_documented_example() {
        assert_eq!(
            env_prefix_for("VAULT_FALLBACK_", "database/primary"),
            "VAULT_FALLBACK_DATABASE_PRIMARY_"
        );
        assert_eq!(
            env_prefix_for("P_", "/my-app/db.main/"),
            "P_MY_APP_DB_MAIN_"
        );
        let env: BTreeMap<String, String> = [
            ("VAULT_FALLBACK_DATABASE_PRIMARY_PASSWORD", "pw"),
            ("VAULT_FALLBACK_DATABASE_PRIMARY_USERNAME", "app"),
            ("VAULT_FALLBACK_DATABASE_REPLICA_PASSWORD", "other"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let (data, vars) = from_env(&env, "VAULT_FALLBACK_", "database/primary").unwrap();
        assert_eq!(data.get_str("password"), Some("pw"));
        assert_eq!(data.get_str("username"), Some("app"));
        assert_eq!(data.len(), 2);
        assert_eq!(vars.len(), 2);
        assert!(from_env(&env, "VAULT_FALLBACK_", "database/tertiary").is_none());
    }

    /// An environment that ignores the prefix it is asked for.
    struct Sloppy;

    impl Environment for Sloppy {
        fn var(&self, _name: &str) -> Option<String> {
            None
        }
        fn vars_with_prefix(&self, _prefix: &str) -> Vec<(String, String)> {
            vec![
                ("é".into(), "short and multibyte".into()),
                ("vault_fallback_db_password".into(), "other case".into()),
                ("VAULT_FALLBACK_DB_USER".into(), "app".into()),
            ]
        }
    }

    #[test]
    fn names_without_the_prefix_are_skipped_not_a_panic() {
        let (data, vars) = from_env(&Sloppy, "VAULT_FALLBACK_", "db").unwrap();
        assert_eq!(data.get_str("user"), Some("app"));
        assert_eq!(data.len(), 1);
        assert_eq!(vars, vec!["VAULT_FALLBACK_DB_USER".to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn cache_ages_out() {
        let cache = Cache::default();
        let mut data = SecretData::default();
        data.insert("k", "v");
        cache.put("kv/data/a", &data, None);
        tokio::time::advance(Duration::from_secs(5)).await;
        let (kept, age) = cache.get("kv/data/a", Duration::from_secs(10)).unwrap();
        assert_eq!(age, Duration::from_secs(5));
        assert_eq!(kept.data.get_str("k"), Some("v"));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(cache.get("kv/data/a", Duration::from_secs(10)).is_none());
        cache.forget("kv/data/a");
        assert!(cache.get("kv/data/a", Duration::from_secs(100)).is_none());
    }
}
