//! OpenBao calls made for a request: each is a client span (exported when
//! OTLP is on) and carries the request's W3C `traceparent`, which OpenBao's
//! audit log can record (`sys/config/auditing/request-headers`).
//!
//! vaultrs has no hook for per-call headers, so these run vaultrs's own
//! endpoint types through its middleware plus ours; the response handling
//! is vaultrs's (`api::exec_with_result`), minus its ERROR log of every
//! API error: a 404 is an answer here, and callers classify errors.

use axum::http::{HeaderValue, Request, Response};
use rustify::{
    endpoint::{Endpoint, MiddleWare},
    errors::ClientError as RestError,
};
use serde::de::DeserializeOwned;
use tracing::Instrument;
use vaultrs::{
    api::{EndpointError, EndpointMiddleware, EndpointResult},
    client::{Client, VaultClient},
    error::ClientError,
};

struct Traced<'a> {
    inner: &'a EndpointMiddleware,
    traceparent: Option<HeaderValue>,
}

impl<'a> Traced<'a> {
    /// The call's client span, and vaultrs's middleware plus the span's
    /// `traceparent`.
    fn span(client: &'a VaultClient, operation: &'static str) -> (tracing::Span, Self) {
        let span = tracing::info_span!("openbao", otel.kind = "client", otel.name = operation);
        let traceparent = span.in_scope(crate::trace::traceparent);
        let middleware = Traced {
            inner: client.middle(),
            traceparent,
        };
        (span, middleware)
    }
}

impl MiddleWare for Traced<'_> {
    fn request<E: Endpoint>(&self, e: &E, req: &mut Request<Vec<u8>>) -> Result<(), RestError> {
        self.inner.request(e, req)?;
        if let Some(value) = &self.traceparent {
            req.headers_mut().insert("traceparent", value.clone());
        }
        Ok(())
    }

    fn response<E: Endpoint>(&self, e: &E, resp: &mut Response<Vec<u8>>) -> Result<(), RestError> {
        self.inner.response(e, resp)
    }
}

/// Runs `endpoint` and returns its `data`.
pub async fn data<E>(
    client: &VaultClient,
    operation: &'static str,
    endpoint: E,
) -> Result<E::Response, ClientError>
where
    E: Endpoint,
    E::Response: DeserializeOwned + Send + Sync,
{
    let (span, middleware) = Traced::span(client, operation);
    let response = endpoint
        .with_middleware(&middleware)
        .exec(client.http())
        .instrument(span)
        .await
        .map_err(api_error)?;
    response
        .wrap::<EndpointResult<_>>()
        .map_err(ClientError::from)?
        .data
        .ok_or(ClientError::ResponseDataEmptyError)
}

/// Runs `endpoint`, whose answer has no body.
pub async fn empty<E: Endpoint>(
    client: &VaultClient,
    operation: &'static str,
    endpoint: E,
) -> Result<(), ClientError> {
    let (span, middleware) = Traced::span(client, operation);
    endpoint
        .with_middleware(&middleware)
        .exec(client.http())
        .instrument(span)
        .await
        .map(|_| ())
        .map_err(api_error)
}

/// OpenBao's `{"errors": [...]}` body → `APIError`, as vaultrs does.
fn api_error(e: RestError) -> ClientError {
    if let RestError::ServerResponseError {
        code,
        content: Some(body),
    } = &e
        && let Ok(parsed) = serde_json::from_str::<EndpointError>(body)
    {
        return ClientError::APIError {
            code: *code,
            errors: parsed.errors,
        };
    }
    ClientError::from(e)
}
