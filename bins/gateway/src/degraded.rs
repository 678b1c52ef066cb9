//! Degraded mode: what the proxy does when an upstream is down (its
//! breaker is open, the connection is refused, it times out or answers
//! 5xx).
//!
//! - **Reads** get the last good `200` of the same URL from the
//!   [`StaleCache`], marked stale: the original JSON plus
//!   `"meta": {"isStale": true, "staleReason", "dataTimestamp", "nextRetry"}`,
//!   with `Age` and `Cache-Status` (RFC 9211). Nothing kept: 503 with
//!   `Retry-After`. Sensitive routes are never kept, and a stale copy only
//!   reaches a caller the auth layer let through to the route.
//! - **Writes** (POST, PUT) are stored durably in the [`WriteQueue`]
//!   before the client gets `202 {"status": "accepted", ...}` with
//!   `Location: /api/requests/{id}`, and replayed by [`crate::replay`].
//!   Every write is forwarded with an `Idempotency-Key` (the client's, else
//!   a fresh one the proxy made), so a replay is applied once; upstream,
//!   keys belong to the subject that sent the write.
//! - **Replay policy**: a queued write was authorized when it was
//!   accepted, and is replayed as the subject that sent it (its actor
//!   header), at most `queue_max_age` later; one subject has at most
//!   `queue_max_per_subject` unfinished writes (429 past it).

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use axum::{
    Json,
    body::Bytes,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use gateway_api::{Accepted, StaleMeta, StaleReason};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    config::{DegradedConfig, QueueBackend, QueueKeySource},
    principal::Principal,
    problem::{Code, GatewayError},
    queue::{
        JetStreamConfig, NewWrite, Payload, QueueError, QueueLimits, Sealer, WriteQueue,
        WriteTarget,
    },
    routes::Route,
    settings::Secret,
    stale::{StaleCache, StaleLimits, mark_stale},
};

/// The request headers a queued write keeps (never `Authorization`: the
/// replay is the gateway's, after the caller was authenticated).
const KEPT_HEADERS: [&str; 4] = ["content-type", "if-match", "accept", "traceparent"];

/// The header of the key every forwarded write carries.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Degraded mode's state: the queue, the stale copies, and the replay
/// loop's wake-up.
#[derive(Debug)]
pub struct Degraded {
    /// The durable write queue.
    pub queue: WriteQueue,
    /// The last good reads.
    pub stale: StaleCache,
    /// Wakes the replay loop (a write was queued).
    pub wake: Arc<Notify>,
}

impl Degraded {
    /// Opens the write queue `config.queue_backend` names, sealed with
    /// `key` (base64 of 32 bytes):
    ///
    /// - redb: the file `config.queue_path`; without `key`, the key file
    ///   beside it when `config.queue_key_source` allows it;
    /// - JetStream: the cluster of `[degraded.jetstream]` (with
    ///   `nats_token`), whose stream and buckets are created or updated;
    ///   `key` is required, since every gateway of the fleet opens the
    ///   writes the others sealed.
    pub async fn open(
        config: &DegradedConfig,
        key: Option<&Secret>,
        nats_token: Option<&Secret>,
    ) -> anyhow::Result<Self> {
        let limits = QueueLimits {
            max_entries: config.queue_max_entries,
            max_per_subject: config.queue_max_per_subject,
            max_bytes: config.queue_max_bytes,
            max_age: config.queue_max_age.0,
            retention: config.queue_retention.0,
        };
        let queue = match config.queue_backend {
            QueueBackend::Redb => {
                if key.is_none() && config.queue_key_source == QueueKeySource::Env {
                    anyhow::bail!(
                        "degraded.queue_key_source is \"env\" but GATEWAY_QUEUE_KEY is not set (base64 of 32 bytes, from a secret store)"
                    );
                }
                let sealer = sealer(&config.queue_path, key)?;
                WriteQueue::open_redb(&config.queue_path, limits, sealer)
                    .await
                    .with_context(|| {
                        format!("opening the write queue {}", config.queue_path.display())
                    })?
            }
            QueueBackend::Jetstream => {
                let Some(key) = key else {
                    anyhow::bail!(
                        "degraded.queue_backend is \"jetstream\" but GATEWAY_QUEUE_KEY is not set: every gateway of the fleet needs the same key (base64 of 32 bytes, from a secret store)"
                    );
                };
                let sealer = sealer_of(key.expose(), "GATEWAY_QUEUE_KEY")?;
                let section = &config.jetstream;
                let mut shared = JetStreamConfig::new(section.urls.iter().cloned());
                shared.replicas = section.replicas;
                shared.prefix = section.prefix.clone();
                shared.publish_timeout = section.publish_timeout.0;
                shared.lease = section.lease.0;
                shared.token = nats_token.map(|t| t.expose().to_owned());
                shared.instance = instance_name();
                WriteQueue::open_jetstream(shared, limits, sealer)
                    .await
                    .with_context(|| {
                        format!(
                            "opening the shared write queue on NATS JetStream ({})",
                            section.urls.join(", ")
                        )
                    })?
            }
        };
        Ok(Self {
            queue,
            stale: StaleCache::new(StaleLimits {
                max_entries: config.stale_max_entries,
                max_bytes: config.stale_max_bytes,
            }),
            wake: Arc::new(Notify::new()),
        })
    }
}

