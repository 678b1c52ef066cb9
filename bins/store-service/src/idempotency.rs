//! `Idempotency-Key` on POST and PUT (IETF httpapi draft semantics).
//!
//! The first request with a key claims it (a row with no status yet: in
//! progress), runs, and stores its response (status, `Content-Type`,
//! `Location`, `ETag`, `Read-After`, body). A retry with the same key, method,
//! path and body (and `If-Match`) gets that response again with
//! `Idempotent-Replayed: true`; another body is 422
//! `IDEMPOTENCY_KEY_REUSED`; a retry while the first still runs is 409
//! `IDEMPOTENCY_KEY_IN_USE`. A 5xx is not stored (the key is released, so
//! the client may retry). Records are kept [`RETENTION`] (24 h): older ones
//! are ignored, replaced and purged.

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use db_failover::OpOptions;
use serde_json::{Map, Value};
use store_domain::ErrorCode;

use crate::{
    problem::{self, ApiError},
    read_after::READ_AFTER,
    request_id::RequestId,
    routes::stores::MAX_BODY_BYTES,
    startup::AppState,
};

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The header of a replayed response.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// How long a key is remembered.
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// The response headers stored and replayed.
const KEPT_HEADERS: [&str; 4] = ["content-type", "location", "etag", READ_AFTER];

/// Whether a key is usable: 1 to 255 visible ASCII characters.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// What the claim found.
enum Claim {
    /// The key is ours: run the request.
    Claimed,
    /// A stored response to replay.
    Replay(Response),
    /// Refused (409 in progress, 422 other body).
    Refused(ApiError),
}

/// The middleware, on the API routes.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !matches!(*request.method(), Method::POST | Method::PUT) {
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
    let scope = format!("{} {}", request.method(), request.uri().path());
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let path = request.uri().path().to_owned();
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return ApiError::Code(ErrorCode::PayloadTooLarge).into_response();
    };
    let fingerprint = fingerprint(&parts.headers, &bytes);
    match claim(&state, &scope, &key, fingerprint).await {
        Ok(Claim::Claimed) => {}
        Ok(Claim::Replay(response)) => return response,
        Ok(Claim::Refused(error)) => return error.into_response(),
        Err(error) => return error.into_response(),
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // The stored body must carry this request's id, as the live one does.
    let response = problem::complete(response, &request_id, &path);
    finish(&state, &scope, &key, response).await
}

/// The request's fingerprint input: `If-Match` and the body (hashed with
/// SHA-256 by PostgreSQL).
fn fingerprint(headers: &HeaderMap, body: &Bytes) -> Vec<u8> {
    let mut input = headers
        .get(header::IF_MATCH)
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    input.push(b'\n');
    input.extend_from_slice(body);
    input
}

/// Claims `key` in `scope`, or says why not.
async fn claim(
    state: &AppState,
    scope: &str,
    key: &str,
    input: Vec<u8>,
) -> Result<Claim, ApiError> {
    let (scope, key) = (scope.to_owned(), key.to_owned());
    let retention = format!("{} seconds", RETENTION.as_secs());
    let written = state
        .cluster
        .write_op(move |conn| {
            let (scope, key, input, retention) =
                (scope.clone(), key.clone(), input.clone(), retention.clone());
            Box::pin(async move {
                // An expired record is forgotten first (and a few others with it).
                conn.execute(
                    "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 \
                     AND created_at < now() - $3::text::interval",
                    &[&scope, &key, &retention],
                )
                .await?;
                let inserted = conn
                    .execute(
                        "INSERT INTO idempotency_keys (scope, key, fingerprint) \
                         VALUES ($1, $2, sha256($3)) ON CONFLICT DO NOTHING",
                        &[&scope, &key, &input],
                    )
                    .await?;
                if inserted == 1 {
                    return Ok(None);
                }
                let row = conn
                    .query_opt(
                        "SELECT fingerprint = sha256($3), status, headers, body \
                         FROM idempotency_keys WHERE scope = $1 AND key = $2",
                        &[&scope, &key, &input],
                    )
                    .await?;
                row.map(|row| -> Result<_, tokio_postgres::Error> {
                    Ok((
                        row.try_get::<_, bool>(0)?,
                        row.try_get::<_, Option<i16>>(1)?,
                        row.try_get::<_, Option<Value>>(2)?,
                        row.try_get::<_, Option<Vec<u8>>>(3)?,
                    ))
                })
                .transpose()
                .map(Some)
            })
        })
        .await?;
    Ok(match written.value {
        None => Claim::Claimed,
        // Deleted between the insert and the read: rare; ask for a retry.
        Some(None) => Claim::Refused(ApiError::Code(ErrorCode::IdempotencyKeyInUse)),
        Some(Some((false, _, _, _))) => {
            Claim::Refused(ApiError::Code(ErrorCode::IdempotencyKeyReused))
        }
        Some(Some((true, None, _, _))) => {
            Claim::Refused(ApiError::Code(ErrorCode::IdempotencyKeyInUse))
        }
        Some(Some((true, Some(status), headers, body))) => {
            Claim::Replay(replay(status, headers, body.unwrap_or_default()))
        }
    })
}

/// A stored response, replayed.
fn replay(status: i16, headers: Option<Value>, body: Vec<u8>) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body).into_response();
    if let Some(Value::Object(headers)) = headers {
        for (name, value) in headers {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::try_from(name.as_str()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// Stores `response` under the key (or releases the key after a 5xx), and
/// returns it. Both writes are idempotent, so they are retried across a
/// failover; if they still fail, the response goes out anyway (the change
/// it reports is committed) and the key stays in progress until it expires.
async fn finish(state: &AppState, scope: &str, key: &str, response: Response) -> Response {
    let (scope, key) = (scope.to_owned(), key.to_owned());
    let status = response.status();
    if status.is_server_error() {
        let released = state
            .cluster
            .write_op_with(OpOptions::new().idempotent(true), move |conn| {
                let (scope, key) = (scope.clone(), key.clone());
                Box::pin(async move {
                    conn.execute(
                        "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2",
                        &[&scope, &key],
                    )
                    .await
                })
            })
            .await;
        if let Err(error) = released {
            tracing::warn!(%error, "releasing an idempotency key failed");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(error) => return ApiError::Internal(error.to_string()).into_response(),
    };
    let mut headers = Map::new();
    for name in KEPT_HEADERS {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            headers.insert(name.to_owned(), Value::String(value.to_owned()));
        }
    }
    let headers = Value::Object(headers);
    let stored = bytes.to_vec();
    let code = i16::try_from(status.as_u16()).unwrap_or(500);
    let stored_response = state
        .cluster
        .write_op_with(OpOptions::new().idempotent(true), move |conn| {
            let (scope, key, headers, stored) =
                (scope.clone(), key.clone(), headers.clone(), stored.clone());
            Box::pin(async move {
                conn.execute(
                    "UPDATE idempotency_keys SET status = $3, headers = $4, body = $5 \
                     WHERE scope = $1 AND key = $2",
                    &[&scope, &key, &code, &headers, &stored],
                )
                .await
            })
        })
        .await;
    if let Err(error) = stored_response {
        tracing::warn!(%error, "storing an idempotent response failed");
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
