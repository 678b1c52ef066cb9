//! The configuration file (TOML): routes, the security service, rate
//! limits and alerts. Every key is checked at start; an error names the
//! bad key (`routes[0].upstream: ...`).

use std::{collections::BTreeMap, path::Path, time::Duration};

/// A duration written as text: `250ms`, `10s`, `1.5m`, `2h` (or a bare
/// number of seconds); breaker's, shared with its policy files.
pub use breaker::DurationText;
use breaker::{Policy, Preset};
use serde::Deserialize;

pub use crate::client::ProxyNet;
use crate::settings::Secret;

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or of the wrong type
    /// (the message names the key and its line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{key}: {message}")]
    Invalid {
        /// The key, e.g. `routes[0].upstream`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The listener's limits and shutdown.
    #[serde(default)]
    pub server: ServerConfig,
    /// Token verification against the security service.
    pub auth: AuthConfig,
    /// The default token bucket of every route.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// The bucket of requests that fail before a principal is known (bad
    /// token, unknown route, bad method, malformed), per client address.
    #[serde(default)]
    pub pre_auth_limit: PreAuthLimitConfig,
    /// Critical alerts.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Upstream URLs of the default routes (used when `routes` is empty).
    #[serde(default)]
    pub upstreams: UpstreamsConfig,
    /// The routes; empty: the default routes (`/api/stores`, and
    /// `/api/hardware` when `upstreams.hardware` is set).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Degraded mode: stale reads and the durable write queue.
    #[serde(default)]
    pub degraded: DegradedConfig,
}

/// `[degraded]`: what the gateway does while an upstream is down.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DegradedConfig {
    /// Where the write queue lives: `redb` (a file at `queue_path`, for a
    /// single gateway) or `jetstream` (a NATS JetStream cluster shared by
    /// every gateway of the fleet, `[degraded.jetstream]`).
    pub queue_backend: QueueBackend,
    /// The shared queue, with `queue_backend = "jetstream"`.
    pub jetstream: JetStreamSection,
    /// The write queue's file (redb; unused with JetStream); its folder
    /// must exist and be writable. The queue key is `GATEWAY_QUEUE_KEY`, else (with
    /// `queue_key_source = "file"`) the file `<queue_path>.key` (created on
    /// first start, mode 0600).
    pub queue_path: std::path::PathBuf,
    /// Where the queue's sealing key comes from.
    pub queue_key_source: QueueKeySource,
    /// Unfinished queued writes at most (503 past it).
    pub queue_max_entries: u64,
    /// Unfinished queued writes of one subject at most (429 past it), so
    /// that one client cannot take every slot.
    pub queue_max_per_subject: u64,
    /// Bytes of unfinished queued writes at most (503 past it).
    pub queue_max_bytes: u64,
    /// A queued write older than this is failed, not replayed: keep it
    /// under the upstream's idempotency retention (store-service: 24 h).
    pub queue_max_age: DurationText,
    /// How long a finished write's status stays readable.
    pub queue_retention: DurationText,
    /// Last good reads kept at most.
    pub stale_max_entries: u64,
    /// Bytes of last good reads kept at most.
    pub stale_max_bytes: u64,
}

