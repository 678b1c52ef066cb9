//! The reverse proxy (the innermost handler): HTTP/1.1 to the route's
//! upstream over pooled keep-alive connections (hyper-util's client),
//! hop-by-hop headers removed both ways (and those named in `Connection`),
//! `X-Forwarded-For/-Proto/-Host` set (`X-Forwarded-For` is appended to
//! only behind a trusted proxy, else replaced by the client's address), the
//! request id and the W3C trace context forwarded, the route's breaker and
//! timeout applied.
//!
//! The verified subject goes upstream in [`store_domain::ACTOR_HEADER`],
//! and only there: a client's own copy of that header is removed. Writes
//! keep the client's `Idempotency-Key`; a write without one that may be
//! queued gets a fresh key (never the request id, which a client chooses),
//! so that a first attempt that timed out and its replay apply once.
//!
//! Bodies with a `Content-Length` (checked against the limit by the
//! routing layer) are streamed; chunked bodies are collected up to the
//! limit first, so an oversized one is refused (413) before anything
//! reaches the upstream. Responses are streamed back.

use std::{
    error::Error as _,
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{
    body::Body,
    extract::{FromRef, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use breaker::{OpenAction, Outcome};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use crate::{
    client::{ClientIp, X_FORWARDED_FOR},
    degraded::{
        Degraded, Down, IDEMPOTENCY_KEY, Write, queue_write, queued_ahead, read_while_down,
    },
    principal::Principal,
    problem::{Code, GatewayError},
    queue::ordered_resource,
    routes::{MatchedRoute, Route},
    stale::forbids_storing,
    state::Gateway,
    upstream::UpstreamClient,
};
use service_kit::request_id::RequestId;

/// The header of the verified subject ([`store_domain::ACTOR_HEADER`]).
pub static ACTOR: HeaderName = HeaderName::from_static(store_domain::ACTOR_HEADER);
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the hop-by-hop headers and those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What the proxy reads: the upstream client, degraded mode and the body
/// limit.
#[derive(Clone, Debug)]
pub struct Forwarding {
    /// The pooled upstream client.
    pub client: UpstreamClient,
    /// Degraded mode (stale reads, the write queue), when configured.
    pub degraded: Option<Arc<Degraded>>,
    /// `server.body_limit_bytes`.
    pub body_limit: u64,
}

impl FromRef<Arc<Gateway>> for Forwarding {
    fn from_ref(gateway: &Arc<Gateway>) -> Self {
        Self {
            client: gateway.client.clone(),
            degraded: gateway.degraded.clone(),
            body_limit: gateway.config.server.body_limit_bytes,
        }
    }
}

/// When to come back after a failure that did not open the breaker.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

/// When to ask about a write queued behind earlier queued writes.
const RETRY_AFTER_QUEUED_AHEAD: Duration = Duration::from_secs(1);

/// The largest `200` kept for stale reads.
const MAX_STALE_BODY: u64 = 1024 * 1024;

/// The handler: forwards the request to its route's upstream; when the
/// upstream is down and the route's breaker falls back
/// ([`OpenAction::Fallback`]), reads get their stale copy and writes are
/// queued ([`crate::degraded`]); a route whose breaker denies
/// ([`OpenAction::Deny`]) fails closed.
pub async fn forward(State(forwarding): State<Forwarding>, request: Request) -> Response {
    let Some(MatchedRoute(route)) = request.extensions().get::<MatchedRoute>().cloned() else {
        return GatewayError::new(Code::NotFound).into_response();
    };
    let method = request.method().clone();
    let is_read = method == Method::GET;
    let is_write = method == Method::POST || method == Method::PUT;
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let principal = request.extensions().get::<Arc<Principal>>().cloned();
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    // The route's breaker preset decides what an unavailable upstream means:
    // `Fallback` gives stale reads and queued writes (when degraded mode is
    // on), `Deny` fails closed with the plain 502/503/504.
    let degraded = match route.breaker.policy().on_open() {
        OpenAction::Fallback => forwarding.degraded.as_deref(),
        _ => None,
    };
    let client = request.extensions().get::<ClientIp>().copied();
    let (mut parts, body) = request.into_parts();
    let limit = usize::try_from(forwarding.body_limit).unwrap_or(usize::MAX);
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    // A write is read whole (within the limit) when it may have to be
    // queued, and carries an Idempotency-Key so that a replay applies once.
    let mut kept_body = None;
    let mut idempotency_key = String::new();
    if is_write {
        idempotency_key = match parts.headers.get(&IDEMPOTENCY_KEY) {
            // The store API's rule, checked before anything is forwarded
            // or queued: a queued write never fails on its key.
            Some(key) => match key.to_str() {
                Ok(key) if store_domain::is_valid_idempotency_key(key) => key.to_owned(),
                _ => return GatewayError::new(Code::InvalidIdempotencyKey).into_response(),
            },
            None if degraded.is_some() => {
                let key = uuid::Uuid::now_v7().to_string();
                if let Ok(value) = HeaderValue::from_str(&key) {
                    parts.headers.insert(IDEMPOTENCY_KEY.clone(), value);
                }
                key
            }
            None => String::new(),
        };
    }
    let body = if chunked || (is_write && degraded.is_some()) {
        match Limited::new(body, limit).collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                kept_body = Some(bytes.clone());
                Body::from(bytes)
            }
            Err(error) => {
                return if error.downcast_ref::<LengthLimitError>().is_some() {
                    GatewayError::new(Code::PayloadTooLarge).into_response()
                } else {
                    GatewayError::new(Code::BadRequest)
                        .with_message("The request body could not be read.")
                        .into_response()
                };
            }
        }
    } else {
        Body::new(Limited::new(body, limit))
    };
    // What to answer when the upstream is down, with when to retry.
    let down = |why: Down, retry_after: Duration| {
        let (route, path_and_query, parts_headers) = (&route, &path_and_query, &parts.headers);
        let (principal, request_id, idempotency_key) = (&principal, &request_id, &idempotency_key);
        let (method, kept_body) = (&method, kept_body.clone());
        async move {
            match (degraded, kept_body) {
                (Some(degraded), _) if is_read => {
                    read_while_down(degraded, route, path_and_query, why, retry_after)
                }
                (Some(degraded), Some(body)) if is_write => {
                    let write = Write {
                        route,
                        principal: principal.as_deref(),
                        request_id,
                        method: method.as_str(),
                        path_and_query,
                        headers: parts_headers,
                        idempotency_key,
                        body,
                    };
                    queue_write(degraded, write, retry_after).await
                }
                _ => match why {
                    Down::CircuitOpen | Down::QueuedAhead => {
                        GatewayError::new(Code::UpstreamUnavailable)
                            .retry_after(retry_after)
                            .into_response()
                    }
                    Down::Timeout => GatewayError::new(Code::GatewayTimeout).into_response(),
                    Down::Unavailable(_) => GatewayError::new(Code::BadGateway).into_response(),
                },
            }
        }
    };
    // A write to a resource with queued writes (accepted by any gateway of
    // the fleet) is queued behind them: sent now, it would overtake them.
    if is_write
        && let Some(degraded) = degraded
        && queued_ahead(
            degraded,
            ordered_resource(method.as_str(), &path_and_query, &idempotency_key),
        )
        .await
    {
        return down(Down::QueuedAhead, RETRY_AFTER_QUEUED_AHEAD).await;
    }
    // One of the route's upstream slots, within the route's timeout (the
    // same deadline covers the exchange): past `upstream_max_in_flight`,
    // requests wait here instead of each opening an upstream connection.
    let deadline = tokio::time::Instant::now() + route.timeout;
    let Ok(Ok(_slot)) =
        tokio::time::timeout_at(deadline, Arc::clone(&route.slots).acquire_owned()).await
    else {
        // Nothing was sent: not the upstream's failure.
        return down(Down::Timeout, RETRY_AFTER_FAILURE).await;
    };
    let permit = match route.breaker.try_acquire_owned() {
        Ok(permit) => permit,
        Err(rejected) => {
            let retry_after = rejected.retry_after().unwrap_or(Duration::from_secs(30));
            return down(Down::CircuitOpen, retry_after).await;
        }
    };
    let uri = format!(
        "{}://{}{}{}",
        route.scheme, route.authority, route.base_path, path_and_query
    );
    let Ok(uri) = uri.parse::<Uri>() else {
        permit.record(Outcome::Ignore);
        return GatewayError::new(Code::BadRequest).into_response();
    };
    let mut upstream_parts = parts.clone();
    let headers = &mut upstream_parts.headers;
    let host = headers.remove(header::HOST);
    strip_hop_by_hop(headers);
    headers.remove(&ACTOR);
    if let Some(principal) = &principal {
        headers.insert(ACTOR.clone(), principal.actor_header.clone());
    }
    forwarded_headers(headers, client, host);
    service_kit::telemetry::inject_current(headers);
    upstream_parts.uri = uri;
    upstream_parts.version = axum::http::Version::HTTP_11;
    let upstream_request = Request::from_parts(upstream_parts, body);
    let answer =
        tokio::time::timeout_at(deadline, forwarding.client.request(upstream_request)).await;
    match answer {
        Ok(Ok(response)) if response.status().is_server_error() => {
            permit.record(Outcome::Failure);
            let status = response.status();
            if is_read && degraded.is_some() {
                return down(Down::Unavailable(Some(status)), RETRY_AFTER_FAILURE).await;
            }
            passthrough(response)
        }
        Ok(Ok(response)) => {
            permit.record(Outcome::Success);
            match degraded {
                Some(degraded) if is_read && keepable(&route, &path_and_query, &response) => {
                    keep(degraded, &path_and_query, response).await
                }
                _ => passthrough(response),
            }
        }
        Ok(Err(error)) => {
            if is_length_limit(&error) {
                permit.record(Outcome::Ignore);
                return GatewayError::new(Code::PayloadTooLarge).into_response();
            }
            permit.record(Outcome::Failure);
            tracing::warn!(route = %route.name, error = %error, "upstream request failed");
            down(Down::Unavailable(None), RETRY_AFTER_FAILURE).await
        }
        Err(_) => {
            permit.record(Outcome::Timeout);
            tracing::warn!(route = %route.name, timeout = ?route.timeout, "upstream timed out");
            down(Down::Timeout, RETRY_AFTER_FAILURE).await
        }
    }
}

/// The upstream's response, hop-by-hop headers removed, body streamed.
fn passthrough(response: axum::http::Response<hyper::body::Incoming>) -> Response {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

/// Whether a read's answer is kept for stale reads: a `200` JSON answer of
/// a known, bounded length, not `no-store`/`private`, on a path that is
/// not sensitive.
fn keepable(
    route: &Route,
    path_and_query: &str,
    response: &axum::http::Response<hyper::body::Incoming>,
) -> bool {
    let headers = response.headers();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"));
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let cache_control = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok());
    let path = path_and_query.split('?').next().unwrap_or(path_and_query);
    response.status() == StatusCode::OK
        && json
        && length.is_some_and(|l| l <= MAX_STALE_BODY)
        && !forbids_storing(cache_control)
        && !route.is_sensitive(path)
}

/// Reads the whole answer, keeps it as the last good copy of
/// `path_and_query`, and answers with it.
async fn keep(
    degraded: &crate::degraded::Degraded,
    path_and_query: &str,
    response: axum::http::Response<hyper::body::Incoming>,
) -> Response {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let limit = usize::try_from(MAX_STALE_BODY).unwrap_or(usize::MAX);
    match Limited::new(body, limit).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            degraded
                .stale
                .put(path_and_query, &bytes, SystemTime::now());
            Response::from_parts(parts, Body::from(bytes))
        }
        Err(_) => GatewayError::new(Code::BadGateway).into_response(),
    }
}

