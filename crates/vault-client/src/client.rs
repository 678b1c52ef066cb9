//! The client: one HTTP connection pool, one breaker, one token, and the
//! request pipeline every call goes through (path check → token → breaker →
//! HTTP → bounded body → JSON → retry decision).

use std::fmt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant as StdInstant};

use breaker::{Breaker, CallError, Classify, Outcome};
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use serde_json::Value;
use tokio::sync::{Mutex, broadcast, watch};
use tracing::Instrument;

use crate::auth::AuthMethod;
use crate::config::{Config, ConfigError};
use crate::error::{Error, Result};
use crate::events::Event;
use crate::fallback::Cache;
use crate::json::{self, Answer};
use crate::path::ApiPath;
use crate::retry::{Idempotence, may_retry, parse_retry_after};
use crate::secret::{ExposeSecret, SecretString};
use crate::token::{self, Authority, Grant, Lifetime, TokenCell};

/// Which token a call sends.
#[derive(Clone, Copy)]
pub(crate) enum CallAuth<'a> {
    /// The client's token (if any), with a new login on an expired token.
    Client,
    /// No token (logins, `sys/health`).
    None,
    /// This token (renew-self, unwrap).
    Token(&'a SecretString),
}

/// One API call.
pub(crate) struct Call<'a> {
    /// The operation, for spans and metrics (`kv2.read`).
    pub(crate) op: &'static str,
    /// The HTTP method.
    pub(crate) method: Method,
    /// The checked API path.
    pub(crate) path: &'a ApiPath,
    /// Query parameters (`version`, `list`).
    pub(crate) query: &'a [(&'a str, String)],
    /// The JSON body, if any.
    pub(crate) body: Option<&'a Value>,
    /// The body's content type (JSON, or merge patch for KV v2 patches).
    pub(crate) content_type: &'static str,
    /// Which token to send.
    pub(crate) auth: CallAuth<'a>,
    /// Whether the call may run twice.
    pub(crate) idempotence: Idempotence,
    /// Ask Vault to wrap the answer for this long.
    pub(crate) wrap_ttl: Option<Duration>,
    /// Error statuses whose answer the caller reads itself (health codes,
    /// Transit batches with failed items).
    pub(crate) answer_statuses: &'a [u16],
}

impl<'a> Call<'a> {
    /// A call with the default retry rule for its method and path (see
    /// [`default_idempotence`]); calls that are safe to repeat although
    /// their method is not say so explicitly.
    pub(crate) fn new(op: &'static str, method: Method, path: &'a ApiPath) -> Self {
        let idempotence = default_idempotence(&method, path);
        Call {
            op,
            method,
            path,
            query: &[],
            body: None,
            content_type: "application/json",
            auth: CallAuth::Client,
            idempotence,
            wrap_ttl: None,
            answer_statuses: &[],
        }
    }
}

/// The retry rule of a call unless it says otherwise: GET, LIST, HEAD and
/// DELETE may run twice, except reads of `*/creds/*` (each read creates a
/// user, a key or a certificate); every other method (POST, PUT, PATCH) is
/// not retried once it may have reached Vault, since it may create
/// something (a token, a key version, a KV version).
pub(crate) fn default_idempotence(method: &Method, path: &ApiPath) -> Idempotence {
    let reads = matches!(method.as_str(), "GET" | "LIST" | "HEAD" | "DELETE");
    if reads && !path.segments().any(|segment| segment == "creds") {
        Idempotence::Safe
    } else {
        Idempotence::NotAfterSent
    }
}

/// An answer: its status and JSON body (`None` when empty).
#[derive(Debug)]
pub(crate) struct Reply {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The JSON body.
    pub(crate) body: Option<Value>,
}

