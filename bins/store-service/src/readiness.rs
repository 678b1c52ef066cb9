//! `GET /ready`: 200 only when the database credentials are loaded and the
//! primary is reachable, else 503 naming the failing check. Credentials from
//! the `DATABASE_URL` fallback (Vault unreachable at start) are reported as
//! `degraded`, with 200: the service works, without rotation or secrets;
//! so is an `Idempotency-Key` fingerprint key of this process only (no
//! Vault and no `IDEMPOTENCY_HMAC_KEY`).

use std::time::SystemTime;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{
    fingerprint::KeySource,
    state::{AppState, CredentialSource},
};

/// The readiness report.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses(
        (status = 200, description = "Ready (`status`: `ready`, or `degraded` on the DATABASE_URL fallback)", body = Object),
        (status = 503, description = "Not ready: `checks` names the failing one", body = Object),
    ))]
pub async fn ready(State(state): State<AppState>) -> Response {
    let health = state.cluster.health();
    let database = if health.is_ready() {
        json!({"status": "up", "readableReplicas": health.readable_replicas().count()})
    } else {
        json!({"status": "down", "detail": "no reachable primary"})
    };
    let (secrets_ok, secrets) = match (&state.source, &state.leases) {
        (CredentialSource::Vault, Some(leases)) => {
            let current = leases.current();
            let ttl = current
                .expires_at
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            let valid = !ttl.is_zero();
            (
                valid,
                json!({
                    "status": if valid { "up" } else { "down" },
                    "source": "vault",
                    "leaseTtlSeconds": ttl.as_secs(),
                    "generation": current.generation,
                    "transit": state.secrets.is_available(),
                }),
            )
        }
        (CredentialSource::Fallback { cause }, _) => (
            true,
            json!({"status": "degraded", "source": "DATABASE_URL", "detail": cause, "transit": false}),
        ),
        (CredentialSource::Vault, None) => (false, json!({"status": "down"})),
    };
    let ephemeral = state.fingerprints.source() == KeySource::Ephemeral;
    let idempotency = json!({
        "status": if ephemeral { "degraded" } else { "up" },
        "fingerprintKey": match state.fingerprints.source() {
            KeySource::Configured => "IDEMPOTENCY_HMAC_KEY",
            KeySource::Transit => "transit",
            KeySource::Ephemeral => "this process only",
        },
    });
    let ok = health.is_ready() && secrets_ok;
    let degraded = matches!(state.source, CredentialSource::Fallback { .. }) || ephemeral;
    let status = match (ok, degraded) {
        (false, _) => "unavailable",
        (true, true) => "degraded",
        (true, false) => "ready",
    };
    let body: Value = json!({
        "status": status,
        "service": "store-service",
        "checks": {"database": database, "secrets": secrets, "idempotency": idempotency},
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}