/// `X-Forwarded-For` (appended to behind a trusted proxy, else only the
/// client's address), `X-Forwarded-Proto`, `X-Forwarded-Host`.
fn forwarded_headers(headers: &mut HeaderMap, client: Option<ClientIp>, host: Option<HeaderValue>) {
    let earlier: Vec<String> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .map(str::to_owned)
        .collect();
    headers.remove(&X_FORWARDED_FOR);
    if let Some(client) = client {
        let value = if client.via_trusted_proxy && !earlier.is_empty() {
            // The chain as the trusted proxy sent it, plus that proxy
            // (the peer); `client.ip` is already in it.
            format!("{}, {}", earlier.join(", "), client.peer)
        } else if client.via_trusted_proxy {
            client.peer.to_string()
        } else {
            client.ip.to_string()
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR.clone(), value);
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    match host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
    }
}

/// Whether the body limit is what broke the exchange.
fn is_length_limit(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source = error.source();
    while let Some(cause) = source {
        if cause.is::<LengthLimitError>() {
            return true;
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("x-end-to-end", "kept"),
            ("authorization", "Bearer kept"),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<_> = headers.keys().map(|k| k.as_str().to_owned()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "x-end-to-end"]);
    }

    #[test]
    fn forwarded_for_is_appended_only_behind_a_trusted_proxy() {
        let claimed = |headers: &mut HeaderMap| {
            headers.insert(
                X_FORWARDED_FOR.clone(),
                HeaderValue::from_static("203.0.113.7"),
            );
        };
        // A trusted proxy at 10.0.0.2 forwarded a client at 203.0.113.7.
        let mut headers = HeaderMap::new();
        claimed(&mut headers);
        let proxy = [10, 0, 0, 2].into();
        let behind = ClientIp {
            ip: [203, 0, 113, 7].into(),
            peer: proxy,
            via_trusted_proxy: true,
        };
        forwarded_headers(
            &mut headers,
            Some(behind),
            Some(HeaderValue::from_static("api.example")),
        );
        assert_eq!(headers[&X_FORWARDED_FOR], "203.0.113.7, 10.0.0.2");
        assert_eq!(headers[&X_FORWARDED_PROTO], "http");
        assert_eq!(headers[&X_FORWARDED_HOST], "api.example");
        // Anyone else's claim is replaced by its own address.
        let mut headers = HeaderMap::new();
        claimed(&mut headers);
        headers.append(X_FORWARDED_FOR.clone(), HeaderValue::from_static("1.1.1.1"));
        let direct = ClientIp {
            ip: [198, 51, 100, 1].into(),
            peer: [198, 51, 100, 1].into(),
            via_trusted_proxy: false,
        };
        forwarded_headers(&mut headers, Some(direct), None);
        assert_eq!(
            headers.get_all(&X_FORWARDED_FOR).iter().collect::<Vec<_>>(),
            ["198.51.100.1"]
        );
        assert!(headers.get(&X_FORWARDED_HOST).is_none());
    }
}
