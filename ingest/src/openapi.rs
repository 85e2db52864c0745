//! The OpenAPI 3.1 document (generated from the handlers' annotations) and `/docs`, a Swagger
//! UI whose assets are embedded in the binary, so it works without internet access.

use std::time::Duration;

use axum::Router;
use utoipa::{
    Modify, OpenApi,
    openapi::{
        ContentBuilder, Ref, ResponseBuilder,
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_swagger_ui::SwaggerUi;

use crate::AppState;

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
    components(schemas(crate::error::ErrorBody, crate::error::FieldError)),
    tags(
        (name = "keys", description = "Organisations and API keys"),
        (name = "webhook", description = "Webhook configuration"),
        (name = "endpoints", description = "Endpoints: many per organisation, each subscribed to chosen event types"),
        (name = "events", description = "Event ingestion and inspection"),
        (name = "inbox", description = "Pull consumption and acknowledgement"),
        (name = "operations", description = "Health and metrics"),
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
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
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

/// Document the request timeout's `408` on every operation it can answer: each route under
/// `/api/` reads a body or waits on the database. The operations routes (`/health*`,
/// `/metrics`) do neither past their own bounds, and the documents are static.
pub fn document_request_timeout(api: &mut utoipa::openapi::OpenApi, limit: Duration) {
    let timeout = ResponseBuilder::new()
        .description(format!(
            "`request_timeout`: the request, body included, was not answered within {} s \
             (`Connection: close` when its body was not read to the end). A `POST /api/events` \
             may still have stored its event: retry with the same `dedup_id`.",
            limit.as_secs()
        ))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for (_, item) in api
        .paths
        .paths
        .iter_mut()
        .filter(|(path, _)| path.starts_with("/api/"))
    {
        let operations = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            operation
                .responses
                .responses
                .entry("408".to_owned())
                .or_insert_with(|| timeout.clone().into());
        }
    }
}

/// `/openapi.json` and the browsable `/docs`.
pub fn docs_router(api: utoipa::openapi::OpenApi) -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", api))
}
