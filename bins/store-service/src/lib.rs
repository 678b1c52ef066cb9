//! # store-service
//!
//! The store API (issue 6): stores on PostgreSQL (primary + replicas through
//! `db-failover`) with optimistic locking, `Idempotency-Key`, an audit trail
//! written in the same transaction as each change, secrets encrypted with
//! Vault Transit, and database credentials issued and rotated by Vault's
//! database secrets engine. The types, validation, lifecycle and error codes
//! are `store-domain`'s.
//!
//! ## Routes
//!
//! | route | what |
//! |---|---|
//! | `GET /api/stores` | `{"stores", "count", "nextCursor"}`, `limit` 1..=200 (50), `status=`, `cursor=`, `Link: <...>; rel="next"`; from a replica |
//! | `POST /api/stores` | 201 `{"store", "message": "Store created successfully"}`, `Location`, `ETag`, `Read-After` |
//! | `GET /api/stores/{id}` | `{"store"}` + `ETag`; replica after the `Read-After` token; a 404 is confirmed on the primary |
//! | `PUT /api/stores/{id}` | `version` in the body or `If-Match`; 409 `CONCURRENCY_ERROR` / 412 / 428 / 409 `INVALID_STATUS_TRANSITION` |
//! | `GET /api/stores/{id}/history` | `{"storeId", "events", "count", "nextCursor"}`, paged like the list (`limit`, `cursor=`, `Link`): every create and update (changed fields, old and new values, secrets as key names) and its `actor` (the subject, `null` when anonymous) |
//! | `GET /api/stores/{id}/secrets` | the decrypted secrets |
//! | `GET /health`, `GET /ready`, `GET /metrics`, `GET /openapi.json` | liveness, readiness, Prometheus (every label from a closed set: see [`metrics`]), OpenAPI 3.1 |
//!
//! Every error is `application/problem+json` (`type`, `title`, `status`,
//! `detail`, `instance`, `error`, `message`, `requestId`).
//!
//! The caller is the subject the gateway verified, forwarded in the
//! gateway's own `x-gateway-subject` header (percent-encoded; the gateway
//! removes it from every client request): see [`subject`]. A request
//! without it (straight to the service, local use) is anonymous; one that
//! does not decode is a 400 `INVALID_SUBJECT`. Every audit event records
//! it as `actor`.
//!
//! `Idempotency-Key` on POST and PUT replays the first response
//! (`Idempotent-Replayed: true`), 422 with another body, 409 while the
//! first runs; records are kept 24 h and belong to the subject (the same
//! key from two subjects is two independent requests; anonymous requests
//! share one subject of their own).
//! The response is recorded in the change's own transaction (with the store
//! row and its audit event), so after a crash, a failover or a failed
//! commit a retry with the same key either replays it or runs the request
//! afresh: never both, never a key stuck in progress (see [`idempotency`]).
//! A request that outlives `REQUEST_TIMEOUT_SECS` is a 504 `TIMEOUT`.
//!
//! ## Configuration
//!
//! [`Settings`]: `store-service --help` lists every variable (`PORT`,
//! `BAO_ADDR`/`VAULT_ADDR`, `BAO_ROLE_ID` + `BAO_SECRET_ID` (AppRole),
//! `BAO_K8S_ROLE` (+ `BAO_K8S_MOUNT`, `BAO_K8S_JWT_PATH`: Kubernetes auth) or
//! `BAO_TOKEN`, TLS to Vault as vault-client reads it (`BAO_CACERT`, ...),
//! `DB_PRIMARY`, `DB_REPLICAS`, `DB_NAME`, `DATABASE_URL` (fallback),
//! `VAULT_DB_ROLE`, `VAULT_DB_MOUNT`, `TRANSIT_MOUNT`, `TRANSIT_KEY`,
//! `IDEMPOTENCY_HMAC_KEY`, `VAULT_STARTUP_TIMEOUT_SECS`, `DB_MAX_CONNECTIONS`, `REQUEST_TIMEOUT_SECS`,
//! `MAX_CONNECTIONS`, `HEADER_READ_TIMEOUT_SECS`, `DRAIN_TIMEOUT_SECS`,
//! `LOG_FORMAT`, `OTEL_EXPORTER_OTLP_ENDPOINT`, `HOST`).
//!
//! The listener is `service_kit::serve`: at most `MAX_CONNECTIONS` (4096)
//! client connections (past it, a 503 `TOO_MANY_CONNECTIONS` and a close),
//! a client that takes longer than `HEADER_READ_TIMEOUT_SECS` (120; above
//! the gateway's 90 s upstream idle timeout, so the gateway closes its
//! pooled connections first) to send a request head is closed, slow or
//! idle, and SIGTERM drains requests for at most `DRAIN_TIMEOUT_SECS` (20).
//! `store-service migrate` applies `migrations/` with
//! `MIGRATION_DATABASE_URL` (the schema owner); the runtime user from Vault
//! has DML rights only.
//!
//! ## Dependencies
//!
//! - `store-domain` (feature `openapi`): the API's types, validation,
//!   lifecycle, page/cursor, error codes and problem body.
//! - `breaker` (no features): `ExponentialBackoff`, the workspace's one
//!   back-off, for the Vault retries at start.
//! - `db-failover` (feature `metrics`): primary/replica routing, failover,
//!   read-your-writes tokens (`Read-After`), rotating credentials.
//! - `vault-client` (feature `metrics`): AppRole/token login, the lease
//!   manager of database credentials, Transit batch encrypt/decrypt.
//! - `axum` (`http1`, `json`, `query`, `tokio`, `matched-path`): the HTTP
//!   server and routing; `tower` / `tower-http`: the layer plumbing.
//! - `tokio`, `tokio-postgres` (`serde_json`, `uuid`, `time` types): the
//!   runtime and the SQL.
//! - `refinery`: `store-service migrate` (same history table as testkit).
//! - `clap` (`derive`, `env`): the typed configuration and `--help`.
//! - `service-kit`: what the service shares with the gateway, written
//!   once: the server loop and `shutdown_signal`, the request-id layer (the
//!   platform's rule for which client request ids are kept, the request
//!   span), JSON logs, OTLP span export when `OTEL_EXPORTER_OTLP_ENDPOINT`
//!   is set with the W3C `traceparent` of a request as its parent
//!   (`telemetry`), problem+json responses (`problem`), the Prometheus
//!   recorder and the bounded `method` label, and `Secret` (configuration
//!   secrets that never print).
//! - `ring` (already built for rustls): the HMAC-SHA-256 of `Idempotency-Key`
//!   fingerprints and the random key of the fallback.
//! - `http-body-util`: tells a body over the limit (413) from one that
//!   cannot be read (400).
//! - `metrics`, `metrics-exporter-prometheus` (no HTTP listener of its
//!   own): `/metrics` (the recorder is installed through `service-kit`).
//! - `utoipa`, `utoipa-axum`: `/openapi.json` from the handlers'
//!   annotations.
//! - `tracing`: logs and spans.
//! - `uuid` (`v7`): store ids, time-ordered.
//! - `time`: timestamps; `serde`, `serde_json`: JSON; `thiserror`,
//!   `anyhow`: errors.

pub mod body;
pub mod fingerprint;
pub mod idempotency;
pub mod metrics;
pub mod migrate;
pub mod openapi;
pub mod problem;
pub mod read_after;
pub mod readiness;
pub mod routes;
pub mod secrets;
pub mod settings;
pub mod startup;
pub mod state;
pub mod storage;
pub mod subject;
pub mod timeout;

pub use settings::{Cli, Command, Secret, Settings};
pub use startup::Application;
pub use state::{AppState, CredentialSource};
