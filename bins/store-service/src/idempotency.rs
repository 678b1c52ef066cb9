//! `Idempotency-Key` on POST and PUT (IETF httpapi draft semantics),
//! exactly once.
//!
//! A key's record is claimed first, in a short transaction of its own: a
//! row with the request's fingerprint and no response yet. The change then
//! runs in ONE transaction that starts by locking that row (`FOR UPDATE
//! NOWAIT`) and ends by writing the response into it, together with the
//! store row and its audit event ([`lock`], [`record`]). So after any
//! failure (a crash, a failover, a failed commit) either the change and its
//! response are both committed (a retry replays the response) or neither
//! is (the row is claimed but unlocked, and a retry runs the request). A
//! claimed row that is locked is a request still running.
//!
//! Records belong to a subject: the key of a record is the subject (the
//! gateway's verified `x-gateway-subject`, [`crate::subject`]; `''` for the
//! anonymous caller), the method and path (`scope`) and the key. The same
//! key from two subjects is two independent requests: neither can replay,
//! block or be refused because of the other's.
//!
//! A retry by the same subject with the same key, method, path and body
//! (and `If-Match`) gets the first response again with
//! `Idempotent-Replayed: true` (its `Read-After` token sends reads to the
//! primary); another body is 422 `IDEMPOTENCY_KEY_REUSED`; a retry while
//! the first still runs is 409 `IDEMPOTENCY_KEY_IN_USE`. A 4xx that changed nothing is recorded after
//! the fact (best effort: if that fails the key stays retryable); a 5xx is
//! never recorded and never releases the key (the change may have
//! committed, with its response). Records are kept [`RETENTION`] (24 h):
//! older ones are ignored, replaced and purged.
//!
//! One window is answered differently from the letter of "409 while the
//! first is running", on purpose: a duplicate that arrives after the first
//! request's claim but before its transaction has locked the record finds
//! the record unlocked (exactly what a crashed first request leaves) and
//! goes on to its own transaction. There it gets 409 if the first holds
//! the lock by then, or the replay of the first response if the first has
//! already committed. Either way the change happens once; closing the
//! window would need the claim and the change on one connection for the
//! whole request (or a lease on claims, which turns a crash into a key
//! stuck until the lease expires).

use std::time::Duration;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use db_failover::{CommitToken, OpOptions};
use serde_json::{Map, Value};
use store_domain::ErrorCode;
use tokio_postgres::{GenericClient, error::SqlState};

use service_kit::{problem, request_id::RequestId};

use crate::{
    body::read_body,
    problem::ApiError,
    read_after::{self, READ_AFTER},
    state::AppState,
    storage::{Db, SqlResult},
};

/// The request header.
pub const IDEMPOTENCY_KEY: &str = store_domain::IDEMPOTENCY_KEY_HEADER;

/// The header of a replayed response.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// How long a key is remembered.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = store_domain::IDEMPOTENCY_KEY_MAX_LEN;

/// The response headers stored and replayed (`Read-After` is not: a replay
/// gets a token of its own).
const KEPT_HEADERS: [&str; 3] = ["content-type", "location", "etag"];

/// Whether a key is usable: 1 to 255 visible ASCII characters (the rule
/// the gateway applies too).
pub fn is_valid_key(key: &str) -> bool {
    store_domain::is_valid_idempotency_key(key)
}

/// A claimed key, handed to the handler (a request extension) so that its
/// change transaction locks the record and writes the response into it.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The subject whose key it is ([`crate::subject::ANONYMOUS`]: none).
    pub subject: String,
    /// Method and path, e.g. `PUT /api/stores/<id>`.
    pub scope: String,
    /// The `Idempotency-Key` value.
    pub key: String,
    /// The request's fingerprint ([`crate::fingerprint`]).
    pub fingerprint: Vec<u8>,
}