impl Default for DegradedConfig {
    fn default() -> Self {
        Self {
            queue_backend: QueueBackend::Redb,
            jetstream: JetStreamSection::default(),
            queue_path: "gateway-queue.redb".into(),
            queue_key_source: QueueKeySource::File,
            queue_max_entries: 10_000,
            queue_max_per_subject: 1_000,
            queue_max_bytes: 64 * 1024 * 1024,
            queue_max_age: DurationText(Duration::from_secs(23 * 3600)),
            queue_retention: DurationText(Duration::from_secs(24 * 3600)),
            stale_max_entries: 10_000,
            stale_max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// `degraded.queue_backend`: where the write queue lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// An embedded redb file (`degraded.queue_path`): one gateway. Its
    /// queued writes are lost with its disk.
    #[default]
    Redb,
    /// A NATS JetStream cluster shared by the fleet: any gateway accepts,
    /// reports and replays any write.
    Jetstream,
}

/// `[degraded.jetstream]`: the shared queue's cluster. The token, if the
/// cluster wants one, is `GATEWAY_NATS_TOKEN`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JetStreamSection {
    /// The NATS servers (`nats://host:4222`, or `tls://`).
    pub urls: Vec<String>,
    /// Copies of the stream and buckets (1, 3 or 5); a write is answered
    /// 202 once a majority has it.
    pub replicas: usize,
    /// The prefix of the stream (`GATEWAY_WRITES`), buckets
    /// (`gateway-status`, `gateway-leases`) and subjects (`gateway.writes.>`).
    pub prefix: String,
    /// How long a write may wait to be made durable before it is refused
    /// with 503 `WRITE_QUEUE_UNAVAILABLE` (a leader election after a lost
    /// node is waited out within it).
    pub publish_timeout: DurationText,
    /// How long a gateway holds a resource it replays without renewing it:
    /// after it dies, another gateway continues this much later.
    pub lease: DurationText,
}

impl Default for JetStreamSection {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            replicas: 3,
            prefix: "gateway".into(),
            publish_timeout: DurationText(Duration::from_secs(15)),
            lease: DurationText(Duration::from_secs(30)),
        }
    }
}

/// `degraded.queue_key_source`: where the write queue's sealing key comes
/// from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKeySource {
    /// `GATEWAY_QUEUE_KEY`, else the file `<queue_path>.key` beside the
    /// queue (created on first start): for a single local gateway.
    File,
    /// `GATEWAY_QUEUE_KEY` only (from a secret store); the gateway does not
    /// start without it. A key beside the data it seals protects nothing.
    Env,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The largest request body forwarded, in bytes (413 above it).
    pub body_limit_bytes: u64,
    /// How long in-flight requests may run after SIGTERM.
    pub drain_timeout: DurationText,
    /// How long an idle upstream connection is kept in the pool.
    pub upstream_idle_timeout: DurationText,
    /// Timeout for connecting to an upstream.
    pub upstream_connect_timeout: DurationText,
    /// Idle upstream connections kept per upstream (a burst opens more;
    /// they are closed once it has passed).
    pub upstream_max_idle: usize,
    /// Requests in flight to one upstream at most, so at most this many
    /// upstream connections; others wait for a slot within the route's
    /// timeout (then: 504, or degraded mode's answer).
    pub upstream_max_in_flight: usize,
    /// Client connections served at once; past it a new one gets a 503
    /// (`TOO_MANY_CONNECTIONS`) and is closed.
    pub max_connections: usize,
    /// How long a client may take to send a request head, from when the
    /// connection is ready for one: slow (slow loris) and idle keep-alive
    /// clients are closed after it.
    pub header_read_timeout: DurationText,
    /// The largest request head (request line and headers), in bytes: 431
    /// past it.
    pub max_header_bytes: usize,
    /// A PEM file of CA certificates trusted for `https` (JWKS, PagerDuty)
    /// in addition to the platform's roots (a private security service's
    /// CA). `SSL_CERT_FILE` would replace the platform's roots instead.
    pub extra_ca_file: Option<std::path::PathBuf>,
    /// The proxies (addresses or networks, `10.0.0.0/8`) whose
    /// `X-Forwarded-For` is believed: behind them, the client is the
    /// rightmost address they forwarded that is not itself a trusted
    /// proxy. Anyone else's `X-Forwarded-For` is replaced, not appended to.
    pub trusted_proxies: Vec<ProxyNet>,
}

