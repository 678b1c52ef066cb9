#![doc = include_str!("../README.md")]

mod error;
mod token;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use gateway_api::{QueuedState, RequestStatus, StaleMeta};
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use store_domain::{
    CreateStore, HistoryQuery, IDEMPOTENCY_KEY_HEADER, Problem, SecretsResponse, Store,
    StoreHistory, StorePage, StoreQuery, StoreResponse, StoreStatus, UpdateStore, etag, parse_etag,
};
use uuid::Uuid;

pub use error::ClientError;
/// The gateway's own types (`RequestStatus`, `StaleMeta`), at the version
/// this client speaks.
pub use gateway_api;
/// The store API's types, at the version this client speaks.
pub use store_domain;
pub use token::{StaticToken, TokenFuture, TokenProvider};

/// The header of read-your-writes tokens.
const READ_AFTER: &str = "read-after";

/// How many stores' last seen versions a client remembers (for
/// `If-Match`); past it, it forgets them all and starts again.
const REMEMBERED_VERSIONS: usize = 4096;

/// How calls that fail in a way that may pass are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts of one call at most (1: never again).
    pub max_attempts: u32,
    /// The pause before the second attempt when the answer names none
    /// (`Retry-After`); it doubles for each later one.
    pub backoff: Duration,
    /// The longest pause, whatever `Retry-After` says; an answer asking
    /// for more is returned as the error instead.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, 200 ms doubling, at most 10 s.
    fn default() -> Self {
        Self {
            max_attempts: 4,
            backoff: Duration::from_millis(200),
            max_wait: Duration::from_secs(10),
        }
    }
}

/// Builds a [`StoreClient`].
pub struct StoreClientBuilder {
    base: String,
    tokens: Arc<dyn TokenProvider>,
    http: reqwest::Client,
    retry: RetryPolicy,
    poll: Duration,
}

impl StoreClientBuilder {
    /// How calls are tried again ([`RetryPolicy::default`]).
    #[must_use]
    pub const fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// How often a queued write's status is read while it is awaited when
    /// the gateway names no `Retry-After` (1 s).
    #[must_use]
    pub const fn poll_interval(mut self, every: Duration) -> Self {
        self.poll = every;
        self
    }

