//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the
//! handlers' `#[utoipa::path]` annotations and store-domain's schemas.

use std::sync::Arc;

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use store_domain::{ACTOR_HEADER, ACTOR_MAX_BYTES, ErrorCode};
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
/// gateway's `x-gateway-subject` in the description (with the 400
/// `INVALID_SUBJECT` of every API operation), and the list of problem
/// types (`error` codes with their `type` URI and status).
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
        let described = openapi.info.description.take().unwrap_or_default();
        openapi.info.description = Some(format!(
            "{described}\n\n`{ACTOR_HEADER}` is not listed as a parameter: it is the gateway's header, not a client's, and its grammar (percent-encoded UTF-8 of 1 to {ACTOR_MAX_BYTES} bytes without control characters) is not one a schema can state exactly. {SUBJECT_DESCRIPTION}"
        ));
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

/// The document as served: [`document`]'s, with the rules that
/// store-domain enforces and utoipa's derives do not state (patterns,
/// bounds, at least one field of an update) written into it, so that a
/// request the schema allows is one the service accepts, and the reverse.
#[must_use]
pub fn render(document: &utoipa::openapi::OpenApi) -> String {
    let mut value = serde_json::to_value(document).unwrap_or_default();
    state_the_rules(&mut value);
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

/// Writes store-domain's rules into the rendered document.
fn state_the_rules(document: &mut Value) {
    use store_domain::limits::{
        CONFIG_MAX_ARRAY_LEN, CONFIG_MAX_DEPTH, CONFIG_MAX_KEYS, CONFIG_MAX_STRING_CHARS,
        SECRET_KEY_MAX_CHARS, SECRET_VALUE_MAX_CHARS, SECRETS_MAX_KEYS,
    };
    let paths = &mut document["paths"];
    for (path, method, name, pattern) in [
        ("/api/stores", "get", "cursor", store_domain::CURSOR_PATTERN),
        (
            "/api/stores/{id}/history",
            "get",
            "cursor",
            store_domain::HISTORY_CURSOR_PATTERN,
        ),
        (
            "/api/stores",
            "post",
            "Idempotency-Key",
            IDEMPOTENCY_KEY_PATTERN,
        ),
        (
            "/api/stores/{id}",
            "put",
            "Idempotency-Key",
            IDEMPOTENCY_KEY_PATTERN,
        ),
        ("/api/stores/{id}", "put", "If-Match", ETAG_PATTERN),
    ] {
        let parameters = paths[path][method]["parameters"].as_array_mut();
        for parameter in parameters.into_iter().flatten() {
            if parameter["name"] == name {
                parameter["schema"] = json!({"type": "string", "pattern": pattern});
            }
        }
    }
    let schemas = &mut document["components"]["schemas"];
    schemas["CreateStore"]["properties"]["name"]["pattern"] = json!(NAME_PATTERN);
    schemas["UpdateStore"]["properties"]["name"]["pattern"] = json!(NAME_PATTERN);
    // `config` at every depth: keys that cleaning leaves as they are (two
    // keys that clean to the same one are refused), bounded objects,
    // arrays and strings, at most CONFIG_MAX_DEPTH levels (unrolled, one
    // schema per level: a recursive one is more than generators of
    // examples handle).
    for depth in 1..=CONFIG_MAX_DEPTH {
        let mut value = vec![
            json!({"type": ["null", "boolean", "number"]}),
            json!({"type": "string", "maxLength": CONFIG_MAX_STRING_CHARS}),
        ];
        if depth < CONFIG_MAX_DEPTH {
            let deeper = depth + 1;
            value.push(json!({
                "type": "array",
                "maxItems": CONFIG_MAX_ARRAY_LEN,
                "items": {"$ref": format!("#/components/schemas/ConfigValue{deeper}")},
            }));
            value.push(json!({"$ref": format!("#/components/schemas/StoreConfig{deeper}")}));
        }
        schemas[format!("ConfigValue{depth}")] = json!({"anyOf": value});
        schemas[format!("StoreConfig{depth}")] = json!({
            "type": "object",
            "maxProperties": CONFIG_MAX_KEYS,
            "propertyNames": {"type": "string", "pattern": CONFIG_KEY_PATTERN},
            "additionalProperties": {"$ref": format!("#/components/schemas/ConfigValue{depth}")},
        });
    }
    schemas["StoreConfig1"]["description"] = json!(
        "Free-form settings: a JSON object whose strings and keys are cleaned as names are (markup and control characters removed); `__proto__`, `constructor` and `prototype` keys are dropped; at most 16 levels deep and 32 KiB once cleaned."
    );
    schemas["CreateStore"]["properties"]["config"] = json!({
        "description": "Free-form settings (default `{}`)",
        "anyOf": [{"$ref": "#/components/schemas/StoreConfig1"}, {"type": "null"}],
    });
    schemas["UpdateStore"]["properties"]["config"] = json!({
        "description": "A new config, replacing the old one",
        "anyOf": [{"$ref": "#/components/schemas/StoreConfig1"}, {"type": "null"}],
    });
    schemas["Secrets"]["maxProperties"] = json!(SECRETS_MAX_KEYS);
    schemas["Secrets"]["propertyNames"] = json!({
        "type": "string",
        "pattern": format!("^[A-Za-z0-9_.-]{{1,{SECRET_KEY_MAX_CHARS}}}$"),
    });
    schemas["Secrets"]["additionalProperties"] = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": SECRET_VALUE_MAX_CHARS,
    });
    // An update changes at least one of these: present and not null.
    let changes = [
        ("name", json!({"type": "string", "pattern": NAME_PATTERN})),
        (
            "status",
            json!({"$ref": "#/components/schemas/StoreStatus"}),
        ),
        (
            "config",
            json!({"$ref": "#/components/schemas/StoreConfig1"}),
        ),
        ("secrets", json!({"$ref": "#/components/schemas/Secrets"})),
    ];
    schemas["UpdateStore"]["anyOf"] = Value::Array(
        changes
            .into_iter()
            .map(|(field, schema)| json!({"required": [field], "properties": {field: schema}}))
            .collect(),
    );
}