impl ServerConfig {
    /// The listener's connection limits.
    pub fn limits(&self) -> service_kit::Limits {
        service_kit::Limits {
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout.0,
            max_header_bytes: self.max_header_bytes,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            drain_timeout: DurationText(Duration::from_secs(10)),
            upstream_idle_timeout: DurationText(Duration::from_secs(90)),
            upstream_connect_timeout: DurationText(Duration::from_secs(2)),
            trusted_proxies: Vec::new(),
            extra_ca_file: None,
            upstream_max_idle: 128,
            upstream_max_in_flight: 256,
            max_connections: 10_000,
            header_read_timeout: DurationText(Duration::from_secs(20)),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The security service's JWKS URL.
    pub jwks_url: String,
    /// The expected `iss`.
    pub issuer: String,
    /// The accepted `aud` values (at least one).
    pub audiences: Vec<String>,
    /// Keys older than this are not trusted: requests fail closed.
    #[serde(default = "defaults::max_age")]
    pub max_age: DurationText,
    /// How often the keys are fetched in the background.
    #[serde(default = "defaults::refresh_interval")]
    pub refresh_interval: DurationText,
    /// At most one refresh for an unknown `kid` per this interval.
    #[serde(default = "defaults::unknown_kid_interval")]
    pub unknown_kid_interval: DurationText,
    /// Timeout of one JWKS fetch.
    #[serde(default = "defaults::fetch_timeout")]
    pub fetch_timeout: DurationText,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "defaults::leeway")]
    pub leeway: DurationText,
    /// The security breaker (default: the `security-service` preset).
    #[serde(default = "defaults::security_breaker")]
    pub breaker: Policy,
}

impl AuthConfig {
    /// The verification crate's configuration: the same names, values and
    /// defaults; the breaker is named `security`.
    pub fn verify_config(&self) -> jwt_verify::Config {
        let mut config = jwt_verify::Config::new(&self.jwks_url, &self.issuer, &self.audiences);
        config.max_age = self.max_age.0;
        config.refresh_interval = self.refresh_interval.0;
        config.unknown_kid_interval = self.unknown_kid_interval.0;
        config.fetch_timeout = self.fetch_timeout.0;
        config.leeway = self.leeway.0;
        config.breaker_name = "security".into();
        config.breaker = self.breaker.clone();
        config
    }
}

/// `[rate_limit]` (also per route).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Tokens added per second.
    pub per_second: u32,
    /// The bucket's size.
    pub burst: u32,
    /// Clients tracked at most; past it, new clients share one bucket
    /// until idle ones are forgotten (every minute), so that no number of
    /// distinct clients grows the gateway's memory without bound.
    pub max_clients: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 50,
            burst: 100,
            max_clients: 100_000,
        }
    }
}

/// `[pre_auth_limit]`: requests that fail before a principal is known, per
/// client address (an IPv6 client by its /64).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PreAuthLimitConfig {
    /// Failures forgiven per second.
    pub per_second: u32,
    /// Failures in a row before 429.
    pub burst: u32,
    /// Addresses tracked at most (as in `[rate_limit]`).
    pub max_clients: u32,
}

impl Default for PreAuthLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 5,
            burst: 20,
            max_clients: 100_000,
        }
    }
}

impl From<PreAuthLimitConfig> for RateLimitConfig {
    fn from(config: PreAuthLimitConfig) -> Self {
        Self {
            per_second: config.per_second,
            burst: config.burst,
            max_clients: config.max_clients,
        }
    }
}

/// `[alerts]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// The PagerDuty Events API v2 URL (e.g.
    /// `https://events.pagerduty.com/v2/enqueue`); none: log and metric only.
    pub pagerduty_url: Option<String>,
    /// The integration's routing key (better: `PAGERDUTY_ROUTING_KEY`).
    pub routing_key: Option<Secret>,
    /// The `source` of the events (default: `gateway`).
    pub source: Option<String>,
}

/// `[upstreams]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamsConfig {
    /// The store service (`STORE_SERVICE_URL` overrides it).
    pub store: String,
    /// The hardware service, if any (`HARDWARE_SERVICE_URL` overrides it).
    pub hardware: Option<String>,
}

