//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the
//! handlers' `#[utoipa::path]` annotations and store-domain's schemas.

use std::sync::Arc;

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{metrics, readiness, routes as api, routes::stores, startup::AppState};

/// The document's fixed part: info, tags and the problem schema.
#[derive(OpenApi)]
#[openapi(
    info(title = "store-service", description = "The store API: stores with optimistic locking, idempotency, audit history and Transit-encrypted secrets. Every error is an RFC 9457 `application/problem+json` body (`Problem`) with `error`, `message` and `requestId`; every response carries `X-Request-Id`."),
    tags((name = "stores", description = "Stores and their lifecycle"), (name = "operations", description = "Health, readiness, metrics")),
    components(schemas(store_domain::Problem, store_domain::FieldError))
)]
pub struct ApiDoc;

/// Every documented route, with its handler.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(stores::list, stores::create))
        .routes(routes!(stores::get_one, stores::update))
        .routes(routes!(stores::history))
        .routes(routes!(stores::secrets))
        .routes(routes!(api::health::health))
        .routes(routes!(readiness::ready))
        .routes(routes!(metrics::render))
}

/// Serves the rendered document.
pub async fn serve(document: Arc<String>) -> Response {
    let mut response = document.as_str().to_owned().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
