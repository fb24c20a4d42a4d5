//! Cross-cutting layers: request context (id, span, access log, error shape),
//! security headers, CORS, limits, timeout and the panic catcher.

use std::{
    any::Any,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::Body,
    extract::{MatchedPath, Request},
    http::{HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::future::BoxFuture;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

use super::{ApiError, request_id};
use crate::config::{AccessLog, Config, CorsOrigins};

/// Outermost layer: every response leaves through here. Gives each request
/// its id, span (with the trace context and, on the internal listener, the
/// caller's SPIFFE ID), metrics and access-log line, and errors their JSON
/// shape. A tower layer rather than `from_fn`: the inner stack is called in
/// place, not cloned and boxed for every request.
#[derive(Clone)]
pub struct RequestContextLayer {
    access: AccessLog,
}

impl RequestContextLayer {
    pub fn new(access: AccessLog) -> Self {
        Self { access }
    }
}

impl<S> tower::Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestContext {
            inner,
            access: self.access,
        }
    }
}

/// See [`RequestContextLayer`].
#[derive(Clone)]
pub struct RequestContext<S> {
    inner: S,
    access: AccessLog,
}

impl<S> tower::Service<Request> for RequestContext<S>
where
    S: tower::Service<Request, Error = Infallible>,
    S::Response: IntoResponse,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let access = self.access;
        let id = request_id::from_headers(request.headers());
        let method = request.method().clone();
        // The matched route keeps ids out of the logs (low cardinality); unknown
        // routes log their raw path. MatchedPath is an Arc: no copy per request.
        let matched = request.extensions().get::<MatchedPath>().cloned();
        let raw_path = matched.is_none().then(|| request.uri().path().to_string());
        // Two fields on every line of the request: its id and its trace id (the
        // method and route go on the access-log line itself: fewer fields to
        // format for every request). With OTLP export on, the span is also the
        // trace's server span.
        let incoming = crate::trace::incoming(request.headers());
        // Route templates only: an unknown path is "unmatched", never itself.
        let template = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
        // On the internal listener: who calls, on every line of the request.
        let caller = request
            .extensions()
            .get::<super::internal::Caller>()
            .map(|c| c.spiffe_id.clone());
        let span = match incoming.trace_id() {
            Some(trace_id) if caller.is_some() => tracing::info_span!(
                "request",
                request_id = %id,
                trace_id = %trace_id,
                caller = caller.as_deref().unwrap_or_default()
            ),
            Some(trace_id) => {
                tracing::info_span!("request", request_id = %id, trace_id = %trace_id)
            }
            // Exporting: the name is set here, the SDK starts the span in `join`.
            None => tracing::info_span!(
                "request",
                request_id = %id,
                trace_id = tracing::field::Empty,
                caller = caller.as_deref(),
                otel.kind = "server",
                otel.name = %format_args!("{method} {template}"),
                http.request.method = %method,
                http.route = template,
                http.response.status_code = tracing::field::Empty,
            ),
        };
        // The inner layers only build their futures here (the handler runs
        // when polled, in the span and the request id's scope below).
        let joined = incoming.join(&span);
        let inner = span.in_scope(|| self.inner.call(request));
        Box::pin(async move {
            let template = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
            let started = Instant::now();
            let metered = crate::metrics::enabled();
            if metered {
                super::metrics::request_started();
            }

            let mut response = request_id::scope(
                id.clone(),
                joined.run(
                    async move {
                        let Ok(response) = inner.await;
                        into_json_error(response.into_response())
                    }
                    .instrument(span.clone()),
                ),
            )
            .await;

            let route = matched
                .as_ref()
                .map(MatchedPath::as_str)
                .or(raw_path.as_deref())
                .unwrap_or_default();
            let status = response.status().as_u16();
            let elapsed = started.elapsed();
            let latency_ms = elapsed.as_secs_f64() * 1000.0;
            if metered {
                super::metrics::http_request(template, &method, status, elapsed);
            }
            if crate::trace::exporting() {
                span.record("http.response.status_code", status);
            }
            span.in_scope(|| {
                // Probes hit every few seconds (and 503 is a normal answer while
                // starting or draining): keep them out of the info log.
                match access {
                    AccessLog::Off => {}
                    _ if route.starts_with("/api/v1/health") => {
                        tracing::debug!(%method, %route, status, latency_ms, "request completed");
                    }
                    _ if status >= 500 => {
                        tracing::warn!(%method, %route, status, latency_ms, "request failed");
                    }
                    // Every internal call is logged with its caller (in the span),
                    // whatever ACCESS_LOG says short of off.
                    AccessLog::All | AccessLog::Errors if caller.is_some() => {
                        tracing::info!(%method, %route, status, latency_ms, "request completed");
                    }
                    AccessLog::All => {
                        tracing::info!(%method, %route, status, latency_ms, "request completed");
                    }
                    AccessLog::Errors => {}
                }
            });
            if let Ok(value) = HeaderValue::try_from(id) {
                response
                    .headers_mut()
                    .insert(request_id::X_REQUEST_ID.clone(), value);
            }
            Ok(response)
        })
    }
}

