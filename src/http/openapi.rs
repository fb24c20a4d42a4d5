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

/// The internal API's document: its own, since its routes are served on
/// another listener (`INTERNAL_ADDR`, mutual TLS), never on the public one.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "precinct internal API",
        description = "For other workloads of the mesh, over mutual TLS on `INTERNAL_ADDR` (k8s: port 8443): the caller authenticates with its X.509-SVID and is authorized by SPIFFE ID (`INTERNAL_ALLOWED_SPIFFE_IDS`). Every error answers with the `ErrorBody` shape.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, ErrorDetail, FieldError)),
    modifiers(&MutualTlsScheme),
    tags((name = "internal", description = "Token introspection (RFC 7662) and public profiles, for workloads authorized by SPIFFE ID")),
)]
pub struct InternalApiDoc;

/// `mutual_tls`: an X.509-SVID whose SPIFFE ID is on the allowlist.
struct MutualTlsScheme;

impl Modify for MutualTlsScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "mutual_tls",
            SecurityScheme::MutualTls {
                description: Some("The caller's X.509-SVID (from its SPIFFE Workload API); its SPIFFE ID must be in INTERNAL_ALLOWED_SPIFFE_IDS".to_string()),
                deprecated: None,
                extensions: None,
            },
        );
    }
}

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

/// Answers every route can give, added to each operation that does not
/// document them itself, so that the document lists every status a route
/// can answer (schemathesis checks it): 500 (a panic, logged with the
/// request id), 503 (the request timeout, or a dependency down), and for
/// operations with a JSON body 400 (malformed JSON or wrong types), 413
/// (over `HTTP_BODY_LIMIT_BYTES`) and 415 (not `application/json`); 401 for
/// operations that need a token.
pub fn add_common_responses(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder, path::Operation};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    let add = |op: &mut Operation, status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error(description).into());
    };
    for item in openapi.paths.paths.values_mut() {
        let ops = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            add(
                op,
                "500",
                "Internal error (details are logged with the request id, never returned)",
            );
            add(
                op,
                "503",
                "Unavailable: the request timed out (`request_timeout`) or a dependency is down; retry after `Retry-After`",
            );
            if op.request_body.is_some() {
                add(
                    op,
                    "400",
                    "Malformed JSON, a missing field or a wrong type (`invalid_body`)",
                );
                add(op, "413", "Body over HTTP_BODY_LIMIT_BYTES");
                add(op, "415", "Content-Type is not application/json");
            }
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add(op, "401", "Missing, invalid or expired access token");
            }
        }
    }
}