    /// The client.
    ///
    /// # Errors
    ///
    /// [`ClientError::InvalidUrl`] when the base URL is not `http(s)://…`.
    pub fn build(self) -> Result<StoreClient, ClientError> {
        let base = self.base.trim_end_matches('/').to_owned();
        if reqwest::Url::parse(&base).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
            return Err(ClientError::InvalidUrl(base));
        }
        Ok(StoreClient {
            inner: Arc::new(Inner {
                http: self.http,
                base,
                tokens: self.tokens,
                retry: self.retry,
                poll: self.poll,
                read_after: Mutex::new(None),
                versions: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// A client of the store API through the gateway. Cheap to clone: clones
/// share their connections, the last write's read-your-writes token and
/// the versions seen.
#[derive(Clone)]
pub struct StoreClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    tokens: Arc<dyn TokenProvider>,
    retry: RetryPolicy,
    poll: Duration,
    /// The `Read-After` token of the last write: later reads see it.
    read_after: Mutex<Option<String>>,
    /// The version of each store last seen (its `ETag`).
    versions: Mutex<HashMap<Uuid, i32>>,
}

impl std::fmt::Debug for StoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreClient")
            .field("base", &self.inner.base)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// What a read returned: the value, its version (`ETag`), and whether it
/// is the gateway's stale copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Read<T> {
    /// The value.
    pub value: T,
    /// The store's version, when the answer carried an `ETag`.
    pub version: Option<i32>,
    /// `Some` when the upstream was down and this is the gateway's last
    /// good copy (with why, and how old).
    pub stale: Option<StaleMeta>,
}

impl<T> Read<T> {
    /// Whether this is a stale copy.
    #[must_use]
    pub const fn is_stale(&self) -> bool {
        self.stale.is_some()
    }
}

/// A write the store service applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The store after the write.
    pub store: Store,
    /// The HTTP status (201 created, 200 updated).
    pub status: u16,
    /// `true` when this is the stored answer of an earlier attempt with
    /// the same idempotency key.
    pub replayed: bool,
}

/// What a write came to.
#[derive(Debug)]
#[must_use = "a queued write is only known to be applied once it is awaited"]
pub enum Written {
    /// Applied.
    Applied(Applied),
    /// The upstream is down: the gateway stored it and will send it;
    /// [`Pending::wait`] awaits it.
    Queued(Pending),
}

impl Written {
    /// The applied write, waiting for a queued one.
    ///
    /// # Errors
    ///
    /// As [`Pending::wait`].
    pub async fn applied(self) -> Result<Applied, ClientError> {
        match self {
            Self::Applied(applied) => Ok(applied),
            Self::Queued(pending) => pending.wait().await,
        }
    }
}

/// A queued write (`202 Accepted`), to await.
#[derive(Debug)]
pub struct Pending {
    client: StoreClient,
    /// The write's id at the gateway (`/api/requests/{id}`).
    pub request_id: Uuid,
    /// The gateway's `Retry-After`: when to ask first.
    pub retry_after: Option<Duration>,
}

impl Pending {
    /// Waits until the gateway has sent the write (reading its status,
    /// every `Retry-After` or the client's poll interval).
    ///
    /// # Errors
    ///
    /// The upstream's answer as [`ClientError::Problem`] when it refused
    /// the write, [`ClientError::QueuedWriteFailed`] when the gateway gave
    /// it up, and any error of reading its status.
    pub async fn wait(self) -> Result<Applied, ClientError> {
        self.wait_with(|_| {}).await
    }

    /// [`wait`](Self::wait), calling `progress` with each status read
    /// (a CLI shows it).
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub async fn wait_with(
        self,
        mut progress: impl FnMut(&RequestStatus),
    ) -> Result<Applied, ClientError> {
        let mut pause = self.retry_after.unwrap_or(self.client.inner.poll);
        loop {
            tokio::time::sleep(pause.min(self.client.inner.retry.max_wait)).await;
            let status = self.client.request_status(self.request_id).await?;
            progress(&status);
            match status.status {
                QueuedState::Completed => {
                    let Some(response) = status.response else {
                        return Err(ClientError::Unexpected {
                            status: 200,
                            message: "a completed write without its response".into(),
                        });
                    };
                    return self.client.applied_from(response.status, response.body);
                }
                QueuedState::Failed => {
                    return Err(ClientError::QueuedWriteFailed {
                        request_id: self.request_id,
                        reason: status.last_error.unwrap_or_default(),
                    });
                }
                QueuedState::Queued | QueuedState::Replaying => {}
            }
            pause = self.client.inner.poll;
        }
    }
}

impl StoreClient {
    /// A client of the API at `base_url` (the gateway's origin, e.g.
    /// `https://stores.example.com`), authenticated by `tokens`, sending
    /// with `http` (yours: its TLS, proxies and timeouts; this crate
    /// chooses no TLS backend, and never builds a client that could fail
    /// for want of one).
    pub fn builder(
        base_url: impl Into<String>,
        tokens: impl TokenProvider,
        http: reqwest::Client,
    ) -> StoreClientBuilder {
        StoreClientBuilder {
            base: base_url.into(),
            tokens: Arc::new(tokens),
            http,
            retry: RetryPolicy::default(),
            poll: Duration::from_secs(1),
        }
    }

    /// One page of stores (`GET /api/stores`).
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn list(&self, query: &StoreQuery) -> Result<Read<StorePage>, ClientError> {
        let path = format!("/api/stores?{}", query.to_query_string());
        self.read(&path).await
    }

    /// A store (`GET /api/stores/{id}`); its version is remembered for the
    /// next update's `If-Match`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] (`NOT_FOUND` for an unknown id).
    pub async fn get(&self, id: Uuid) -> Result<Read<Store>, ClientError> {
        let read: Read<StoreResponse> = self.read(&format!("/api/stores/{id}")).await?;
        let version = read.version.or(Some(read.value.store.version));
        if read.stale.is_none() {
            self.remember(id, read.value.store.version);
        }
        Ok(Read {
            value: read.value.store,
            version,
            stale: read.stale,
        })
    }

    /// One page of a store's history (`GET /api/stores/{id}/history`).
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn history(
        &self,
        id: Uuid,
        query: &HistoryQuery,
    ) -> Result<Read<StoreHistory>, ClientError> {
        let path = format!("/api/stores/{id}/history?{}", query.to_query_string());
        self.read(&path).await
    }

    /// A store's decrypted secrets (`GET /api/stores/{id}/secrets`; the
    /// token needs `stores:secrets`). Never a stale copy.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn secrets(&self, id: Uuid) -> Result<SecretsResponse, ClientError> {
        let read: Read<SecretsResponse> = self.read(&format!("/api/stores/{id}/secrets")).await?;
        Ok(read.value)
    }

    /// Creates a store (`POST /api/stores`) with a fresh idempotency key,
    /// repeated on each retry.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn create(&self, store: &CreateStore) -> Result<Written, ClientError> {
        self.create_with_key(store, &Uuid::new_v4().to_string())
            .await
    }