impl Default for UpstreamsConfig {
    fn default() -> Self {
        Self {
            store: "http://127.0.0.1:3000".into(),
            hardware: None,
        }
    }
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The route's name (labels, breaker, alerts); default: from the prefix.
    #[serde(default)]
    pub name: Option<String>,
    /// The path prefix, matched on whole segments (`/api/stores` matches
    /// `/api/stores` and `/api/stores/1`, not `/api/storesX`).
    pub prefix: String,
    /// The upstream's base URL (`http://host:port`); the request path is
    /// appended unchanged.
    pub upstream: String,
    /// The breaker's policy (a preset with overrides).
    #[serde(default = "defaults::store_breaker")]
    pub breaker: Policy,
    /// How long the upstream may take to answer (response headers).
    #[serde(default = "defaults::route_timeout")]
    pub timeout: DurationText,
    /// Scopes each method needs (all of them); a method not listed is 405.
    pub scopes: BTreeMap<String, Vec<String>>,
    /// Paths with one of these segments need these scopes instead.
    #[serde(default)]
    pub segment_scopes: BTreeMap<String, Vec<String>>,
    /// This route's token bucket (default: `[rate_limit]`).
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Paths with one of these segments are sensitive: their responses are
    /// never kept for stale reads (e.g. `secrets`).
    #[serde(default)]
    pub sensitive_segments: Vec<String>,
    /// The path of the upstream's OpenAPI document (e.g. `/openapi.json`):
    /// its operations under `prefix` are in the gateway's own
    /// `/openapi.json`. None: the route is not described there.
    #[serde(default)]
    pub openapi: Option<String>,
}

mod defaults {
    use super::*;

    pub(super) fn max_age() -> DurationText {
        DurationText(Duration::from_secs(60))
    }
    pub(super) fn refresh_interval() -> DurationText {
        DurationText(Duration::from_secs(20))
    }
    pub(super) fn unknown_kid_interval() -> DurationText {
        DurationText(Duration::from_secs(10))
    }
    pub(super) fn fetch_timeout() -> DurationText {
        DurationText(Duration::from_secs(5))
    }
    pub(super) fn leeway() -> DurationText {
        DurationText(Duration::from_secs(5))
    }
    pub(super) fn route_timeout() -> DurationText {
        DurationText(Duration::from_secs(15))
    }
    pub(super) fn security_breaker() -> Policy {
        Preset::SecurityService.policy()
    }
    pub(super) fn store_breaker() -> Policy {
        Preset::StoreService.policy()
    }
}

