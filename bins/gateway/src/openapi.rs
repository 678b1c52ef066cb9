//! `GET /openapi.json`: the API as consumers see it through the gateway,
//! generated at run time from the documents of the upstreams behind it, so
//! the two cannot drift.
//!
//! Each route with an `openapi` path gives the operations of its
//! upstream's document under its prefix, for the methods the route allows;
//! the gateway then states what it adds to each ([`compose`]):
//!
//! - the bearer JWT security scheme, with the scopes the operation needs
//!   (the route's configuration: by method, or by path segment);
//! - the problems the gateway itself sends (its [`Code`] catalogue: 401,
//!   403, 429, 400, 413, 502, 503, 504), with `Retry-After` and
//!   `WWW-Authenticate` where they come;
//! - the `RateLimit` and `RateLimit-Policy` fields of every proxied answer;
//! - with degraded mode: the `202` of a queued write (`Accepted`, with
//!   `Location`), its own 429/503 refusals and `GET /api/requests/{id}`;
//!   a stale read's `meta` member, `Age` and `Cache-Status`;
//! - and its own routes (`/api/requests/{id}`, `/health`, `/ready`,
//!   `/metrics`, this document).
//!
//! The upstream's `x-gateway-subject` parameter is left out: the gateway
//! sets it itself. Documents are fetched through the pooled upstream
//! client within the route's timeout, one composition at a time, and the
//! composed document is kept for [`FRESH_FOR`]; when an upstream cannot be
//! read, the last composed document is served (and the upstreams are left
//! alone for [`RETRY_AFTER_FAILURE`]), and without one the answer is 503.