/// A name that cleaning leaves as it is, but for folding inner whitespace
/// and NFC: 3 to 100 characters, none of them a control character, a
/// bidirectional control, a byte-order mark, `<` or `&` (which could start
/// markup), and no whitespace at either end. The service also takes names
/// that cleaning changes (it removes markup and controls, then checks the
/// length), which no pattern can state.
const NAME_PATTERN: &str = "^[^\\s\\x00-\\x1f\\x7f-\\x9f<&\\u0300-\\u036f\\u202a-\\u202e\\u2066-\\u2069\\ufeff][^\\x00-\\x1f\\x7f-\\x9f<&\\u0300-\\u036f\\u202a-\\u202e\\u2066-\\u2069\\ufeff]{1,98}[^\\s\\x00-\\x1f\\x7f-\\x9f<&\\u0300-\\u036f\\u202a-\\u202e\\u2066-\\u2069\\ufeff]$";

/// A `config` key that cleaning leaves as it is (as [`NAME_PATTERN`]): 1
/// to 128 characters.
const CONFIG_KEY_PATTERN: &str = "^[^\\s\\x00-\\x1f\\x7f-\\x9f<&\\u0300-\\u036f\\u202a-\\u202e\\u2066-\\u2069\\ufeff](?:[^\\x00-\\x1f\\x7f-\\x9f<&\\u0300-\\u036f\\u202a-\\u202e\\u2066-\\u2069\\ufeff]{0,126}[^\\s\\x00-\\x1f\\x7f-\\x9f<&\\u0300-\\u036f\\u202a-\\u202e\\u2066-\\u2069\\ufeff])?$";

/// `Idempotency-Key`: 1 to 255 visible ASCII characters
/// (`store_domain::is_valid_idempotency_key`).
const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// `If-Match`: one strong ETag of a version from 1 to `i32::MAX`
/// (`store_domain::parse_etag`; leading zeros are read as the number).
const ETAG_PATTERN: &str = "^\"0*(?:[1-9][0-9]{0,8}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}|2147[0-3][0-9]{5}|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}|21474836[0-3][0-9]|214748364[0-7])\"$";

/// Serves the rendered document.
pub async fn serve(document: Arc<String>) -> Response {
    let mut response = document.as_str().to_owned().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