/// The client's shared state.
pub(crate) struct Inner {
    /// The configuration.
    pub(crate) config: Config,
    /// The HTTP client (connection pool, TLS).
    http: reqwest::Client,
    /// `<address>/v1/`.
    base: Url,
    /// The breaker every attempt goes through.
    pub(crate) breaker: Breaker,
    /// The token, shared with the token manager.
    pub(crate) token: Arc<TokenCell>,
    /// Client events.
    pub(crate) events: broadcast::Sender<Event>,
    /// Last known good values.
    pub(crate) cache: Cache,
    /// The AppRole secret id after unwrapping (a wrapping token works once).
    pub(crate) unwrapped_secret_id: Mutex<Option<SecretString>>,
    /// Stops the token manager.
    shutdown: watch::Sender<bool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// An async Vault/OpenBao client. Cheap to clone: clones share the HTTP
/// connections, the circuit breaker, the token (and its renewal) and the
/// last-known-good cache. `Debug` never shows the token.
///
/// Creating a client spawns its token manager on the current tokio runtime;
/// it stops when the last clone is dropped or [`Client::shutdown`] is called.
#[derive(Clone)]
pub struct Client {
    /// The state every clone shares.
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.token.current();
        f.debug_struct("Client")
            .field("address", &self.inner.config.address.as_str())
            .field("auth", &self.inner.config.auth)
            .field("token", &state.token.as_ref().map(|_| "[REDACTED]"))
            .field("token_generation", &state.generation)
            .field("breaker", &self.inner.breaker.state())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds the client and gets its first token: logs in (AppRole,
    /// Kubernetes) or looks the configured token up to learn its TTL.
    ///
    /// If Vault is unavailable (connection refused, 5xx, breaker open) the
    /// client is still returned, and its token manager keeps trying with a
    /// capped back-off (an [`Event::AuthFailed`] each time); reads may then
    /// be served from the environment fallback. Any other failure (bad
    /// credentials, bad TLS files) is returned.
    pub async fn new(config: Config) -> Result<Client> {
        let client = Client::build(config)?;
        let inner = &client.inner;
        let state = inner.token.current();
        let first = if inner.config.auth.can_login() {
            inner
                .token
                .relogin(inner.as_ref(), state.generation)
                .await
                .map(drop)
        } else if let Some(token) = &state.token {
            inner.lookup_self(token).await.map(|grant| {
                inner.token.set_lifetime(
                    state.generation,
                    token::fresh(&grant, tokio::time::Instant::now()),
                )
            })
        } else {
            Ok(())
        };
        match first {
            Ok(()) => {}
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "Vault unavailable at start; will keep trying");
                let _ = inner.events.send(Event::AuthFailed {
                    operation: if inner.config.auth.can_login() {
                        "login"
                    } else {
                        "lookup"
                    },
                    error: Arc::new(e),
                    retry_in: Duration::ZERO,
                });
            }
            // A root-like token that cannot look itself up is still usable.
            Err(e) if e.is_forbidden() && !inner.config.auth.can_login() => {
                tracing::warn!(error = %e, "token lookup-self refused; renewal disabled");
                inner.token.set_lifetime(state.generation, Lifetime::Never);
            }
            Err(e) => return Err(e),
        }
        client.spawn_manager();
        Ok(client)
    }

