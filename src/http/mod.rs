//! The HTTP surface: router, middleware, error mapping, OpenAPI.

mod auth;
mod body;
pub mod client_ip;
mod error;
mod github;
mod health;
pub mod internal;
mod meta;
pub mod metrics;
pub mod middleware;
mod openapi;
pub mod request_id;
mod state;

use axum::{Router, extract::DefaultBodyLimit};
use tower::ServiceBuilder;
use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};
use utoipa_swagger_ui::SwaggerUi;

pub use error::{ApiError, ErrorBody, FieldError};
pub use openapi::{ApiDoc, InternalApiDoc};
pub use state::{AppState, AppStateParts};

/// The routes and their OpenAPI description, before middleware.
pub fn api(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(meta::root))
        .routes(routes!(health::liveness))
        .routes(routes!(health::readiness))
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(auth::jwks))
        .routes(routes!(github::configure, github::forget))
        .routes(routes!(github::repos))
        .routes(routes!(github::user))
        .with_state(state)
        .split_for_parts();
    openapi::add_common_responses(&mut doc);
    (router, doc)
}

/// The internal API's routes and document, before middleware.
pub fn internal_api(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(InternalApiDoc::openapi())
        .routes(routes!(internal::introspect))
        .routes(routes!(internal::user))
        .with_state(state)
        .split_for_parts();
    openapi::add_common_responses(&mut doc);
    (router, doc)
}

/// The internal listener's router: its routes, the same middleware as the
/// public one (request id, span and access log with the caller's SPIFFE
/// ID, JSON errors, limits, timeout, panic catcher, security headers).
pub fn internal_router(state: AppState) -> Router {
    let config = state.config.clone();
    let (api, _) = internal_api(state);
    layered(
        api.fallback(|| async { ApiError::from_status(axum::http::StatusCode::NOT_FOUND) }),
        &config,
        None,
    )
}

/// The complete application router with every layer.
pub fn router(state: AppState, extra: Router) -> Router {
    let config = state.config.clone();
    let (_, internal_doc) = internal_api(state.clone());
    let (api, openapi) = api(state);
    let app = api
        .merge(extra)
        .merge(
            SwaggerUi::new("/docs")
                .url("/openapi.json", openapi)
                .url("/openapi-internal.json", internal_doc),
        )
        .fallback(|| async { ApiError::from_status(axum::http::StatusCode::NOT_FOUND) });
    // Before everything: liveness probes answer without the stack, with
    // the same headers.
    let probe_headers = middleware::security_header_values(config.env.is_production());
    layered(
        app,
        &config,
        Some(health::FastLivenessLayer::new(probe_headers)),
    )
}

/// The middleware every router gets, outermost first, applied in one
/// `Router::layer`: each call of it wraps every route in one more boxed
/// service, cloned for every request.
fn layered(
    app: Router,
    config: &crate::config::Config,
    probes: Option<health::FastLivenessLayer>,
) -> Router {
    app.layer(
        ServiceBuilder::new()
            .option_layer(probes)
            // Outside everything else: every response carries them.
            .layer(middleware::SecurityHeadersLayer::new(
                config.env.is_production(),
            ))
            // request_context sees every response, including the ones the
            // inner layers produce (timeouts, panics, body limits).
            .layer(middleware::RequestContextLayer::new(config.log.access))
            .layer(middleware::cors(config))
            .layer(CatchPanicLayer::custom(middleware::panic_response))
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                config.http.request_timeout,
            ))
            // Bodies read whole here, so one over the limit gets its 413 on
            // a clean connection (see body.rs).
            .layer(body::ReadWholeLayer::new(config.http.body_limit_bytes))
            .layer(DefaultBodyLimit::max(config.http.body_limit_bytes)),
    )
}