use std::{sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderValue, Method, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use gateway_api::{Accepted, QueuedResponse, QueuedState, RequestStatus, StaleMeta, StaleReason};
use http_body_util::{BodyExt as _, Limited};
use serde_json::{Map, Value, json};
use store_domain::ACTOR_HEADER;
use utoipa::{PartialSchema as _, ToSchema};

use crate::{
    problem::{Code, GatewayError},
    routes::Route,
    state::Gateway,
};

/// How long a composed document is served before the upstreams' documents
/// are read again.
pub const FRESH_FOR: Duration = Duration::from_secs(60);

/// The largest upstream document read.
const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// The security scheme's name in the document.
const BEARER: &str = "bearer";

/// The methods an OpenAPI path item holds.
const METHODS: [&str; 7] = ["get", "put", "post", "delete", "patch", "head", "options"];

/// How long an upstream that could not be read is left alone before the
/// next composition (the last document is served meanwhile).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// `GET /openapi.json`. One request at a time composes the document; the
/// others are answered at once with the last one (or 503 before there is
/// one), so a flood of requests never queues on an upstream that hangs.
pub async fn document(State(gateway): State<Arc<Gateway>>) -> Response {
    let kept = || {
        gateway
            .openapi
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    };
    let now = tokio::time::Instant::now();
    let last = kept();
    if let Some((due, body)) = &last
        && now < *due
    {
        return json_response(body.clone());
    }
    let Ok(_composing) = gateway.openapi.composing.try_lock() else {
        return last.map_or_else(unavailable, |(_, body)| json_response(body));
    };
    let answer = match fetch_all(&gateway).await {
        Ok(upstreams) => {
            let composed = compose(&gateway, &upstreams);
            let body = Bytes::from(serde_json::to_vec(&composed).unwrap_or_default());
            Some((now + FRESH_FOR, body))
        }
        Err(error) => {
            tracing::warn!(%error, "an upstream's OpenAPI document could not be read");
            last.map(|(_, body)| (tokio::time::Instant::now() + RETRY_AFTER_FAILURE, body))
        }
    };
    let Some((due, body)) = answer else {
        return unavailable();
    };
    *gateway
        .openapi
        .kept
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((due, body.clone()));
    json_response(body)
}

/// 503 before any document could be composed.
fn unavailable() -> Response {
    GatewayError::new(Code::UpstreamUnavailable)
        .with_message("The API description could not be read from the upstream.")
        .retry_after(RETRY_AFTER_FAILURE)
        .into_response()
}

fn json_response(body: Bytes) -> Response {
    let mut response = Body::from(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The documents of every route that names one: (route, document).
async fn fetch_all(gateway: &Gateway) -> Result<Vec<(&Route, Value)>, String> {
    let mut documents = Vec::new();
    for route in gateway.routes.0.iter() {
        let Some(path) = route.openapi.as_deref() else {
            continue;
        };
        let uri = format!(
            "{}://{}{}{}",
            route.scheme, route.authority, route.base_path, path
        );
        let request = Request::get(&uri)
            .header(header::ACCEPT, "application/json")
            .body(Body::empty())
            .map_err(|e| format!("{}: {e}", route.name))?;
        let read = async {
            let response = gateway
                .client
                .request(request)
                .await
                .map_err(|e| e.to_string())?;
            if response.status() != StatusCode::OK {
                return Err(format!("answered {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            serde_json::from_slice::<Value>(&body).map_err(|e| e.to_string())
        };
        let document = tokio::time::timeout(route.timeout, read)
            .await
            .map_err(|_| format!("{}: no document within {:?}", route.name, route.timeout))?
            .map_err(|e| format!("{}: {e}", route.name))?;
        documents.push((&**route, document));
    }
    Ok(documents)
}

/// The gateway's document from its routes' `upstreams` documents.
pub fn compose(gateway: &Gateway, upstreams: &[(&Route, Value)]) -> Value {
    let degraded = gateway.degraded.is_some();
    let mut paths = Map::new();
    let mut components = Components::default();
    for (route, document) in upstreams {
        components.merge(&document["components"]);
        let Some(items) = document["paths"].as_object() else {
            continue;
        };
        for (path, item) in items {
            if !route.matches(path) {
                continue;
            }
            let mut kept = Map::new();
            for method in METHODS {
                let Some(operation) = item.get(method) else {
                    continue;
                };
                let Ok(parsed) = method.to_uppercase().parse::<Method>() else {
                    continue;
                };
                let Some(scopes) = route.required_scopes(&parsed, path) else {
                    // The route does not allow it: the gateway answers 405.
                    continue;
                };
                let stale = degraded && method == "get" && !route.is_sensitive(path);
                let write = degraded && matches!(method, "post" | "put");
                kept.insert(
                    method.to_owned(),
                    proxied(
                        inline_responses(operation.clone(), document),
                        scopes,
                        Proxied { stale, write },
                    ),
                );
            }
            if !kept.is_empty() {
                // Path-level parameters stay (the subject one left out).
                if let Some(parameters) = item.get("parameters") {
                    kept.insert("parameters".into(), without_subject(parameters));
                }
                paths.insert(path.clone(), Value::Object(kept));
            }
        }
    }
    own_paths(&mut paths, degraded);
    components.add_gateway();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Store platform API (gateway)",
            "version": env!("CARGO_PKG_VERSION"),
            "description": DESCRIPTION,
        },
        "paths": paths,
        "components": components.into_value(),
    })
}

/// The document's description.
const DESCRIPTION: &str = "The store API as it is served through the gateway. Every operation needs a bearer JWT (`Authorization: Bearer <token>`) with the scopes its security requirement lists; without one it is 401 with `WWW-Authenticate: Bearer`, without a scope 403. Each client has a token bucket per route, stated on every proxied answer in `RateLimit-Policy` and `RateLimit`; an empty bucket is 429 with `Retry-After`. Every error the gateway itself sends is an RFC 9457 `application/problem+json` body (`Problem`). When the upstream is down, reads may be answered from the gateway's last good copy (a `meta` member with `isStale: true`, `Age` and `Cache-Status`), and writes (`POST`, `PUT`) are queued durably: `202 Accepted` with `Location: /api/requests/{id}`, replayed once the upstream is back, each with its `Idempotency-Key` (made by the gateway when the client sent none), so a replay is applied once.";

/// What the gateway adds to a proxied operation.
#[derive(Clone, Copy)]
struct Proxied {
    /// A read that may be answered from a stale copy.
    stale: bool,
    /// A write that may be queued (202).
    write: bool,
}

/// A proxied `operation` as the gateway serves it.
fn proxied(mut operation: Value, scopes: &[String], how: Proxied) -> Value {
    let Some(object) = operation.as_object_mut() else {
        return operation;
    };
    if let Some(parameters) = object.get("parameters") {
        let parameters = without_subject(parameters);
        object.insert("parameters".into(), parameters);
    }
    object.insert("security".into(), json!([{ BEARER: scopes }]));
    let responses = object
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else {
        return operation;
    };
    // Every answer that came through the route carries its limits.
    for response in responses.values_mut() {
        add_headers(response, &["RateLimit", "RateLimit-Policy"]);
    }
    let mut codes = vec![
        Code::Unauthorized,
        Code::RateLimited,
        Code::BadRequest,
        Code::BadGateway,
        Code::SecurityServiceUnavailable,
        Code::UpstreamUnavailable,
        Code::ServiceUnavailable,
        Code::GatewayTimeout,
    ];
    if !scopes.is_empty() {
        codes.push(Code::InsufficientScope);
    }
    if object_has_body(&operation) {
        codes.push(Code::PayloadTooLarge);
    }
    if how.write {
        codes.extend([
            Code::InvalidIdempotencyKey,
            Code::TooManyQueuedWrites,
            Code::WriteQueueFull,
            Code::WriteQueueUnavailable,
        ]);
    }
    let Some(responses) = operation["responses"].as_object_mut() else {
        return operation;
    };
    add_problems(responses, &codes);
    if how.write {
        responses.insert(
            "202".into(),
            json!({
                "description": "The upstream is down: the write is stored durably and will be sent once it is back (with its `Idempotency-Key`, so it is applied once). Its status is at `Location`, `GET /api/requests/{requestId}`.",
                "headers": header_refs(&["Location", "Retry-After", "X-Request-Id", "RateLimit", "RateLimit-Policy"]),
                "content": {"application/json": {"schema": schema_ref("Accepted")}},
            }),
        );
    }
    if how.stale
        && let Some(ok) = responses.get_mut("200")
    {
        add_headers(ok, &["Age", "Cache-Status"]);
        if let Some(schema) = ok.pointer_mut("/content/application~1json/schema") {
            *schema = json!({
                "allOf": [
                    schema.take(),
                    {
                        "type": "object",
                        "properties": {"meta": schema_ref("StaleMeta")},
                    },
                ],
            });
        }
        if let Some(Value::String(description)) = ok.get_mut("description") {
            description.push_str("; or, while the upstream is down, the gateway's last good copy with a `meta` member (`isStale: true`), `Age` and `Cache-Status`");
        }
    }
    operation
}

/// `operation` with each response that refers to the document's
/// `components/responses` replaced by what it refers to, so the gateway
/// can add to it.
fn inline_responses(mut operation: Value, document: &Value) -> Value {
    if let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    {
        for response in responses.values_mut() {
            let target = response
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix('#'))
                .and_then(|pointer| document.pointer(pointer));
            if let Some(target) = target {
                *response = target.clone();
            }
        }
    }
    operation
}

/// Whether the operation takes a request body.
fn object_has_body(operation: &Value) -> bool {
    operation.get("requestBody").is_some()
}

/// `parameters` without the subject header the gateway sets itself.
fn without_subject(parameters: &Value) -> Value {
    let Some(list) = parameters.as_array() else {
        return parameters.clone();
    };
    Value::Array(
        list.iter()
            .filter(|p| {
                !(p["in"] == "header"
                    && p["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(ACTOR_HEADER)))
            })
            .cloned()
            .collect(),
    )
}

/// Adds `codes` to `responses`: one response per status, its description
/// naming each code; an upstream's response of the same status keeps its
/// content and gains the gateway's codes.
fn add_problems(responses: &mut Map<String, Value>, codes: &[Code]) {
    for code in codes {
        let status = code.status().as_u16().to_string();
        let line = format!("`{}` (gateway): {}", code.name(), code.message());
        let response = responses.entry(status).or_insert_with(|| {
            json!({
                "description": "",
                "content": {"application/problem+json": {"schema": schema_ref("Problem")}},
            })
        });
        if let Some(Value::String(description)) = response.get_mut("description") {
            if !description.is_empty() {
                description.push_str("; ");
            }
            description.push_str(&line);
        }
        if let Some(content) = response
            .as_object_mut()
            .map(|r| r.entry("content").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
        {
            content
                .entry("application/problem+json")
                .or_insert_with(|| json!({"schema": schema_ref("Problem")}));
        }
        let mut headers = vec!["X-Request-Id"];
        match code {
            Code::Unauthorized => headers.push("WWW-Authenticate"),
            Code::InsufficientScope => headers.push("WWW-Authenticate"),
            Code::RateLimited => headers.extend(["Retry-After", "RateLimit", "RateLimit-Policy"]),
            c if c.status() == StatusCode::SERVICE_UNAVAILABLE
                || c.status() == StatusCode::GATEWAY_TIMEOUT
                || *c == Code::TooManyQueuedWrites =>
            {
                headers.push("Retry-After");
            }
            _ => {}
        }
        add_headers(response, &headers);
    }
}

/// Adds references to the component headers `names` to `response`.
fn add_headers(response: &mut Value, names: &[&str]) {
    let Some(object) = response.as_object_mut() else {
        return;
    };
    let Some(headers) = object
        .entry("headers")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    else {
        return;
    };
    for name in names {
        headers
            .entry((*name).to_owned())
            .or_insert_with(|| json!({"$ref": format!("#/components/headers/{name}")}));
    }
}

/// A `headers` member referring to the component headers `names`.
fn header_refs(names: &[&str]) -> Value {
    let mut response = json!({});
    add_headers(&mut response, names);
    response["headers"].take()
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// A problem response of the gateway's own routes.
fn problem_of(codes: &[Code]) -> Map<String, Value> {
    let mut responses = Map::new();
    add_problems(&mut responses, codes);
    responses
}

/// The gateway's own routes.
fn own_paths(paths: &mut Map<String, Value>, degraded: bool) {
    if degraded {
        let mut responses = problem_of(&[
            Code::Unauthorized,
            Code::RateLimited,
            Code::NotFound,
            Code::SecurityServiceUnavailable,
            Code::ServiceUnavailable,
        ]);
        responses.insert(
            "200".into(),
            json!({
                "description": "Where the write stands; once `completed`, the upstream's answer",
                "headers": header_refs(&["X-Request-Id"]),
                "content": {"application/json": {"schema": schema_ref("RequestStatus")}},
            }),
        );
        if let Some(Value::String(d)) = responses
            .get_mut("404")
            .and_then(|r| r.get_mut("description"))
        {
            d.push_str(
                " An unknown id, and a write another subject sent, are both 404 (never 403).",
            );
        }
        paths.insert(
            "/api/requests/{id}".into(),
            json!({"get": {
                "tags": ["requests"],
                "operationId": "request_status",
                "summary": "A queued write's status",
                "description": "Only the subject (the token's `sub`) that sent the write may read it.",
                "parameters": [{
                    "name": "id", "in": "path", "required": true,
                    "description": "The `requestId` of the 202 (its `Location`)",
                    "schema": {"type": "string"},
                }],
                "security": [{ BEARER: [] }],
                "responses": responses,
            }}),
        );
    }
    let public = |id: &str, summary: &str, ok: Value, mut more: Map<String, Value>| {
        more.insert("200".into(), ok);
        json!({"get": {
            "tags": ["operations"],
            "operationId": id,
            "summary": summary,
            "security": [{}],
            "responses": more,
        }})
    };
    let rate_limited = || problem_of(&[Code::RateLimited]);
    paths.insert(
        "/health".into(),
        public(
            "gateway_health",
            "Liveness",
            json!({"description": "The process is up", "content": {"application/json": {"schema": {
                "type": "object", "required": ["status"],
                "properties": {"status": {"type": "string", "enum": ["ok"]}},
            }}}}),
            rate_limited(),
        ),
    );
    let mut not_ready = rate_limited();
    not_ready.insert(
        "503".into(),
        json!({"description": "Not ready: each check", "content": {"application/json": {"schema": schema_ref("Readiness")}}}),
    );
    paths.insert(
        "/ready".into(),
        public(
            "gateway_ready",
            "Readiness: signing keys, the write queue, the upstreams resolve, not shutting down",
            json!({"description": "Ready", "content": {"application/json": {"schema": schema_ref("Readiness")}}}),
            not_ready,
        ),
    );
    paths.insert(
        "/metrics".into(),
        public(
            "gateway_metrics",
            "Prometheus metrics",
            json!({"description": "The text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}),
            rate_limited(),
        ),
    );
    let mut unreadable = rate_limited();
    unreadable.extend(problem_of(&[Code::UpstreamUnavailable]));
    paths.insert(
        "/openapi.json".into(),
        public(
            "gateway_openapi",
            "This document",
            json!({"description": "This OpenAPI 3.1 document", "content": {"application/json": {"schema": {"type": "object"}}}}),
            unreadable,
        ),
    );
}

/// The components: the upstreams', then the gateway's.
#[derive(Default)]
struct Components {
    sections: Map<String, Value>,
}

impl Components {
    /// Adds an upstream document's components; a name already there keeps
    /// its first definition.
    fn merge(&mut self, components: &Value) {
        let Some(components) = components.as_object() else {
            return;
        };
        for (section, entries) in components {
            let Some(entries) = entries.as_object() else {
                continue;
            };
            let target = self
                .sections
                .entry(section.clone())
                .or_insert_with(|| json!({}));
            if let Some(target) = target.as_object_mut() {
                for (name, entry) in entries {
                    target.entry(name.clone()).or_insert_with(|| entry.clone());
                }
            }
        }
    }

    fn insert(&mut self, section: &str, name: &str, value: Value) {
        if let Some(target) = self
            .sections
            .entry(section.to_owned())
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            target.entry(name.to_owned()).or_insert(value);
        }
    }

    /// The gateway's schemas, headers and security scheme.
    fn add_gateway(&mut self) {
        let schemas = [
            (Accepted::name(), Accepted::schema()),
            (RequestStatus::name(), RequestStatus::schema()),
            (QueuedState::name(), QueuedState::schema()),
            (QueuedResponse::name(), QueuedResponse::schema()),
            (StaleMeta::name(), StaleMeta::schema()),
            (StaleReason::name(), StaleReason::schema()),
            (
                store_domain::Problem::name(),
                store_domain::Problem::schema(),
            ),
            (
                store_domain::FieldError::name(),
                store_domain::FieldError::schema(),
            ),
        ];
        for (name, schema) in schemas {
            self.insert(
                "schemas",
                &name,
                serde_json::to_value(schema).unwrap_or_default(),
            );
        }
        self.insert(
            "schemas",
            "Readiness",
            json!({
                "type": "object",
                "required": ["status", "signingKeys", "writeQueue", "upstreams", "shuttingDown"],
                "properties": {
                    "status": {"type": "string", "enum": ["ready", "not ready"]},
                    "configuration": {"type": "boolean"},
                    "signingKeys": {"type": "boolean", "description": "The signing keys were obtained"},
                    "writeQueue": {"type": "boolean", "description": "The write queue answers"},
                    "upstreams": {"type": "object", "additionalProperties": {"type": "boolean"}, "description": "By route: its upstream's name resolves"},
                    "shuttingDown": {"type": "boolean"},
                },
            }),
        );
        let string =
            |description: &str| json!({"description": description, "schema": {"type": "string"}});
        for (name, description) in [
            (
                "X-Request-Id",
                "The request id (the client's when it is 1 to 128 characters of A-Z a-z 0-9 - _ . :, else a UUIDv7); also in every log line and problem body",
            ),
            (
                "Retry-After",
                "Seconds to wait before sending the request again",
            ),
            (
                "WWW-Authenticate",
                "`Bearer` with `error` and `error_description` (RFC 6750)",
            ),
            (
                "RateLimit-Policy",
                "The client's quota on this route: `\"<route>\";q=<tokens>;w=<seconds to refill>` (draft-ietf-httpapi-ratelimit-headers)",
            ),
            (
                "RateLimit",
                "What is left of it: `\"<route>\";r=<tokens left>;t=<seconds until full>`",
            ),
            (
                "Location",
                "`/api/requests/{requestId}`: the queued write's status",
            ),
            ("Age", "Seconds since the stale copy was taken"),
            (
                "Cache-Status",
                "RFC 9211: `gateway; hit` or `gateway; fwd=stale`, with the stale copy's `ttl` and the reason in `detail`",
            ),
        ] {
            self.insert("headers", name, string(description));
        }
        self.insert(
            "securitySchemes",
            BEARER,
            json!({
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token of the configured issuer and audience, verified against its JWKS (fail closed: without the keys every request is 503 `SECURITY_SERVICE_UNAVAILABLE`). The scopes (`scope` claim) an operation needs are listed in its security requirement.",
            }),
        );
    }

    fn into_value(self) -> Value {
        Value::Object(self.sections)
    }
}
