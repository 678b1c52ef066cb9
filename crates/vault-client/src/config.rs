//! Configuration: from the environment like the official clients, or built.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use breaker::{Policy, Preset};
use reqwest::Url;

use crate::auth::AuthMethod;
use crate::env::{Environment, ProcessEnv};
use crate::retry::Backoff;
use crate::token::RenewalPolicy;

/// The address used when none is configured (Vault's own default).
pub const DEFAULT_ADDR: &str = "https://127.0.0.1:8200";
/// Prefix of the environment fallback's variables.
pub const DEFAULT_FALLBACK_PREFIX: &str = "VAULT_FALLBACK_";

/// A configuration value was invalid. Never carries a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The Vault address is not an `http` or `https` URL.
    #[error("invalid Vault address {value:?}: {reason}")]
    Address {
        /// The address as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// An environment variable could not be read.
    #[error("invalid {name}: {reason}")]
    Variable {
        /// The variable, e.g. `VAULT_MAX_RETRIES`.
        name: String,
        /// What was expected (the value itself is shown only when it cannot
        /// be a secret).
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid setting `{setting}`: {reason}")]
    Setting {
        /// The builder method.
        setting: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A CA bundle, client certificate or key could not be loaded.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The breaker policy is invalid.
    #[error("breaker policy: {0}")]
    Breaker(#[from] breaker::ConfigError),
}

/// TLS settings (`*_CACERT`, `*_CAPATH`, `*_CLIENT_CERT`, `*_CLIENT_KEY`,
/// `*_SKIP_VERIFY`, `*_TLS_SERVER_NAME`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// A PEM file of CA certificates to trust instead of the system's.
    pub ca_cert: Option<PathBuf>,
    /// A folder of PEM files of CA certificates to trust instead of the
    /// system's (every `*.pem`, `*.crt` and `*.cer` file in it).
    pub ca_path: Option<PathBuf>,
    /// PEM CA certificates given in memory (added to the above).
    pub ca_pem: Vec<Vec<u8>>,
    /// A PEM client certificate (chain) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of [`TlsConfig::client_cert`].
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate. For development only: it makes TLS
    /// worthless against an active attacker.
    pub skip_verify: bool,
    /// Verify the server's certificate against this name instead of the
    /// address's host.
    pub server_name: Option<String>,
}

/// The fallback chain of reads: Vault, then the last value read (if not
/// older than `last_known_good_max_age`), then environment variables (if
/// `env_prefix` is set). See [`crate::Source`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackConfig {
    /// How old a last-known-good value may be and still be served when Vault
    /// is unavailable; `None` turns this step off. Default 10 minutes.
    pub last_known_good_max_age: Option<Duration>,
    /// The prefix of the environment fallback's variables; `None` turns this
    /// step off. Default `VAULT_FALLBACK_`.
    pub env_prefix: Option<String>,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            last_known_good_max_age: Some(Duration::from_secs(600)),
            env_prefix: Some(DEFAULT_FALLBACK_PREFIX.to_owned()),
        }
    }
}

