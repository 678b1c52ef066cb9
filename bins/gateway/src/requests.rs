//! `GET /api/requests/{id}`: where a queued write stands.
//!
//! `{"requestId", "status": "queued" | "replaying" | "completed" |
//! "failed", "method", "path", "acceptedAt", "attempts", "lastError",
//! "response": {"status", "body"}}` (`response` once completed; `body` is
//! the upstream's JSON, or its text). Only the principal (`sub`) that sent
//! the write may read it: anyone else, like an unknown id, gets 404.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Request, State},
    response::{IntoResponse, Response},
};
use gateway_api::{QueuedResponse, QueuedState, RequestStatus};
use serde_json::Value;
use uuid::Uuid;
use write_queue::WriteState;

use crate::{
    auth,
    principal::{Authenticated, Principal},
    problem::{Code, GatewayError},
    state::Gateway,
};

/// The handler.
pub async fn status(
    State(gateway): State<Arc<Gateway>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let principal = match auth::authenticate(&gateway.verifier, request.headers()).await {
        Ok(principal) => principal,
        Err(refused) => return refused,
    };
    let mut response = answer(&gateway, &principal, &id).await;
    response.extensions_mut().insert(Authenticated);
    response
}

/// The answer to `principal` about request `id`.
async fn answer(gateway: &Gateway, principal: &Principal, id: &str) -> Response {
    let not_found = || {
        GatewayError::new(Code::NotFound)
            .with_message("No queued request with this id.")
            .into_response()
    };
    let (Some(degraded), Ok(id)) = (gateway.degraded.as_ref(), Uuid::try_parse(id)) else {
        return not_found();
    };
    let record = match degraded.queue.get(id).await {
        Ok(Some(record)) if !principal.sub.is_empty() && *record.subject == *principal.sub => {
            record
        }
        Ok(_) => return not_found(),
        Err(error) => {
            tracing::error!(%error, "reading the write queue failed");
            return GatewayError::new(Code::ServiceUnavailable).into_response();
        }
    };
    let response = record.outcome.as_ref().map(|outcome| QueuedResponse {
        status: outcome.status,
        body: serde_json::from_slice::<Value>(&outcome.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&outcome.body).into_owned())),
    });
    Json(RequestStatus {
        request_id: record.id,
        status: state_of(record.state),
        method: record.meta.method.clone(),
        path: record.meta.path_and_query.clone(),
        accepted_at: time::OffsetDateTime::from(record.accepted_at()),
        attempts: record.attempts,
        last_error: record.last_error.clone(),
        response,
    })
    .into_response()
}

/// The wire state of a queue's state.
fn state_of(state: WriteState) -> QueuedState {
    match state {
        WriteState::Queued => QueuedState::Queued,
        WriteState::Replaying => QueuedState::Replaying,
        WriteState::Completed => QueuedState::Completed,
        WriteState::Failed => QueuedState::Failed,
    }
}
