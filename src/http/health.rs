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

/// Liveness without the middleware: a `GET /api/v1/health` answers from
/// here, before routing, with a static body and the security headers every
/// response carries. A probe needs no request id, trace context, CORS,
/// timeout or metrics (probes hit every few seconds; they are not counted
/// in `precinct_http_requests_total`). Any other method, or a browser's
/// request (with an `Origin`), takes the full stack.
#[derive(Clone)]
pub struct FastLiveness<S> {
    inner: S,
    headers: std::sync::Arc<axum::http::HeaderMap>,
}

/// The layer that puts [`FastLiveness`] in front of a router.
#[derive(Clone)]
pub struct FastLivenessLayer {
    headers: std::sync::Arc<axum::http::HeaderMap>,
}

/// The liveness body, the same as [`liveness`]'s.
const LIVENESS_BODY: &[u8] = br#"{"status":"ok"}"#;

impl FastLivenessLayer {
    /// `extra`: headers the middleware would add (security headers, HSTS).
    pub fn new(
        extra: impl IntoIterator<Item = (axum::http::HeaderName, axum::http::HeaderValue)>,
    ) -> Self {
        use axum::http::{HeaderValue, header};
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(LIVENESS_BODY.len()),
        );
        for (name, value) in extra {
            headers.insert(name, value);
        }
        Self {
            headers: std::sync::Arc::new(headers),
        }
    }
}

impl<S> tower::Layer<S> for FastLivenessLayer {
    type Service = FastLiveness<S>;
    fn layer(&self, inner: S) -> Self::Service {
        FastLiveness {
            inner,
            headers: self.headers.clone(),
        }
    }
}

impl<S, B> tower::Service<axum::http::Request<B>> for FastLiveness<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::response::Response>,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = futures::future::Either<
        std::future::Ready<Result<axum::response::Response, S::Error>>,
        S::Future,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        use axum::http::{Method, header};
        if request.method() == Method::GET
            && request.uri().path() == "/api/v1/health"
            && !request.headers().contains_key(header::ORIGIN)
        {
            let mut response = axum::response::Response::new(axum::body::Body::from(
                axum::body::Bytes::from_static(LIVENESS_BODY),
            ));
            *response.headers_mut() = (*self.headers).clone();
            return futures::future::Either::Left(std::future::ready(Ok(response)));
        }
        futures::future::Either::Right(self.inner.call(request))
    }
}