/// A client's configuration. Build it with [`Config::builder`] or read it
/// with [`Config::from_env`]. `Debug` never shows the token.
#[derive(Clone)]
pub struct Config {
    /// The server's address, e.g. `https://vault.internal:8200`.
    pub address: Url,
    /// How the client gets its token.
    pub auth: AuthMethod,
    /// The Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`).
    pub namespace: Option<String>,
    /// TLS settings.
    pub tls: TlsConfig,
    /// Retries of a failed request (not counting the first try). Default 2.
    pub max_retries: u32,
    /// Time limit of one request, from connect to the last byte. Default
    /// 60 s. The breaker's call timeout (10 s in the Vault preset) applies
    /// too; the shorter wins.
    pub client_timeout: Duration,
    /// Back-off between retries.
    pub retry_backoff: Backoff,
    /// The longest `Retry-After` honoured; a longer one is not waited for and
    /// the error is returned. Default 30 s.
    pub max_retry_after: Duration,
    /// The circuit breaker's policy. Default [`Preset::Vault`].
    pub breaker_policy: Policy,
    /// The circuit breaker's name (in rejections, events, metrics). Default
    /// `vault`.
    pub breaker_name: String,
    /// The read fallback chain.
    pub fallback: FallbackConfig,
    /// Where the environment fallback (and nothing else after
    /// construction) reads variables.
    pub environment: Arc<dyn Environment>,
    /// The largest answer accepted, in bytes. Default 8 MiB.
    pub max_response_bytes: usize,
    /// When and how the token is renewed and logins are retried.
    pub renewal: RenewalPolicy,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("address", &self.address.as_str())
            .field("auth", &self.auth)
            .field("namespace", &self.namespace)
            .field("tls", &self.tls)
            .field("max_retries", &self.max_retries)
            .field("client_timeout", &self.client_timeout)
            .field("retry_backoff", &self.retry_backoff)
            .field("max_retry_after", &self.max_retry_after)
            .field("breaker_name", &self.breaker_name)
            .field("fallback", &self.fallback)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("renewal", &self.renewal)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// A builder with the defaults (address [`DEFAULT_ADDR`], no token).
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Reads the process environment: each setting from `BAO_<NAME>` if set,
    /// else `VAULT_<NAME>`, for `ADDR`, `TOKEN`, `CACERT`, `CAPATH`,
    /// `CLIENT_CERT`, `CLIENT_KEY`, `SKIP_VERIFY`, `NAMESPACE`,
    /// `TLS_SERVER_NAME`, `MAX_RETRIES` and `CLIENT_TIMEOUT`. Empty values
    /// count as unset.
    pub fn from_env() -> Result<Config, ConfigError> {
        ConfigBuilder::from_environment(&ProcessEnv)?.build()
    }

    /// Like [`Config::from_env`], from another source (a map in tests).
    pub fn from_environment(env: &dyn Environment) -> Result<Config, ConfigError> {
        ConfigBuilder::from_environment(env)?.build()
    }

    /// A builder holding this configuration, to change some settings.
    pub fn to_builder(&self) -> ConfigBuilder {
        ConfigBuilder {
            address: self.address.as_str().to_owned(),
            config: Some(self.clone()),
        }
    }
}

/// Builds a [`Config`]; every setting is checked by [`ConfigBuilder::build`].
///
/// ```
/// use std::time::Duration;
/// use vault_client::{AuthMethod, Config};
///
/// let config = Config::builder()
///     .address("https://vault.internal:8200")
///     .auth(AuthMethod::token("s.example"))
///     .max_retries(3)
///     .client_timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(config.address.as_str(), "https://vault.internal:8200/");
/// assert!(!format!("{config:?}").contains("s.example"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct ConfigBuilder {
    /// The address as given (checked by `build`).
    address: String,
    /// The settings (defaults until changed).
    config: Option<Config>,
}

impl fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigBuilder")
            .field("address", &redact_address(&self.address))
            .field("config", &self.config)
            .finish()
    }
}

fn defaults() -> Config {
    Config {
        // A constant, not input: it always parses.
        address: Url::parse(DEFAULT_ADDR).expect("DEFAULT_ADDR is a valid URL"),
        auth: AuthMethod::None,
        namespace: None,
        tls: TlsConfig::default(),
        max_retries: 2,
        client_timeout: Duration::from_secs(60),
        retry_backoff: Backoff::default(),
        max_retry_after: Duration::from_secs(30),
        breaker_policy: Preset::Vault.policy(),
        breaker_name: "vault".to_owned(),
        fallback: FallbackConfig::default(),
        environment: Arc::new(ProcessEnv),
        max_response_bytes: 8 * 1024 * 1024,
        renewal: RenewalPolicy::default(),
    }
}

impl ConfigBuilder {
    fn get(&mut self) -> &mut Config {
        self.config.get_or_insert_with(defaults)
    }

