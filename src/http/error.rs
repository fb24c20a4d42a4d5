//! The one JSON error shape every route, fallback and middleware answers with.
//!
//! Module errors convert into [`ApiError`] here, once; handlers use `?`.

use axum::{
    Json,
    extract::rejection::JsonRejection,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::request_id;

/// An error answered to the client. The message is safe to show; internal
/// detail is logged with the request id and never returned.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Vec<FieldError>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    #[schema(example = "username")]
    pub field: String,
    #[schema(example = "must be 3 to 32 characters of a-z, A-Z, 0-9, _ . -")]
    pub message: String,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "validation_failed", "message": "request body is invalid", "request_id": "0192f7a4-5b1e-7c3d-9a51-1f0e2d3c4b5a", "details": [{"field": "email", "message": "is not a valid email address"}]}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable code.
    #[schema(example = "not_found")]
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The request's `x-request-id`, for correlating with logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Per-field validation problems.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<FieldError>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn with_details(mut self, details: Vec<FieldError>) -> Self {
        self.details = details;
        self
    }

    pub fn validation(details: Vec<FieldError>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "request is invalid",
        )
        .with_details(details)
    }

    /// A temporary 503 the client should retry: carries `Retry-After: 1`.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    /// 429 with `Retry-After` (whole seconds, at least 1): every rate limit
    /// answers in this one shape.
    pub fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).with_header(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after.as_secs().max(1)),
        )
    }

    /// A failure we do not explain to the client: logs `detail`, answers 500.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal server error",
        )
    }

    /// The error a bare status stands for, used to give responses produced by
    /// the framework or middleware (404, 405, 413, timeouts, panics) our shape.
    pub fn from_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => ("not_found", "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => {
                ("method_not_allowed", "method not allowed on this route")
            }
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "request body is too large"),
            StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => (
                "request_timeout",
                "the request took too long and was cancelled",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "expected a body with content-type application/json",
            ),
            s if s.is_server_error() => ("internal_error", "internal server error"),
            _ => ("invalid_request", "the request could not be processed"),
        };
        Self::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
                request_id: request_id::current(),
                details: self.details,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::from_status(status),
            _ if status == StatusCode::PAYLOAD_TOO_LARGE => Self::from_status(status),
            // serde's message names the field and the problem, but may quote
            // the submitted value, which could be a password: strip quotes.
            other => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                redact_quoted(&other.body_text()),
            ),
        }
    }
}

/// Replaces every quoted span ("…" or `…`) with a placeholder.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut open: Option<char> = None;
    for c in message.chars() {
        match open {
            Some(q) if c == q => {
                out.push_str("(redacted)");
                open = None;
            }
            Some(_) => {}
            None if c == '"' || c == '`' => open = Some(c),
            None => out.push(c),
        }
    }
    out
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        use crate::db::DbError;
        match e {
            // The pool cannot serve (no credentials, revoked role, Postgres
            // down): a retryable 503, not a 500.
            DbError::Unavailable(_) | DbError::Disconnected(_) => Self::unavailable(
                "database_unavailable",
                "the database is temporarily unavailable; retry shortly",
            ),
            other => Self::internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_values_are_redacted() {
        assert_eq!(
            redact_quoted("password: invalid type: string \"hunter2\", expected u32"),
            "password: invalid type: string (redacted), expected u32"
        );
        assert_eq!(redact_quoted("x: integer `12`"), "x: integer (redacted)");
    }
}
