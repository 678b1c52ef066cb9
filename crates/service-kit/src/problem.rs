//! Errors as RFC 9457 `application/problem+json` responses. The body is
//! the platform's one problem type, `store_domain::Problem` (`type`,
//! `title`, `status`, `detail`, `instance`, `error`, `message`,
//! `requestId`, and the store API's `errors` / `currentVersion` when set);
//! which codes a service sends (its catalogue) is the service's own.
//!
//! A handler does not know the request's id or path; [`response`] renders
//! the problem as it is and keeps it on the response, and [`complete`]
//! (called by the [request-id layer](crate::request_id::layer), or by any
//! layer that needs the final body earlier) fills both in.

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use store_domain::{PROBLEM_CONTENT_TYPE, Problem};

/// A problem waiting for its request id and path (a response extension).
#[derive(Clone, Debug)]
struct Pending(Problem);

/// `problem` as a response: its `status`, `Content-Type:
/// application/problem+json`, the JSON body. The response carries the
/// problem until [`complete`] fills in the request's id and path; headers
/// the caller or later layers add (`Retry-After`, `Allow`, ...) are kept
/// through completion.
#[must_use]
pub fn response(problem: Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body(&problem)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    response.extensions_mut().insert(Pending(problem));
    response
}

/// Completes a response made by [`response`]: its body gets `requestId`
/// `request_id` and `instance` `instance`; status, headers and other
/// extensions are kept. Any other response (or one completed already)
/// passes unchanged.
#[must_use]
pub fn complete(response: Response, request_id: &str, instance: &str) -> Response {
    let (mut parts, old_body) = response.into_parts();
    let Some(Pending(mut problem)) = parts.extensions.remove::<Pending>() else {
        return Response::from_parts(parts, old_body);
    };
    request_id.clone_into(&mut problem.request_id);
    problem.instance = Some(instance.to_owned());
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body(&problem)))
}

/// The JSON body of `problem`.
fn body(problem: &Problem) -> Vec<u8> {
    serde_json::to_vec(problem).unwrap_or_default()
}
