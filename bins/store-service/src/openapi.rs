//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the
//! handlers' `#[utoipa::path]` annotations and store-domain's schemas.

use std::sync::Arc;

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use store_domain::{ACTOR_HEADER, ErrorCode};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self as oa, ContentBuilder, Object, Ref, RefOr, Required, ResponseBuilder, Schema, Type,
        header::{Header, HeaderBuilder},
        path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{metrics, readiness, routes as api, routes::stores, state::AppState};

/// The document's fixed part: info, tags and the problem schema.
#[derive(OpenApi)]
#[openapi(
    info(title = "store-service", description = "The store API: stores with optimistic locking, idempotency, audit history and Transit-encrypted secrets. Every error is an RFC 9457 `application/problem+json` body (`Problem`) with `error`, `message` and `requestId`; every response carries `X-Request-Id`. Callers come through the gateway, which forwards the subject it verified in `x-gateway-subject` (set only by the gateway): `Idempotency-Key` records belong to that subject, and every history event names it as `actor` (`null` for a request without the header, which is anonymous)."),
    tags((name = "stores", description = "Stores and their lifecycle"), (name = "operations", description = "Health, readiness, metrics")),
    components(schemas(store_domain::Problem, store_domain::FieldError))
)]
pub struct ApiDoc;

/// What every operation shares, added to the document once rather than
/// repeated on each handler: `X-Request-Id` and `traceparent` on requests,
/// `X-Request-Id` on every response, `Retry-After` on retryable problems,
/// the 500/503/504 every API route can answer, `Idempotent-Replayed` on
/// the responses of the two routes that take an `Idempotency-Key`, the
/// gateway's `x-gateway-subject` on every API operation (with its 400
/// `INVALID_SUBJECT`), and the list of problem types (`error` codes with
/// their `type` URI and status).
/// Applied by [`document`], once the routes are in.
struct Conventions;

/// What `x-gateway-subject` is, for every API operation.
const SUBJECT_DESCRIPTION: &str = "Set only by the gateway: the subject it verified (the token's `sub`), percent-encoded UTF-8. The gateway removes this header from every client request and sets it itself, so clients cannot set it through the gateway. `Idempotency-Key` records belong to this subject (the same key from two subjects is two independent requests), and history events name it as `actor`. Without it (a request straight to the service) the caller is anonymous: one subject of its own, `actor: null`. A value that does not decode (or more than one) is 400 `INVALID_SUBJECT`, never echoed.";

/// The operations that take an `Idempotency-Key`.
const IDEMPOTENT: [(&str, &str); 2] = [("post", "/api/stores"), ("put", "/api/stores/{id}")];

fn string_schema() -> Object {
    Object::with_type(Type::String)
}

fn header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(Some(string_schema()))
        .description(Some(description))
        .build()
}

