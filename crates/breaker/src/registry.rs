//! A keyed set of named breakers, built from a policy table.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::breaker::Breaker;
use crate::clock::{Clock, TokioClock};
use crate::error::ConfigError;
use crate::policy::Policy;
use crate::snapshot::Snapshot;

/// Named breakers built once from a policy table (the gateway's one breaker
/// per upstream).
///
/// The set is fixed when built, so looking a breaker up takes no lock; hold
/// on to the [`Breaker`] handles (they are cheap clones) rather than looking
/// them up per request.
///
/// ```
/// use breaker::{Policy, Preset, Registry};
///
/// let registry = Registry::new([
///     ("vault", Preset::Vault.policy()),
///     ("store", Preset::StoreService.policy()),
/// ])?;
/// let vault = registry.get("vault").expect("configured");
/// assert_eq!(vault.name(), "vault");
/// assert_eq!(registry.snapshots().len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// The breakers by name.
    breakers: BTreeMap<&'static str, Breaker>,
}

impl Registry {
    /// Builds a breaker for each `(name, policy)`, on the default clock.
    /// Fails if two share a name.
    pub fn new<I, K>(table: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, Policy)>,
        K: AsRef<str>,
    {
        Self::with_clock(table, TokioClock)
    }

    /// Like [`Registry::new`], all breakers reading time from `clock`.
    pub fn with_clock<I, K>(table: I, clock: impl Clock) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, Policy)>,
        K: AsRef<str>,
    {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        let mut breakers = BTreeMap::new();
        for (name, policy) in table {
            let name = name.as_ref();
            if breakers.contains_key(name) {
                return Err(ConfigError::DuplicateName(name.to_owned()));
            }
            let breaker = Breaker::with_shared_clock(name, policy, Arc::clone(&clock));
            breakers.insert(breaker.name(), breaker);
        }
        Ok(Self { breakers })
    }

    /// The breaker named `name`.
    pub fn get(&self, name: &str) -> Option<&Breaker> {
        self.breakers.get(name)
    }

    /// All breakers, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Breaker> {
        self.breakers.values()
    }

    /// How many breakers there are.
    pub fn len(&self) -> usize {
        self.breakers.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.breakers.is_empty()
    }

    /// A snapshot of every breaker, by name.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        self.breakers.values().map(Breaker::snapshot).collect()
    }

    /// Exports every breaker's figures through the `metrics` facade (see
    /// [`Breaker::export_metrics`]).
    #[cfg(feature = "metrics")]
    pub fn export_metrics(&self) {
        for breaker in self.breakers.values() {
            breaker.export_metrics();
        }
    }
}

impl<'a> IntoIterator for &'a Registry {
    type Item = &'a Breaker;
    type IntoIter = std::collections::btree_map::Values<'a, &'static str, Breaker>;

    fn into_iter(self) -> Self::IntoIter {
        self.breakers.values()
    }
}