    fn build(config: Config) -> Result<Client> {
        crate::tls::install_crypto_provider();
        let tls = crate::tls::client_config(&config.tls)?;
        let connect_timeout = config.client_timeout.min(Duration::from_secs(10));
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(config.client_timeout)
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("vault-client-rs/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .build()
            .map_err(|e| ConfigError::Tls(format!("HTTP client: {e}")))?;
        let mut base = config.address.clone();
        {
            let mut segments = base
                .path_segments_mut()
                .map_err(|()| ConfigError::Address {
                    value: config.address.to_string(),
                    reason: "cannot be a base URL".into(),
                })?;
            segments.pop_if_empty().push("v1");
        }
        let breaker = Breaker::new(&config.breaker_name, config.breaker_policy.clone());
        let token = match &config.auth {
            AuthMethod::Token(token) => {
                TokenCell::new(Some(token.clone()), Lifetime::Unknown, config.renewal.retry)
            }
            _ => TokenCell::new(None, Lifetime::Unknown, config.renewal.retry),
        };
        let (events, _) = broadcast::channel(256);
        let (shutdown, _) = watch::channel(false);
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                http,
                base,
                breaker,
                token: Arc::new(token),
                events,
                cache: Cache::default(),
                unwrapped_secret_id: Mutex::new(None),
                shutdown,
            }),
        })
    }

    fn spawn_manager(&self) {
        let inner = &self.inner;
        if matches!(inner.config.auth, AuthMethod::None) {
            return;
        }
        let authority = WeakInner(Arc::downgrade(inner));
        tokio::spawn(token::run(
            Arc::clone(&inner.token),
            authority,
            inner.config.renewal,
            inner.shutdown.subscribe(),
        ));
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The circuit breaker every call goes through: read its
    /// [`snapshot`](Breaker::snapshot), [`subscribe`](Breaker::subscribe) to
    /// its transitions, or control it ([`force_open`](Breaker::force_open),
    /// [`reset`](Breaker::reset), ...).
    pub fn breaker(&self) -> &Breaker {
        &self.inner.breaker
    }

    /// Subscribes to the client's [`Event`]s (logins, renewals, fallbacks).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// The TTL left on the client token (`None`: it never expires, or it is
    /// not known yet).
    pub fn token_ttl(&self) -> Option<Duration> {
        self.inner
            .token
            .current()
            .remaining(tokio::time::Instant::now())
    }

    /// How many times the client has logged in.
    pub fn token_generation(&self) -> u64 {
        self.inner.token.current().generation
    }

    /// Logs in again now (AppRole, Kubernetes), unless a login is already
    /// running, in which case its result is shared. Unlike the logins that
    /// requests trigger on an expired token, an explicit login is sent even
    /// while the back-off after a failed login runs.
    pub async fn login(&self) -> Result<()> {
        let seen = self.inner.token.current().generation;
        self.inner
            .token
            .relogin_now(self.inner.as_ref(), seen)
            .await
            .map(drop)
    }

    /// Stops the token manager. Calls already made keep working; the token is
    /// no longer renewed.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
    }

    /// Exports the breaker's state and counters to the `metrics` recorder
    /// (call it before each scrape). This crate's own metrics are recorded
    /// as they happen.
    #[cfg(feature = "metrics")]
    pub fn export_metrics(&self) {
        self.inner.breaker.export_metrics();
    }

    /// Reads `path` (GET) and returns the whole JSON answer, or `None` for an
    /// empty one. The answer may hold secrets: don't log it.
    pub async fn read(&self, path: &str) -> Result<Option<Value>> {
        let path = ApiPath::new(path)?;
        Ok(self
            .inner
            .send(Call::new("logical.read", Method::GET, &path))
            .await?
            .body)
    }

    /// Writes `body` to `path` (POST) and returns the JSON answer, if any.
    pub async fn write(&self, path: &str, body: &Value) -> Result<Option<Value>> {
        let path = ApiPath::new(path)?;
        let call = Call {
            body: Some(body),
            ..Call::new("logical.write", Method::POST, &path)
        };
        Ok(self.inner.send(call).await?.body)
    }

    /// Deletes `path`.
    pub async fn delete(&self, path: &str) -> Result<()> {
        let path = ApiPath::new(path)?;
        self.inner
            .send(Call::new("logical.delete", Method::DELETE, &path))
            .await
            .map(drop)
    }

    /// Lists the keys under `path` (empty if there are none).
    pub async fn list(&self, path: &str) -> Result<Vec<String>> {
        let path = ApiPath::new(path)?;
        self.inner.list(&path, "logical.list").await
    }

    /// Writes `body` to `path` asking Vault to wrap the answer for `ttl`
    /// (response wrapping): the answer is a single-use wrapping token, to be
    /// handed to whoever should unwrap it (e.g. an AppRole secret id for
    /// [`AuthMethod::approle_wrapped`]).
    pub async fn write_wrapped(&self, path: &str, body: &Value, ttl: Duration) -> Result<WrapInfo> {
        let path = ApiPath::new(path)?;
        let call = Call {
            body: Some(body),
            wrap_ttl: Some(ttl),
            // A second try would mint a second wrapped secret.
            idempotence: Idempotence::NotAfterSent,
            ..Call::new("logical.write_wrapped", Method::POST, &path)
        };
        let reply = self.inner.send(call).await?;
        let body = reply.body.unwrap_or_default();
        let answer = Answer::new(path.as_str(), &body);
        Ok(WrapInfo {
            token: SecretString::from(answer.str("/wrap_info/token")?.to_owned()),
            accessor: answer
                .opt_str("/wrap_info/accessor")?
                .unwrap_or_default()
                .to_owned(),
            ttl: answer.ttl("/wrap_info/ttl")?,
            creation_path: answer.str("/wrap_info/creation_path")?.to_owned(),
        })
    }

    /// Unwraps a wrapping token after checking it was created at
    /// `expected_creation_path` (so an intercepted-and-replaced token is
    /// refused with [`Error::WrappingMismatch`]). Returns the wrapped answer.
    /// Never retried once sent: a wrapping token works once.
    pub async fn unwrap(
        &self,
        wrapping_token: &SecretString,
        expected_creation_path: &str,
    ) -> Result<Value> {
        let expected = expected_creation_path.trim_matches('/');
        self.inner
            .unwrap_checked(wrapping_token, |actual| actual == expected, expected)
            .await
    }
}