    /// [`create`](Self::create) with the caller's idempotency key (1 to
    /// 255 visible ASCII characters): the same key and body from the same
    /// subject is applied once.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn create_with_key(
        &self,
        store: &CreateStore,
        key: &str,
    ) -> Result<Written, ClientError> {
        self.write(Method::POST, "/api/stores", store, key, None)
            .await
    }

    /// Updates a store (`PUT /api/stores/{id}`) with a fresh idempotency
    /// key. The version it is based on is the body's `version`, else the
    /// last one this client saw of the store (sent as `If-Match`).
    ///
    /// # Errors
    ///
    /// [`ClientError`] (`CONCURRENCY_ERROR` when the store changed since).
    pub async fn update(&self, id: Uuid, update: &UpdateStore) -> Result<Written, ClientError> {
        self.update_with_key(id, update, &Uuid::new_v4().to_string())
            .await
    }

    /// [`update`](Self::update) with the caller's idempotency key.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn update_with_key(
        &self,
        id: Uuid,
        update: &UpdateStore,
        key: &str,
    ) -> Result<Written, ClientError> {
        let if_match = match update.version {
            Some(_) => None,
            None => self.version_of(id).map(etag),
        };
        self.write(
            Method::PUT,
            &format!("/api/stores/{id}"),
            update,
            key,
            if_match,
        )
        .await
    }

    /// Moves a store to `ACTIVE`, based on the version last seen (read it
    /// with [`get`](Self::get) first).
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn activate(&self, id: Uuid) -> Result<Written, ClientError> {
        let update = UpdateStore::default().with_status(StoreStatus::Active);
        self.update(id, &update).await
    }

    /// Moves a store to `DECOMMISSIONED`, based on the version last seen.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn decommission(&self, id: Uuid) -> Result<Written, ClientError> {
        let update = UpdateStore::default().with_status(StoreStatus::Decommissioned);
        self.update(id, &update).await
    }

    /// Where a queued write stands (`GET /api/requests/{id}`).
    ///
    /// # Errors
    ///
    /// [`ClientError`] (`NOT_FOUND` for an id this subject did not send).
    pub async fn request_status(&self, request_id: Uuid) -> Result<RequestStatus, ClientError> {
        let response = self
            .send(Method::GET, &format!("/api/requests/{request_id}"), |r| r)
            .await?;
        json_of(response).await
    }

    /// The version last seen of store `id`.
    #[must_use]
    pub fn version_of(&self, id: Uuid) -> Option<i32> {
        lock(&self.inner.versions).get(&id).copied()
    }

    fn remember(&self, id: Uuid, version: i32) {
        let mut versions = lock(&self.inner.versions);
        if versions.len() >= REMEMBERED_VERSIONS && !versions.contains_key(&id) {
            versions.clear();
        }
        versions.insert(id, version);
    }

    /// A read of `path`, after the last write (`Read-After`).
    async fn read<T: DeserializeOwned>(&self, path: &str) -> Result<Read<T>, ClientError> {
        let read_after = lock(&self.inner.read_after).clone();
        let response = self
            .send(Method::GET, path, |request| match &read_after {
                Some(token) => request.header(READ_AFTER, token),
                None => request,
            })
            .await?;
        let version = response
            .headers()
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_etag(v).ok());
        let status = response.status().as_u16();
        let mut body: Value = json_of(response).await?;
        let stale = match body.as_object_mut().and_then(|o| o.remove("meta")) {
            Some(meta) => Some(serde_json::from_value(meta).map_err(|e| unexpected(status, &e))?),
            None => None,
        };
        let value = serde_json::from_value(body).map_err(|e| unexpected(status, &e))?;
        Ok(Read {
            value,
            version,
            stale,
        })
    }

    /// A write of `body` to `path` with its idempotency key (and
    /// `If-Match`).
    async fn write(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
        key: &str,
        if_match: Option<String>,
    ) -> Result<Written, ClientError> {
        let response = self
            .send(method, path, |request| {
                let request = request.header(IDEMPOTENCY_KEY_HEADER, key).json(body);
                match &if_match {
                    Some(tag) => request.header(header::IF_MATCH, tag),
                    None => request,
                }
            })
            .await?;
        if let Some(token) = response
            .headers()
            .get(READ_AFTER)
            .and_then(|v| v.to_str().ok())
        {
            *lock(&self.inner.read_after) = Some(token.to_owned());
        }
        let status = response.status();
        if status == StatusCode::ACCEPTED {
            let retry_after = retry_after(&response);
            let accepted: gateway_api::Accepted = json_of(response).await?;
            return Ok(Written::Queued(Pending {
                client: self.clone(),
                request_id: accepted.request_id,
                retry_after,
            }));
        }
        let replayed = response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes() == b"true");
        let body: Value = json_of(response).await?;
        let mut applied = self.applied_from(status.as_u16(), body)?;
        applied.replayed = replayed;
        Ok(Written::Applied(applied))
    }

    /// The write's outcome from the upstream's `status` and JSON `body`
    /// (answered now, or replayed from the queue).
    fn applied_from(&self, status: u16, body: Value) -> Result<Applied, ClientError> {
        if !(200..300).contains(&status) {
            let problem: Problem =
                serde_json::from_value(body).map_err(|e| unexpected(status, &e))?;
            return Err(ClientError::Problem {
                status,
                problem: Box::new(problem),
                retry_after: None,
            });
        }
        let response: StoreResponse =
            serde_json::from_value(body).map_err(|e| unexpected(status, &e))?;
        self.remember(response.store.id, response.store.version);
        Ok(Applied {
            store: response.store,
            status,
            replayed: false,
        })
    }

    /// Sends `method path` (built by `build`, with a fresh token each
    /// attempt), trying again by the retry policy; a 2xx answer, or the
    /// error.
    async fn send(
        &self,
        method: Method,
        path: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let policy = self.inner.retry;
        let url = format!("{}{path}", self.inner.base);
        let mut backoff = policy.backoff;
        let mut attempt = 1;
        loop {
            let token = self.inner.tokens.token().await?;
            let request = build(self.inner.http.request(method.clone(), &url)).bearer_auth(token);
            let error = match request.send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => problem_of(response).await,
                Err(error) => ClientError::Transport(error),
            };
            let wait = match &error {
                ClientError::Problem {
                    retry_after: Some(after),
                    ..
                } => *after,
                _ => backoff,
            };
            if attempt >= policy.max_attempts || !error.is_retryable() || wait > policy.max_wait {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2).min(policy.max_wait);
            attempt += 1;
        }
    }
}

