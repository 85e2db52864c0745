//! The OpenAPI 3.1 document (generated from the handlers' annotations) and `/docs`, a Swagger
//! UI whose assets are embedded in the binary, so it works without internet access.

use axum::Router;
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_swagger_ui::SwaggerUi;

use crate::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Triggers",
        description = "Event ingestion and webhook delivery. Errors are JSON: `{\"error\", \"code\", ...}`.",
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

/// `/openapi.json` and the browsable `/docs`.
pub fn docs_router(api: utoipa::openapi::OpenApi) -> Router<AppState> {
    Router::new().merge(SwaggerUi::new("/docs").url("/openapi.json", api))
}