/// A response-wrapping token and what Vault said about it.
#[derive(Clone)]
pub struct WrapInfo {
    /// The single-use wrapping token.
    pub token: SecretString,
    /// Its accessor (not secret).
    pub accessor: String,
    /// How long it is valid.
    pub ttl: Duration,
    /// The path whose answer it wraps.
    pub creation_path: String,
}

impl fmt::Debug for WrapInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrapInfo")
            .field("token", &"[REDACTED]")
            .field("accessor", &self.accessor)
            .field("ttl", &self.ttl)
            .field("creation_path", &self.creation_path)
            .finish()
    }
}

/// How the breaker judges one attempt: transport failures, timeouts, 5xx
/// (a sealed server's 503 included) and unreadable answers count against
/// Vault; other 4xx answers show a healthy server. A 429 says nothing about
/// Vault's health (it is throttling this client, which then waits as asked),
/// so it is not counted.
struct VaultClassifier;

impl Classify<Reply, Error> for VaultClassifier {
    fn classify(&self, result: &Result<Reply, Error>) -> Outcome {
        match result {
            Ok(reply) if reply.status >= 500 && reply.status != 501 => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(Error::Api { status: 429, .. }) => Outcome::Ignore,
            Err(Error::Api { status, .. }) if *status >= 500 => Outcome::Failure,
            Err(Error::Api { .. } | Error::CasMismatch { .. }) => Outcome::Success,
            Err(
                Error::Connect { .. }
                | Error::Transport { .. }
                | Error::Timeout { .. }
                | Error::Tls { .. }
                | Error::Decode { .. }
                | Error::MissingField { .. },
            ) => Outcome::Failure,
            Err(_) => Outcome::Ignore,
        }
    }
}

impl Inner {
    /// Sends a call once (no retry), through the breaker: health probes
    /// report what they see.
    pub(crate) async fn send_once_health(&self, call: Call<'_>) -> Result<Reply> {
        let span = tracing::debug_span!("vault.request", op = call.op, path = call.path.as_str());
        self.attempt(&call, None).instrument(span).await
    }

    /// Sends a call with retries. Every attempt goes through the breaker.
    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Reply> {
        let span = tracing::debug_span!(
            "vault.request",
            op = call.op,
            method = %call.method,
            path = call.path.as_str(),
            status = tracing::field::Empty,
            attempts = tracing::field::Empty,
        );
        self.send_with_retries(call).instrument(span).await
    }

    async fn send_with_retries(&self, call: Call<'_>) -> Result<Reply> {
        let mut retries = 0u32;
        let mut relogged = false;
        loop {
            // The client token, logging in first if it has expired.
            let state = self.token.current();
            let mut seen = state.generation;
            let mut token = match call.auth {
                CallAuth::Client => state.token.clone(),
                CallAuth::None => None,
                CallAuth::Token(token) => Some(token.clone()),
            };
            if matches!(call.auth, CallAuth::Client)
                && self.config.auth.can_login()
                && (state.token.is_none() || state.expired(tokio::time::Instant::now()))
            {
                let fresh = Box::pin(self.token.relogin(self, seen)).await?;
                seen = fresh.generation;
                token = fresh.token.clone();
            }
            let result = self.attempt(&call, token.as_ref()).await;
            let span = tracing::Span::current();
            span.record("attempts", retries + 1);
            let error = match result {
                Ok(reply) => {
                    span.record("status", reply.status);
                    return Ok(reply);
                }
                Err(error) => error,
            };
            if let Some(status) = error.status() {
                span.record("status", status);
            }
            // A 403 with the client token: if the token itself is no longer
            // valid (lookup-self refused too), log in once and try again.
            if error.is_forbidden()
                && matches!(call.auth, CallAuth::Client)
                && self.config.auth.can_login()
                && !relogged
                && let Some(token) = &token
            {
                relogged = true;
                let valid = Box::pin(self.lookup_self(token)).await;
                if matches!(&valid, Err(e) if e.is_forbidden()) {
                    tracing::info!("Vault refused the client token; logging in again");
                    Box::pin(self.token.relogin(self, seen)).await?;
                    continue;
                }
            }
            if retries >= self.config.max_retries || !may_retry(&error, call.idempotence) {
                return Err(error);
            }
            let mut wait = self.config.retry_backoff.delay(retries);
            if let Some(asked) = error.retry_after() {
                if asked > self.config.max_retry_after {
                    return Err(error);
                }
                wait = wait.max(asked);
            }
            tracing::debug!(error = %error, retry_in = ?wait, "Vault request failed; retrying");
            tokio::time::sleep(wait).await;
            retries += 1;
        }
    }