/// A response as recorded: status, the [`KEPT_HEADERS`] and the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredResponse {
    /// The status code.
    pub status: StatusCode,
    /// The recorded headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl StoredResponse {
    /// A JSON response with `status` and `headers`.
    pub fn json(
        status: StatusCode,
        body: &impl serde::Serialize,
        headers: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
    ) -> Self {
        let mut all = vec![(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        all.extend(headers);
        Self {
            status,
            headers: all,
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// The live response, with the commit's `Read-After` token; marked as
    /// recorded so that the middleware does not record it again.
    pub fn into_response(self, token: &CommitToken) -> Response {
        let mut response = (self.status, self.body).into_response();
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        if let Ok(value) = HeaderValue::from_str(&read_after::encode(token)) {
            headers.insert(READ_AFTER, value);
        }
        response.extensions_mut().insert(Recorded);
        response
    }

    /// The recorded headers as a JSON object.
    fn headers_json(&self) -> Value {
        let mut map = Map::new();
        for (name, value) in &self.headers {
            if let Ok(value) = value.to_str() {
                map.insert(name.as_str().to_owned(), Value::String(value.to_owned()));
            }
        }
        Value::Object(map)
    }
}

/// Response extension: the key's record needs no further write (the
/// response was recorded with the change, is a replay, or is a refusal).
#[derive(Clone, Copy, Debug)]
pub struct Recorded;

/// What [`lock`] found, inside a change's transaction.
#[derive(Debug)]
pub enum Lock {
    /// The record is locked by this transaction and has no response: run
    /// the change, then [`record`] its response before committing.
    Held,
    /// Another transaction holds it (or it vanished): 409, retryable.
    InUse,
    /// Claimed with another request body: 422.
    Reused,
    /// Already answered (by a request that finished meanwhile): replay.
    Completed(StoredResponse),
}

impl Lock {
    /// The response for anything but [`Lock::Held`], marked as
    /// [`Recorded`]; `token` is the read-after token of a replay.
    pub fn into_response(self, token: &CommitToken) -> Option<Response> {
        let mut response = match self {
            Self::Held => return None,
            Self::InUse => ApiError::Code(ErrorCode::IdempotencyKeyInUse).into_response(),
            Self::Reused => ApiError::Code(ErrorCode::IdempotencyKeyReused).into_response(),
            Self::Completed(stored) => {
                let mut response = stored.into_response(token);
                response
                    .headers_mut()
                    .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                response
            }
        };
        response.extensions_mut().insert(Recorded);
        Some(response)
    }
}

/// Locks the record of `claim` (`FOR UPDATE NOWAIT`), first thing in the
/// change's transaction. The lock is held until the transaction ends: a
/// concurrent request with the same key sees [`Lock::InUse`], and a crash
/// releases it with the change rolled back.
pub async fn lock(tx: Db<'_, impl GenericClient + Sync>, claim: &Claimed) -> SqlResult<Lock> {
    let row = tx
        .query_opt(
            "SELECT fingerprint = $4, status, headers, body FROM idempotency_keys \
             WHERE subject = $1 AND scope = $2 AND key = $3 FOR UPDATE NOWAIT",
            &[&claim.subject, &claim.scope, &claim.key, &claim.fingerprint],
        )
        .await;
    let row = match row {
        Ok(row) => row,
        Err(error) if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            return Ok(Lock::InUse);
        }
        Err(error) => return Err(error),
    };
    let Some(row) = row else {
        // Purged between the claim and now: rare; ask for a retry.
        return Ok(Lock::InUse);
    };
    let same: bool = row.try_get(0)?;
    let status: Option<i16> = row.try_get(1)?;
    Ok(match (same, status) {
        (false, _) => Lock::Reused,
        (true, None) => Lock::Held,
        (true, Some(status)) => Lock::Completed(stored(
            status,
            row.try_get(2)?,
            row.try_get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default(),
        )),
    })
}

/// Writes `response` into the record of `claim`, last thing before the
/// change's commit (after [`lock`] returned [`Lock::Held`]).
pub async fn record(
    tx: Db<'_, impl GenericClient + Sync>,
    claim: &Claimed,
    response: &StoredResponse,
) -> SqlResult<()> {
    let code = i16::try_from(response.status.as_u16()).unwrap_or(500);
    tx.execute(
        "UPDATE idempotency_keys SET status = $4, headers = $5, body = $6 \
         WHERE subject = $1 AND scope = $2 AND key = $3",
        &[
            &claim.subject,
            &claim.scope,
            &claim.key,
            &code,
            &response.headers_json(),
            &response.body,
        ],
    )
    .await
    .map(drop)
}

/// What the claim found.
enum Claim {
    /// The key is ours (claimed now, or claimed earlier by a request that
    /// did not finish): run the request.
    Claimed,
    /// A stored response to replay.
    Replay(StoredResponse),
    /// Refused (409 in progress, 422 other body).
    Refused(ErrorCode),
}

/// The middleware, on the API routes.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    // Only the two write routes take a key: anything else (an unknown path,
    // a wrong method) must not write idempotency rows.
    let matched = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str);
    let write_route = matches!(
        (request.method(), matched),
        (&Method::POST, Some("/api/stores")) | (&Method::PUT, Some("/api/stores/{id}"))
    );
    if !write_route {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(IDEMPOTENCY_KEY).cloned() else {
        return next.run(request).await;
    };
    let Some(key) = key
        .to_str()
        .ok()
        .filter(|k| is_valid_key(k))
        .map(str::to_owned)
    else {
        return ApiError::Code(ErrorCode::InvalidIdempotencyKey).into_response();
    };
    let subject = crate::subject::of(&request)
        .map_or_else(|| crate::subject::ANONYMOUS.to_owned(), String::from);
    let scope = format!("{} {}", request.method(), request.uri().path());
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let path = request.uri().path().to_owned();
    let (mut parts, body) = request.into_parts();
    let bytes = match read_body(body).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response(),
    };
    let if_match = parts
        .headers
        .get(header::IF_MATCH)
        .map(HeaderValue::as_bytes);
    let claimed = Claimed {
        subject,
        scope,
        key,
        fingerprint: state.fingerprints.fingerprint(if_match, &bytes),
    };
    match claim(&state, &claimed).await {
        Ok(Claim::Claimed) => {}
        Ok(Claim::Replay(stored)) => {
            let token = CommitToken::primary_only(state.cluster.generation());
            return Lock::Completed(stored)
                .into_response(&token)
                .unwrap_or_else(|| ApiError::Internal("no replay".into()).into_response());
        }
        Ok(Claim::Refused(code)) => return ApiError::Code(code).into_response(),
        Err(error) => return error.into_response(),
    }
    parts.extensions.insert(claimed.clone());
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // Settled by the handler (recorded with its change, a replay, a
    // refusal) or a 5xx (which may hide a committed change whose response
    // is recorded): the record is left as it is, the key never released.
    let settled =
        response.extensions().get::<Recorded>().is_some() || response.status().is_server_error();
    // The stored body must carry this request's id, as the live one does.
    let response = problem::complete(response, &request_id, &path);
    if settled {
        return response;
    }
    finish(&state, claimed, response).await
}