/// This gateway's name among the fleet's (the holder of the resources it
/// replays): the host name (the pod's) and a random suffix, unique even
/// when a restarted pod keeps its name.
fn instance_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "gateway".into());
    format!("{host}-{}", &Uuid::new_v4().simple().to_string()[..8])
}

/// The queue key: `GATEWAY_QUEUE_KEY`, else `<queue>.key` (created with
/// mode 0600 on first start).
fn sealer(queue: &Path, key: Option<&Secret>) -> anyhow::Result<Sealer> {
    let (text, origin) = match key {
        Some(key) => (
            key.expose().trim().to_owned(),
            "GATEWAY_QUEUE_KEY".to_owned(),
        ),
        None => {
            let mut path = PathBuf::from(queue);
            path.as_mut_os_string().push(".key");
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    let mut key = [0_u8; 32];
                    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                        .map_err(|_| anyhow::anyhow!("no randomness for the queue key"))?;
                    let text = STANDARD.encode(key);
                    let mut file = std::fs::OpenOptions::new();
                    file.write(true).create_new(true);
                    #[cfg(unix)]
                    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
                    file.open(&path)
                        .and_then(|mut f| f.write_all(text.as_bytes()))
                        .with_context(|| format!("creating the queue key {}", path.display()))?;
                    text
                }
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("reading the queue key {}", path.display()));
                }
            };
            (text.trim().to_owned(), path.display().to_string())
        }
    };
    sealer_of(&text, &origin)
}

/// The sealer of the key `text` (base64 of 32 bytes) from `origin`.
fn sealer_of(text: &str, origin: &str) -> anyhow::Result<Sealer> {
    let bytes = STANDARD
        .decode(text.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .with_context(|| format!("{origin}: the queue key must be base64 of 32 bytes"))?;
    Sealer::new(&bytes).context("the queue key")
}

/// Why an upstream could not serve a request: the `staleReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Down {
    /// Its breaker is open: nothing was sent.
    CircuitOpen,
    /// The connection failed, or it answered 5xx (with that status).
    Unavailable(Option<StatusCode>),
    /// It did not answer in time.
    Timeout,
    /// Not asked: writes to the same resource are queued (by any gateway
    /// of the fleet), and a write sent now would overtake them. Only
    /// writes are answered for this reason.
    QueuedAhead,
}

impl Down {
    /// The `staleReason`.
    pub fn stale_reason(self) -> StaleReason {
        match self {
            Self::CircuitOpen => StaleReason::CircuitOpen,
            Self::Unavailable(_) => StaleReason::ServiceUnavailable,
            Self::Timeout => StaleReason::Timeout,
            Self::QueuedAhead => StaleReason::QueuedWritesAhead,
        }
    }

    /// The `staleReason`'s wire name, a metric label.
    pub fn reason(self) -> &'static str {
        self.stale_reason().as_str()
    }
}

/// `at` in UTC, whole seconds (as the `meta` times are sent).
fn whole_seconds(at: SystemTime) -> time::OffsetDateTime {
    let at = time::OffsetDateTime::from(at);
    at.replace_nanosecond(0).unwrap_or(at)
}

