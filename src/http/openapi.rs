//! The OpenAPI document: paths come from the routers (utoipa-axum), shared
//! parts (info, error shape, bearer scheme) from here.

use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};

use super::error::{ErrorBody, ErrorDetail, FieldError};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "precinct",
        description = "SPIFFE-aware zero-trust backend. Every error answers with the `ErrorBody` shape.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, ErrorDetail, FieldError)),
    modifiers(&BearerScheme),
    tags(
        (name = "meta", description = "Service information"),
        (name = "health", description = "Kubernetes liveness and readiness probes"),
        (name = "github", description = "GitHub proxy: the user's token lives in OpenBao KV, never in Postgres"),
        (name = "auth", description = "Accounts, access tokens (ES256, signed by OpenBao Transit) and refresh tokens"),
    )
)]
pub struct ApiDoc;

/// `bearer_auth`: the access token from login, so "Authorize" in /docs works.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_string());
        scheme.description = Some("Access token returned by POST /api/v1/auth/login".to_string());
        components.add_security_scheme("bearer_auth", SecurityScheme::Http(scheme));
    }
}