    /// A builder from environment variables (see [`Config::from_env`]).
    pub fn from_environment(env: &dyn Environment) -> Result<ConfigBuilder, ConfigError> {
        let lookup = |name: &str| -> Option<(String, String)> {
            for prefix in ["BAO_", "VAULT_"] {
                let var = format!("{prefix}{name}");
                if let Some(value) = env.var(&var).filter(|v| !v.trim().is_empty()) {
                    return Some((var, value));
                }
            }
            None
        };
        let mut builder = ConfigBuilder::default();
        if let Some((_, addr)) = lookup("ADDR") {
            builder = builder.address(addr.trim());
        }
        if let Some((_, token)) = lookup("TOKEN") {
            builder = builder.auth(AuthMethod::token(token.trim()));
        }
        if let Some((_, path)) = lookup("CACERT") {
            builder.get().tls.ca_cert = Some(PathBuf::from(path));
        }
        if let Some((_, path)) = lookup("CAPATH") {
            builder.get().tls.ca_path = Some(PathBuf::from(path));
        }
        if let Some((_, path)) = lookup("CLIENT_CERT") {
            builder.get().tls.client_cert = Some(PathBuf::from(path));
        }
        if let Some((_, path)) = lookup("CLIENT_KEY") {
            builder.get().tls.client_key = Some(PathBuf::from(path));
        }
        if let Some((name, value)) = lookup("SKIP_VERIFY") {
            builder.get().tls.skip_verify = parse_bool(&value).ok_or(ConfigError::Variable {
                name,
                reason: format!("expected true/false/1/0, got {value:?}"),
            })?;
        }
        if let Some((_, ns)) = lookup("NAMESPACE") {
            builder.get().namespace = Some(ns.trim().to_owned());
        }
        if let Some((_, name)) = lookup("TLS_SERVER_NAME") {
            builder.get().tls.server_name = Some(name.trim().to_owned());
        }
        if let Some((name, value)) = lookup("MAX_RETRIES") {
            let retries: i64 = value.trim().parse().map_err(|_| ConfigError::Variable {
                name: name.clone(),
                reason: format!("expected a whole number, got {value:?}"),
            })?;
            // Vault's Go client: -1 turns retries off.
            builder.get().max_retries = u32::try_from(retries.max(0)).unwrap_or(u32::MAX).min(100);
        }
        if let Some((name, value)) = lookup("CLIENT_TIMEOUT") {
            let timeout = parse_duration(&value).ok_or(ConfigError::Variable {
                name,
                reason: format!(
                    "expected seconds or a duration like 30s, 500ms, 2m; got {value:?}"
                ),
            })?;
            builder.get().client_timeout = timeout;
        }
        Ok(builder)
    }

    /// The server's address (`http` or `https` URL).
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    /// How the client gets its token.
    pub fn auth(mut self, auth: AuthMethod) -> Self {
        self.get().auth = auth;
        self
    }

    /// The namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.get().namespace = Some(namespace.into());
        self
    }

    /// Trust the CA certificates of this PEM file instead of the system's.
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.get().tls.ca_cert = Some(path.into());
        self
    }

    /// Trust the CA certificates of the PEM files in this folder.
    pub fn ca_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.get().tls.ca_path = Some(path.into());
        self
    }

    /// Trust this PEM CA certificate (in memory).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.get().tls.ca_pem.push(pem.into());
        self
    }

    /// A client certificate and key (PEM files) for mutual TLS.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        let tls = &mut self.get().tls;
        tls.client_cert = Some(cert.into());
        tls.client_key = Some(key.into());
        self
    }

    /// Accept any server certificate (development only).
    pub fn skip_verify(mut self, skip: bool) -> Self {
        self.get().tls.skip_verify = skip;
        self
    }

    /// Verify the server certificate against this name.
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.get().tls.server_name = Some(name.into());
        self
    }

    /// Retries after the first try (at most 100).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.get().max_retries = retries;
        self
    }

    /// Time limit of one request.
    pub fn client_timeout(mut self, timeout: Duration) -> Self {
        self.get().client_timeout = timeout;
        self
    }

    /// Back-off between retries.
    pub fn retry_backoff(mut self, backoff: Backoff) -> Self {
        self.get().retry_backoff = backoff;
        self
    }

    /// The longest `Retry-After` honoured.
    pub fn max_retry_after(mut self, wait: Duration) -> Self {
        self.get().max_retry_after = wait;
        self
    }

    /// The circuit breaker's policy (default [`Preset::Vault`]); e.g. a small
    /// window and a short open wait in tests.
    pub fn breaker_policy(mut self, policy: Policy) -> Self {
        self.get().breaker_policy = policy;
        self
    }

    /// The circuit breaker's name.
    pub fn breaker_name(mut self, name: impl Into<String>) -> Self {
        self.get().breaker_name = name.into();
        self
    }

    /// The read fallback chain.
    pub fn fallback(mut self, fallback: FallbackConfig) -> Self {
        self.get().fallback = fallback;
        self
    }

    /// Where the environment fallback reads variables (default: the
    /// process environment).
    pub fn environment(mut self, env: impl Environment) -> Self {
        self.get().environment = Arc::new(env);
        self
    }

    /// The largest answer accepted, in bytes.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.get().max_response_bytes = limit;
        self
    }

    /// Token renewal and login retry policy.
    pub fn renewal(mut self, renewal: RenewalPolicy) -> Self {
        self.get().renewal = renewal;
        self
    }

    /// Checks every setting.
    pub fn build(mut self) -> Result<Config, ConfigError> {
        let address = std::mem::take(&mut self.address);
        let mut config = self.config.take().unwrap_or_else(defaults);
        if !address.is_empty() {
            config.address = parse_address(&address)?;
        }
        if config.max_retries > 100 {
            return Err(ConfigError::Setting {
                setting: "max_retries",
                reason: format!("at most 100, got {}", config.max_retries),
            });
        }
        if config.client_timeout.is_zero() {
            return Err(ConfigError::Setting {
                setting: "client_timeout",
                reason: "must be more than zero".into(),
            });
        }
        if config.max_response_bytes < 1024 {
            return Err(ConfigError::Setting {
                setting: "max_response_bytes",
                reason: "at least 1024 bytes".into(),
            });
        }
        if config.tls.client_cert.is_some() != config.tls.client_key.is_some() {
            return Err(ConfigError::Tls(
                "a client certificate needs its key, and a key its certificate".into(),
            ));
        }
        if let Some(ns) = &config.namespace
            && (ns.is_empty() || ns.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            return Err(ConfigError::Setting {
                setting: "namespace",
                reason: "must be non-empty, without whitespace".into(),
            });
        }
        config.retry_backoff.check()?;
        config.renewal.check()?;
        Ok(config)
    }
}

