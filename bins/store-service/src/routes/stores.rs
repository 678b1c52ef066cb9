//! `/api/stores`: list, create, read, update, history, secrets.

use std::sync::Arc;

use axum::{
    Extension, Json,
    body::Body,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use db_failover::{CommitToken, OpOptions};
use serde_json::Value;
use service_kit::request_id::RequestId;
use store_domain::{
    Actor, ApplyError, ErrorCode, HistoryQuery, SecretsResponse, Store, StoreEvent, StoreHistory,
    StorePage, StoreQuery, StoreResponse, ValidCreate, ValidUpdate, VersionSource, parse_etag,
};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{
    body::read_body,
    idempotency::{self, Claimed, Lock, StoredResponse},
    problem::ApiError,
    read_after::{self, READ_AFTER},
    state::AppState,
    storage::{self, Db, UpdateOutcome},
};

/// `GET /api/stores`: one page, from a replica.
#[utoipa::path(get, path = "/api/stores", tag = "stores",
    params(StoreQuery),
    responses(
        (status = 200, description = "One page of stores, oldest first", body = StorePage,
            headers(("Link" = String, description = "`<...>; rel=\"next\"` when another page follows"))),
        (status = 400, description = "A bad query parameter", body = store_domain::Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let query = StoreQuery::from_pairs(
        query_pairs(query)?
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )?;
    let rows = state
        .cluster
        .read_op(move |conn| {
            Box::pin(async move { storage::list(Db::connection(conn), &query).await })
        })
        .await?;
    let page = StorePage::from_rows(rows, query.limit);
    let next = page
        .next_cursor
        .map(|cursor| format!("/api/stores?{}", query.next(cursor).to_query_string()));
    Ok(with_next_link(Json(&page).into_response(), next))
}

/// The decoded `(name, value)` pairs of a query string.
fn query_pairs(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    query.map(|Query(pairs)| pairs).map_err(|_| {
        ApiError::message(ErrorCode::ValidationError, "The query string is not valid.")
    })
}

/// `response` with `Link: <next>; rel="next"` when another page follows.
fn with_next_link(mut response: Response, next: Option<String>) -> Response {
    if let Some(next) = next
        && let Ok(value) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\""))
    {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

/// `POST /api/stores`.
#[utoipa::path(post, path = "/api/stores", tag = "stores",
    request_body(content = store_domain::CreateStore, content_type = "application/json"),
    params(("Idempotency-Key" = Option<String>, Header, description = "Replays the first response of a retried request with the same key from the same subject (x-gateway-subject)")),
    responses(
        (status = 201, description = "Created", body = StoreResponse, headers(
            ("Location" = String), ("ETag" = String), ("Read-After" = String, description = "Read-your-writes token"))),
        (status = 400, description = "Malformed JSON or a validation error", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 409, description = "IDEMPOTENCY_KEY_IN_USE", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 503, description = "A dependency is down", body = store_domain::Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    actor: Option<Extension<Actor>>,
    claim: Option<Extension<Claimed>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let value = json_body(&headers, body).await?;
    let valid = ValidCreate::from_json(value)?;
    let (store, secrets) = valid.into_store(Uuid::now_v7(), now());
    let sealed = Arc::new(state.secrets.seal(&secrets).await?);
    let actor = actor.map(|Extension(actor)| actor);
    let event = Arc::new(StoreEvent::created(&store, request_id, actor));
    let row = Arc::new(store);
    let claim = claim.map(|Extension(claim)| Arc::new(claim));
    let written = state
        .cluster
        .write_op_with(options(claim.as_deref()), move |conn| {
            let (row, sealed, event, claim) = (
                Arc::clone(&row),
                Arc::clone(&sealed),
                Arc::clone(&event),
                claim.clone(),
            );
            Box::pin(async move {
                let tx = conn.transaction().await?;
                if let Some(claim) = claim.as_deref() {
                    let lock = idempotency::lock(Db::transaction(&tx), claim).await?;
                    if !matches!(lock, Lock::Held) {
                        return Ok(Change::Settled(lock));
                    }
                }
                storage::insert(Db::transaction(&tx), &row, &sealed, &event).await?;
                let reply = created(&row);
                if let Some(claim) = claim.as_deref() {
                    idempotency::record(Db::transaction(&tx), claim, &reply).await?;
                }
                tx.commit().await?;
                Ok(Change::Done(reply))
            })
        })
        .await?;
    settle(&state, written.value, &written.token, |()| {
        ApiError::Internal("a create refused".into())
    })
}

/// The response to a create.
fn created(store: &Store) -> StoredResponse {
    let mut headers = Vec::new();
    if let Ok(value) = HeaderValue::from_str(&format!("/api/stores/{}", store.id)) {
        headers.push((header::LOCATION, value));
    }
    if let Ok(value) = HeaderValue::from_str(&store.etag()) {
        headers.push((header::ETAG, value));
    }
    StoredResponse::json(
        StatusCode::CREATED,
        &StoreResponse::created(store.clone()),
        headers,
    )
}

/// The response to an update.
fn updated(store: &Store) -> StoredResponse {
    let headers = HeaderValue::from_str(&store.etag())
        .ok()
        .map(|value| (header::ETAG, value));
    StoredResponse::json(
        StatusCode::OK,
        &StoreResponse::updated(store.clone()),
        headers,
    )
}

/// What a write's transaction came to.
enum Change<T> {
    /// Committed, its response recorded with it when it had a key.
    Done(StoredResponse),
    /// The key's record decided (in use, reused, already answered):
    /// nothing written.
    Settled(Lock),
    /// Refused by the domain: rolled back.
    Refused(T),
}

/// The options of a write: with a claimed key, the transaction starts by
/// locking the key's record and ends by recording the response, so running
/// it again after an unknown outcome is safe (it replays).
fn options(claim: Option<&Claimed>) -> OpOptions {
    OpOptions::new().idempotent(claim.is_some())
}

/// The response of a write's transaction.
fn settle<T>(
    state: &AppState,
    change: Change<T>,
    token: &CommitToken,
    refused: impl FnOnce(T) -> ApiError,
) -> Result<Response, ApiError> {
    match change {
        Change::Done(reply) => Ok(reply.into_response(token)),
        Change::Settled(lock) => {
            // A replay reads from the primary: its commit position is unknown.
            let primary = CommitToken::primary_only(state.cluster.generation());
            lock.into_response(&primary)
                .ok_or_else(|| ApiError::Internal("an idempotency lock held".into()))
        }
        Change::Refused(refusal) => Err(refused(refusal)),
    }
}

/// `GET /api/stores/{id}`: from a replica (after the `Read-After` token, if
/// any); a 404 there is confirmed on the primary.
#[utoipa::path(get, path = "/api/stores/{id}", tag = "stores",
    params(("id" = Uuid, Path), ("Read-After" = Option<String>, Header, description = "A token from a write response")),
    responses(
        (status = 200, description = "The store", body = StoreResponse, headers(("ETag" = String))),
        (status = 400, description = "INVALID_ID", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND", body = store_domain::Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    StoreId(id): StoreId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = read_after_token(&headers);
    let (store, _) = find(&state, id, token)
        .await?
        .ok_or(ApiError::Code(ErrorCode::NotFound))?;
    let mut response = Json(StoreResponse::found(store.clone())).into_response();
    write_etag(&mut response, &store);
    Ok(response)
}

/// `PUT /api/stores/{id}`: optimistic locking on `version` (body) or
/// `If-Match`.
#[utoipa::path(put, path = "/api/stores/{id}", tag = "stores",
    request_body(content = store_domain::UpdateStore, content_type = "application/json"),
    params(("id" = Uuid, Path),
        ("If-Match" = Option<String>, Header, description = "`\"<version>\"`; a stale one is 412"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response of a retried request with the same key from the same subject (x-gateway-subject)")),
    responses(
        (status = 200, description = "Updated", body = StoreResponse, headers(("ETag" = String), ("Read-After" = String))),
        (status = 400, description = "Malformed JSON, a validation error, INVALID_ID", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 409, description = "CONCURRENCY_ERROR (with currentVersion), INVALID_STATUS_TRANSITION, IDEMPOTENCY_KEY_IN_USE", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 412, description = "CONCURRENCY_ERROR: stale If-Match", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 428, description = "PRECONDITION_REQUIRED: no version", body = store_domain::Problem, content_type = "application/problem+json"),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    actor: Option<Extension<Actor>>,
    claim: Option<Extension<Claimed>>,
    StoreId(id): StoreId,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let value = json_body(&headers, body).await?;
    let mut valid = ValidUpdate::from_json(value)?;
    let mut source = VersionSource::Body;
    if let Some(if_match) = headers.get(header::IF_MATCH) {
        let version = if_match
            .to_str()
            .ok()
            .and_then(|v| parse_etag(v).ok())
            .ok_or_else(|| {
                ApiError::message(
                    ErrorCode::ValidationError,
                    "If-Match must be one strong ETag: \"<version>\".",
                )
            })?;
        valid = valid.with_expected_version(version);
        source = VersionSource::IfMatch;
    }
    if valid.expected_version().is_none() {
        return Err(ApiError::Apply {
            error: ApplyError::VersionRequired,
            via: source,
        });
    }
    let sealed = match valid.secrets() {
        Some(secrets) => Some(Arc::new(state.secrets.seal(secrets).await?)),
        None => None,
    };
    let valid = Arc::new(valid);
    let request_id: Arc<str> = request_id.into();
    let actor = actor.map(|Extension(actor)| Arc::new(actor));
    let claim = claim.map(|Extension(claim)| Arc::new(claim));
    let at = now();
    let written = state
        .cluster
        .write_op_with(options(claim.as_deref()), move |conn| {
            let (valid, sealed, request_id, actor, claim) = (
                Arc::clone(&valid),
                sealed.clone(),
                Arc::clone(&request_id),
                actor.clone(),
                claim.clone(),
            );
            Box::pin(async move {
                let tx = conn.transaction().await?;
                if let Some(claim) = claim.as_deref() {
                    let lock = idempotency::lock(Db::transaction(&tx), claim).await?;
                    if !matches!(lock, Lock::Held) {
                        return Ok(Change::Settled(lock));
                    }
                }
                let outcome = storage::update(
                    Db::transaction(&tx),
                    id,
                    &valid,
                    sealed.as_deref(),
                    at,
                    &request_id,
                    actor.as_deref(),
                )
                .await?;
                let UpdateOutcome::Updated(store) = outcome else {
                    // Nothing written: rolled back as the transaction drops.
                    return Ok(Change::Refused(outcome));
                };
                let reply = updated(&store);
                if let Some(claim) = claim.as_deref() {
                    idempotency::record(Db::transaction(&tx), claim, &reply).await?;
                }
                tx.commit().await?;
                Ok(Change::Done(reply))
            })
        })
        .await?;
    settle(
        &state,
        written.value,
        &written.token,
        |outcome| match outcome {
            UpdateOutcome::Refused(error) => ApiError::Apply { error, via: source },
            UpdateOutcome::NotFound | UpdateOutcome::Updated(_) => {
                ApiError::Code(ErrorCode::NotFound)
            }
        },
    )
}

/// `GET /api/stores/{id}/history`: one page of the creates and updates.
#[utoipa::path(get, path = "/api/stores/{id}/history", tag = "stores",
    params(("id" = Uuid, Path), HistoryQuery, ("Read-After" = Option<String>, Header, description = "A token from a write response")),
    responses(
        (status = 200, description = "One page of the audit trail, oldest first; each event's `actor` is the subject that asked for the change (x-gateway-subject), `null` when anonymous", body = StoreHistory,
            headers(("Link" = String, description = "`<...>; rel=\"next\"` when another page follows"))),
        (status = 400, description = "INVALID_ID, or a bad query parameter (VALIDATION_ERROR)", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND", body = store_domain::Problem, content_type = "application/problem+json"),
    ))]
pub async fn history(
    State(state): State<AppState>,
    StoreId(id): StoreId,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = HistoryQuery::from_pairs(
        query_pairs(query)?
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str())),
    )?;
    let events = read_confirmed(
        &state,
        read_after_token(&headers),
        || history_op(id, query),
        Option::is_none,
    )
    .await?
    .ok_or(ApiError::Code(ErrorCode::NotFound))?;
    let page = StoreHistory::from_rows(id, events, query.limit);
    let next = page.next_cursor.map(|cursor| {
        format!(
            "/api/stores/{id}/history?{}",
            query.next(cursor).to_query_string()
        )
    });
    Ok(with_next_link(Json(&page).into_response(), next))
}

/// `GET /api/stores/{id}/secrets`: the decrypted secrets.
#[utoipa::path(get, path = "/api/stores/{id}/secrets", tag = "stores",
    params(("id" = Uuid, Path), ("Read-After" = Option<String>, Header, description = "A token from a write response")),
    responses(
        (status = 200, description = "The decrypted secrets", body = SecretsResponse),
        (status = 400, description = "INVALID_ID", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 404, description = "NOT_FOUND", body = store_domain::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Vault Transit unavailable", body = store_domain::Problem, content_type = "application/problem+json"),
    ))]
pub async fn secrets(
    State(state): State<AppState>,
    StoreId(id): StoreId,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, sealed) = find(&state, id, read_after_token(&headers))
        .await?
        .ok_or(ApiError::Code(ErrorCode::NotFound))?;
    let secrets = state.secrets.open(&sealed).await?;
    Ok(Json(SecretsResponse {
        store_id: id,
        secrets,
    })
    .into_response())
}

/// A store from a replica (after `token`), confirmed on the primary when
/// the replica has none.
async fn find(state: &AppState, id: Uuid, token: Option<CommitToken>) -> Result<Found, ApiError> {
    read_confirmed(state, token, || find_op(id), Option::is_none).await
}

/// Reads with the operation `op()` makes, from a replica (one that has
/// replayed `token`, when given); a result that looks `missing` is read
/// again on the primary, so a lagging replica never turns into a false 404.
async fn read_confirmed<T, Op>(
    state: &AppState,
    token: Option<CommitToken>,
    op: impl Fn() -> Op,
    missing: impl Fn(&T) -> bool,
) -> Result<T, ApiError>
where
    Op: for<'c> FnMut(&'c mut db_failover::Connection) -> db_failover::OpFuture<'c, T>,
    T: Send,
{
    let found = match token {
        Some(token) => state.cluster.read_op_after(&token, op()).await?,
        None => state.cluster.read_op(op()).await?,
    };
    if !missing(&found) {
        return Ok(found);
    }
    let primary = CommitToken::primary_only(state.cluster.generation());
    Ok(state.cluster.read_op_after(&primary, op()).await?)
}

