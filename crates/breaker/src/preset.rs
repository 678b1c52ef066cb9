//! The platform's four named policies.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::error::ConfigError;
use crate::policy::{OpenAction, Policy, Window};

/// A named policy from the platform's design.
///
/// | preset              | call timeout | failure rate | open wait | half-open max wait | on open                    |
/// |---------------------|--------------|--------------|-----------|--------------------|----------------------------|
/// | `vault`             | 10 s         | 25 %         | 60 s      | 20 s               | [`OpenAction::Fallback`]   |
/// | `store-service`     | 15 s         | 50 %         | 30 s      | 30 s               | [`OpenAction::Fallback`]   |
/// | `hardware-service`  | 30 s         | 40 %         | 30 s      | 60 s               | [`OpenAction::Fallback`]   |
/// | `security-service`  | 20 s         | 30 %         | 30 s      | 40 s               | [`OpenAction::Deny`]       |
///
/// All four use a count window of the last 50 calls judged from 10 calls, one
/// probe, a fixed back-off, and no slow-call detection. The open wait of the
/// last three is "configurable" in the design: 30 s is the preset's value,
/// change it with [`Policy::to_builder`] or in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[non_exhaustive]
pub enum Preset {
    /// Vault: fail fast, the caller falls back to its cache, then the
    /// environment.
    Vault,
    /// The store service: fall back to stale cache for reads, queue writes.
    StoreService,
    /// The hardware service: fall back to stale cache for reads, queue writes.
    HardwareService,
    /// The security service: deny when open ("fail closed").
    SecurityService,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 4] = [
        Self::Vault,
        Self::StoreService,
        Self::HardwareService,
        Self::SecurityService,
    ];

    /// The preset's name, as written in configuration files.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Vault => "vault",
            Self::StoreService => "store-service",
            Self::HardwareService => "hardware-service",
            Self::SecurityService => "security-service",
        }
    }

    /// The preset's policy.
    pub fn policy(self) -> Policy {
        let (timeout, rate, open_wait, on_open) = match self {
            Self::Vault => (10, 25.0, 60, OpenAction::Fallback),
            Self::StoreService => (15, 50.0, 30, OpenAction::Fallback),
            Self::HardwareService => (30, 40.0, 30, OpenAction::Fallback),
            Self::SecurityService => (20, 30.0, 30, OpenAction::Deny),
        };
        Policy {
            window: Window::count(50),
            minimum_calls: 10,
            failure_rate_threshold: rate,
            slow_calls: None,
            call_timeout: Some(Duration::from_secs(timeout)),
            open_wait: Duration::from_secs(open_wait),
            backoff: Backoff::Fixed,
            permitted_probes: 1,
            max_half_open_wait: Duration::from_secs(2 * timeout),
            on_open,
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|preset| preset.name() == s)
            .ok_or_else(|| ConfigError::UnknownPreset(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_parse_by_name() {
        for preset in Preset::ALL {
            let policy = preset.policy();
            assert_eq!(policy.clone().validate(), Ok(policy));
            assert_eq!(preset.name().parse::<Preset>(), Ok(preset));
        }
        assert!("nope".parse::<Preset>().is_err());
    }
}