/// `value` with any user info (`user:password@`) in its authority replaced
/// by `[REDACTED]`, for error messages and `Debug`. Works on text that is not
/// a valid URL too (it never echoes what precedes an `@` in the authority).
pub(crate) fn redact_address(value: &str) -> String {
    let start = value.find("://").map_or(0, |i| i + 3);
    let rest = &value[start..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}[REDACTED]{}", &value[..start], &rest[at..]),
        None => value.to_owned(),
    }
}

fn parse_address(value: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|e| ConfigError::Address {
        value: redact_address(value),
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::Address {
            value: redact_address(value),
            reason: "the scheme must be http or https".into(),
        });
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::Address {
            value: redact_address(value),
            reason: "no host".into(),
        });
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::Address {
            value: "(hidden: it holds credentials)".to_owned(),
            reason: "credentials in the address are not allowed".into(),
        });
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::Address {
            value: redact_address(value),
            reason: "no query or fragment allowed".into(),
        });
    }
    Ok(url)
}

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "on" => Some(true),
        "0" | "f" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `30` (seconds, like Vault), `30s`, `500ms`, `2m`, `1h`.
pub(crate) fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 * 365.0 {
        return None;
    }
    Some(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::secret::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn bao_variables_win_over_vault_ones() {
        let config = Config::from_environment(&env(&[
            ("BAO_ADDR", "http://bao:8200"),
            ("VAULT_ADDR", "http://vault:8200"),
            ("VAULT_TOKEN", "s.vault-token"),
            ("BAO_TOKEN", ""),
            ("VAULT_NAMESPACE", "team-a"),
            ("VAULT_CACERT", "/etc/ca.pem"),
            ("BAO_CAPATH", "/etc/cas"),
            ("VAULT_CLIENT_CERT", "/etc/c.pem"),
            ("VAULT_CLIENT_KEY", "/etc/k.pem"),
            ("VAULT_SKIP_VERIFY", "true"),
            ("BAO_TLS_SERVER_NAME", "vault.internal"),
            ("VAULT_MAX_RETRIES", "5"),
            ("VAULT_CLIENT_TIMEOUT", "15"),
        ]))
        .unwrap();
        assert_eq!(config.address.as_str(), "http://bao:8200/");
        match &config.auth {
            AuthMethod::Token(token) => assert_eq!(token.expose_secret(), "s.vault-token"),
            other => panic!("{other:?}"),
        }
        assert_eq!(config.namespace.as_deref(), Some("team-a"));
        assert_eq!(config.tls.ca_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(config.tls.ca_path, Some(PathBuf::from("/etc/cas")));
        assert_eq!(config.tls.client_key, Some(PathBuf::from("/etc/k.pem")));
        assert!(config.tls.skip_verify);
        assert_eq!(config.tls.server_name.as_deref(), Some("vault.internal"));
        assert_eq!(config.max_retries, 5);
        assert_eq!(config.client_timeout, Duration::from_secs(15));
        assert!(!format!("{config:?}").contains("s.vault-token"));
    }

    #[test]
    fn addresses_with_credentials_are_never_echoed() {
        for bad in [
            // Not a URL at all (no scheme): the parse error.
            "alice:hunter2@vault:8200",
            // Bad port: the parse error.
            "https://alice:hunter2@vault:99999",
            // Wrong scheme.
            "ftp://alice:hunter2@vault:8200",
            // Credentials in a valid address.
            "https://alice:hunter2@vault:8200",
            "https://hunter2@vault:8200/?x=1",
        ] {
            let builder = Config::builder().address(bad);
            let shown = format!("{builder:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            let error = builder.build().unwrap_err();
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert_eq!(
            redact_address("https://u:p@vault:8200/x@y"),
            "https://[REDACTED]@vault:8200/x@y"
        );
        assert_eq!(redact_address("https://vault:8200"), "https://vault:8200");
        assert_eq!(redact_address("u:p@h"), "[REDACTED]@h");
    }

    #[test]
    fn defaults_without_variables() {
        let config = Config::from_environment(&env(&[])).unwrap();
        assert_eq!(config.address.as_str(), "https://127.0.0.1:8200/");
        assert!(matches!(config.auth, AuthMethod::None));
        assert_eq!(config.max_retries, 2);
        assert_eq!(config.breaker_policy, Preset::Vault.policy());
        assert_eq!(
            Config::from_environment(&env(&[("VAULT_MAX_RETRIES", "-1")]))
                .unwrap()
                .max_retries,
            0
        );
    }

    #[test]
    fn bad_values_name_the_variable_never_the_token() {
        for (vars, name) in [
            (vec![("VAULT_MAX_RETRIES", "many")], "VAULT_MAX_RETRIES"),
            (vec![("BAO_CLIENT_TIMEOUT", "soon")], "BAO_CLIENT_TIMEOUT"),
            (
                vec![("VAULT_CLIENT_TIMEOUT", "-3s")],
                "VAULT_CLIENT_TIMEOUT",
            ),
            (vec![("VAULT_SKIP_VERIFY", "maybe")], "VAULT_SKIP_VERIFY"),
        ] {
            let err = Config::from_environment(&env(&vars)).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        for addr in [
            "vault:8200",
            "ftp://vault",
            "http://",
            "http://vault:8200/?x=1",
            "not a url",
        ] {
            let err = Config::from_environment(&env(&[("VAULT_ADDR", addr)])).unwrap_err();
            assert!(matches!(err, ConfigError::Address { .. }), "{addr}: {err}");
        }
        let err = Config::builder()
            .address("http://user:s3cret@vault:8200")
            .build()
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn builder_checks_settings() {
        assert!(Config::builder().max_retries(101).build().is_err());
        assert!(
            Config::builder()
                .client_timeout(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(Config::builder().max_response_bytes(10).build().is_err());
        assert!(Config::builder().namespace("a b").build().is_err());
        let mut half = Config::builder();
        half.get().tls.client_cert = Some("/c.pem".into());
        assert!(matches!(half.build(), Err(ConfigError::Tls(_))));
        let config = Config::builder()
            .address("http://127.0.0.1:1")
            .build()
            .unwrap();
        let again = config.to_builder().max_retries(0).build().unwrap();
        assert_eq!(again.address, config.address);
        assert_eq!(again.max_retries, 0);
    }

    #[test]
    fn durations() {
        for (text, ms) in [
            ("30", 30_000),
            ("30s", 30_000),
            ("1.5s", 1500),
            ("250ms", 250),
            ("2m", 120_000),
            ("1h", 3_600_000),
        ] {
            assert_eq!(
                parse_duration(text),
                Some(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for text in ["", "s", "0", "-1", "1d", "NaN", "1e400"] {
            assert_eq!(parse_duration(text), None, "{text}");
        }
    }
}
