//! [`Secret`]: a configuration value that never prints.

use std::{fmt, str::FromStr};

use secrecy::{ExposeSecret, SecretString};

/// A configuration value that must never be printed (a password, a token, a
/// URL holding a password, a routing key). `Debug` shows `[REDACTED]`; the
/// memory is zeroed when dropped (`secrecy`).
///
/// It parses from any string (a command-line flag or an environment
/// variable, through [`FromStr`]) and deserializes from a string (a
/// configuration file).
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The value itself, for the one place that uses it.
    #[must_use]
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}