    /// One attempt through the breaker.
    async fn attempt(&self, call: &Call<'_>, token: Option<&SecretString>) -> Result<Reply> {
        let started = StdInstant::now();
        let result = self
            .breaker
            .run_with(&VaultClassifier, self.send_once(call, token))
            .await;
        let (result, outcome) = match result {
            Ok(reply) => (Ok(reply), "ok"),
            Err(CallError::Inner(error)) => (Err(error), "error"),
            Err(CallError::Rejected(rejected)) => (
                Err(Error::CircuitOpen {
                    path: call.path.to_string(),
                    rejected,
                }),
                "rejected",
            ),
            Err(CallError::Timeout(after)) => (
                Err(Error::Timeout {
                    path: call.path.to_string(),
                    after,
                }),
                "timeout",
            ),
            Err(other) => (
                Err(Error::InvalidArgument(format!("breaker: {other}"))),
                "error",
            ),
        };
        crate::metrics::request(call.op, outcome, started.elapsed());
        result
    }

    fn url(&self, path: &ApiPath, query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.extend(path.segments());
        }
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (key, value) in query {
                pairs.append_pair(key, value);
            }
        }
        url
    }

    async fn send_once(&self, call: &Call<'_>, token: Option<&SecretString>) -> Result<Reply> {
        let path = call.path.as_str();
        let mut request = self
            .http
            .request(call.method.clone(), self.url(call.path, call.query))
            .header("X-Vault-Request", "true");
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token.expose_secret())
                .map_err(|_| Error::NoToken("the token is not a valid header value".into()))?;
            value.set_sensitive(true);
            request = request.header("X-Vault-Token", value);
        }
        if let Some(namespace) = &self.config.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(ttl) = call.wrap_ttl {
            request = request.header("X-Vault-Wrap-TTL", format!("{}s", ttl.as_secs().max(1)));
        }
        if let Some(body) = call.body {
            let bytes = serde_json::to_vec(body)
                .map_err(|e| Error::InvalidArgument(format!("request body: {e}")))?;
            request = request.header(CONTENT_TYPE, call.content_type).body(bytes);
        }
        let mut response = request.send().await.map_err(|e| self.send_error(path, e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let limit = self.config.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(Error::BodyTooLarge {
                path: path.to_owned(),
                limit,
            });
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.send_error(path, e))?
        {
            if bytes.len() + chunk.len() > limit {
                return Err(Error::BodyTooLarge {
                    path: path.to_owned(),
                    limit,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        let success = (200..300).contains(&status) || call.answer_statuses.contains(&status);
        if success {
            let body = json::parse(path, &bytes)?;
            return Ok(Reply { status, body });
        }
        // An error answer: its body is only for the message.
        let body = json::parse(path, &bytes).ok().flatten();
        let errors = json::error_strings(body.as_ref());
        if status == 400
            && errors
                .iter()
                .any(|e| e.contains("check-and-set parameter did not match"))
        {
            return Err(Error::CasMismatch {
                path: path.to_owned(),
            });
        }
        Err(Error::Api {
            method: method_name(&call.method),
            path: path.to_owned(),
            status,
            errors,
            retry_after,
        })
    }

    fn send_error(&self, path: &str, error: reqwest::Error) -> Error {
        if let Some(reason) = crate::tls::tls_failure(&error) {
            return Error::Tls {
                path: path.to_owned(),
                reason,
            };
        }
        if error.is_connect() {
            return Error::Connect {
                path: path.to_owned(),
                source: error,
            };
        }
        if error.is_timeout() {
            return Error::Timeout {
                path: path.to_owned(),
                after: self.config.client_timeout,
            };
        }
        Error::Transport {
            path: path.to_owned(),
            source: error,
        }
    }

    /// A LIST; a 404 is an empty list.
    pub(crate) async fn list(&self, path: &ApiPath, op: &'static str) -> Result<Vec<String>> {
        let list = Method::from_bytes(b"LIST").unwrap_or(Method::GET);
        let query = [("list", "true".to_owned())];
        let call = Call {
            query: if list == Method::GET { &query } else { &[] },
            ..Call::new(op, list, path)
        };
        match self.send(call).await {
            Ok(reply) => {
                let body = reply.body.unwrap_or_default();
                Answer::new(path.as_str(), &body).strings("/data/keys")
            }
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

fn method_name(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "LIST" => "LIST",
        _ => "OTHER",
    }
}

/// A boxed login future: a login sends requests, whose pipeline may log in,
/// so the future's type must be named rather than inferred.
type LoginFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Grant>> + Send + 'a>>;

impl Authority for Inner {
    fn can_login(&self) -> bool {
        self.config.auth.can_login()
    }

    fn login(&self) -> impl std::future::Future<Output = Result<Grant>> + Send {
        let future: LoginFuture<'_> = Box::pin(Inner::login(self));
        future
    }

    async fn renew(&self, token: &SecretString, increment: Duration) -> Result<Grant> {
        self.renew_self(token, increment).await
    }

    async fn lookup(&self, token: &SecretString) -> Result<Grant> {
        self.lookup_self(token).await
    }

    fn emit(&self, event: Event) {
        Inner::emit(self, event);
    }
}

/// The token manager's handle on the client: it must not keep the client
/// alive.
struct WeakInner(
    /// The client, if still alive.
    Weak<Inner>,
);

impl WeakInner {
    fn get(&self) -> Result<Arc<Inner>> {
        self.0.upgrade().ok_or(Error::Shutdown)
    }
}

impl Authority for WeakInner {
    fn can_login(&self) -> bool {
        self.0
            .upgrade()
            .is_some_and(|inner| inner.config.auth.can_login())
    }

    async fn login(&self) -> Result<Grant> {
        self.get()?.login().await
    }

    async fn renew(&self, token: &SecretString, increment: Duration) -> Result<Grant> {
        self.get()?.renew_self(token, increment).await
    }

    async fn lookup(&self, token: &SecretString) -> Result<Grant> {
        self.get()?.lookup_self(token).await
    }

    fn emit(&self, event: Event) {
        if let Some(inner) = self.0.upgrade() {
            inner.emit(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(method: &str, path: &str) -> Idempotence {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        default_idempotence(&method, &ApiPath::new(path).unwrap())
    }

    #[test]
    fn only_reads_that_create_nothing_are_retried_after_they_were_sent() {
        assert_eq!(rule("GET", "secret/data/app"), Idempotence::Safe);
        assert_eq!(rule("LIST", "secret/metadata"), Idempotence::Safe);
        assert_eq!(rule("DELETE", "secret/data/app"), Idempotence::Safe);
        // Each read creates a database user.
        assert_eq!(rule("GET", "database/creds/app"), Idempotence::NotAfterSent);
        assert_eq!(rule("GET", "aws/creds/deploy"), Idempotence::NotAfterSent);
        // Writes may create something: a token, a KV version, a key version.
        assert_eq!(rule("POST", "auth/token/create"), Idempotence::NotAfterSent);
        assert_eq!(rule("POST", "secret/data/app"), Idempotence::NotAfterSent);
        assert_eq!(
            rule("PUT", "transit/keys/k/rotate"),
            Idempotence::NotAfterSent
        );
        assert_eq!(rule("PATCH", "secret/data/app"), Idempotence::NotAfterSent);
        // A timeout after sending is therefore not retried for them.
        let timeout = Error::Timeout {
            path: "auth/token/create".into(),
            after: Duration::from_secs(1),
        };
        assert!(!may_retry(&timeout, rule("POST", "auth/token/create")));
        assert!(may_retry(&timeout, rule("GET", "secret/data/app")));
    }
}