/// The problem an error answer carries.
async fn problem_of(response: Response) -> ClientError {
    let status = response.status().as_u16();
    let retry_after = retry_after(&response);
    match response.json::<Problem>().await {
        Ok(problem) => ClientError::Problem {
            status,
            problem: Box::new(problem),
            retry_after,
        },
        Err(error) => unexpected(status, &error),
    }
}

/// `Retry-After` in seconds (the API never sends a date).
fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers()
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

async fn json_of<T: DeserializeOwned>(response: Response) -> Result<T, ClientError> {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.map_err(ClientError::Transport)?;
    serde_json::from_slice(&bytes).map_err(|e| unexpected(status, &e))
}

fn unexpected(status: u16, error: &impl std::fmt::Display) -> ClientError {
    ClientError::Unexpected {
        status,
        message: error.to_string(),
    }
}

/// The lock's value, even after a panic elsewhere (the values are plain
/// data, never half-written).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http() -> reqwest::Client {
        testkit::http_client().unwrap()
    }

    fn client() -> StoreClient {
        StoreClient::builder("http://127.0.0.1:9/", StaticToken::new("t"), http())
            .build()
            .unwrap()
    }

    #[test]
    fn only_http_urls_make_a_client() {
        for bad in ["ftp://example.com", "not a url", ""] {
            let error = StoreClient::builder(bad, StaticToken::new("t"), http())
                .build()
                .unwrap_err();
            assert!(
                matches!(error, ClientError::InvalidUrl(_)),
                "{bad}: {error}"
            );
        }
        let debug = format!("{:?}", client());
        assert!(
            debug.contains("http://127.0.0.1:9") && !debug.contains("\"t\""),
            "{debug}"
        );
    }

    #[test]
    fn remembered_versions_are_bounded() {
        let client = client();
        for n in 0..=REMEMBERED_VERSIONS {
            client.remember(Uuid::from_u128(n as u128), 1);
        }
        let kept = lock(&client.inner.versions).len();
        assert!(kept <= REMEMBERED_VERSIONS, "{kept}");
        assert_eq!(
            client.version_of(Uuid::from_u128(REMEMBERED_VERSIONS as u128)),
            Some(1)
        );
        client.remember(Uuid::from_u128(7), 3);
        client.remember(Uuid::from_u128(7), 4);
        assert_eq!(client.version_of(Uuid::from_u128(7)), Some(4));
    }

    #[test]
    fn what_is_retried() {
        let problem = |status| ClientError::Problem {
            status,
            problem: Box::new(Problem::new(
                store_domain::ErrorCode::ServiceUnavailable,
                "r",
            )),
            retry_after: None,
        };
        for (status, retried) in [
            (503, true),
            (429, true),
            (504, true),
            (500, false),
            (409, false),
        ] {
            assert_eq!(problem(status).is_retryable(), retried, "{status}");
        }
        assert_eq!(problem(503).code(), Some("SERVICE_UNAVAILABLE"));
        let other = ClientError::Token("no".into());
        assert!(!other.is_retryable());
        assert_eq!((other.code(), other.store_code()), (None, None));
    }

    #[test]
    fn a_queued_write_completed_with_a_refusal_is_its_problem() {
        let client = client();
        let refused = client
            .applied_from(
                409,
                serde_json::to_value(Problem::new(store_domain::ErrorCode::ConcurrencyError, "r"))
                    .unwrap(),
            )
            .unwrap_err();
        assert_eq!(
            refused.store_code(),
            Some(store_domain::ErrorCode::ConcurrencyError)
        );
        let garbled = client.applied_from(200, Value::from("text")).unwrap_err();
        assert!(matches!(
            garbled,
            ClientError::Unexpected { status: 200, .. }
        ));
    }

    #[tokio::test]
    async fn a_refused_connection_is_tried_again_then_returned() {
        let client = StoreClient::builder("http://127.0.0.1:9", StaticToken::new("t"), http())
            .retry(RetryPolicy {
                max_attempts: 3,
                backoff: Duration::from_millis(1),
                max_wait: Duration::from_millis(10),
            })
            .build()
            .unwrap();
        let error = client.get(Uuid::nil()).await.unwrap_err();
        assert!(matches!(error, ClientError::Transport(_)), "{error}");
        assert!(error.is_retryable());
    }
}