/// The operation reading one page of store `id`'s audit trail.
fn history_op(
    id: Uuid,
    query: HistoryQuery,
) -> impl for<'c> FnMut(
    &'c mut db_failover::Connection,
) -> db_failover::OpFuture<'c, Option<Vec<store_domain::StoreEvent>>>
+ Send {
    move |conn| Box::pin(async move { storage::history(Db::connection(conn), id, &query).await })
}

/// A stored store and its sealed secrets.
type Found = Option<(Store, serde_json::Map<String, Value>)>;

/// The operation reading store `id`.
fn find_op(
    id: Uuid,
) -> impl for<'c> FnMut(&'c mut db_failover::Connection) -> db_failover::OpFuture<'c, Found> + Send
{
    move |conn| Box::pin(async move { storage::find(Db::connection(conn), id).await })
}

/// The `Read-After` token a client sent back, if any.
fn read_after_token(headers: &HeaderMap) -> Option<CommitToken> {
    headers
        .get(READ_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(read_after::decode)
}

/// The path id, or 400 INVALID_ID.
fn parse_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(id).map_err(|_| ApiError::Code(ErrorCode::InvalidId))
}

/// The `{id}` of a store route: a UUID, or a 400 `INVALID_ID` problem,
/// also when the segment is not even UTF-8 (`/api/stores/%FF`), which
/// axum's own `Path` rejection would answer in plain text.
pub struct StoreId(pub Uuid);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for StoreId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::Code(ErrorCode::InvalidId))?;
        parse_id(&id).map(StoreId)
    }
}

/// Now, at PostgreSQL's precision (microseconds), so what is returned is
/// what is stored.
fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1000 * 1000)
        .unwrap_or(now)
}

/// The `ETag` of `store`.
fn write_etag(response: &mut Response, store: &Store) {
    if let Ok(value) = HeaderValue::from_str(&store.etag()) {
        response.headers_mut().insert(header::ETAG, value);
    }
}

/// The JSON body of a write: 415 unless `application/json`, 413 over 64
/// KiB, 400 when it does not parse (nesting past serde_json's 128 levels
/// included).
pub async fn json_body(headers: &HeaderMap, body: Body) -> Result<Value, ApiError> {
    if !is_json(headers) {
        return Err(ApiError::Code(ErrorCode::UnsupportedMediaType));
    }
    let bytes = read_body(body).await?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::Code(ErrorCode::MalformedJson))
}

/// Whether the content type is `application/json` (parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}