/// The methods whose scopes can be configured.
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|error| match error {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses and checks `text`.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: "configuration".into(),
            message: error.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Applies the environment's upstream URLs and fills in the default
    /// routes when none are configured; checks the result.
    pub fn with_upstreams(
        mut self,
        store: Option<String>,
        hardware: Option<String>,
    ) -> Result<Self, ConfigError> {
        if let Some(store) = store {
            self.upstreams.store = store;
        }
        if hardware.is_some() {
            self.upstreams.hardware = hardware;
        }
        if self.routes.is_empty() {
            self.routes = default_routes(&self.upstreams);
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every value, naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        check_url("auth.jwks_url", &auth.jwks_url)?;
        if auth.issuer.trim().is_empty() {
            return Err(ConfigError::invalid("auth.issuer", "must not be empty"));
        }
        if auth.audiences.is_empty() || auth.audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(ConfigError::invalid(
                "auth.audiences",
                "needs at least one non-empty audience",
            ));
        }
        for (key, value) in [
            ("auth.max_age", auth.max_age),
            ("auth.refresh_interval", auth.refresh_interval),
            ("auth.fetch_timeout", auth.fetch_timeout),
            ("server.drain_timeout", self.server.drain_timeout),
            (
                "server.upstream_connect_timeout",
                self.server.upstream_connect_timeout,
            ),
        ] {
            if value.0.is_zero() {
                return Err(ConfigError::invalid(key, "must be more than 0"));
            }
        }
        if auth.refresh_interval.0 >= auth.max_age.0 {
            return Err(ConfigError::invalid(
                "auth.refresh_interval",
                "must be shorter than auth.max_age, or keys go stale between refreshes",
            ));
        }
        // The security breaker's preset decides what an unreachable security
        // service means, as a route's does. Authentication has no stale copy
        // or queue to fall back on: only `deny` (fail closed) is accepted.
        if auth.breaker.on_open() != breaker::OpenAction::Deny {
            return Err(ConfigError::invalid(
                "auth.breaker",
                "must deny when open (on_open = \"deny\", as the security-service preset does): \
                 the gateway fails closed without the security service's keys",
            ));
        }
        if self.server.upstream_max_in_flight == 0 {
            return Err(ConfigError::invalid(
                "server.upstream_max_in_flight",
                "must be more than 0",
            ));
        }
        if let Err(error) = self.server.limits().check() {
            return Err(ConfigError::invalid("server", error.to_string()));
        }
        if self.server.body_limit_bytes == 0 {
            return Err(ConfigError::invalid(
                "server.body_limit_bytes",
                "must be more than 0",
            ));
        }
        check_rate("rate_limit", &self.rate_limit)?;
        check_rate("pre_auth_limit", &self.pre_auth_limit.into())?;
        if let Some(url) = &self.alerts.pagerduty_url {
            check_url("alerts.pagerduty_url", url)?;
        }
        check_url("upstreams.store", &self.upstreams.store)?;
        if let Some(url) = &self.upstreams.hardware {
            check_url("upstreams.hardware", url)?;
        }
        let degraded = &self.degraded;
        if degraded.queue_backend == QueueBackend::Jetstream {
            check_jetstream(degraded)?;
        } else if degraded.queue_path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "degraded.queue_path",
                "must name a file",
            ));
        }
        for (key, value) in [
            ("degraded.queue_max_entries", degraded.queue_max_entries),
            (
                "degraded.queue_max_per_subject",
                degraded.queue_max_per_subject,
            ),
            ("degraded.queue_max_bytes", degraded.queue_max_bytes),
            ("degraded.stale_max_entries", degraded.stale_max_entries),
            ("degraded.stale_max_bytes", degraded.stale_max_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(key, "must be more than 0"));
            }
        }
        for (key, value) in [
            ("degraded.queue_max_age", degraded.queue_max_age),
            ("degraded.queue_retention", degraded.queue_retention),
        ] {
            if value.0.is_zero() {
                return Err(ConfigError::invalid(key, "must be more than 0"));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("routes[{i}].{field}");
            let prefix = &route.prefix;
            if !prefix.starts_with('/')
                || prefix.len() < 2
                || prefix.ends_with('/')
                || crate::path::check_path(prefix).is_err()
            {
                return Err(ConfigError::invalid(
                    key("prefix"),
                    "must be an absolute path like `/api/stores`, without a trailing `/`, dot segments or escapes",
                ));
            }
            check_url(&key("upstream"), &route.upstream)?;
            if let Some(path) = &route.openapi
                && (!path.starts_with('/') || crate::path::check_path(path).is_err())
            {
                return Err(ConfigError::invalid(
                    key("openapi"),
                    "must be an absolute path like `/openapi.json`, without dot segments or escapes",
                ));
            }
            if route.timeout.0.is_zero() {
                return Err(ConfigError::invalid(key("timeout"), "must be more than 0"));
            }
            if route.scopes.is_empty() {
                return Err(ConfigError::invalid(
                    key("scopes"),
                    "lists no method: every request would be refused",
                ));
            }
            for (method, scopes) in route.scopes.iter().chain(&route.segment_scopes) {
                if scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
                    return Err(ConfigError::invalid(
                        key(&format!("scopes.{method}")),
                        "scopes are single words without spaces",
                    ));
                }
            }
            for method in route.scopes.keys() {
                if !METHODS.contains(&method.as_str()) {
                    return Err(ConfigError::invalid(
                        key(&format!("scopes.{method}")),
                        format!("unknown method (one of {})", METHODS.join(", ")),
                    ));
                }
            }
            if let Some(rate) = &route.rate_limit {
                check_rate(&key("rate_limit"), rate)?;
            }
            if !names.insert(route.name()) {
                return Err(ConfigError::invalid(
                    key("name"),
                    format!("`{}` is used by two routes", route.name()),
                ));
            }
        }
        Ok(())
    }
}

