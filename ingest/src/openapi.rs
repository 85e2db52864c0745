//! The OpenAPI 3.1 document (generated from the handlers' annotations) and `/docs`, a Swagger
//! UI whose assets are embedded in the binary, so it works without internet access.
//!
//! A handler's annotation documents what is its own (its success, its `404`, `409`, `429`, a
//! more precise description of a `422`); [`document_shared_responses`] adds the answers the
//! layers and extractors every route shares can give, from the shape of each operation, so a new
//! route documents them without repeating them. `deploy/local/api-check.sh` validates the
//! served document and fuzzes the service against it.

use std::{ops::RangeInclusive, time::Duration};

use axum::Router;
use utoipa::{
    Modify, OpenApi,
    openapi::{
        ContentBuilder, Ref, RefOr, Response, ResponseBuilder, Schema,
        extensions::{Extensions, ExtensionsBuilder},
        header::HeaderBuilder,
        path::{Operation, ParameterIn},
        schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type},
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_swagger_ui::SwaggerUi;

use crate::{AppState, error::UNAVAILABLE_RETRY_AFTER_SECS, extract::MAX_BODY_BYTES};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Triggers",
        description = "Event ingestion and webhook delivery. Errors are JSON: `{\"error\", \"code\", ...}`.\n\n\
Delivery model: an organisation has endpoints, each subscribed to event-type patterns. An accepted \
event gets one delivery per matching endpoint, fixed when it is accepted (a disabled endpoint's is \
`skipped`; an endpoint created later does not get earlier events). A delivery is the pair (event, \
endpoint): it has its own attempts, retry clock and status (`pending`, `delivered`, `failed`, \
`skipped`, `cancelled`). An event's `status` sums its deliveries up: `delivered` once acknowledged \
(acknowledging cancels its pending deliveries; this reading of the contract puts the \
acknowledgement first); otherwise `pending` while any delivery is pending, else `failed` if any \
failed, else `delivered` if any was delivered; with only skipped or cancelled deliveries, or none, \
`pending`. Its `attempts`, `response_status` and `last_error` are its deliveries' together (all \
attempts; the latest attempt's answer). `/api/webhook/config` manages the organisation's default \
endpoint (`event_types [\"*\"]`, `\"default\": true`).",
    ),
    modifiers(&SecuritySchemes),
    components(schemas(crate::error::ErrorBody, crate::error::FieldError, triggers_shared::schemas::JsonValue)),
    tags(
        (name = "keys", description = "Organisations and API keys"),
        (name = "webhook", description = "Webhook configuration"),
        (name = "endpoints", description = "Endpoints: many per organisation, each subscribed to chosen event types"),
        (name = "events", description = "Event ingestion and inspection"),
        (name = "inbox", description = "Pull consumption and acknowledgement"),
        (name = "operations", description = "Health and metrics"),
        (name = "portal", description = "Console sessions: links that open the console for one organisation"),
        (name = "console", description = "The web console"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key, or a console session token (`trg_session_...`, from `POST \
                         /api/portal/exchange`). A session reaches its organisation's routes but \
                         not key rotation or portal session creation (`403 api_key_required`); a \
                         read-only session only `GET` routes (`403 read_only_session`); an ended \
                         session is `401 invalid_session`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Admin-Token"))),
        );
    }
}

/// The document's fixed part; paths are added by each route module.
pub fn base() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = triggers_shared::VERSION.to_string();
    doc
}

/// A read-only console session is refused on every route that changes state, by the extractor
/// those routes share ([`crate::auth::Org`]): document that `403` here, once for all of them,
/// on every authenticated (`401`) `POST`, `PUT`, `PATCH` and `DELETE` that documents no `403`
/// of its own.
pub fn document_read_only_sessions(doc: &mut utoipa::openapi::OpenApi) {
    // (`content_ref` would put the bare `$ref` where OpenAPI 3.1 wants a media type object.)
    let forbidden =
        || error_response("`read_only_session`: a read-only console session cannot change anything").build();
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.post, &mut item.put, &mut item.patch, &mut item.delete]
            .into_iter()
            .flatten()
        {
            let responses = &mut op.responses.responses;
            if responses.contains_key("401") && !responses.contains_key("403") {
                responses.insert("403".to_owned(), forbidden().into());
            }
        }
    }
}

/// Add to every operation the answers the layers and extractors it goes through can give, unless
/// its annotation documents that status itself (its description is then the more precise one):
/// - under `/api/`: `408 request_timeout` (the request timeout) and `503 unavailable` (the
///   database, or the budget of request bytes in flight);
/// - authenticated by API key (a security requirement naming `api_key`, none empty): `401`;
/// - with a request body (the JSON extractor): `400 invalid_json`, `413 payload_too_large`,
///   `415 unsupported_media_type`, `422 validation_failed`;
/// - with query parameters (the query extractor): `422 validation_failed`.
pub fn document_shared_responses(doc: &mut utoipa::openapi::OpenApi, request_timeout: Duration) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            for (status, response) in shared_responses(path, operation, request_timeout) {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| response.into());
            }
        }
    }
}

