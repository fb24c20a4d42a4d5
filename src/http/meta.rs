//! `GET /`: what this service is and where to go next.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Serialize, ToSchema)]
pub struct Links {
    #[schema(example = "/docs")]
    docs: &'static str,
    #[schema(example = "/openapi.json")]
    openapi: &'static str,
    #[schema(example = "/api/v1/health")]
    health: &'static str,
    #[schema(example = "/api/v1/health/ready")]
    readiness: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceInfo {
    #[schema(example = "precinct")]
    name: &'static str,
    #[schema(example = "0.1.0")]
    version: &'static str,
    /// The git commit this binary was built from.
    #[schema(example = "5f01461c0ffee…")]
    commit: &'static str,
    /// RFC 3339: the commit's date (or the image build's).
    #[schema(example = "2026-11-26T02:16:06+00:00")]
    build_date: &'static str,
    links: Links,
}

/// Service name, version and links.
#[utoipa::path(
    get,
    path = "/",
    tag = "meta",
    responses((status = 200, description = "Service information", body = ServiceInfo))
)]
pub async fn root() -> Json<ServiceInfo> {
    Json(ServiceInfo {
        name: env!("CARGO_PKG_NAME"),
        version: crate::build_info::VERSION,
        commit: crate::build_info::GIT_COMMIT,
        build_date: crate::build_info::BUILD_DATE,
        links: Links {
            docs: "/docs",
            openapi: "/openapi.json",
            health: "/api/v1/health",
            readiness: "/api/v1/health/ready",
        },
    })
}
