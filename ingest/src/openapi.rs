//! The OpenAPI 3.1 document (generated from the handlers' annotations) and `/docs`, a Swagger
//! UI whose assets are embedded in the binary, so it works without internet access.

use axum::Router;
use utoipa::{
    Modify, OpenApi,
    openapi::{
        Ref, ResponseBuilder,
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
        (name = "portal", description = "Console sessions: links that open the console for one organisation"),
        (name = "console", description = "The web console"),
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
    let forbidden = || {
        ResponseBuilder::new()
            .description("`read_only_session`: a read-only console session cannot change anything")
            .content_ref("application/json", Ref::from_schema_name("ErrorBody"))
            .build()
    };
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

/// `/openapi.json` and the browsable `/docs`.
pub fn docs_router(api: utoipa::openapi::OpenApi) -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", api))
}