fn shared_responses(path: &str, op: &Operation, request_timeout: Duration) -> Vec<(&'static str, Response)> {
    let mut shared = Vec::new();
    if path.starts_with("/api/") {
        shared.push((
            "408",
            error_response(format!(
                "`request_timeout`: the request, body included, was not answered within {} s \
                 (`Connection: close` when its body was not read to the end). A `POST /api/events` \
                 may still have stored its event: retry with the same `dedup_id`.",
                request_timeout.as_secs()
            ))
            .build(),
        ));
        shared.push((
            "503",
            error_response(
                "`unavailable`: the database is unreachable, or ingest's budget of request bytes in \
                 flight is spent (then the body is not read: `Connection: close`). Retry after \
                 `Retry-After` seconds (also `retry_after` in the body).",
            )
            .header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Integer)))
                    .description(Some(format!("Seconds to wait: {UNAVAILABLE_RETRY_AFTER_SECS}")))
                    .build(),
            )
            .build(),
        ));
    }
    if authenticated_by_key(op) {
        shared.push((
            "401",
            error_response(
                "`missing_api_key` (no `X-API-Key` or `Authorization: Bearer` header) or \
                 `invalid_api_key` (unknown, revoked or expired key, or a key prefix throttled after \
                 repeated wrong secrets)",
            )
            .header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                    .description(Some("`ApiKey header=\"X-API-Key\", Bearer realm=\"triggers\"`"))
                    .build(),
            )
            .build(),
        ));
    }
    if op.request_body.is_some() {
        shared.extend([
            (
                "400",
                error_response("`invalid_json`: the body is not well-formed JSON").build(),
            ),
            (
                "413",
                error_response(format!(
                    "`payload_too_large`, with `limit_bytes`: the body is over {MAX_BODY_BYTES} bytes \
                     (answered before it is read: `Connection: close`)"
                ))
                .build(),
            ),
            (
                "415",
                error_response("`unsupported_media_type`: a body must be sent as `application/json`").build(),
            ),
            (
                "422",
                error_response(
                    "`validation_failed`, with `details` naming each bad field (`body` when the body \
                     is not a JSON object or holds a key twice)",
                )
                .build(),
            ),
        ]);
    }
    let has_query = op.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => p.parameter_in == ParameterIn::Query,
        RefOr::Ref(_) => false,
    });
    if has_query {
        shared.push((
            "422",
            error_response(
                "`validation_failed`, with `details` naming each bad parameter (any parameter, \
                 name or value, holding NUL included)",
            )
            .build(),
        ));
    }
    shared
}

/// A JSON error answer (`ErrorBody`) with this description.
pub fn error_response(description: impl Into<String>) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    )
}

/// Does the operation require an API key? Its security names `api_key` and offers no
/// anonymous alternative (an empty requirement).
fn authenticated_by_key(op: &Operation) -> bool {
    let Some(requirements) = &op.security else {
        return false;
    };
    let names: Vec<serde_json::Value> = requirements
        .iter()
        .filter_map(|r| serde_json::to_value(r).ok())
        .collect();
    let anonymous = names.iter().any(|r| r.as_object().is_some_and(|o| o.is_empty()));
    !anonymous && names.iter().any(|r| r.get("api_key").is_some())
}

/// An integer from the bounds of `range`, `null` allowed when `nullable` (for `schema_with`:
/// the numbers come from the constants the parser checks against).
pub fn integer_in(range: RangeInclusive<u64>, nullable: bool, description: &str) -> Schema {
    let types = if nullable {
        SchemaType::from_iter([Type::Integer, Type::Null])
    } else {
        SchemaType::from(Type::Integer)
    };
    ObjectBuilder::new()
        .schema_type(types)
        .minimum(Some(*range.start()))
        .maximum(Some(*range.end()))
        .description(Some(description))
        .into()
}

/// An array of `min..=max` items of `item`, `null` allowed when `nullable`.
pub fn array_of(
    item: RefOr<Schema>,
    items: RangeInclusive<usize>,
    nullable: bool,
    description: &str,
) -> Schema {
    let array = ArrayBuilder::new()
        .items(item)
        .min_items(Some(*items.start()))
        .max_items(Some(*items.end()))
        .description(Some(description));
    let array = if nullable {
        array.schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
    } else {
        array
    };
    array.into()
}

/// The extension that marks a value only the API issues (an opaque cursor): `x-issued-as` names
/// the response member that carries such values. A schema cannot tell an issued value from
/// another, so a client (and `deploy/local/api-check.sh`'s fuzzer) takes them from answers.
pub fn issued_as(member: &str) -> Extensions {
    ExtensionsBuilder::new().add("x-issued-as", member).build()
}

/// `/openapi.json` and the browsable `/docs`.
pub fn docs_router(api: utoipa::openapi::OpenApi) -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", api))
}