impl RouteConfig {
    /// The route's name: `name`, or the prefix's last segment.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.prefix
                .rsplit('/')
                .find(|s| !s.is_empty())
                .unwrap_or("root")
                .to_owned()
        })
    }
}

/// The default routes: `/api/stores` (and `/api/hardware`).
pub fn default_routes(upstreams: &UpstreamsConfig) -> Vec<RouteConfig> {
    let scopes = |read: &str, write: &str| -> BTreeMap<String, Vec<String>> {
        [
            ("GET", read),
            ("HEAD", read),
            ("POST", write),
            ("PUT", write),
            ("PATCH", write),
        ]
        .into_iter()
        .map(|(m, s)| (m.to_owned(), vec![s.to_owned()]))
        .collect()
    };
    let mut routes = vec![RouteConfig {
        name: Some("stores".into()),
        prefix: "/api/stores".into(),
        upstream: upstreams.store.clone(),
        breaker: Preset::StoreService.policy(),
        timeout: DurationText(Duration::from_secs(15)),
        scopes: scopes("stores:read", "stores:write"),
        segment_scopes: [("secrets".to_owned(), vec!["stores:secrets".to_owned()])].into(),
        rate_limit: None,
        sensitive_segments: vec!["secrets".to_owned()],
        openapi: Some("/openapi.json".into()),
    }];
    if let Some(hardware) = &upstreams.hardware {
        routes.push(RouteConfig {
            name: Some("hardware".into()),
            prefix: "/api/hardware".into(),
            upstream: hardware.clone(),
            breaker: Preset::HardwareService.policy(),
            timeout: DurationText(Duration::from_secs(30)),
            scopes: scopes("hardware:read", "hardware:write"),
            segment_scopes: BTreeMap::new(),
            rate_limit: None,
            sensitive_segments: Vec::new(),
            openapi: None,
        });
    }
    routes
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| ConfigError::invalid(key, format!("not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(ConfigError::invalid(
            key,
            "must be an http:// or https:// URL with a host",
        ));
    }
    Ok(())
}

/// `[degraded.jetstream]` with `queue_backend = "jetstream"`.
fn check_jetstream(degraded: &DegradedConfig) -> Result<(), ConfigError> {
    let js = &degraded.jetstream;
    if js.urls.is_empty() {
        return Err(ConfigError::invalid(
            "degraded.jetstream.urls",
            "lists no NATS server (queue_backend = \"jetstream\" needs at least one)",
        ));
    }
    for (i, url) in js.urls.iter().enumerate() {
        let key = format!("degraded.jetstream.urls[{i}]");
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| ConfigError::invalid(&key, format!("not a URL: {e}")))?;
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        if !matches!(uri.scheme_str(), Some("nats" | "tls")) || authority.is_empty() {
            return Err(ConfigError::invalid(
                key,
                "must be a nats:// or tls:// URL with a host",
            ));
        }
        if authority.contains('@') {
            // A credential in the file would be printed with it.
            return Err(ConfigError::invalid(
                key,
                "must not carry credentials (the token is GATEWAY_NATS_TOKEN)",
            ));
        }
    }
    if !matches!(js.replicas, 1 | 3 | 5) {
        return Err(ConfigError::invalid(
            "degraded.jetstream.replicas",
            "must be 1, 3 or 5",
        ));
    }
    let prefix_ok = !js.prefix.is_empty()
        && js.prefix.len() <= 32
        && js
            .prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !prefix_ok {
        return Err(ConfigError::invalid(
            "degraded.jetstream.prefix",
            "must be 1 to 32 characters of a-z, 0-9, `_` and `-`",
        ));
    }
    for (key, value) in [
        ("degraded.jetstream.publish_timeout", js.publish_timeout),
        ("degraded.jetstream.lease", js.lease),
    ] {
        if value.0.is_zero() {
            return Err(ConfigError::invalid(key, "must be more than 0"));
        }
    }
    Ok(())
}