/// Gives framework- and middleware-made error responses (404, 405, 413,
/// timeouts) the JSON error shape; our own errors are already JSON.
fn into_json_error(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let mut fresh = ApiError::from_status(status).into_response();
        // Keep headers like `allow` (405) that the original carried.
        for (name, value) in response.headers() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                fresh.headers_mut().entry(name).or_insert(value.clone());
            }
        }
        return fresh;
    }
    response
}

/// Security headers on every response (unless a handler set its own), in
/// one layer: one pass over the response's headers instead of a router
/// level per header (each level is a boxed clone per request).
/// `Cache-Control: no-store` and `Pragma: no-cache`: API answers carry
/// tokens and user data that no cache may keep (RFC 6749 §5.1 for the
/// token responses).
#[derive(Clone)]
pub struct SecurityHeadersLayer {
    headers: Arc<[(header::HeaderName, HeaderValue)]>,
}

impl SecurityHeadersLayer {
    /// The security headers, and HSTS in production.
    pub fn new(production: bool) -> Self {
        Self {
            headers: security_header_values(production).into(),
        }
    }
}

impl<S> tower::Layer<S> for SecurityHeadersLayer {
    type Service = SecurityHeaders<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SecurityHeaders {
            inner,
            headers: self.headers.clone(),
        }
    }
}

/// See [`SecurityHeadersLayer`].
#[derive(Clone)]
pub struct SecurityHeaders<S> {
    inner: S,
    headers: Arc<[(header::HeaderName, HeaderValue)]>,
}

impl<S, B> tower::Service<Request<B>> for SecurityHeaders<S>
where
    S: tower::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = SecurityHeadersFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        SecurityHeadersFuture {
            inner: self.inner.call(request),
            headers: self.headers.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`SecurityHeaders`].
    pub struct SecurityHeadersFuture<F> {
        #[pin]
        inner: F,
        headers: Arc<[(header::HeaderName, HeaderValue)]>,
    }
}

impl<F, E> Future for SecurityHeadersFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        let map = response.headers_mut();
        for (name, value) in this.headers.iter() {
            map.entry(name).or_insert_with(|| value.clone());
        }
        Poll::Ready(Ok(response))
    }
}

/// The security headers, with HSTS in production (over plain-http
/// development it only confuses), as values: the layer and the probes'
/// fast path set the same ones.
pub fn security_header_values(production: bool) -> Vec<(header::HeaderName, HeaderValue)> {
    let set =
        |name: header::HeaderName, value: &'static str| (name, HeaderValue::from_static(value));
    let mut headers = vec![
        set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        set(header::X_FRAME_OPTIONS, "DENY"),
        set(header::REFERRER_POLICY, "no-referrer"),
        set(
            header::CONTENT_SECURITY_POLICY,
            // Swagger UI needs its own scripts and inline styles; nothing
            // else here serves HTML.
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
        set(
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        set(header::CACHE_CONTROL, "no-store"),
        set(header::PRAGMA, "no-cache"),
    ];
    if production {
        headers.push(set(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ));
    }
    headers
}

pub fn cors(config: &Config) -> CorsLayer {
    let origins = match &config.http.cors_origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => {
            // A predicate over a shared list: the layer is cloned for every
            // request, and `AllowOrigin::list` would copy its Vec each time.
            let allowed: std::sync::Arc<[HeaderValue]> = list
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect();
            AllowOrigin::predicate(move |origin, _| allowed.contains(origin))
        }
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            request_id::X_REQUEST_ID.clone(),
        ])
        .expose_headers([
            request_id::X_REQUEST_ID.clone(),
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-ratelimit-remaining"),
            header::HeaderName::from_static("x-ratelimit-reset"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// The panic catcher's answer: a JSON 500 (the panic message is logged, not sent).
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = detail, "handler panicked");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "internal server error",
    )
    .into_response()
}