/// Claims the key (a committed row without a response), or says why not.
async fn claim(state: &AppState, claimed: &Claimed) -> Result<Claim, ApiError> {
    let claimed = claimed.clone();
    let retention = format!("{} seconds", RETENTION.as_secs());
    let written = state
        .cluster
        .write_op_with(OpOptions::new().idempotent(true), move |conn| {
            let (claimed, retention) = (claimed.clone(), retention.clone());
            Box::pin(async move {
                let Claimed {
                    subject,
                    scope,
                    key,
                    fingerprint,
                } = &claimed;
                // An expired record is forgotten first.
                conn.execute(
                    "DELETE FROM idempotency_keys WHERE subject = $1 AND scope = $2 \
                     AND key = $3 AND created_at < now() - $4::text::interval",
                    &[subject, scope, key, &retention],
                )
                .await?;
                let inserted = conn
                    .execute(
                        "INSERT INTO idempotency_keys (subject, scope, key, fingerprint) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                        &[subject, scope, key, fingerprint],
                    )
                    .await?;
                if inserted == 1 {
                    return Ok(Claim::Claimed);
                }
                // Known: locked means running; a row lock taken and
                // released at once (autocommit) tells.
                Ok(match lock(Db::connection(conn), &claimed).await? {
                    Lock::Held => Claim::Claimed,
                    Lock::InUse => Claim::Refused(ErrorCode::IdempotencyKeyInUse),
                    Lock::Reused => Claim::Refused(ErrorCode::IdempotencyKeyReused),
                    Lock::Completed(stored) => Claim::Replay(stored),
                })
            })
        })
        .await?;
    Ok(written.value)
}

/// A recorded response.
fn stored(status: i16, headers: Option<Value>, body: Vec<u8>) -> StoredResponse {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut kept = Vec::new();
    if let Some(Value::Object(headers)) = headers {
        for (name, value) in headers {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::try_from(name.as_str()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                kept.push((name, value));
            }
        }
    }
    StoredResponse {
        status,
        headers: kept,
        body,
    }
}

/// Records a response the handler did not (a 4xx, which changed
/// nothing), unless another request holds or answered the key meanwhile.
/// If recording fails the key stays claimed and unlocked: a retry runs the
/// request again.
async fn finish(state: &AppState, claimed: Claimed, response: Response) -> Response {
    let status = response.status();
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(error) => return ApiError::Internal(error.to_string()).into_response(),
    };
    let headers = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = parts.headers.get(*name)?.clone();
            Some((HeaderName::from_static(name), value))
        })
        .collect();
    let recorded = StoredResponse {
        status,
        headers,
        body: bytes.to_vec(),
    };
    let stored = {
        let recorded = recorded.clone();
        state
            .cluster
            .write_op_with(OpOptions::new().idempotent(true), move |conn| {
                let (claimed, recorded) = (claimed.clone(), recorded.clone());
                Box::pin(async move {
                    let code = i16::try_from(recorded.status.as_u16()).unwrap_or(500);
                    conn.execute(
                        "UPDATE idempotency_keys SET status = $4, headers = $5, body = $6 \
                         WHERE (subject, scope, key) IN (SELECT subject, scope, key \
                         FROM idempotency_keys WHERE subject = $1 AND scope = $2 AND key = $3 \
                         AND status IS NULL FOR UPDATE SKIP LOCKED)",
                        &[
                            &claimed.subject,
                            &claimed.scope,
                            &claimed.key,
                            &code,
                            &recorded.headers_json(),
                            &recorded.body,
                        ],
                    )
                    .await
                })
            })
            .await
    };
    if let Err(error) = stored {
        tracing::warn!(%error, "recording an idempotent 4xx failed; the key stays retryable");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Deletes records older than [`RETENTION`]; returns how many.
pub async fn purge_expired(state: &AppState) -> Result<u64, db_failover::Error> {
    let retention = format!("{} seconds", RETENTION.as_secs());
    let written = state
        .cluster
        .write_op(move |conn| {
            let retention = retention.clone();
            Box::pin(async move {
                conn.execute(
                    "DELETE FROM idempotency_keys WHERE created_at < now() - $1::text::interval",
                    &[&retention],
                )
                .await
            })
        })
        .await?;
    Ok(written.value)
}