fn check_rate(key: &str, rate: &RateLimitConfig) -> Result<(), ConfigError> {
    if rate.per_second == 0 {
        return Err(ConfigError::invalid(
            format!("{key}.per_second"),
            "must be more than 0",
        ));
    }
    if rate.burst == 0 {
        return Err(ConfigError::invalid(
            format!("{key}.burst"),
            "must be more than 0",
        ));
    }
    if rate.max_clients == 0 {
        return Err(ConfigError::invalid(
            format!("{key}.max_clients"),
            "must be more than 0",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [auth]
        jwks_url = "http://127.0.0.1:8200/v1/identity/oidc/.well-known/keys"
        issuer = "http://127.0.0.1:8200/v1/identity/oidc"
        audiences = ["gateway"]
    "#;

    #[test]
    fn minimal_file_gets_the_default_routes() {
        let config = Config::parse(MINIMAL)
            .unwrap()
            .with_upstreams(None, Some("http://127.0.0.1:3100".into()))
            .unwrap();
        let names: Vec<_> = config.routes.iter().map(RouteConfig::name).collect();
        assert_eq!(names, ["stores", "hardware"]);
        assert_eq!(config.auth.max_age.0, Duration::from_secs(60));
        assert_eq!(config.auth.breaker.failure_rate_threshold(), 30.0);
        assert_eq!(config.routes[1].breaker.failure_rate_threshold(), 40.0);
    }

    #[test]
    fn errors_name_the_bad_key() {
        let cases = [
            (
                MINIMAL.replace("audiences = [\"gateway\"]", "audiences = []"),
                "auth.audiences",
            ),
            (
                MINIMAL.replace(
                    "http://127.0.0.1:8200/v1/identity/oidc/.well-known/keys",
                    "ftp://x",
                ),
                "auth.jwks_url",
            ),
            (format!("{MINIMAL}\nmax_age = \"ten\""), "ten"),
            (format!("{MINIMAL}\nbogus = 1"), "bogus"),
            (
                format!("{MINIMAL}\n[rate_limit]\nburst = 0"),
                "rate_limit.burst",
            ),
            (
                format!(
                    "{MINIMAL}\n[[routes]]\nprefix = \"/api/../x\"\nupstream = \"http://a\"\nscopes = {{ GET = [\"r\"] }}"
                ),
                "routes[0].prefix",
            ),
            (
                format!(
                    "{MINIMAL}\n[[routes]]\nprefix = \"/api/x\"\nupstream = \"nope\"\nscopes = {{ GET = [\"r\"] }}"
                ),
                "routes[0].upstream",
            ),
            (
                format!(
                    "{MINIMAL}\n[[routes]]\nprefix = \"/api/x\"\nupstream = \"http://a\"\nopenapi = \"openapi.json\"\nscopes = {{ GET = [\"r\"] }}"
                ),
                "routes[0].openapi",
            ),
            (
                format!(
                    "{MINIMAL}\n[[routes]]\nprefix = \"/api/x\"\nupstream = \"http://a\"\nscopes = {{ FETCH = [\"r\"] }}"
                ),
                "routes[0].scopes.FETCH",
            ),
            (
                format!(
                    "{MINIMAL}\n[[routes]]\nprefix = \"/api/x\"\nupstream = \"http://a\"\nscopes = {{ GET = [\"r\"] }}\nbreaker = {{ preset = \"nope\" }}"
                ),
                "nope",
            ),
            (
                format!("{MINIMAL}\nbreaker = {{ preset = \"store-service\" }}"),
                "auth.breaker",
            ),
        ];
        for (text, key) in cases {
            let error = Config::parse(&text).expect_err(key).to_string();
            assert!(error.contains(key), "{key}: {error}");
        }
    }

    #[test]
    fn the_jetstream_backend_is_checked() {
        let js = |section: &str| {
            format!(
                "{MINIMAL}\n[degraded]\nqueue_backend = \"jetstream\"\n[degraded.jetstream]\n{section}"
            )
        };
        let config = Config::parse(&js(r#"urls = ["nats://a:4222", "tls://b:4222"]"#)).unwrap();
        let section = &config.degraded.jetstream;
        assert_eq!(config.degraded.queue_backend, QueueBackend::Jetstream);
        assert_eq!((section.replicas, section.prefix.as_str()), (3, "gateway"));
        assert_eq!(section.publish_timeout.0, Duration::from_secs(15));
        assert_eq!(section.lease.0, Duration::from_secs(30));
        for (section, key) in [
            ("", "degraded.jetstream.urls"),
            (r#"urls = ["http://a:4222"]"#, "degraded.jetstream.urls[0]"),
            (
                r#"urls = ["nats://u:secret@a:4222"]"#,
                "degraded.jetstream.urls[0]",
            ),
            (
                r#"urls = ["nats://a"]
replicas = 2"#,
                "degraded.jetstream.replicas",
            ),
            (
                r#"urls = ["nats://a"]
prefix = "a.b""#,
                "degraded.jetstream.prefix",
            ),
            (
                r#"urls = ["nats://a"]
lease = "0s""#,
                "degraded.jetstream.lease",
            ),
            (
                r#"urls = ["nats://a"]
publish_timeout = "0s""#,
                "degraded.jetstream.publish_timeout",
            ),
        ] {
            let error = Config::parse(&js(section)).expect_err(key).to_string();
            assert!(error.contains(key), "{key}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
        // The redb default ignores the section.
        let redb = format!("{MINIMAL}\n[degraded.jetstream]\nreplicas = 2");
        assert_eq!(
            Config::parse(&redb).unwrap().degraded.queue_backend,
            QueueBackend::Redb
        );
    }

    #[test]
    fn the_production_fleet_file_is_valid() {
        // deploy/'s prod overlay: the queue on NATS JetStream.
        let text = include_str!("../../../deploy/k8s/components/jetstream-queue/gateway.toml");
        let config = Config::parse(text).unwrap();
        assert_eq!(config.degraded.queue_backend, QueueBackend::Jetstream);
        assert_eq!(config.degraded.queue_key_source, QueueKeySource::Env);
        assert_eq!(config.degraded.jetstream.replicas, 3);
    }

    #[test]
    fn the_example_file_is_valid() {
        let config = Config::parse(include_str!("../gateway.example.toml")).unwrap();
        let defaults = Config::parse(MINIMAL)
            .unwrap()
            .with_upstreams(None, None)
            .unwrap();
        assert_eq!(config.routes.len(), 1);
        let (example, default) = (&config.routes[0], &defaults.routes[0]);
        assert_eq!(example.name(), default.name());
        assert_eq!(example.scopes, default.scopes);
        assert_eq!(example.segment_scopes, default.segment_scopes);
        assert_eq!(example.timeout, default.timeout);
    }

    #[test]
    fn durations_in_the_file_read_as_before() {
        let leeway = |value: &str| {
            Config::parse(&format!("{MINIMAL}\nleeway = {value}")).map(|c| c.auth.leeway.0)
        };
        for (value, expected) in [
            ("\"250ms\"", 250),
            ("\"10s\"", 10_000),
            ("\"1.5m\"", 90_000),
            ("\"2h\"", 7_200_000),
            ("\"3\"", 3000),
            ("3", 3000),
        ] {
            let read = leeway(value).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(read.as_millis(), expected, "{value}");
        }
        for value in ["\"5 parsecs\"", "\"-1s\"", "-1", "1.5"] {
            assert!(leeway(value).is_err(), "{value}");
        }
    }
}