fn problem_response(description: &str, retry_after: bool) -> oa::Response {
    let mut response = ResponseBuilder::new()
        .description(description)
        .content(
            store_domain::PROBLEM_CONTENT_TYPE,
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .header_ref(
            "X-Request-Id",
            Ref::new("#/components/headers/X-Request-Id"),
        );
    if retry_after {
        response = response.header_ref("Retry-After", Ref::new("#/components/headers/Retry-After"));
    }
    response.build()
}

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.headers.insert(
            "X-Request-Id".into(),
            header("The request id (the client's when it is 1 to 128 characters of A-Z a-z 0-9 - _ . :, else a UUIDv7); also in every log line and problem body").into(),
        );
        components.headers.insert(
            "Retry-After".into(),
            header("Seconds to wait before sending the request again").into(),
        );
        components.headers.insert(
            "Idempotent-Replayed".into(),
            header("`true` when this is the stored first response of an earlier request with the same Idempotency-Key").into(),
        );
        for (name, code, retry) in [
            ("InternalError", ErrorCode::InternalError, false),
            ("ServiceUnavailable", ErrorCode::ServiceUnavailable, true),
            ("Timeout", ErrorCode::Timeout, true),
        ] {
            components.responses.insert(
                name.into(),
                problem_response(&format!("`{}`: {}", code.as_str(), code.message()), retry).into(),
            );
        }
        if let Some(RefOr::T(Schema::Object(problem))) = components.schemas.get_mut("Problem") {
            let types = ErrorCode::ALL
                .iter()
                .map(|c| format!("- `{}` ({}): `{}`", c.as_str(), c.status(), c.type_uri()))
                .collect::<Vec<_>>()
                .join("\n");
            let described = problem.description.take().unwrap_or_default();
            problem.description = Some(format!(
                "{described}\n\nProblem types (`error`, status, `type`):\n{types}"
            ));
        }

        // This document's own route (served by `serve`, outside the router
        // the handlers' annotations describe).
        openapi.paths.paths.insert(
            "/openapi.json".into(),
            PathItem::new(
                HttpMethod::Get,
                OperationBuilder::new()
                    .tag("operations")
                    .operation_id(Some("openapi"))
                    .response(
                        "200",
                        ResponseBuilder::new()
                            .description("This OpenAPI 3.1 document")
                            .content(
                                "application/json",
                                ContentBuilder::new()
                                    .schema(Some(Object::with_type(Type::Object)))
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
            ),
        );

        let request_headers = [
            (
                "X-Request-Id",
                "Your request id (1 to 128 characters of A-Z a-z 0-9 - _ . :; another is replaced by a UUIDv7); echoed back",
            ),
            (
                "traceparent",
                "W3C trace context; the request's span becomes its child",
            ),
        ];
        let subject = ParameterBuilder::new()
            .name(ACTOR_HEADER)
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(SUBJECT_DESCRIPTION))
            .schema(Some(string_schema()))
            .build();
        for (path, item) in &mut openapi.paths.paths {
            let api = path.starts_with("/api/");
            for (method, operation) in [
                ("get", item.get.as_mut()),
                ("put", item.put.as_mut()),
                ("post", item.post.as_mut()),
            ] {
                let Some(operation) = operation else { continue };
                let parameters = operation.parameters.get_or_insert_with(Vec::new);
                for (name, description) in request_headers {
                    parameters.push(
                        ParameterBuilder::new()
                            .name(name)
                            .parameter_in(ParameterIn::Header)
                            .required(Required::False)
                            .description(Some(description))
                            .schema(Some(string_schema()))
                            .build()
                            .into(),
                    );
                }
                if api {
                    parameters.push(subject.clone().into());
                }
                let idempotent = IDEMPOTENT.contains(&(method, path.as_str()));
                for (status, response) in &mut operation.responses.responses {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    response.headers.insert(
                        "X-Request-Id".into(),
                        RefOr::Ref(Ref::new("#/components/headers/X-Request-Id")),
                    );
                    if idempotent {
                        response.headers.insert(
                            "Idempotent-Replayed".into(),
                            RefOr::Ref(Ref::new("#/components/headers/Idempotent-Replayed")),
                        );
                    }
                    if api && status == "400" {
                        response.description.push_str(
                            "; INVALID_SUBJECT: the gateway's x-gateway-subject header does not decode",
                        );
                    }
                    if matches!(status.as_str(), "409" | "503" | "504") {
                        response.headers.insert(
                            "Retry-After".into(),
                            RefOr::Ref(Ref::new("#/components/headers/Retry-After")),
                        );
                    }
                }
                if api {
                    for (status, name) in [
                        ("500", "InternalError"),
                        ("503", "ServiceUnavailable"),
                        ("504", "Timeout"),
                    ] {
                        operation
                            .responses
                            .responses
                            .entry(status.into())
                            .or_insert_with(|| Ref::from_response_name(name).into());
                    }
                }
            }
        }
    }
}

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

/// The routes and the finished document ([`Conventions`] applied).
pub fn document() -> (axum::Router<AppState>, utoipa::openapi::OpenApi) {
    let (routes, mut document) = router().split_for_parts();
    Conventions.modify(&mut document);
    (routes, document)
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