/// The answer to a read whose upstream is `down`: the stale copy of `key`,
/// or 503. `retry_after`: when the upstream may be tried again.
pub fn read_while_down(
    degraded: &Degraded,
    route: &Route,
    key: &str,
    down: Down,
    retry_after: Duration,
) -> Response {
    let now = SystemTime::now();
    let kept = (!route.is_sensitive(key.split('?').next().unwrap_or(key)))
        .then(|| degraded.stale.get(key))
        .flatten();
    let marked = kept.as_ref().and_then(|entry| {
        let meta = StaleMeta::new(
            down.stale_reason(),
            whole_seconds(entry.stored_at),
            whole_seconds(now + retry_after),
        );
        mark_stale(&entry.body, meta).map(|body| (entry.stored_at, body))
    });
    let Some((stored_at, body)) = marked else {
        let code = match down {
            Down::Timeout => Code::GatewayTimeout,
            _ => Code::UpstreamUnavailable,
        };
        return GatewayError::new(code)
            .retry_after(retry_after)
            .into_response();
    };
    metrics::counter!("gateway_stale_responses_total", "reason" => down.reason()).increment(1);
    let age = now.duration_since(stored_at).unwrap_or_default().as_secs();
    // RFC 9211: a hit, stale by its age; `fwd=stale` when the upstream was
    // asked and failed (with its status, if it answered).
    let cache_status = match down {
        Down::CircuitOpen | Down::QueuedAhead => {
            format!("gateway; hit; ttl=-{age}; detail=\"{}\"", down.reason())
        }
        Down::Unavailable(Some(status)) => format!(
            "gateway; fwd=stale; fwd-status={}; ttl=-{age}; detail=\"{}\"",
            status.as_u16(),
            down.reason()
        ),
        Down::Unavailable(None) | Down::Timeout => {
            format!(
                "gateway; fwd=stale; ttl=-{age}; detail=\"{}\"",
                down.reason()
            )
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::AGE, HeaderValue::from(age));
    if let Ok(value) = HeaderValue::from_str(&cache_status) {
        headers.insert(HeaderName::from_static("cache-status"), value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// How long a write waits to learn whether writes to its resource are
/// queued before it is sent anyway: the upstream is up, and a queue that
/// does not answer (a NATS cluster frozen) must not hold every write.
const QUEUED_AHEAD_CHECK: Duration = Duration::from_millis(250);

/// Whether writes to `resource` ([`crate::queue::ordered_resource`]) are
/// queued and unfinished (fleet-wide with a shared queue): a new write must queue
/// behind them to keep the order of acceptance. A queue that fails or
/// does not answer within [`QUEUED_AHEAD_CHECK`] counts as none.
pub async fn queued_ahead(degraded: &Degraded, resource: &str) -> bool {
    match tokio::time::timeout(QUEUED_AHEAD_CHECK, degraded.queue.pending(resource)).await {
        Ok(Ok(pending)) => pending > 0,
        Ok(Err(error)) => {
            tracing::warn!(%error, "the write queue could not say whether writes are queued ahead");
            false
        }
        Err(_) => {
            tracing::warn!("the write queue did not say in time whether writes are queued ahead");
            false
        }
    }
}

/// What a write to queue is made of.
#[derive(Debug)]
pub struct Write<'a> {
    /// Its route.
    pub route: &'a Route,
    /// Who sent it.
    pub principal: Option<&'a Principal>,
    /// The request id (the record's id when it is a UUID).
    pub request_id: &'a str,
    /// `POST` or `PUT`.
    pub method: &'a str,
    /// The path and query.
    pub path_and_query: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The `Idempotency-Key` it is (and will be) sent with.
    pub idempotency_key: &'a str,
    /// The body.
    pub body: Bytes,
}

/// Stores `write` durably and answers 202, or 503 when it cannot be
/// stored (nothing accepted). `retry_after`: when the upstream may be
/// tried again.
pub async fn queue_write(degraded: &Degraded, write: Write<'_>, retry_after: Duration) -> Response {
    let Some(principal) = write.principal.filter(|p| !p.sub.is_empty()) else {
        // Nobody could read its status: do not accept it.
        return GatewayError::new(Code::UpstreamUnavailable)
            .retry_after(retry_after)
            .into_response();
    };
    let id = Uuid::try_parse(write.request_id)
        .ok()
        .filter(|id| id.get_version_num() == 7)
        .unwrap_or_else(Uuid::now_v7);
    let headers = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = write.headers.get(*name)?;
            Some(((*name).to_owned(), value.as_bytes().to_vec()))
        })
        .collect();
    let new = NewWrite {
        id,
        subject: principal.sub.to_string(),
        meta: WriteTarget {
            route: write.route.name.clone(),
            method: write.method.to_owned(),
            path_and_query: write.path_and_query.to_owned(),
            idempotency_key: write.idempotency_key.to_owned(),
        },
        payload: Payload {
            headers,
            body: write.body.to_vec(),
        },
    };
    let stored = match degraded.queue.enqueue(new.clone(), SystemTime::now()).await {
        // A client's request id that is already queued: a new id.
        Err(QueueError::Duplicate(_)) => {
            let new = NewWrite {
                id: Uuid::now_v7(),
                ..new
            };
            degraded.queue.enqueue(new, SystemTime::now()).await
        }
        other => other,
    };
    let record = match stored {
        Ok(record) => record,
        Err(QueueError::SubjectFull { entries }) => {
            metrics::counter!("gateway_queue_refused_total").increment(1);
            tracing::warn!(
                entries,
                "a subject's queued writes are at their bound: answered 429"
            );
            return GatewayError::new(Code::TooManyQueuedWrites)
                .retry_after(retry_after)
                .into_response();
        }
        Err(error) if error.is_unavailable() => {
            metrics::counter!("gateway_queue_unavailable_total").increment(1);
            tracing::error!(%error, "the write queue could not make a write durable: answered 503");
            return GatewayError::new(Code::WriteQueueUnavailable)
                .retry_after(retry_after)
                .into_response();
        }
        Err(error) => {
            metrics::counter!("gateway_queue_refused_total").increment(1);
            tracing::error!(%error, "a write could not be queued: answered 503");
            return GatewayError::new(Code::WriteQueueFull)
                .retry_after(retry_after)
                .into_response();
        }
    };
    degraded.wake.notify_one();
    metrics::counter!("gateway_queued_writes_total", "route" => write.route.name.clone())
        .increment(1);
    tracing::warn!(request_id = %record.id, route = %write.route.name, "upstream down: write queued");
    let accepted = Accepted::new(record.id);
    let location = HeaderValue::from_str(&accepted.location());
    let mut response = (StatusCode::ACCEPTED, Json(accepted)).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = location {
        headers.insert(header::LOCATION, location);
    }
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after.as_secs().max(1)),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_times_are_whole_seconds_in_utc() {
        let text = |at| {
            serde_json::to_value(StaleMeta::new(
                StaleReason::Timeout,
                whole_seconds(at),
                whole_seconds(at),
            ))
            .unwrap()["dataTimestamp"]
                .clone()
        };
        assert_eq!(text(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_741_323_456);
        assert_eq!(text(at), "2026-11-27T01:02:03Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(text(leap), "2000-02-29T00:00:00Z");
    }

    #[tokio::test]
    async fn with_the_env_key_source_no_key_means_no_start_and_no_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = DegradedConfig {
            queue_path: dir.path().join("q.redb"),
            queue_key_source: QueueKeySource::Env,
            ..DegradedConfig::default()
        };
        let error = Degraded::open(&config, None, None).await.unwrap_err();
        assert!(
            format!("{error:#}").contains("GATEWAY_QUEUE_KEY"),
            "{error:#}"
        );
        assert!(!dir.path().join("q.redb.key").exists());
        assert!(!dir.path().join("q.redb").exists());
        let key = Secret::new(STANDARD.encode([9_u8; 32]));
        Degraded::open(&config, Some(&key), None).await.unwrap();
        assert!(
            !dir.path().join("q.redb.key").exists(),
            "no key file beside the queue"
        );
    }

    #[test]
    fn the_queue_key_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("q.redb");
        sealer(&queue, None).unwrap();
        let key_file = dir.path().join("q.redb.key");
        let first = std::fs::read_to_string(&key_file).unwrap();
        sealer(&queue, None).unwrap();
        assert_eq!(std::fs::read_to_string(&key_file).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "the key file is readable by others");
        }
        let bad = Secret::new("not base64 of 32 bytes");
        let error = sealer(&queue, Some(&bad)).unwrap_err();
        assert!(error.to_string().contains("GATEWAY_QUEUE_KEY"), "{error}");
        assert!(!format!("{error:#}").contains("not base64"), "{error:#}");
    }
}
