#![doc = include_str!("../README.md")]

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

/// Where a queued write's status is read: `GET {REQUESTS_PATH}/{id}`.
pub const REQUESTS_PATH: &str = "/api/requests";
/// RFC 9211's `Cache-Status` of a stale read.
pub const CACHE_STATUS: &str = "cache-status";
/// The IETF draft's `RateLimit` field: what is left of the client's quota.
pub const RATELIMIT: &str = "ratelimit";
/// The IETF draft's `RateLimit-Policy` field: the quota itself.
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";

/// The body of `202 Accepted`: the upstream was down, and the write is
/// stored durably and will be sent when it is back. Its status is at the
/// response's `Location` (`/api/requests/{requestId}`).
///
/// ```
/// use gateway_api::Accepted;
/// use uuid::Uuid;
///
/// let body = Accepted::new(Uuid::nil());
/// let json = serde_json::to_value(&body)?;
/// assert_eq!(json["status"], "accepted");
/// assert_eq!(json["requestId"], Uuid::nil().to_string());
/// assert_eq!(body.location(), format!("/api/requests/{}", Uuid::nil()));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    /// Always `accepted`.
    pub status: String,
    /// `Request queued for processing`.
    pub message: String,
    /// The queued write's id.
    pub request_id: Uuid,
}

impl Accepted {
    /// What the gateway says about the write it queued as `request_id`.
    #[must_use]
    pub fn new(request_id: Uuid) -> Self {
        Self {
            status: "accepted".to_owned(),
            message: "Request queued for processing".to_owned(),
            request_id,
        }
    }

    /// Where its status is read.
    #[must_use]
    pub fn location(&self) -> String {
        format!("{REQUESTS_PATH}/{}", self.request_id)
    }
}

/// Where a queued write stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum QueuedState {
    /// Waiting for the upstream.
    Queued,
    /// Being sent now.
    Replaying,
    /// Applied: `response` holds the upstream's answer.
    Completed,
    /// Given up: `lastError` says why.
    Failed,
}

impl QueuedState {
    /// Completed or failed: it will not change again.
    #[must_use]
    pub const fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// The body of `GET /api/requests/{id}`: a queued write's status. Only the
/// subject that sent the write may read it.
///
/// ```
/// use gateway_api::{QueuedState, RequestStatus};
///
/// let json = r#"{"requestId": "00000000-0000-0000-0000-000000000000",
///     "status": "completed", "method": "POST", "path": "/api/stores",
///     "acceptedAt": "2026-12-06T09:30:00Z", "attempts": 1, "lastError": null,
///     "response": {"status": 201, "body": {"store": {}}}}"#;
/// let status: RequestStatus = serde_json::from_str(json)?;
/// assert_eq!(status.status, QueuedState::Completed);
/// assert_eq!(status.response.map(|r| r.status), Some(201));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RequestStatus {
    /// The write's id (the `requestId` of its 202).
    pub request_id: Uuid,
    /// Where it stands.
    pub status: QueuedState,
    /// Its method (`POST`, `PUT`).
    pub method: String,
    /// Its path and query.
    pub path: String,
    /// When the gateway accepted it (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub accepted_at: OffsetDateTime,
    /// How many times it was sent.
    pub attempts: u32,
    /// Why its last attempt failed, if one did.
    pub last_error: Option<String>,
    /// The upstream's answer, once completed.
    pub response: Option<QueuedResponse>,
}

/// The upstream's answer to a queued write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueuedResponse {
    /// Its status.
    #[cfg_attr(feature = "openapi", schema(minimum = 100, maximum = 599))]
    pub status: u16,
    /// Its body: the upstream's JSON, or its text as a string.
    pub body: Value,
}

/// Why a read was answered from the gateway's last good copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StaleReason {
    /// The upstream's breaker is open: it was not asked.
    CircuitOpen,
    /// The upstream could not be reached, or answered 5xx.
    ServiceUnavailable,
    /// The upstream did not answer in time.
    Timeout,
    /// Writes to the resource are queued; asking now could overtake them.
    QueuedWritesAhead,
}

