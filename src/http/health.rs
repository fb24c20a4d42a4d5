//! Liveness and readiness probes.

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::readiness::{CheckStatus, ReadinessReport};

#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct Liveness {
    status: &'static str,
}

/// Liveness: 200 while the process serves; checks no dependency.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "health",
    responses((status = 200, description = "The process is serving", body = Liveness))
)]
pub async fn liveness() -> Json<Liveness> {
    Json(Liveness { status: "ok" })
}

/// Readiness: 200 only when every registered dependency is ready.
///
/// Reports state kept by background tasks; a probe causes no network I/O.
#[utoipa::path(
    get,
    path = "/api/v1/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "Every dependency is ready", body = ReadinessReport),
        (status = 503, description = "A dependency is not ready, or the service is shutting down", body = ReadinessReport),
    )
)]
pub async fn readiness(State(state): State<AppState>) -> (StatusCode, Json<ReadinessReport>) {
    let report = state.readiness.report().public();
    let status = match report.status {
        CheckStatus::Ready | CheckStatus::Degraded => StatusCode::OK,
        CheckStatus::NotReady => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(report))
}
