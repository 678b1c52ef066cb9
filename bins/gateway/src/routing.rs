//! The routing layer: it refuses paths that could escape a route prefix
//! ([`check_path`]) and smuggling-shaped requests, picks the route of the
//! table ([`Routes`]), and answers 404/405/413 itself. Nothing it refuses
//! reaches an upstream.

use std::sync::Arc;

use axum::{
    extract::{FromRef, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    path::check_path,
    problem::{Code, GatewayError},
    routes::{MatchedRoute, RouteLabel, Routes},
    state::Gateway,
};

/// What the routing layer reads: the route table and the body limit.
#[derive(Clone, Debug)]
pub struct Routing {
    /// The routes.
    pub routes: Routes,
    /// `server.body_limit_bytes`: a larger declared body is a 413.
    pub body_limit: u64,
}

impl FromRef<Arc<Gateway>> for Routing {
    fn from_ref(gateway: &Arc<Gateway>) -> Self {
        Self {
            routes: gateway.routes.clone(),
            body_limit: gateway.config.server.body_limit_bytes,
        }
    }
}

/// The layer: refuses bad paths and smuggling-shaped requests (400),
/// oversized declared bodies (413), unknown paths (404) and methods (405);
/// puts the [`MatchedRoute`] on the request.
pub async fn layer(State(routing): State<Routing>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if let Err(error) = check_path(path) {
        tracing::warn!(%error, "refused path");
        return GatewayError::new(Code::BadRequest)
            .with_message(format!("Invalid path: {error}."))
            .into_response();
    }
    if let Err(message) = check_framing(&request) {
        tracing::warn!(message, "refused request framing");
        return GatewayError::new(Code::BadRequest)
            .with_message(message)
            .into_response();
    }
    let Some(route) = routing.routes.find(path).cloned() else {
        return GatewayError::new(Code::NotFound).into_response();
    };
    let label = RouteLabel(Arc::clone(&route));
    if route.required_scopes(request.method(), path).is_none() {
        let allow = HeaderValue::from_str(&route.allow()).unwrap_or(HeaderValue::from_static(""));
        let mut response = GatewayError::new(Code::MethodNotAllowed)
            .header(header::ALLOW, allow)
            .into_response();
        response.extensions_mut().insert(label);
        return response;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > routing.body_limit) {
        let mut response = GatewayError::new(Code::PayloadTooLarge).into_response();
        response.extensions_mut().insert(label);
        return response;
    }
    request.extensions_mut().insert(MatchedRoute(route));
    let mut response = next.run(request).await;
    response.extensions_mut().insert(label);
    response
}

/// Refuses what a front end and a back end could frame differently:
/// `Content-Length` together with `Transfer-Encoding`, several
/// `Content-Length`s, and any transfer coding but a single `chunked`.
fn check_framing(request: &Request) -> Result<(), &'static str> {
    let headers = request.headers();
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    let codings: Vec<_> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    if lengths > 0 && !codings.is_empty() {
        return Err("Content-Length and Transfer-Encoding together are not accepted.");
    }
    if lengths > 1 {
        return Err("Several Content-Length fields are not accepted.");
    }
    if !codings.is_empty()
        && (codings.len() > 1 || !codings[0].as_bytes().eq_ignore_ascii_case(b"chunked"))
    {
        return Err("Only `Transfer-Encoding: chunked` is accepted.");
    }
    Ok(())
}