impl StaleReason {
    /// The wire name (`staleReason`, and a metric label).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit_open",
            Self::ServiceUnavailable => "service_unavailable",
            Self::Timeout => "timeout",
            Self::QueuedWritesAhead => "queued_writes_ahead",
        }
    }
}

/// The `meta` member a stale read adds to the upstream's JSON object (with
/// the `Age` and `Cache-Status` headers).
///
/// ```
/// use gateway_api::{StaleMeta, StaleReason};
/// use time::macros::datetime;
///
/// let meta = StaleMeta::new(
///     StaleReason::CircuitOpen,
///     datetime!(2026-12-06 09:30 UTC),
///     datetime!(2026-12-06 09:31 UTC),
/// );
/// let json = serde_json::to_value(meta)?;
/// assert_eq!(json["isStale"], true);
/// assert_eq!(json["staleReason"], "circuit_open");
/// assert_eq!(json["dataTimestamp"], "2026-12-06T09:30:00Z");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StaleMeta {
    /// Always `true`.
    pub is_stale: bool,
    /// Why the upstream was not used.
    pub stale_reason: StaleReason,
    /// When the copy was taken (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub data_timestamp: OffsetDateTime,
    /// When the upstream is asked again at the earliest (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub next_retry: OffsetDateTime,
}

impl StaleMeta {
    /// The marker of a copy taken at `data_timestamp`, served for `reason`.
    #[must_use]
    pub const fn new(
        reason: StaleReason,
        data_timestamp: OffsetDateTime,
        next_retry: OffsetDateTime,
    ) -> Self {
        Self {
            is_stale: true,
            stale_reason: reason,
            data_timestamp,
            next_retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn states_and_reasons_are_their_wire_names() {
        for (state, name) in [
            (QueuedState::Queued, "queued"),
            (QueuedState::Replaying, "replaying"),
            (QueuedState::Completed, "completed"),
            (QueuedState::Failed, "failed"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), name);
            assert_eq!(state.is_finished(), matches!(name, "completed" | "failed"));
        }
        for reason in [
            StaleReason::CircuitOpen,
            StaleReason::ServiceUnavailable,
            StaleReason::Timeout,
            StaleReason::QueuedWritesAhead,
        ] {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
    }

    #[test]
    fn an_accepted_write_and_a_stale_marker() {
        let accepted = Accepted::new(Uuid::from_u128(1));
        assert_eq!(
            accepted.location(),
            "/api/requests/00000000-0000-0000-0000-000000000001"
        );
        let json = serde_json::to_value(&accepted).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "status": "accepted",
                "message": "Request queued for processing",
                "requestId": "00000000-0000-0000-0000-000000000001",
            })
        );
        let meta = StaleMeta::new(
            StaleReason::QueuedWritesAhead,
            datetime!(2026-12-06 09:30:00 UTC),
            datetime!(2026-12-06 09:30:15 UTC),
        );
        let json = serde_json::to_value(meta).unwrap();
        assert_eq!(json["nextRetry"], "2026-12-06T09:30:15Z");
        assert_eq!(serde_json::from_value::<StaleMeta>(json).unwrap(), meta);
    }

    #[test]
    fn a_request_status_round_trips() {
        let status = RequestStatus {
            request_id: Uuid::from_u128(7),
            status: QueuedState::Failed,
            method: "PUT".into(),
            path: "/api/stores/1?x=1".into(),
            accepted_at: datetime!(2026-12-06 09:30:00 UTC),
            attempts: 3,
            last_error: Some("412 from the upstream".into()),
            response: None,
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["acceptedAt"], "2026-12-06T09:30:00Z");
        assert_eq!(json["lastError"], "412 from the upstream");
        assert!(json["response"].is_null());
        assert_eq!(
            serde_json::from_value::<RequestStatus>(json).unwrap(),
            status
        );
    }
}
